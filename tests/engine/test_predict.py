import json
import os

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml

import mtssl
from mtssl.cli import main
from mtssl.data.cases import DataError
from mtssl.data.phantom import make_phantom
from mtssl.engine.run import train_run
from tests.engine.test_train import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(tiny_config(iterations=20), out)
    return out


def test_predict_round_trips_nifti(run_dir, tmp_path, capsys):
    image, _ = make_phantom((32, 32, 32), 1, seed=123)
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.7, 0, 5.0], [0, 0, 2.0, 1.5], [0, 0, 0, 1]])
    source = tmp_path / "case.nii.gz"
    original = nib.Nifti1Image(image[0], affine)
    original.header.set_qform(affine, code=1)  # scanner
    original.header.set_sform(affine, code=4)  # MNI
    original.header.set_xyzt_units("mm", "sec")
    original.header["descrip"] = b"from the scanner"
    nib.save(original, source)
    assert main(["predict", str(run_dir), str(source), "--out", str(tmp_path / "pred"), "--probabilities"]) == 0
    pred = nib.load(tmp_path / "pred" / "case.nii.gz")  # the case's own name, as nnU-Net names predictions
    assert pred.shape == (32, 32, 32) and np.allclose(pred.affine, affine) and pred.get_data_dtype() == np.uint8
    prob = nib.load(tmp_path / "pred" / "case_prob.nii.gz")
    assert prob.shape == (32, 32, 32, 1) and prob.get_data_dtype() == np.float32
    for out in (pred, prob):  # the input's header, not only its affine
        assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 4)
        assert out.header.get_xyzt_units() == ("mm", "sec")
        assert np.allclose(out.header.get_qform(), affine) and np.allclose(out.header.get_sform(), affine)
    assert pred.header["descrip"] == b"from the scanner"
    # A sigmoid model's probabilities have no background channel, and the files say so.
    assert prob.header["descrip"] == b"channels: 1"
    channels = json.loads((tmp_path / "pred" / "case_prob.json").read_text())
    assert channels == {"activation": "sigmoid", "background_channel": False, "channels": ["1"]}
    probs, labels = mtssl.load(run_dir)(source)
    assert np.array_equal(np.asarray(pred.dataobj), labels) and probs.shape == (1, 32, 32, 32)
    _, from_array = mtssl.load(run_dir / "checkpoints" / "last.pt")(image[0])
    assert np.array_equal(from_array, labels)


def test_predict_h5(run_dir, tmp_path):
    image, _ = make_phantom((32, 32, 32), 1, seed=7)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["image"] = image[0]
    assert main(["predict", str(run_dir), str(tmp_path / "vol.h5"), "--out", str(tmp_path / "out")]) == 0
    with h5py.File(tmp_path / "out" / "vol.h5") as f:
        assert f["label"].shape == (32, 32, 32) and f["label"].dtype == np.uint8


def test_checkpoint_holds_the_inference_spec(run_dir):
    from mtssl.engine.checkpoint import load_checkpoint
    from mtssl.engine.spec import InferenceSpec

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    saved = state["inference"]
    assert saved["patch"] == [16, 16, 16] and saved["stride"] == [16, 16, 16] and saved["normalization"] == "none"
    assert saved["class_names"] == ["1"] and saved["num_classes"] == 1 and saved["output"] == "seg"
    spec = InferenceSpec.from_checkpoint(state)
    assert spec.patch == (16, 16, 16) and spec.to_dict() == saved  # a round trip through plain values
    # a checkpoint of mtssl 0.1 kept the same values as a "preprocessing" mapping
    assert InferenceSpec.from_checkpoint({"preprocessing": saved}) == spec
    with pytest.raises(ValueError, match="lacks patch"):
        InferenceSpec.from_dict({k: v for k, v in saved.items() if k != "patch"})


def test_la_train_then_evaluate_from_the_cli(la_root, tmp_path, capsys):
    """Real LA data, shortened for a CPU: a 4-filter V-Net, 32^3 crops, 3 iterations, 2 test cases."""
    cfg = {
        "recipe": {"name": "supervised"},
        "data": {"name": "la", "root": str(la_root), "labeled": 2, "patch": [32, 32, 32]},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 3, "log_every": 1, "progress": False},
        "eval": {"patch": [64, 64, 48], "stride": [64, 64, 48], "max_cases": 2},
    }
    path = tmp_path / "la.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "la_run")]) == 0
    metrics = json.loads((tmp_path / "la_run" / "metrics.json").read_text())
    assert metrics["cases"] == 2 and metrics["units"]["hd95"] == "voxels"
    assert main(["evaluate", str(tmp_path / "la_run"), "eval.lcc=false"]) == 0
    again = json.loads((tmp_path / "la_run" / "evaluations" / "eval.lcc=false" / "metrics.json").read_text())
    assert again["cases"] == 2 and "Dice %" in capsys.readouterr().out
    assert (tmp_path / "la_run" / "evaluations" / "eval.lcc=false" / "metrics.csv").read_text().count("\n") == 3


def test_read_input_errors(tmp_path):
    from mtssl.data.cases import DataError
    from mtssl.engine.predictor import read_input

    with pytest.raises(DataError, match="no such input file"):
        read_input(tmp_path / "missing.nii.gz")
    (tmp_path / "scan.dcm").write_bytes(b"DICM")
    with pytest.raises(DataError, match=r"cannot read .*scan\.dcm: use NIfTI"):
        read_input(tmp_path / "scan.dcm")


def test_read_input_rejects_damaged_and_non_numeric_files(tmp_path):
    from mtssl.data.cases import DataError
    from mtssl.engine.predictor import read_input

    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError, match=r"broken\.h5 is not readable"):
        read_input(tmp_path / "broken.h5")
    np.save(tmp_path / "words.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DataError, match=r"words\.npy has dtype <U1; expected real numbers"):
        read_input(tmp_path / "words.npy")
    np.save(tmp_path / "ok.npy", np.ones((4, 4, 4), np.int16))
    image, meta = read_input(tmp_path / "ok.npy")
    assert image.dtype == np.float32 and meta == {"format": "npy"}


BLOCK_TRAINING = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("mtssl.engine.trainer", "mtssl.engine.run"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Block())
"""


def test_load_and_evaluate_run_where_the_training_loop_cannot_be_imported(run_dir, tmp_path):
    import subprocess
    import sys

    code = BLOCK_TRAINING + (
        "import numpy as np, mtssl\n"
        "from mtssl.cli import main\n"
        f"probs, labels = mtssl.load({str(run_dir)!r})(np.zeros((32, 32, 32), np.float32))\n"
        f"assert main(['evaluate', {str(run_dir)!r}, '--out', {str(tmp_path / 'eval')!r}]) == 0\n"
        "print('ok', probs.shape, labels.shape, 'mtssl.engine.trainer' in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok (1, 32, 32, 32) (32, 32, 32) False" in done.stdout
    assert (tmp_path / "eval" / "metrics.json").is_file()


# --- Issue 23: predictions never collide, never write over an input, never over a file they did not write ---


def _h5(path, seed):
    image, _ = make_phantom((32, 32, 32), 1, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["image"] = image[0]


def test_la_layout_predictions_are_named_after_their_folders(run_dir, tmp_path, capsys):
    # LA's own layout: every case is <ID>/mri_norm2.h5, so the file names alone collide.
    cases = {cid: tmp_path / "LA" / cid / "mri_norm2.h5" for cid in ("A1", "B2", "C3")}
    for seed, path in enumerate(cases.values()):
        _h5(path, seed)
    assert main(["predict", str(run_dir), *map(str, cases.values()), "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"{cid}_mri_norm2.h5" for cid in cases]
    for cid, path in cases.items():  # each file holds its own case's prediction
        with h5py.File(tmp_path / "out" / f"{cid}_mri_norm2.h5") as f:
            assert np.array_equal(f["label"][()], mtssl.load(run_dir)(path)[1])


def test_inputs_that_would_write_one_file_are_refused_before_anything_is_written(run_dir, tmp_path, capsys):
    image, _ = make_phantom((32, 32, 32), 1, seed=3)
    for name in ("case.nii", "case.nii.gz"):
        nib.save(nib.Nifti1Image(image[0], np.eye(4)), tmp_path / name)
    args = ["predict", str(run_dir), str(tmp_path / "case.nii"), str(tmp_path / "case.nii.gz")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "case.nii and" in err and "case.nii.gz would both be written to" in err and "out/case.nii.gz" in err
    assert not (tmp_path / "out").exists()


def test_a_prediction_never_writes_over_an_input_or_an_existing_file(run_dir, tmp_path, capsys):
    image, _ = make_phantom((32, 32, 32), 1, seed=4)
    np.save(tmp_path / "x.npy", image[0])
    before = (tmp_path / "x.npy").read_bytes()
    # --out is the inputs' folder: x.npy's prediction would be x.npy itself
    assert main(["predict", str(run_dir), str(tmp_path / "x.npy"), "--out", str(tmp_path)]) == 2
    assert "would be written over the input" in capsys.readouterr().err
    assert (tmp_path / "x.npy").read_bytes() == before
    (tmp_path / "out").mkdir()
    np.save(tmp_path / "out" / "x.npy", image[0] * 2)  # a file of the user's where the prediction would go
    mine = (tmp_path / "out" / "x.npy").read_bytes()
    args = ["predict", str(run_dir), str(tmp_path / "x.npy"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "x.npy exist already; give another --out, or --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "x.npy").read_bytes() == mine
    assert main([*args, "--overwrite"]) == 0
    assert np.array_equal(np.load(tmp_path / "out" / "x.npy"), mtssl.load(run_dir)(image[0])[1])


def test_predict_refuses_nan_and_the_wrong_number_of_dims(run_dir, tmp_path, capsys):
    image, _ = make_phantom((32, 32, 32), 1, seed=5)
    volume = image[0].copy()
    volume[3, 4, 5] = np.nan  # one NaN voxel would spread through the windows' convolutions
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "nan.nii.gz")
    assert main(["predict", str(run_dir), str(tmp_path / "nan.nii.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "nan.nii.gz has 1 NaN or Inf values" in capsys.readouterr().err
    np.save(tmp_path / "slice.npy", image[0, :, :, 0])  # a 2D image for a 3D model
    assert main(["predict", str(run_dir), str(tmp_path / "slice.npy"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "slice.npy has shape (32, 32), but the model takes 3D images with 1 channel(s)" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_an_integer_image_reaches_the_unit_normalisation_in_its_own_dtype(run_dir):
    import dataclasses

    predictor = mtssl.load(run_dir)
    predictor.spec = dataclasses.replace(predictor.spec, normalization="unit")  # as an 8-bit 2D data set's
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 32)).astype(np.uint8)
    as_uint8, _ = predictor(image)
    as_fraction, _ = predictor(image.astype(np.float32) / 255)  # what "unit" makes of it: a float in [0, 1]
    np.testing.assert_allclose(as_uint8, as_fraction, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
    """A tiny 2D U-Net trained on the 2D phantom (z-scored images, rot90/flip augmentation)."""
    out = tmp_path_factory.mktemp("run2d")
    config = {
        "recipe": {"name": "supervised"},
        "data": {"name": "phantom", "spatial_dims": 2, "labeled": 2, "num_train": 4, "num_test": 1},
        "model": {"backbone": {"name": "unet", "features": [4, 8, 16, 32, 64]}},
        "train": {"iterations": 10, "batch_size": 2, "labeled_bs": 2, "progress": False, "log_every": 5},
    }
    config["data"].update(size=[32, 32], patch=[16, 16])
    train_run(config, out)
    return out


def _slice_reference(run, volume, axis, tta=False):
    """Each slice of ``volume`` predicted alone by the 2D path, from the volume normalised whole; the
    labels: the probabilities over 0.5, then the largest component of the volume (scipy, full connectivity)."""
    import dataclasses

    from scipy import ndimage

    from mtssl.engine.predictor import Predictor

    whole = mtssl.load(run)
    normalised = whole.normalize(volume[None])[0]
    plain = Predictor(whole.model, dataclasses.replace(whole.spec, normalization="none"), whole.device, tta=tta)
    probs = np.stack([plain(np.take(normalised, k, axis=axis))[0] for k in range(volume.shape[axis])], axis=1 + axis)
    components, n = ndimage.label(probs[0] > 0.5, structure=np.ones((3, 3, 3)))
    assert n >= 1  # something is predicted
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    return probs, (components == largest).astype(np.uint8)


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_a_2d_model_predicts_a_volume_slice_by_slice_along_its_coarsest_axis(run_2d, tmp_path, tta):
    image, _ = make_phantom((32, 32, 5), 1, seed=11)
    volume = image[0] * 3 + 1  # not z-scored: the predictor normalises the volume whole
    # a NIfTI whose third axis is the coarse one (ACDC's slices are 5-10 mm apart, 1.5 mm in-plane)
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 8.0, 1.0])), tmp_path / "vol.nii.gz")
    probs, labels = mtssl.load(run_2d, tta=tta)(tmp_path / "vol.nii.gz")
    ref_probs, ref_labels = _slice_reference(run_2d, volume, axis=2, tta=tta)
    assert probs.shape == (1, 32, 32, 5) and labels.shape == (32, 32, 5)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5)
    assert np.array_equal(labels, ref_labels)
    # an array has no spacing: its slices lie along axis 0, as in SSL4MIS's ACDC h5 files
    stack = np.ascontiguousarray(np.moveaxis(volume, 2, 0))
    probs0, labels0 = mtssl.load(run_2d, tta=tta)(stack)
    np.testing.assert_allclose(probs0, _slice_reference(run_2d, stack, axis=0, tta=tta)[0], atol=1e-5)
    assert np.array_equal(labels0, np.moveaxis(labels, 2, 0))


def test_predict_writes_a_2d_models_prediction_of_a_nifti_volume(run_2d, tmp_path):
    image, _ = make_phantom((32, 32, 4), 1, seed=3)
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    nib.save(nib.Nifti1Image(image[0], affine), tmp_path / "case.nii.gz")
    assert main(["predict", str(run_2d), str(tmp_path / "case.nii.gz"), "--out", str(tmp_path / "pred")]) == 0
    pred = nib.load(tmp_path / "pred" / "case.nii.gz")
    assert pred.shape == (32, 32, 4) and np.allclose(pred.affine, affine)
    assert np.array_equal(np.asarray(pred.dataobj), mtssl.load(run_2d)(tmp_path / "case.nii.gz")[1])
    with pytest.raises(DataError, match=r"takes 2D images with 1 channel\(s\) \(or volumes of them, slice by slice\)"):
        mtssl.load(run_2d)(np.zeros((3, 8, 8, 8), np.float32))  # three channels for a one-channel model
