"""Shared fixtures: real data from ../shared/data (or $MTSSL_DATA), restored once into a cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
LA_SHARD0 = {"train": 16, "test": 20}


def data_dir() -> Path:
    """The shared data folder: $MTSSL_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("MTSSL_DATA", ROOT.parent / "shared" / "data"))


def require_data(path: Path, what: str) -> Path:
    """Skip (or, under CI=true, fail) when ``path`` is missing."""
    if path.exists():
        return path
    msg = f"{what} not found at {path}; set MTSSL_DATA to the folder holding la/, acdc/ and isbi2012/"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg} (CI=true: data tests must run)")
    pytest.skip(msg)


def _cache_dir() -> Path:
    return Path(os.environ.get("MTSSL_CACHE", Path.home() / ".cache" / "mtssl"))


def _restore_la(name: str, counts: dict[str, int], shards: list[str], data_set: str = "la") -> Path:
    """The shards of ``data_set`` (LA or ACDC) restored into ``<cache>/<name>`` once (a complete folder is
    reused)."""
    source = require_data(data_dir() / data_set, f"the {data_set.upper()} data set")
    target = _cache_dir() / name
    lists = {split: target / f"{split}.list" for split in counts}
    if all(p.exists() and len(p.read_text().split()) == counts[split] for split, p in lists.items()):
        return target
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(source / "restore.py"), str(tmp), "--shards", *shards],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def la_root() -> Path:
    """LA shard 0 (16 training + 20 test cases) in the standard layout, restored once into a cache."""
    return _restore_la("la-shard0", LA_SHARD0, ["0"])


@pytest.fixture(scope="session")
def la_full_root() -> Path:
    """The whole LA set (80 training + 20 test cases), for the docs' commands, restored once."""
    return _restore_la("la-full", {"train": 80, "test": 20}, ["0", "1", "2"])


ACDC_COUNTS = {"train_slices": 1312, "val": 20, "test": 40}


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """ACDC in SSL4MIS's layout (1312 training slices, 20 validation and 40 test volumes), restored once."""
    return _restore_la("acdc", ACDC_COUNTS, ["0", "1"], "acdc")


def read_la(root: Path, split: str) -> list[tuple[str, torch.Tensor]]:
    """(case id, uint8 label) for every case of a split."""
    import h5py

    out = []
    for cid in (root / f"{split}.list").read_text().split():
        with h5py.File(root / cid / "mri_norm2.h5", "r") as f:
            out.append((cid, torch.from_numpy(f["label"][:])))
    return out


@pytest.fixture(scope="session")
def la_labels(la_root: Path) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """LA labels of shard 0, by split."""
    return {split: read_la(la_root, split) for split in LA_SHARD0}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


MSD_SPACING = (0.8, 0.7, 2.5)


@pytest.fixture
def msd_root(tmp_path):
    """A tiny MSD folder: 5 CT-like cases of 16x16x12 with spacing (0.8, 0.7, 2.5) and 2 labels."""
    import nibabel as nib

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    training = []
    for i in range(5):
        image = rng.normal(40, 200, (16, 16, 12)).astype(np.float32)
        label = np.zeros((16, 16, 12), np.uint8)
        label[4:10, 4:10, 3:8] = 1
        label[11:14, 11:14, 2:5] = 2
        affine = np.diag([*MSD_SPACING, 1.0])
        nib.save(nib.Nifti1Image(image, affine), tmp_path / "imagesTr" / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), tmp_path / "labelsTr" / f"case_{i}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"})
    meta = {"name": "tiny", "labels": {"0": "background", "1": "organ", "2": "tumour"}, "training": training}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path
