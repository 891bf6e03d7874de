"""``mtssl plan``: the planner's rules on synthetic fingerprints, and a plan that trains as written."""

import dataclasses

import pytest
import yaml

from mtssl.cli import main
from mtssl.planner import PATCH_VOXELS, Fingerprint, downsample_factor, make_plan, plan_patch
from tests.data.test_nnunet import make_nnunet


def synthetic(shape=(192, 142, 88), spacing=(0.625, 0.625, 0.625), channels=("MRI",), n=8):
    return Fingerprint(
        root="/data/Dataset001",
        spatial_dims=3,
        channels=list(channels),
        class_names=["atrium"],
        labeled=n,
        unlabeled=72,
        test=20,
        shapes=[list(shape)] * n,
        spacings=[list(spacing)] * n,
        foreground_percentiles=[[-100.0, 40.0, 300.0]] * len(channels),
        class_fractions={"background": 0.97, "atrium": 0.03},
    )


def test_la_shaped_data_gets_the_measured_protocols():
    # LA's median volume: on a GPU the literature's 112x112x80 patch at the native grid; on a CPU the
    # CPU LA protocol's 2x downsampling and 64x64x32 patch (both sized by measurement, docs/la_benchmark.md).
    assert downsample_factor([192, 142, 88], "cuda") == 1 and plan_patch([192, 142, 88], PATCH_VOXELS["cuda", 3]) == [
        112,
        112,
        80,
    ]
    assert downsample_factor([192, 142, 88], "cpu") == 2
    cpu = make_plan(synthetic(), "dbisl", "cpu", iterations=500).config
    assert cpu["data"]["downsample"] == 2 and cpu["data"]["patch"] == [64, 64, 32]
    assert cpu["eval"]["stride"] == [32, 32, 16] and cpu["data"]["normalization"] == "zscore"
    assert cpu["recipe"] == {"name": "dbisl"}  # ramps and h follow the run and the patch: nothing to set


@pytest.mark.parametrize(
    ("shape", "budget", "patch"),
    [
        ((40, 40, 20), 131072, [32, 32, 16]),  # smaller than a 16-multiple: rounded down, never below 16
        ((10, 300, 300), 131072, [16, 80, 96]),  # the largest side shrinks first
        ((512, 512, 512), 131072, [48, 48, 48]),
    ],
)
def test_patches_are_stride_multiples_within_the_budget(shape, budget, patch):
    planned = plan_patch(list(shape), budget)
    assert planned == patch
    assert all(p % 16 == 0 and p >= 16 for p in planned) and planned[0] * planned[1] * planned[2] <= budget


def test_ct_is_clipped_to_the_foreground_percentiles():
    fp = synthetic(channels=("CT",))
    plan = make_plan(fp, "supervised", "cuda", iterations=10)
    assert plan.config["data"]["normalization"] == "ct" and plan.config["data"]["ct_window"] == [-100.0, 300.0]
    assert not plan.warnings and "spacing" not in plan.config["data"]  # one spacing: nothing to resample


def test_spacings_that_differ_are_resampled_to_nnunets_target():
    # half the cases at 1 mm slices, half at 2 mm (same field of view): the target is the median per
    # axis (1.5 mm), and the patch is planned on the shapes at that spacing (100 x 1/1.5 or 50 x 2/1.5 = 66.7)
    fp = dataclasses.replace(
        synthetic(),
        shapes=[[160, 160, 100]] * 4 + [[160, 160, 50]] * 4,
        spacings=[[0.8, 0.8, 1.0]] * 4 + [[0.8, 0.8, 2.0]] * 4,
    )
    plan = make_plan(fp, "dbisl", "cuda", iterations=10)
    assert plan.config["data"]["spacing"] == [0.8, 0.8, 1.5]
    assert plan.config["data"]["patch"] == [112, 128, 64]  # 160x160x66 at 1.5 mm: 16-multiples within budget
    assert "resampled" in plan.why["data.spacing"]
    # anisotropic volumes (5 mm slices, few of them): the coarse axis takes its 10th percentile (nnU-Net)
    thick = dataclasses.replace(
        synthetic(),
        shapes=[[256, 256, 20]] * 8,
        spacings=[[0.7, 0.7, 5.0]] * 4 + [[0.7, 0.7, 6.0]] * 3 + [[0.7, 0.7, 2.5]],
    )
    assert make_plan(thick, "dbisl", "cuda", 10).config["data"]["spacing"] == [0.7, 0.7, 4.25]


def test_plan_then_train_as_written(tmp_path, capsys):
    root = make_nnunet(tmp_path / "Dataset001_Tiny", train=4, labeled=2, test=1, channels=("MRI",))
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--recipe", "dbisl", "--minutes", "0.5", "--out", str(plan)]) == 0
    text = plan.read_text()
    assert "# mtssl plan of" in text and "2 labeled + 2 unlabeled training cases, 1 test cases" in text
    assert "a step" in text and (tmp_path / "plan.fingerprint.json").is_file()
    config = yaml.safe_load(text)
    assert config["data"]["name"] == "nnunet" and config["train"]["iterations"] >= 1
    assert main(["plan", str(root), "--recipe", "dbisl", "--iterations", "2", "--out", str(plan)]) == 2
    assert "exists; give another --out, or --overwrite" in capsys.readouterr().err
    assert main(["plan", str(root), "--recipe", "dbisl", "--iterations", "2", "--out", str(plan), "--overwrite"]) == 0
    assert main(["train", str(plan), "--out", str(tmp_path / "run"), "train.progress=false"]) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_2d_png_folder_plans_trains_predicts_and_scores(tmp_path, capsys):
    import json

    from tests.data.test_nnunet import make_nnunet_2d

    root = make_nnunet_2d(tmp_path / "Dataset002_Cells", train=4, labeled=2, test=2)
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--recipe", "supervised", "--iterations", "3", "--out", str(plan)]) == 0
    config = yaml.safe_load(plan.read_text())
    assert config["data"]["patch"] == [64, 48] and config["data"]["downsample"] == 1  # a 2D patch, stride 16
    assert "(cpu, 2D)" in plan.read_text() or "(cuda, 2D)" in plan.read_text()
    assert main(["train", str(plan), "--out", str(tmp_path / "run"), "train.progress=false"]) == 0
    preds = tmp_path / "preds"
    assert main(["predict", str(tmp_path / "run"), str(root / "imagesTs"), "--out", str(preds)]) == 0
    assert sorted(p.name for p in preds.iterdir()) == ["ts_000.png", "ts_001.png"]  # class numbers, as the labels
    assert main(["evaluate-folder", str(preds), str(root / "labelsTs"), "--out", str(tmp_path / "scores")]) == 0
    scored = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    tested = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert scored["units"]["hd95"] == tested["units"]["hd95"] == "pixels"  # 2D distances are in pixels
    assert [r["dice"] for r in scored["per_case"]] == pytest.approx([r["dice"] for r in tested["per_case"]])


def test_a_recipe_that_reads_no_unlabeled_sample_gets_a_labeled_batch():
    from mtssl.registry import RECIPES

    assert not RECIPES.create("supervised").uses_unlabeled
    assert all(RECIPES.create(r).uses_unlabeled for r in ("dbisl", "mean_teacher", "dtc", "ua_mt", "mcnet"))
    supervised = make_plan(synthetic(), "supervised", "cpu", iterations=10).config["train"]
    assert (supervised["batch_size"], supervised["labeled_bs"]) == (2, 2)
    dbisl = make_plan(synthetic(), "dbisl", "cpu", iterations=10)
    assert (dbisl.config["train"]["batch_size"], dbisl.config["train"]["labeled_bs"]) == (4, 2)
    assert "2 unlabeled" in dbisl.why["train.batch_size"]


def test_a_folder_of_mixed_spacings_plans_a_target_spacing_that_trains(tmp_path):
    import nibabel as nib
    import numpy as np

    root = make_nnunet(tmp_path / "Dataset001_Mixed", train=4, labeled=2, test=1, channels=("MRI",))
    # two labeled cases: one at the folder's 0.9 x 0.8 x 2 mm, one re-headed at 0.9 x 0.8 x 1 mm
    for path in (root / "imagesTr" / "la_001_0000.nii.gz", root / "labelsTr" / "la_001.nii.gz"):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([0.9, 0.8, 1.0, 1.0])), path)
    plan = tmp_path / "plan.yaml"
    assert main(["plan", str(root), "--recipe", "supervised", "--iterations", "2", "--out", str(plan)]) == 0
    config = yaml.safe_load(plan.read_text())
    assert config["data"]["spacing"] == [0.9, 0.8, 1.5]  # the median of 2 mm and 1 mm slices
    assert "resampled to it" in plan.read_text()
    assert main(["train", str(plan), "--out", str(tmp_path / "run"), "train.progress=false"]) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()
