"""Medical Segmentation Decathlon style folders of NIfTI volumes (``dataset.json``, ``imagesTr``, ``labelsTr``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.data.cases import Case, CaseData, DataError, read_json, read_list, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.data.normalize import normalize_image
from mtssl.data.options import shared_options
from mtssl.registry import DATASETS

__all__ = ["msd", "read_nifti", "remap_labels"]

log = logging.getLogger(__name__)


def _case_id(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti(path: Path, channels: int | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume as ``(C, X, Y, Z)`` float32 (4D images: the last axis becomes channels) and its spacing.

    ``channels`` (when given) is how many the file must hold: 1 for a label map or a one-modality image.
    """
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise DataError(f"{path} is not a readable NIfTI file: {exc}") from exc
    if data.ndim not in (3, 4):
        raise DataError(f"{path} has shape {data.shape}; expected a 3D volume (X, Y, Z) or 4D (X, Y, Z, channels)")
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    if channels is not None and data.shape[0] != channels:
        what = "a 3D volume" if channels == 1 else f"{channels} channels (dataset.json's modality)"
        raise DataError(f"{path} holds {data.shape[0]} channels (shape {tuple(img.shape)}); expected {what}")
    return data, spacing


def remap_labels(label: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """``label`` with each value ``k`` in ``mapping`` replaced by ``mapping[k]`` (all at once, so
    ``{1: 2, 2: 1}`` swaps); other values unchanged."""
    out = label.copy()
    for raw, new in mapping.items():
        out[label == raw] = new
    return out


def _inside(base: Path, relative: Any, where: str) -> Path:
    """``base / relative``, refusing a path that leaves ``base`` (``..``, an absolute path, a link out)."""
    if not isinstance(relative, str) or not relative:
        raise DataError(f"{where} must be a file path inside the data folder, got {relative!r}")
    path = (base / relative).resolve()
    if not path.is_relative_to(base.resolve()):
        raise DataError(
            f"{where} = {relative!r} leaves the data folder {base}; dataset.json may only name files inside it"
        )
    return path


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path} is not valid JSON ({exc}); an MSD dataset.json is a JSON object") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path} holds a JSON {type(meta).__name__}; an MSD dataset.json is a JSON object")
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(f"{meta_path} lists no training cases (a 'training' list of image/label entries)")
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(
                f"{meta_path}: training entry {i} ({entry!r:.80}) has no 'image'; each entry needs 'image' "
                "(and 'label', unless the case is unlabeled)"
            )
    return meta


def _read_split(path: Path) -> tuple[list[str], list[str]]:
    """A split file's ``train`` and ``test`` lists of case ids, with an error naming what is wrong."""
    chosen = read_json(path, "data.split_file")
    lists = [chosen.get(k) if isinstance(chosen, dict) else None for k in ("train", "test")]
    if not all(isinstance(x, list) and all(isinstance(c, str) for c in x) for x in lists):
        raise DataError(
            f"data.split_file {path} must be a JSON object with 'train' and 'test' lists of case ids, "
            'e.g. {"train": ["case_0", ...], "test": ["case_4"]}'
        )
    return list(lists[0]), list(lists[1])


def _class_count(meta: dict[str, Any], mapping: dict[int, int], num_classes: int | None) -> int:
    """Foreground classes: ``num_classes``, else the largest class ``mapping`` makes of dataset.json's
    labels, else the number of those labels less the background."""
    if num_classes is not None:
        return num_classes
    if mapping:
        raw = [int(k) for k in meta.get("labels", {})] or list(mapping)
        return max(max(mapping.get(v, v) for v in raw), 1)
    return max(len(meta.get("labels", {})) - 1, 1)


def _train_and_test(
    labeled_ids: list[str],
    every: list[str],
    unlabeled_ids: list[str],
    split_file: str | None,
    test_fraction: float,
    seed: int,
) -> tuple[list[str], list[str]]:
    """The labeled training pool and the test cases: from ``split_file``, or a seeded ``test_fraction``
    of the labeled cases (an unlabeled case is never tested)."""
    if split_file is None:
        order = np.random.default_rng(seed).permutation(len(labeled_ids))
        test_ids = sorted(labeled_ids[i] for i in order[: round(test_fraction * len(labeled_ids))])
        return [c for c in labeled_ids if c not in test_ids], test_ids
    train_ids, test_ids = _read_split(Path(split_file))
    unknown = [c for c in train_ids + test_ids if c not in every]
    if unknown:
        raise DataError(f"split file {split_file} names unknown cases: {unknown[:5]}")
    unlabeled_test = [c for c in test_ids if c in unlabeled_ids]
    if unlabeled_test:
        raise DataError(f"split file {split_file} tests {unlabeled_test[:5]}, which have no label")
    return [c for c in train_ids if c not in unlabeled_ids], test_ids


@DATASETS.register("msd")
@shared_options("labeled", "selection", "val", "patch", "augment", "fg_crop_prob", "seed")
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
    label_map: dict[int, int] | None = None,
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
        split_file: a JSON split; without it the split is seeded.
        test_fraction: share of the training cases held out for testing when there is no split file.
        normalization: ``"zscore"`` per volume and channel, or ``"ct"``: clip to ``ct_window``, scale to [0, 1].
        ct_window: the CT window in HU.
        num_classes: foreground classes; default from ``dataset.json``'s ``labels`` (or, with
            ``label_map``, the largest class it maps to).
        label_map: raw label value -> class, applied on load; values it does not name stay as they
            are (MONAI's ``MapLabelValue`` rule). ``{2: 1, 3: 1, 4: 1}`` merges BraTS's tumour labels
            1-4 into one "whole tumour" class; ``{2: 0}`` drops class 2 into the background.
        preload: keep all volumes in memory (the default loads each on use, for data larger than memory).
    """
    base = Path(root)
    meta_path = base / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path} not found: an MSD folder holds dataset.json, imagesTr/ and labelsTr/")
    meta = _read_meta(meta_path)
    entries = {_case_id(e["image"]): e for e in meta["training"]}
    paths = {
        _case_id(e["image"]): tuple(
            _inside(base, e[k], f"{meta_path} training entry {i} {k}") if k in e else None for k in ("image", "label")
        )
        for i, e in enumerate(meta["training"])
    }
    # Entries without a label are unlabeled cases: they join the unlabeled pool, never a loss on labels.
    unlabeled_ids = [c for c, (_, label) in paths.items() if label is None]
    mapping = {int(k): int(v) for k, v in (label_map or {}).items()}
    if any(v < 0 or v > 255 for v in mapping.values()):
        raise DataError(f"data.label_map {label_map} maps to values outside 0..255")
    classes = _class_count(meta, mapping, num_classes)
    modality = meta.get("modality")
    channels = len(modality) if isinstance(modality, dict) and modality else None
    empty_warned: set[str] = set()

    def load(case_id: str) -> CaseData:
        image_path, label_path = paths[case_id]
        image, spacing = read_nifti(image_path, channels)
        bad = int(image.size - np.isfinite(image).sum())
        if bad:  # counted in the raw file: normalising would spread one NaN over the whole volume
            raise DataError(
                f"{image_path} has {bad} NaN or Inf values of {image.size} in the raw file; clean or re-export it"
            )
        if label_path is None:
            return CaseData(normalize_image(image, normalization, ct_window), label=None, spacing=spacing)
        label, _ = read_nifti(label_path, 1)
        if mapping:
            label = remap_labels(label, mapping)
        if case_id in labeled_ids and not label.any() and case_id not in empty_warned:
            empty_warned.add(case_id)
            log.warning(
                "%s: the label of labeled case %s is all background; is it the right file?", label_path, case_id
            )
        return CaseData(normalize_image(image, normalization, ct_window), label[0], spacing)

    ids = [c for c in entries if c not in unlabeled_ids]
    if not ids:
        raise DataError(f"{meta_path}: no training entry has a 'label'; at least one case must be labeled")
    train_ids, test_ids = _train_and_test(ids, list(entries), unlabeled_ids, split_file, test_fraction, seed)
    if isinstance(labeled, str):
        named = [c for c in read_list(labeled) if c in unlabeled_ids]
        if named:
            raise DataError(f"labeled list {labeled} names {named[:5]}, whose dataset.json entries have no 'label'")
    cases = {c: Case(c, lambda c=c: load(c)) for c in entries}
    split = select_split(train_ids, test_ids, labeled, selection, val, seed)
    if unlabeled_ids:
        split = dataclasses.replace(
            split,
            unlabeled=split.unlabeled + tuple(unlabeled_ids),
            how=split.how + f"; {len(unlabeled_ids)} entries without a label unlabeled",
        )
    labeled_ids = {*split.labeled, *split.val}
    names = meta.get("labels", {})  # MSD's {"0": "background", "1": "left atrium"}: the tables show these
    named = not mapping and num_classes is None and isinstance(names, dict) and len(names) - 1 == classes
    class_names = [str(names.get(str(c), c)) for c in range(1, classes + 1)] if named else None
    return SegmentationData(
        [cases[c] for c in (*train_ids, *unlabeled_ids)],
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
        class_names=class_names,
    )
