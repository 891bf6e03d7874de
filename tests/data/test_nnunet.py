"""nnU-Net v2 raw datasets: channels as _XXXX files, cases without labels as unlabeled, imagesTs/labelsTs
as the test set, and the labels' names in the tables."""

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from mtssl.cli import main
from mtssl.data.cases import DataError
from mtssl.registry import DATASETS

SPACING = (0.9, 0.8, 2.0)
SHAPE = (20, 20, 16)


def make_nnunet(root, train=6, labeled=3, test=2, channels=("T1", "T2"), ending=".nii.gz"):
    """A tiny nnU-Net v2 folder: ``train`` cases of which the first ``labeled`` have labels, ``test``
    test cases with labels in labelsTs; two classes named 'ring' and 'core'."""
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])

    def case(name, images, labels, seed, with_label):
        rng = np.random.default_rng(seed)
        label = np.zeros(SHAPE, np.uint8)
        label[5:15, 5:15, 4:12] = 1
        label[8:12, 8:12, 6:10] = 2
        for c in range(len(channels)):
            image = (label * (c + 1) * 50 + rng.normal(0, 5, SHAPE)).astype(np.float32)
            nib.save(nib.Nifti1Image(image, affine), root / images / f"{name}_{c:04d}{ending}")
        if with_label:
            nib.save(nib.Nifti1Image(label, affine), root / labels / f"{name}{ending}")

    for i in range(train):
        case(f"la_{i:03d}", "imagesTr", "labelsTr", i, i < labeled)
    for i in range(test):
        case(f"ts_{i:03d}", "imagesTs", "labelsTs", 100 + i, True)
    meta = {
        "channel_names": {str(c): name for c, name in enumerate(channels)},
        "labels": {"background": 0, "ring": 1, "core": 2},
        "numTraining": train,
        "file_ending": ending,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_channels_labels_unlabeled_and_test_set(tmp_path):
    root = make_nnunet(tmp_path / "Dataset001_Tiny")
    data = DATASETS.create("nnunet", root=str(root), patch=(16, 16, 8))
    assert data.split.labeled == ("la_000", "la_001", "la_002")
    assert data.split.unlabeled == ("la_003", "la_004", "la_005")  # no file in labelsTr
    assert data.split.test == ("ts_000", "ts_001")  # imagesTs, scored against labelsTs
    assert data.in_channels == 2 and data.num_classes == 2 and data.class_names == ("ring", "core")
    case = data.store["la_001"]
    assert case.image.shape == (2, *SHAPE) and case.spacing == pytest.approx(SPACING)
    # channel order is _0000, _0001: the second channel's foreground is twice the first's before z-scoring
    raw = [np.asarray(nib.load(root / "imagesTr" / f"la_001_{c:04d}.nii.gz").dataobj) for c in range(2)]
    for c in range(2):
        expected = (raw[c] - raw[c].mean()) / raw[c].std()
        np.testing.assert_allclose(case.image[c], expected, rtol=1e-4, atol=1e-4)
    assert data.store["la_004"].label is None
    test = data.store["ts_001"]
    assert test.label is not None and int(test.label.max()) == 2
    assert "3 training cases without a label file unlabeled" in data.split.how


def test_a_count_of_labeled_cases_picks_among_those_with_labels(tmp_path):
    root = make_nnunet(tmp_path / "d")
    data = DATASETS.create("nnunet", root=str(root), patch=(16, 16, 8), labeled=2)
    assert data.split.labeled == ("la_000", "la_001")
    assert data.split.unlabeled == ("la_002", "la_003", "la_004", "la_005")


def test_without_labels_ts_a_fraction_of_the_labeled_cases_is_tested(tmp_path):
    root = make_nnunet(tmp_path / "d", labeled=5, test=0)
    data = DATASETS.create("nnunet", root=str(root), patch=(16, 16, 8), test_fraction=0.4, seed=3)
    assert len(data.split.test) == 2 and set(data.split.test) <= {f"la_{i:03d}" for i in range(5)}
    assert data.split.unlabeled == ("la_005",)


@pytest.mark.parametrize(
    ("break_it", "match"),
    [
        (lambda r: (r / "imagesTr" / "la_002_0001.nii.gz").unlink(), r"case la_002 has channel files \[0\]"),
        (
            lambda r: (r / "dataset.json").write_text(json.dumps({"labels": {"background": 0}, "training": []})),
            r"has no 'channel_names' .* for an MSD folder use data\.name=msd",
        ),
        (
            lambda r: _edit(r, labels={"background": 0, "a": 1, "b": 3}),
            r"label values must be 0, 1, 2, \.\.\. consecutive, got \[0, 1, 3\]",
        ),
        (lambda r: _edit(r, file_ending=".jpg"), r"file_ending .\.jpg. is not one of"),
        (lambda r: _edit(r, file_ending=".nrrd"), r"holds no <case>_0000\.nrrd files"),
    ],
    ids=["missing-channel", "msd-json", "gap-in-labels", "bad-ending", "no-such-files"],
)
def test_errors_name_the_problem(tmp_path, break_it, match):
    root = make_nnunet(tmp_path / "d")
    break_it(root)
    with pytest.raises(DataError, match=match):
        DATASETS.create("nnunet", root=str(root), patch=(16, 16, 8))


def _edit(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def test_a_labeled_list_naming_an_unlabeled_case_is_refused(tmp_path):
    root = make_nnunet(tmp_path / "d")
    (tmp_path / "labeled.list").write_text("la_000\nla_004\n")
    with pytest.raises(DataError, match=r"names \['la_004'\], which have no label in .*labelsTr"):
        DATASETS.create("nnunet", root=str(root), patch=(16, 16, 8), labeled=str(tmp_path / "labeled.list"))


def test_a_run_reports_the_class_names(tmp_path, capsys):
    root = make_nnunet(tmp_path / "d")
    cfg = {
        "recipe": {"name": "supervised", "softmax": True},
        "data": {"name": "nnunet", "root": str(root), "patch": [16, 16, 16]},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 2, "batch_size": 2, "labeled_bs": 1, "progress": False, "log_every": 1},
        "eval": {"stride": [16, 16, 16]},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["class_names"] == {"1": "ring", "2": "core"} and metrics["cases"] == 2
    out = capsys.readouterr().out
    assert "ring" in out and "core" in out


def test_downsampled_cases_are_scored_on_their_native_grid(tmp_path):
    root = make_nnunet(tmp_path / "d")
    data = DATASETS.create("nnunet", root=str(root), patch=(8, 8, 8), downsample=2)
    train, test = data.store["la_000"], data.store["ts_000"]
    assert train.image.shape == (2, 10, 10, 8) and train.native_label is None
    assert test.image.shape == (2, 10, 10, 8) and test.native_label.shape == SHAPE and test.factor == 2
    assert test.spacing == pytest.approx(tuple(2 * s for s in SPACING))
    assert data.preprocessing["downsample"] == 2


def test_cases_are_resampled_to_a_target_spacing_and_scored_on_their_native_grid(tmp_path):
    root = make_nnunet(tmp_path / "d")  # 20 x 20 x 16 voxels of 0.9 x 0.8 x 2 mm
    data = DATASETS.create("nnunet", root=str(root), patch=(8, 8, 8), spacing=[1.8, 1.6, 2.0], downsample=2)
    train, test = data.store["la_000"], data.store["ts_000"]
    assert train.image.shape == (2, 5, 5, 8) and train.spacing == (3.6, 3.2, 4.0) and train.native_label is None
    assert test.grid == (10, 10, 16) and test.native_label.shape == SHAPE and test.factor == 2
    assert test.native_spacing == pytest.approx(SPACING)
    item = data.test[0]
    assert item["grid"] == (10, 10, 16) and item["native_spacing"].tolist() == pytest.approx(list(SPACING))
    assert data.preprocessing["spacing"] == [1.8, 1.6, 2.0]
    with pytest.raises(DataError, match="positive voxel size per spatial axis"):
        DATASETS.create("nnunet", root=str(root), spacing=[1.0, 0.0, 1.0])


def make_nnunet_2d(root, train=4, labeled=2, test=2, rgb=False):
    """A 2D nnU-Net folder of PNGs (nnU-Net's natural images): an RGB file is 3 channels in one _0000 file."""
    from PIL import Image

    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    def case(name, images, labels, seed, with_label):
        rng = np.random.default_rng(seed)
        label = np.zeros((64, 48), np.uint8)
        label[10 + seed % 5 : 40, 8:30] = 1
        image = (label * 120 + rng.normal(60, 10, label.shape)).clip(0, 255).astype(np.uint8)
        pixels = np.stack([image, image // 2, 255 - image], -1) if rgb else image
        Image.fromarray(pixels).save(root / images / f"{name}_0000.png")
        if with_label:
            Image.fromarray(label).save(root / labels / f"{name}.png")

    for i in range(train):
        case(f"img_{i:03d}", "imagesTr", "labelsTr", i, i < labeled)
    for i in range(test):
        case(f"ts_{i:03d}", "imagesTs", "labelsTs", 50 + i, True)
    channels = {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "gray"}
    meta = {"channel_names": channels, "labels": {"background": 0, "cell": 1}, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
def test_a_2d_folder_of_pngs(tmp_path, rgb):
    root = make_nnunet_2d(tmp_path / "Dataset002_Cells", rgb=rgb)
    data = DATASETS.create("nnunet", root=str(root), patch=(32, 32))
    assert data.spatial_dims == 2 and data.in_channels == (3 if rgb else 1) and data.class_names == ("cell",)
    assert data.split.labeled == ("img_000", "img_001") and data.split.unlabeled == ("img_002", "img_003")
    case = data.store["ts_001"]
    assert case.image.shape == ((3 if rgb else 1), 64, 48) and case.spacing == (1.0, 1.0)
    assert int(case.label.sum()) == (40 - 11) * 22
