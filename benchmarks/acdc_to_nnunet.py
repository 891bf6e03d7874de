"""Build a 3D nnU-Net v2 raw dataset from ACDC in SSL4MIS's layout (``../shared/data/acdc/restore.py``).

The training volumes are rebuilt from SSL4MIS's training slices (``<volume>_slice_<k>.h5``, stacked in
slice order); the volumes of the first ``--labeled`` patients of ``train_slices.list`` (3, as the
protocol's first 68 slices) keep their labels, the rest are unlabeled. The 40 test volumes go to
``imagesTs``/``labelsTs``. SSL4MIS's arrays carry no spacing, so the volumes are written with unit
spacing; axes are (H, W, slice).

    python benchmarks/acdc_to_nnunet.py runs/Dataset003_ACDC --acdc runs/acdc_restored --labeled 3
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from common import convert_dataset, write_dataset_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc"
LABELS = {"background": 0, "right ventricle": 1, "myocardium": 2, "left ventricle": 3}


def _save(array: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(np.moveaxis(array, 0, -1), np.eye(4)), path)  # (D, H, W) -> (H, W, D)


def build(acdc: Path, out: Path, labeled_patients: int, tests: int | None = None) -> None:
    slices = (acdc / "train_slices.list").read_text().split()
    volumes: dict[str, list[str]] = {}
    for name in slices:
        volume = re.sub(r"_slice_\d+$", "", name)
        volumes.setdefault(volume, []).append(name)
    patients = list(dict.fromkeys(v.split("_frame")[0] for v in volumes))
    labeled = set(patients[:labeled_patients])
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for volume, names in volumes.items():
        names = sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))
        images, labels = [], []
        for name in names:
            with h5py.File(acdc / "data" / "slices" / f"{name}.h5", "r") as f:
                images.append(f["image"][()].astype(np.float32))
                labels.append(f["label"][()].astype(np.uint8))
        _save(np.stack(images), out / "imagesTr" / f"{volume}_0000.nii.gz")
        if volume.split("_frame")[0] in labeled:
            _save(np.stack(labels), out / "labelsTr" / f"{volume}.nii.gz")
    for volume in (acdc / "test.list").read_text().split()[:tests]:
        with h5py.File(acdc / "data" / f"{volume}.h5", "r") as f:
            _save(f["image"][()].astype(np.float32), out / "imagesTs" / f"{volume}_0000.nii.gz")
            _save(f["label"][()].astype(np.uint8), out / "labelsTs" / f"{volume}.nii.gz")
    description = f"ACDC in SSL4MIS's preprocessing; {labeled_patients} of {len(patients)} patients labeled"
    write_dataset_json(out, "ACDC", description, "MRI", LABELS, len(volumes), ".nii.gz")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write (must not exist)")
    parser.add_argument("--labeled", type=int, default=3, help="patients whose volumes keep their labels")
    parser.add_argument("--test", type=int, help="keep only the first N test volumes (default: all 40)")
    parser.add_argument("--acdc", type=Path, help="ACDC restored in SSL4MIS's layout")
    parser.add_argument("--src", type=Path, default=SHARED, help="the ACDC shards and restore.py, without --acdc")
    args = parser.parse_args()
    return convert_dataset(args.out, args.acdc, args.src, lambda acdc: build(acdc, args.out, args.labeled, args.test))


if __name__ == "__main__":
    raise SystemExit(main())
