"""Build an nnU-Net v2 raw dataset from the LA benchmark, as a user's own semi-supervised data would look.

The 80 training volumes go to ``imagesTr`` (``la_000`` ... ``la_079`` in ``train.list`` order), the
first ``--labeled`` of them (8) with a label in ``labelsTr`` and the rest with none (unlabeled); the
20 test volumes go to ``imagesTs`` with their labels in ``labelsTs``. LA's MRI is 0.625 mm
isotropic, written into each NIfTI's affine.

    python benchmarks/la_to_nnunet.py runs/Dataset001_LA --labeled 8
    python benchmarks/la_to_nnunet.py runs/Dataset001_LA --la ~/.cache/mtssl/la-full   # an LA folder already restored
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from common import convert_dataset, write_dataset_json

SPACING = 0.625  # mm, LA 2018's isotropic MRI resolution
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "la"


def write_case(out: Path, source: Path, name: str, images: str, labels: str | None) -> None:
    with h5py.File(source, "r") as f:
        image, label = f["image"][()].astype(np.float32), f["label"][()].astype(np.uint8)
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    nib.save(nib.Nifti1Image(image, affine), out / images / f"{name}_0000.nii.gz")
    if labels is not None:
        nib.save(nib.Nifti1Image(label, affine), out / labels / f"{name}.nii.gz")


def build(la: Path, out: Path, labeled: int, tests: int | None = None, trains: int | None = None) -> None:
    train = (la / "train.list").read_text().split()[:trains]
    test = (la / "test.list").read_text().split()[:tests]
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i, cid in enumerate(train):
        write_case(out, la / cid / "mri_norm2.h5", f"la_{i:03d}", "imagesTr", "labelsTr" if i < labeled else None)
    for i, cid in enumerate(test):
        write_case(out, la / cid / "mri_norm2.h5", f"la_test_{i:03d}", "imagesTs", "labelsTs")
    description = f"LA 2018 (UA-MT/DTC preprocessing): {labeled} of {len(train)} training volumes labeled"
    labels = {"background": 0, "left atrium": 1}
    write_dataset_json(out, "LA2018", description, "MRI", labels, len(train), ".nii.gz")
    (out / "source.json").write_text(json.dumps({"train": train, "test": test}, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write (must not exist)")
    parser.add_argument("--labeled", type=int, default=8, help="training volumes that keep their label")
    parser.add_argument("--test", type=int, help="keep only the first N test volumes (default: all 20)")
    parser.add_argument("--train", type=int, help="keep only the first N training volumes (default: all 80)")
    parser.add_argument("--la", type=Path, help="a restored LA folder (train.list, test.list, <ID>/mri_norm2.h5)")
    parser.add_argument("--src", type=Path, default=SHARED, help="the LA shards and restore.py, when --la is not given")
    args = parser.parse_args()
    return convert_dataset(
        args.out, args.la, args.src, lambda la: build(la, args.out, args.labeled, args.test, args.train)
    )


if __name__ == "__main__":
    raise SystemExit(main())
