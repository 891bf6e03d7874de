"""Build a 2D nnU-Net v2 raw dataset of PNGs from ISBI 2012 (``../shared/data/isbi2012``).

Images 0-19 of the labeled set are the training pool, the first ``--labeled`` (4) keeping their
masks; the rest of the pool and the 30 unlabeled images go to ``imagesTr`` without a label (unlabeled).
Images 20-29 are the test set (``imagesTs``/``labelsTs``), the contiguous block the ``images2d`` ISBI
config holds out. The membrane (0 in the source masks, 255 the cells) becomes class 1, as
nnU-Net's label files hold class numbers:

    python benchmarks/isbi_to_nnunet.py runs/Dataset002_ISBI --labeled 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import convert_dataset, write_dataset_json
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
TEST = range(20, 30)


def build(isbi: Path, out: Path, labeled: int) -> None:
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    def copy(source: Path, name: str, images: str, labels: str | None) -> None:
        Image.open(source).convert("L").save(out / images / f"{name}_0000.png")
        if labels is not None:
            mask = np.asarray(Image.open(isbi / "train" / "label" / source.name).convert("L"))
            Image.fromarray((mask < 128).astype(np.uint8)).save(out / labels / f"{name}.png")  # membrane: 1

    for i in range(20):
        copy(isbi / "train" / "image" / f"{i}.png", f"isbi_{i:03d}", "imagesTr", "labelsTr" if i < labeled else None)
    for i in TEST:
        copy(isbi / "train" / "image" / f"{i}.png", f"isbi_test_{i:03d}", "imagesTs", "labelsTs")
    unlabeled = sorted((isbi / "unlabeled").glob("*.png"), key=lambda p: int(p.stem))
    for path in unlabeled:
        copy(path, f"isbi_unlabeled_{int(path.stem):03d}", "imagesTr", None)
    description = f"ISBI 2012 EM membranes: {labeled} of 20 training images labeled, 30 more unlabeled"
    labels = {"background": 0, "membrane": 1}
    write_dataset_json(out, "ISBI2012", description, "EM", labels, 20 + len(unlabeled), ".png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the dataset folder to write (must not exist)")
    parser.add_argument("--labeled", type=int, default=4, help="training images (of 0-19) that keep their mask")
    parser.add_argument("--isbi", type=Path, default=SHARED, help="ISBI 2012 as in ../shared/data/isbi2012")
    args = parser.parse_args()
    return convert_dataset(args.out, args.isbi, args.isbi, lambda isbi: build(isbi, args.out, args.labeled))


if __name__ == "__main__":
    raise SystemExit(main())
