"""A user's own data end to end: predict a folder (nnU-Net's imagesTs), test-time mirroring, scoring
predictions on disk, shipped configs, and recipes registered in the user's own module."""

import dataclasses
import itertools
import json
import textwrap

import nibabel as nib
import numpy as np
import pytest
import yaml

import mtssl
from mtssl.cli import main
from mtssl.data.cases import DataError
from tests.data.test_nnunet import make_nnunet


def _train(tmp, **data):
    root = make_nnunet(tmp / "Dataset001_Tiny", train=4, labeled=2, test=2)
    cfg = {
        "recipe": {"name": "supervised", "softmax": True},
        "data": {"name": "nnunet", "root": str(root), "patch": [16, 16, 16], **data},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 6, "batch_size": 2, "labeled_bs": 1, "progress": False, "log_every": 2},
        "eval": {"stride": [8, 8, 8]},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root, cfg


@pytest.fixture(scope="module")
def nnunet_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    root, _ = _train(tmp)
    assert main(["train", str(tmp / "cfg.yaml"), "--out", str(tmp / "run")]) == 0
    return root, tmp / "run"


@pytest.fixture(scope="module")
def resampled_run(tmp_path_factory):
    """A run on cases resampled to 0.9 x 0.8 x 1 mm (from 2 mm slices), one test case stored at another spacing."""
    tmp = tmp_path_factory.mktemp("resampled")
    root, _ = _train(tmp, spacing=[0.9, 0.8, 1.0])
    files = [root / "imagesTs" / f"ts_001_{c:04d}.nii.gz" for c in range(2)] + [root / "labelsTs" / "ts_001.nii.gz"]
    for path in files:
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([1.5, 0.6, 1.0, 1.0])), path)
    assert main(["train", str(tmp / "cfg.yaml"), "--out", str(tmp / "run")]) == 0
    return root, tmp / "run"


@pytest.mark.parametrize("which", ["nnunet_run", "resampled_run"])
def test_predict_images_ts_then_score_it_equals_the_runs_own_test(which, request, tmp_path, capsys):
    # predictions written by `mtssl predict` and scored on disk equal the run's own test, case by case,
    # also when the run resampled its cases to a target spacing (and back to each test case's own grid)
    root, run = request.getfixturevalue(which)
    assert main(["predict", str(run), str(root / "imagesTs"), "--out", str(tmp_path / "preds")]) == 0
    # the channel files <case>_0000/_0001 are one case, named as nnU-Net names its predictions
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["ts_000.nii.gz", "ts_001.nii.gz"]
    written = nib.load(tmp_path / "preds" / "ts_000.nii.gz")
    source = nib.load(root / "imagesTs" / "ts_000_0000.nii.gz")
    assert np.allclose(written.affine, source.affine) and written.shape == source.shape  # the header kept
    args = ["evaluate-folder", str(tmp_path / "preds"), str(root / "labelsTs"), "--out", str(tmp_path / "scores")]
    assert main([*args, "--dataset-json", str(root / "dataset.json")]) == 0
    assert "ring" in capsys.readouterr().out
    scored = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    tested = json.loads((run / "metrics.json").read_text())  # the run's own test, at the end of training
    assert scored["units"]["hd95"] == tested["units"]["hd95"] == "mm"
    assert scored["class_names"] == tested["class_names"] == {"1": "ring", "2": "core"}
    for a, b in zip(scored["per_case"], tested["per_case"]):
        assert (a["case"], a["class"]) == (b["case"], b["class"])
        for key in ("dice", "jaccard", "hd95", "asd"):
            assert a[key] == pytest.approx(b[key], nan_ok=True), (a["case"], key)
    assert main(args) == 2 and "exists; --overwrite to replace it" in capsys.readouterr().err
    if which == "resampled_run":
        predictor = mtssl.load(run)
        assert predictor.spec.spacing == (0.9, 0.8, 1.0)
        with pytest.raises(DataError, match="own spacing is unknown: give it as NIfTI"):
            predictor(np.zeros((2, 20, 20, 16), np.float32))
        # given the spacing, an array is resampled as its file is
        files = [root / "imagesTs" / f"ts_001_{c:04d}.nii.gz" for c in range(2)]
        image = np.stack([np.asarray(nib.load(f).dataobj) for f in files])
        written = np.asarray(nib.load(tmp_path / "preds" / "ts_001.nii.gz").dataobj)
        np.testing.assert_array_equal(predictor(image, spacing=(1.5, 0.6, 1.0))[1], written)


def test_evaluate_folder_names_missing_and_misshapen_predictions(nnunet_run, tmp_path, capsys):
    root, _ = nnunet_run
    (tmp_path / "preds").mkdir()
    label = np.asarray(nib.load(root / "labelsTs" / "ts_000.nii.gz").dataobj)
    nib.save(nib.Nifti1Image(label[:-1], np.eye(4)), tmp_path / "preds" / "ts_000.nii.gz")
    assert main(["evaluate-folder", str(tmp_path / "preds"), str(root / "labelsTs")]) == 2
    assert "has no prediction of 1 truth case(s): ['ts_001']" in capsys.readouterr().err
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "preds" / "ts_001.nii.gz")
    assert main(["evaluate-folder", str(tmp_path / "preds"), str(root / "labelsTs")]) == 2
    assert "case ts_000: the prediction's shape (19, 20, 16) differs from the truth's (20, 20, 16)" in (
        capsys.readouterr().err
    )


def test_tta_is_the_mean_over_hand_mirrored_predictions(nnunet_run):
    root, run = nnunet_run
    image = np.stack([np.asarray(nib.load(root / "imagesTs" / f"ts_001_{c:04d}.nii.gz").dataobj) for c in range(2)])
    plain, mirrored = mtssl.load(run), mtssl.load(run, tta=True)
    # the run trained with rot90 + flip over spatial axes 0 and 1: those are mirrored, the third is not
    assert mirrored.spec.mirror_axes == (0, 1)
    expected = np.zeros_like(plain(image)[0])
    subsets = [a for r in range(3) for a in itertools.combinations((1, 2), r)]  # after the channel axis
    assert len(subsets) == 4
    for axes in subsets:
        flipped = np.flip(image, axes) if axes else image
        probs = plain(np.ascontiguousarray(flipped))[0]
        expected += np.flip(probs, axes) if axes else probs
    probs, labels = mirrored(image)
    np.testing.assert_allclose(probs, expected / 4, rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs, plain(image)[0])  # the mirroring changed something
    assert labels.shape == image.shape[1:]
    # trained without rot90/flip: nothing to mirror, said once; a checkpoint from before mirror_axes: all axes
    from mtssl.data.augment import Augment
    from mtssl.engine.predictor import Predictor
    from mtssl.engine.spec import InferenceSpec

    assert Augment(["crop"], (8, 8, 8)).mirror_axes == () and Augment(["flip", "crop"], (8, 8)).mirror_axes == (0, 1)
    unmirrored = dataclasses.replace(plain.spec, mirror_axes=())
    with pytest.warns(UserWarning, match="trained without mirroring"):
        once = Predictor(plain.model, unmirrored, plain.device, tta=True)
    np.testing.assert_allclose(once(image)[0], plain(image)[0])
    old = {k: v for k, v in plain.spec.to_dict().items() if k != "mirror_axes"}
    assert InferenceSpec.from_dict(old).mirror_axes is None


def test_shipped_configs_list_show_and_train_by_name(tmp_path, capsys, monkeypatch):
    from mtssl.config import shipped_configs

    assert main(["config", "list"]) == 0
    listed = capsys.readouterr().out
    assert {"phantom_supervised", "phantom_dbisl", "la_cpu_supervised"} <= set(shipped_configs())
    assert all(name in listed for name in shipped_configs())
    assert main(["config", "show", "phantom_supervised"]) == 0
    shown = capsys.readouterr().out
    assert shown == shipped_configs()["phantom_supervised"].read_text()
    monkeypatch.chdir(tmp_path)  # no clone here: the name alone finds the shipped file
    args = ["train", "phantom_supervised", "--out", "run", "train.iterations=2", "data.num_train=4", "data.num_test=1"]
    assert main([*args, "train.progress=false", "data.size=[32,32,32]", "data.patch=[16,16,16]"]) == 0
    assert main(["config", "show", "phantom_supervisd"]) == 2
    assert "did you mean 'phantom_supervised'" in capsys.readouterr().err


def test_a_config_without_a_length_is_refused(tmp_path, capsys):
    from tests.engine.test_train import tiny_config

    cfg = tiny_config()
    del cfg["train"]["iterations"]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--dry-run"]) == 2
    assert "train.iterations is missing: say how long to train" in capsys.readouterr().err


def test_a_recipe_registered_in_your_own_module_trains_evaluates_and_loads(tmp_path, capsys, monkeypatch):
    from tests.engine.test_train import tiny_config

    (tmp_path / "my_blocks_23.py").write_text(
        textwrap.dedent(
            """
            from mtssl.recipes.base import Recipe, Term
            from mtssl.registry import RECIPES
            from mtssl.terms.supervised import Supervised

            @RECIPES.register("my_supervised_23")
            def my_supervised_23(dice: float = 1.0) -> Recipe:
                '''Dice + CE on the seg head, registered outside mtssl.'''
                return Recipe(tasks={"seg": {"task": "seg"}}, terms=(Term.of(Supervised("seg")),))
            """
        )
    )
    cfg = tiny_config(iterations=2)
    cfg["recipe"] = {"name": "my_supervised_23"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cfg.yaml", "--out", "run"]) == 2
    assert "unknown recipe 'my_supervised_23'" in capsys.readouterr().err
    assert main(["--import", "my_blocks_23", "train", "cfg.yaml", "--out", "run"]) == 0
    assert main(["--import", "my_blocks_23", "evaluate", "run"]) == 0
    assert main(["--import", "my_blocks_23", "predict", "run", "--out", "preds", *_phantom_npy(tmp_path)]) == 0
    assert mtssl.load("run").spec.output == "seg"  # in Python: import the module, then load
    assert main(["--import", "no_such_module_23", "list"]) == 2
    assert "--import no_such_module_23: ModuleNotFoundError" in capsys.readouterr().err


def _phantom_npy(folder):
    from mtssl.data.phantom import make_phantom

    image, _ = make_phantom((32, 32, 32), 1, seed=1)
    np.save(folder / "vol.npy", image[0])
    return [str(folder / "vol.npy")]
