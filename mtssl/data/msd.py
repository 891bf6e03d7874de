"""Medical Segmentation Decathlon style folders of NIfTI volumes (``dataset.json``, ``imagesTr``, ``labelsTr``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.data.cases import Case, CaseData, DataError, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.registry import DATASETS

__all__ = ["msd", "normalize_volume", "read_nifti"]


def _case_id(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume as ``(C, X, Y, Z)`` float32 (4D images: the last axis becomes channels) and its spacing."""
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataError(f"{path} is not a readable NIfTI file: {exc}") from exc
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    return data, spacing


def normalize_volume(image: np.ndarray, mode: str, window: tuple[float, float]) -> np.ndarray:
    """``(C, *S)`` volume: ``"zscore"`` per channel, or ``"ct"``: clipped to ``window`` and scaled to [0, 1]."""
    if mode == "ct":
        lo, hi = window
        return (np.clip(image, lo, hi) - lo) / (hi - lo)
    mean = image.mean(axis=tuple(range(1, image.ndim)), keepdims=True)
    std = image.std(axis=tuple(range(1, image.ndim)), keepdims=True)
    return (image - mean) / np.maximum(std, 1e-8)


@DATASETS.register("msd")
def msd(
    root: str,
    labeled: int | str | None = None,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    split_file: str | None = None,
    test_fraction: float = 0.2,
    normalization: Literal["zscore", "ct"] = "zscore",
    ct_window: tuple[float, float] = (-125.0, 275.0),
    num_classes: int | None = None,
    patch: tuple[int, int, int] = (96, 96, 96),
    augment: tuple[str | dict[str, Any], ...] = ("rot90", "flip", "crop"),
    fg_crop_prob: float = 0.0,
    preload: bool = False,
    seed: int = 1337,
) -> SegmentationData:
    """An MSD-style folder, loaded lazily with nibabel, keeping each volume's voxel spacing.

    The test cases come from ``split_file`` (JSON with ``"train"`` and ``"test"`` lists of case ids)
    or a seeded ``test_fraction`` of ``dataset.json``'s training cases; ``data.split.save(path)``
    records the choice beside a run. ``imagesTs`` has no labels, so it is not the test set.

    Args:
        root: the folder holding ``dataset.json``.
        labeled, selection, val, patch, augment, fg_crop_prob, seed: as :func:`mtssl.data.la.la`.
        split_file: a JSON split; without it the split is seeded.
        test_fraction: share of the training cases held out for testing when there is no split file.
        normalization: ``"zscore"`` per volume and channel, or ``"ct"``: clip to ``ct_window``, scale to [0, 1].
        ct_window: the CT window in HU.
        num_classes: foreground classes; default from ``dataset.json``'s ``labels``.
        preload: keep all volumes in memory (the default loads each on use, for data larger than memory).
    """
    base = Path(root)
    meta_path = base / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} not found: an MSD folder holds dataset.json, imagesTr/ and labelsTr/")
    meta = json.loads(meta_path.read_text())
    entries = {_case_id(e["image"]): e for e in meta.get("training", [])}
    if not entries:
        raise DataError(f"{meta_path} lists no training cases")
    classes = num_classes if num_classes is not None else max(len(meta.get("labels", {})) - 1, 1)

    def load(case_id: str) -> CaseData:
        entry = entries[case_id]
        image, spacing = read_nifti(base / entry["image"])
        label, _ = read_nifti(base / entry["label"])
        return CaseData(normalize_volume(image, normalization, ct_window).astype(np.float32), label[0], spacing)

    ids = list(entries)
    if split_file is not None:
        chosen = json.loads(Path(split_file).read_text())
        train_ids, test_ids = list(chosen["train"]), list(chosen["test"])
        unknown = [c for c in train_ids + test_ids if c not in entries]
        if unknown:
            raise DataError(f"split file {split_file} names unknown cases: {unknown[:5]}")
    else:
        order = np.random.default_rng(seed).permutation(len(ids))
        n_test = round(test_fraction * len(ids))
        test_ids = sorted(ids[i] for i in order[:n_test])
        train_ids = [c for c in ids if c not in test_ids]
    cases = {c: Case(c, lambda c=c: load(c)) for c in ids}
    split = select_split(train_ids, test_ids, labeled, selection, val, seed)
    return SegmentationData(
        [cases[c] for c in train_ids],
        [cases[c] for c in test_ids],
        split,
        num_classes=classes,
        spatial_dims=3,
        patch=patch,
        augment=augment,
        fg_crop_prob=fg_crop_prob,
        preload=preload,
        preprocessing={"normalization": normalization, "ct_window": list(ct_window)},
        physical_spacing=True,
    )
