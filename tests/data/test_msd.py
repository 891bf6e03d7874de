import json
import re

import nibabel as nib
import numpy as np
import pytest

from mtssl.data.cases import DataError
from mtssl.registry import DATASETS
from tests.conftest import MSD_SPACING as SPACING


def test_loads_back_with_spacing(msd_root):
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), labeled=2)
    assert data.num_classes == 2 and data.spatial_dims == 3
    assert len(data.test) == 1 and len(data.train) == 4  # a seeded 20 % test split
    item = data.test[0]
    assert tuple(item["spacing"].tolist()) == pytest.approx(SPACING)
    original = nib.load(msd_root / "labelsTr" / f"{item['case']}.nii.gz").get_fdata()
    assert np.array_equal(item["label"].numpy(), original)
    image = item["image"].numpy()
    assert image.shape == (1, 16, 16, 12) and abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    batch = next(iter(data.loader(2, 1)))
    assert batch["image"].shape == (2, 1, 8, 8, 8)
    assert batch["spacing"][0].tolist() == pytest.approx(SPACING)


def test_lazy_by_default(msd_root):
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))
    assert data.store._memory == {}
    preloaded = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), preload=True)
    assert len(preloaded.store._memory) == 5


def test_split_file_ct_window_and_record(msd_root, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["case_0", "case_1", "case_2"], "test": ["case_3", "case_4"]}))
    data = DATASETS.create(
        "msd",
        root=str(msd_root),
        split_file=str(split_file),
        normalization="ct",
        ct_window=(-100.0, 100.0),
        patch=(8, 8, 8),
        labeled=1,
    )
    assert data.split.test == ("case_3", "case_4") and data.split.labeled == ("case_0",)
    image = data.test[0]["image"].numpy()
    assert image.min() >= 0 and image.max() <= 1
    data.split.save(tmp_path / "recorded.json")
    assert json.loads((tmp_path / "recorded.json").read_text())["labeled"] == ["case_0"]


def test_errors(msd_root, tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json not found"):
        DATASETS.create("msd", root=str(tmp_path / "nowhere"))
    (msd_root / "labelsTr" / "case_3.nii.gz").unlink()
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), test_fraction=0.0)  # lazy: loads case_0 only
    with pytest.raises(DataError, match=r"missing file .*case_3\.nii\.gz"):
        data.train[data.train.ids.index("case_3")]


def rewrite_meta(root, change):
    meta = json.loads((root / "dataset.json").read_text())
    change(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


def save(path, array):
    nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), path)


@pytest.mark.parametrize(
    ("where", "path"),
    [("image", "../outside.nii.gz"), ("label", "/etc/hostname"), ("image", "imagesTr/../../x.nii.gz")],
)
def test_paths_that_leave_the_data_folder_are_refused(msd_root, where, path):
    rewrite_meta(msd_root, lambda m: m["training"][1].update({where: path}))
    with pytest.raises(DataError, match=rf"training entry 1 {where} = '{re.escape(path)}' leaves the data folder"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))


def test_a_link_out_of_the_data_folder_is_refused(msd_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.nii.gz"
    save(outside, np.zeros((16, 16, 12), np.float32))
    (msd_root / "imagesTr" / "case_2.nii.gz").unlink()
    (msd_root / "imagesTr" / "case_2.nii.gz").symlink_to(outside)
    with pytest.raises(DataError, match=r"training entry 2 image = .* leaves the data folder"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"dataset\.json is not valid JSON \(Expecting property name"),
        ("[1, 2]", r"dataset\.json holds a JSON list; an MSD dataset\.json is a JSON object"),
        ('{"labels": {}}', r"lists no training cases \(a 'training' list"),
        ('{"training": [{"image": "./imagesTr/case_0.nii.gz"}]}', r"no training entry has a 'label'; at least one"),
        ('{"training": ["case_0"]}', r"training entry 0 \('case_0'\) has no 'image'"),
    ],
    ids=["not-json", "not-object", "no-training", "only-unlabeled", "not-an-entry"],
)
def test_a_broken_dataset_json_is_named(msd_root, text, match):
    (msd_root / "dataset.json").write_text(text)
    with pytest.raises(DataError, match=match):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))


def test_a_4d_image_where_3d_is_expected(msd_root):
    rewrite_meta(msd_root, lambda m: m.update(modality={"0": "CT"}))
    save(msd_root / "imagesTr" / "case_3.nii.gz", np.zeros((16, 16, 12, 2), np.float32))
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))
    with pytest.raises(DataError, match=r"case_3\.nii\.gz holds 2 channels \(shape \(16, 16, 12, 2\)\); expected "):
        data.check()
    save(msd_root / "imagesTr" / "case_3.nii.gz", np.zeros((16, 16, 12), np.float32))
    save(msd_root / "labelsTr" / "case_4.nii.gz", np.zeros((16, 16, 12, 3), np.uint8))
    with pytest.raises(DataError, match=r"labelsTr/case_4\.nii\.gz holds 3 channels .*expected a 3D volume"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8)).check()
    save(msd_root / "labelsTr" / "case_4.nii.gz", np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match=r"has shape \(16, 16\); expected a 3D volume"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8)).check()


def test_nan_count_of_the_raw_file(msd_root):
    image = np.random.default_rng(0).normal(size=(16, 16, 12)).astype(np.float32)
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    save(msd_root / "imagesTr" / "case_2.nii.gz", image)
    with pytest.raises(DataError, match=r"case_2\.nii\.gz has 4 NaN or Inf values of 3072 in the raw file"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8)).check()


def test_an_all_background_label_of_a_labeled_case_warns_once(msd_root, caplog):
    save(msd_root / "labelsTr" / "case_0.nii.gz", np.zeros((16, 16, 12), np.uint8))
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), labeled=2, test_fraction=0.0)
    assert data.split.labeled[0] == "case_0"
    data.check()
    data.check()
    assert caplog.text.count("labeled case case_0 is all background") == 1


def test_a_bad_test_case_fails_the_dry_run_and_the_train_before_the_first_step(msd_root, tmp_path, capsys):
    import yaml

    from mtssl.cli import main

    image = np.random.default_rng(0).normal(size=(16, 16, 12)).astype(np.float32)
    image[3, 3, 3] = np.nan
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))
    save(msd_root / "imagesTr" / f"{data.split.test[0]}.nii.gz", image)  # a test case: read only after training
    cfg = {
        "recipe": {"name": "supervised", "softmax": True},
        "data": {"name": "msd", "root": str(msd_root), "patch": [8, 8, 8], "labeled": 2},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 1000, "progress": False},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    message = f"{data.split.test[0]}.nii.gz has 1 NaN or Inf values of 3072 in the raw file"
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run", "--no-data-check"]) == 0
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "log.jsonl").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_label_map_merges_classes_and_trains(msd_root, tmp_path):
    from mtssl.data.msd import remap_labels
    from mtssl.engine.run import train_run

    swapped = remap_labels(np.array([0, 1, 2, 3]), {1: 2, 2: 1})
    assert swapped.tolist() == [0, 2, 1, 3]  # all at once: a swap, not a chain
    # Four foreground labels, as BraTS has, merged into one "whole" class.
    rewrite_meta(msd_root, lambda m: m.update(labels={"0": "bg", "1": "a", "2": "b", "3": "c", "4": "d"}))
    for i in range(5):  # 16^3: a V-Net's smallest input
        save(
            msd_root / "imagesTr" / f"case_{i}.nii.gz",
            np.random.default_rng(i).normal(size=(16,) * 3).astype(np.float32),
        )
        label = np.zeros((16, 16, 16), np.uint8)
        label[2:6, 2:6, 2:6], label[6:9, 6:9, 6:9], label[9:12, 2:6, 2:6], label[2:6, 9:12, 6:9] = 1, 2, 3, 4
        save(msd_root / "labelsTr" / f"case_{i}.nii.gz", label)
    assert DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8)).num_classes == 4
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), label_map={2: 1, 3: 1, 4: 1})
    assert data.num_classes == 1
    item = data.test[0]["label"].numpy()
    assert set(np.unique(item).tolist()) == {0, 1} and item.sum() == 64 + 27 + 48 + 36  # every label now 1
    cfg = {
        "recipe": {"name": "supervised"},
        "data": {"name": "msd", "root": str(msd_root), "patch": [16, 16, 16], "label_map": {2: 1, 3: 1, 4: 1}},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 2, "progress": False, "batch_size": 2, "labeled_bs": 2},
        "eval": {"stride": [16, 16, 16]},
    }
    summary = train_run(cfg, tmp_path / "run")
    assert {r["class"] for r in summary["per_case"]} == {1}


def test_entries_without_a_label_are_unlabeled_cases(msd_root, tmp_path):
    import nibabel as nib

    for i in range(5, 8):  # three more volumes, with no label file and no 'label' in their entries
        image = np.random.default_rng(i).normal(40, 200, (16, 16, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.diag([*SPACING, 1.0])), msd_root / "imagesTr" / f"case_{i}.nii.gz")
    rewrite_meta(
        msd_root,
        lambda m: m["training"].extend({"image": f"./imagesTr/case_{i}.nii.gz"} for i in range(5, 8)),
    )
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), test_fraction=0.2, seed=0)
    assert set(data.split.unlabeled) == {"case_5", "case_6", "case_7"}  # and never tested
    assert not {"case_5", "case_6", "case_7"} & set(data.split.test)
    assert "3 entries without a label unlabeled" in data.split.how
    assert data.store["case_6"].label is None and data.store["case_6"].image.shape == (1, 16, 16, 12)
    assert data.class_names == ("organ", "tumour")  # dataset.json's names
    batch = next(iter(data.loader(4, 2, seed=0)))
    assert batch["labeled"].tolist() == [True, True, False, False]
    (tmp_path / "labeled.list").write_text("case_0\ncase_6\n")
    with pytest.raises(DataError, match=r"labeled list .* names \['case_6'\], whose dataset\.json entries have no"):
        DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), labeled=str(tmp_path / "labeled.list"))
