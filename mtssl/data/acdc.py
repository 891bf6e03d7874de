"""ACDC (cardiac cine MRI) in SSL4MIS's 2D layout: training slices, validation and test volumes.

The protocol of SSL4MIS (``train_*_2D.py``, ``val_2D.py``, ``test_2D_fully.py``), which BCP, SS-Net,
AD-MT, ABD and CrossMatch report: a 2D network trains on the 1312 slices of ``train_slices.list``
(70 patients), labeled = the slices of its first 3 or 7 patients (its first 68 or 136 lines), and
is selected on the 20 volumes of ``val.list`` and tested on the 40 of ``test.list``, each volume
predicted slice by slice (every slice zoomed to the training size and back, nearest neighbour).
Labels: 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtssl.data.cases import Case, DataError, Split, read_list
from mtssl.data.dataset import SegmentationData
from mtssl.data.la import read_h5_case
from mtssl.registry import DATASETS

__all__ = ["CLASS_NAMES", "acdc", "patient_of", "slices_of_patients"]

CLASS_NAMES = ("right ventricle", "myocardium", "left ventricle")

HOW_TO_GET = (
    "ACDC is expected in SSL4MIS's layout: <root>/train_slices.list, val.list and test.list, the slices in "
    "<root>/data/slices/<volume>_slice_<k>.h5 and the volumes in <root>/data/<volume>.h5 (datasets 'image' "
    "and 'label'); where to get it: 'Getting LA and ACDC' in mtssl's docs, docs/data.md"
)


def patient_of(item: str) -> str:
    """The patient of a slice or volume id: ``patient099`` of ``patient099_frame01_slice_3``."""
    return item.split("_")[0]


def slices_of_patients(slices: Sequence[str], patients: int) -> list[str]:
    """The slices of the first ``patients`` patients in ``slices``' order (SSL4MIS's labeled split: its
    ``patients_to_slices`` table counts the lines those patients fill, 68 for 3 and 136 for 7)."""
    order: list[str] = []
    for item in slices:
        if patient_of(item) not in order:
            order.append(patient_of(item))
    if patients > len(order):
        raise DataError(f"labeled={patients} patients, but train_slices.list holds only {len(order)}")
    chosen = set(order[:patients])
    return [item for item in slices if patient_of(item) in chosen]


@DATASETS.register("acdc")
def acdc(
    root: str = "data/ACDC",
    labeled: int | str | None = 3,
    patch: tuple[int, int] = (256, 256),
    augment: tuple[str | dict[str, Any], ...] = ("rot_flip_or_rotate", "zoom"),
    val: bool = True,
) -> SegmentationData:
    """ACDC's 2D protocol: slices to train on, whole volumes to select and test on, 3 classes.

    Args:
        root: the folder ``restore.py`` wrote (``train_slices.list``, ``val.list``, ``test.list``, ``data/``).
        labeled: patients whose slices are labeled: the first N of ``train_slices.list`` (3 and 7 in the
            literature; 70 or None: every slice), or a list file of slice ids.
        patch: the size every training slice is zoomed to (nearest neighbour; SSL4MIS's 256x256) and
            every test slice is zoomed to and back from.
        augment: SSL4MIS's ``RandomGenerator`` by default (:mod:`mtssl.data.augment`).
        val: score the 20 volumes of ``val.list`` for model selection (``eval.select: val``).
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"ACDC data not found: {base} is not a folder. {HOW_TO_GET}")
    lists = {name: base / f"{name}.list" for name in ("train_slices", "val", "test")}
    for path in lists.values():
        if not path.is_file():
            raise DataError(f"ACDC data incomplete: {path} is missing. {HOW_TO_GET}")
    slices, val_ids, test_ids = (read_list(p) for p in lists.values())
    if not slices:
        raise DataError(
            f"{lists['train_slices']} is empty: the training slices are missing (SSL4MIS's data/slices folder; "
            "docs/data.md)"
        )
    for item in (*slices, *val_ids, *test_ids):
        if Path(item).name != item or item in (".", ".."):
            raise DataError(f"ACDC id {item!r} is not a file name; a list names one slice or volume per line")

    if labeled is None:
        chosen, how = list(slices), "every training slice labeled (70 patients)"
    elif isinstance(labeled, str):
        chosen = read_list(labeled)
        missing = [c for c in chosen if c not in set(slices)]
        if missing:
            raise DataError(f"labeled list {labeled} names slices not in train_slices.list: {missing[:5]}")
        how = f"labeled slices from {labeled}"
    else:
        if labeled < 1:
            raise DataError(f"labeled={labeled}: label at least one patient (3 and 7 are the literature's)")
        chosen = slices_of_patients(slices, labeled)
        how = f"the slices of the first {labeled} patients of train_slices.list labeled ({len(chosen)} slices)"
    picked = set(chosen)
    unlabeled = [c for c in slices if c not in picked]
    scored = list(val_ids) if val else []
    how += "; validation: the volumes of val.list" if val else "; no validation volumes"
    split = Split(tuple(chosen), tuple(unlabeled), tuple(scored), tuple(test_ids), how)

    def case(item: str, folder: Path) -> Case:
        return Case(item, lambda: read_h5_case(folder / f"{item}.h5", HOW_TO_GET))

    train = [case(i, base / "data" / "slices") for i in slices]
    train += [case(i, base / "data") for i in scored]
    return SegmentationData(
        train,
        [case(i, base / "data") for i in test_ids],
        split,
        num_classes=3,
        spatial_dims=2,
        patch=patch,
        augment=augment,
        preload=True,
        class_names=CLASS_NAMES,
        stacked=True,
        slice_size=patch,
    )
