"""The Left Atrium (LA 2018) benchmark in the community's layout (UA-MT, DTC, MC-Net, SS-Net, BCP)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.data.cases import Case, CaseData, DataError, numeric_array, read_list, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.data.normalize import normalize_image
from mtssl.data.options import shared_options
from mtssl.data.resample import downsample_case
from mtssl.registry import DATASETS

__all__ = ["la", "read_h5_case"]

HOW_TO_GET = (
    "LA is the 2018 Atrial Segmentation Challenge data in the UA-MT/DTC preprocessing (where to get it: "
    "'Getting LA and ACDC' in mtssl's docs, docs/data.md). The layout "
    "must be <root>/<ID>/mri_norm2.h5 (datasets 'image' float32 and 'label' uint8) with <root>/train.list "
    "and <root>/test.list naming one ID per line"
)


def read_h5_case(path: Path, how_to_get: str = HOW_TO_GET) -> CaseData:
    """Read ``image`` and ``label`` from an HDF5 case (LA's ``mri_norm2.h5``, an ACDC slice or volume),
    with clear errors for bad files; ``how_to_get`` ends the message of a missing one."""
    import h5py

    if not path.is_file():
        raise DataError(f"missing file {path}. {how_to_get}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("image", "label") if k not in f]
            if missing:
                raise DataError(f"{path} has no {missing[0]!r} dataset (it holds {sorted(f.keys())}); {how_to_get}")
            image, label = f["image"][()], f["label"][()]
    except DataError:
        raise
    except Exception as exc:  # h5py reports damage as OSError, RuntimeError, KeyError or ValueError
        raise DataError(f"{path} is not a readable HDF5 file ({exc}); restore or download it again") from exc
    image = numeric_array(image, f"{path}: 'image'")
    label = numeric_array(label, f"{path}: 'label'", integer=True)
    return CaseData(image[None].astype(np.float32), label.astype(np.uint8), (1.0,) * image.ndim)


@DATASETS.register("la")
@shared_options("labeled", "selection", "val", "patch", "augment", "fg_crop_prob", "seed")
def la(
    root: str = "data/LA",
    labeled: int | str | None = 16,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    patch: tuple[int, int, int] = (112, 112, 80),
    augment: tuple[str | dict[str, Any], ...] = ("rot90", "flip", "crop"),
    fg_crop_prob: float = 0.0,
    seed: int = 1337,
    downsample: int = 1,
    normalization: Literal["none", "zscore"] = "none",
) -> SegmentationData:
    """Left Atrium: ``train.list`` (labeled = its first N) and ``test.list``, preloaded into memory.

    Args:
        root: the folder holding ``train.list``, ``test.list`` and one folder per case.
        downsample: shrink every volume by this integer factor (block means; the majority label),
            for a CPU-scale protocol; test and validation cases are still scored against their native
            labels, the probabilities upsampled first (:mod:`mtssl.data.resample`).
    """
    if downsample < 1:
        raise DataError(f"downsample must be a positive integer factor (1 keeps the native grid), got {downsample}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"LA data not found: {base} is not a folder. {HOW_TO_GET}")
    lists = {split: base / f"{split}.list" for split in ("train", "test")}
    for path in lists.values():
        if not path.is_file():
            raise DataError(f"LA data incomplete: {path} is missing. {HOW_TO_GET}")
    train_ids, test_ids = read_list(lists["train"]), read_list(lists["test"])
    for case_id in (*train_ids, *test_ids):
        if Path(case_id).name != case_id or case_id in (".", ".."):
            raise DataError(
                f"LA case id {case_id!r} is not a folder name inside {base}; a list names one case folder per line"
            )

    split = select_split(train_ids, test_ids, labeled, selection, val, seed)
    scored = {*split.val, *test_ids}

    def read(path: Path) -> CaseData:
        data = read_h5_case(path)
        return dataclasses.replace(data, image=normalize_image(data.image, normalization))

    def case(case_id: str) -> Case:
        path = base / case_id / "mri_norm2.h5"
        return Case(case_id, lambda: downsample_case(read(path), downsample, 1, case_id in scored))

    return SegmentationData(
        [case(i) for i in train_ids],
        [case(i) for i in test_ids],
        split,
        num_classes=1,
        spatial_dims=3,
        patch=patch,
        augment=augment,
        fg_crop_prob=fg_crop_prob,
        preload=True,
        preprocessing={"normalization": normalization, "downsample": downsample},
    )
