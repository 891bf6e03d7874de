"""nnU-Net v2 raw datasets, read as they are: ``dataset.json``, ``imagesTr``/``labelsTr``, ``imagesTs``/``labelsTs``.

The layout (nnU-Net's ``dataset_format.md``)::

    Dataset001_LA/
      dataset.json   {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "atrium": 1},
                      "numTraining": 80, "file_ending": ".nii.gz"}
      imagesTr/<case>_0000.nii.gz   one file per channel: _0000, _0001, ...
      labelsTr/<case>.nii.gz        a training case without one is unlabeled
      imagesTs/<case>_0000.nii.gz   the test set, scored against labelsTs/<case>.nii.gz when present

A semi-supervised data set is one where some training cases have no label file: they join the
unlabeled pool. ``labels`` names the classes (background 0 and 1..K, consecutive), and those names
are what tables and ``metrics.json`` show.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.data.cases import Case, CaseData, DataError, read_json, read_list, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.data.msd import read_nifti
from mtssl.data.normalize import normalize_image
from mtssl.data.options import shared_options
from mtssl.data.resample import downsample_case, resample_case
from mtssl.registry import DATASETS

__all__ = ["NNUNetFolder", "nnunet", "read_channels", "read_volume"]

NIFTI_ENDINGS = (".nii.gz", ".nii")
ITK_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_ENDINGS = (".png", ".tif", ".tiff", ".bmp")  # nnU-Net's 2D natural images


def read_channels(path: Path, file_ending: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """One file as ``(c, *S)`` float32 channels and its spacing: a volume file holds one channel; a 2D
    image (PNG, TIFF, BMP, as nnU-Net's natural images) may hold several (RGB: 3), spacing 1."""
    if file_ending in IMAGE_ENDINGS:
        from mtssl.data.images2d import read_image

        image = read_image(path).astype(np.float32)
        return (image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)), (1.0, 1.0)
    volume, spacing = read_volume(path, file_ending)
    return volume[None], spacing


def read_volume(path: Path, file_ending: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """One channel (or label) file as ``(X, Y, Z)`` float32 and its spacing: NIfTI with nibabel;
    NRRD and MetaImage with SimpleITK (transposed to nibabel's x, y, z order)."""
    if file_ending in NIFTI_ENDINGS:
        data, spacing = read_nifti(path, 1)
        return data[0], spacing
    try:
        import SimpleITK as sitk
    except ImportError:
        raise DataError(
            f"{path}: reading {file_ending} files needs SimpleITK (pip install SimpleITK), or convert the "
            "dataset to .nii.gz"
        ) from None
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path} is not a readable {file_ending} file: {exc}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected one 3D channel per file, as nnU-Net stores them")
    array = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return array, tuple(float(s) for s in image.GetSpacing())


class NNUNetFolder:
    """What a raw nnU-Net v2 folder holds: its metadata, channels, classes and cases."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path} not found: an nnU-Net v2 dataset holds dataset.json, imagesTr/ and labelsTr/")
        meta = read_json(meta_path, "the nnU-Net dataset.json")
        if not isinstance(meta, dict) or not isinstance(meta.get("channel_names"), dict):
            raise DataError(
                f"{meta_path} has no 'channel_names' (an nnU-Net v2 dataset.json names each input channel: "
                '{"channel_names": {"0": "CT"}, ...}); for an MSD folder use data.name=msd'
            )
        self.meta = meta
        self.file_ending = str(meta.get("file_ending", ".nii.gz"))
        endings = (*NIFTI_ENDINGS, *ITK_ENDINGS, *IMAGE_ENDINGS)
        if self.file_ending not in endings:
            raise DataError(f"{meta_path}: file_ending {self.file_ending!r} is not one of {endings}")
        self.spatial_dims = 2 if self.file_ending in IMAGE_ENDINGS else 3
        self.channels = [str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int)]
        self.class_names = self._classes(meta.get("labels"), meta_path)

    @staticmethod
    def _classes(labels: Any, meta_path: Path) -> list[str]:
        """The foreground class names in class order, from ``labels`` (name -> value)."""
        if not isinstance(labels, dict) or not labels:
            raise DataError(f"{meta_path} has no 'labels' mapping (name -> value, with background 0)")
        if any(isinstance(v, (list, tuple)) for v in labels.values()):
            raise DataError(
                f"{meta_path}: region-based labels (a list of values per name) are not supported; "
                "give each class one value"
            )
        by_value = {int(v): str(k) for k, v in labels.items()}
        if sorted(by_value) != list(range(len(by_value))):
            raise DataError(f"{meta_path}: label values must be 0, 1, 2, ... consecutive, got {sorted(by_value)}")
        return [by_value[v] for v in range(1, len(by_value))]

    def cases(self, folder: str) -> dict[str, list[Path]]:
        """The case ids of ``imagesTr`` or ``imagesTs`` and each one's channel files, in channel order."""
        images = self.root / folder
        if not images.is_dir():
            return {}
        pattern = re.compile(rf"(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(self.file_ending)}")
        found: dict[str, dict[int, Path]] = {}
        for path in sorted(images.iterdir()):
            match = pattern.fullmatch(path.name)
            if match:
                found.setdefault(match["case"], {})[int(match["channel"])] = path
        cases = {}
        for case, files in found.items():
            # one file a channel; a 2D image file may hold them all (an RGB PNG as _0000)
            expected = list(range(len(self.channels))) if self.spatial_dims == 3 or len(files) > 1 else [0]
            if sorted(files) != expected:
                names = ", ".join(f"{case}_{c:04d}{self.file_ending}" for c in expected)
                raise DataError(
                    f"{images}: case {case} has channel files {sorted(files)}, but dataset.json names "
                    f"{len(self.channels)} channel(s) ({', '.join(self.channels)}): expected {names}"
                )
            cases[case] = [files[c] for c in expected]
        return cases

    def read_case(
        self, case: str, images: list[Path], label_folder: str | None, normalization: str, ct_window: Any
    ) -> CaseData:
        """A case's channel files stacked and normalised, and its label from ``label_folder`` (or none)."""
        arrays, spacing = [], None
        for path in images:
            array, spacing = read_channels(path, self.file_ending)
            bad = int(array.size - np.isfinite(array).sum())
            if bad:  # counted in the raw file: normalising would spread one NaN over the whole volume
                raise DataError(f"{path} has {bad} NaN or Inf values in the raw file; clean or re-export it")
            arrays.append(array)
        if any(a.shape[1:] != arrays[0].shape[1:] for a in arrays):
            raise DataError(f"case {case}: its channel files differ in shape {[a.shape[1:] for a in arrays]}")
        stacked = np.concatenate(arrays)
        if len(stacked) != len(self.channels):
            raise DataError(
                f"case {case}: {len(stacked)} channel(s) in its files, but dataset.json names {len(self.channels)} "
                f"({', '.join(self.channels)})"
            )
        image = normalize_image(stacked, normalization, ct_window)
        label = None
        if label_folder is not None:
            path = self.label_file(label_folder, case)
            if path is None:
                raise DataError(f"case {case}: no label {case}{self.file_ending} in {self.root / label_folder}")
            label = read_channels(path, self.file_ending)[0][0]
            if label.shape != stacked.shape[1:]:
                raise DataError(f"case {case}: label shape {label.shape} differs from its image's {stacked.shape[1:]}")
        return CaseData(image, label, spacing or (1.0,) * self.spatial_dims)

    def label_file(self, folder: str, case: str) -> Path | None:
        path = self.root / folder / f"{case}{self.file_ending}"
        return path if path.is_file() else None


@DATASETS.register("nnunet")
@shared_options("labeled", "selection", "val", "patch", "augment", "fg_crop_prob", "seed")
def nnunet(
    root: str,
    labeled: int | str | None = None,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    test_fraction: float = 0.2,
    normalization: Literal["zscore", "ct"] = "zscore",
    ct_window: tuple[float, float] = (-125.0, 275.0),
    patch: tuple[int, ...] | None = None,
    augment: tuple[str | dict[str, Any], ...] = ("rot90", "flip", "crop"),
    fg_crop_prob: float = 0.0,
    preload: bool = False,
    seed: int = 1337,
    downsample: int = 1,
    spacing: tuple[float, ...] | None = None,
) -> SegmentationData:
    """An nnU-Net v2 raw dataset (see the module doc), loaded lazily, keeping each volume's spacing
    unless a target ``spacing`` is given.

    Training cases with a file in ``labelsTr`` are labeled (``labeled`` picks among them: a count,
    the first N by default, a list file, or None for all); those without one are unlabeled. The
    test set is ``imagesTs`` scored against ``labelsTs``; without ``labelsTs`` a seeded
    ``test_fraction`` of the labeled cases is held out instead. A ``file_ending`` of ``.png``,
    ``.tif`` or ``.bmp`` makes it a 2D data set (nnU-Net's natural images: an RGB file is 3 channels).
    ``labeled`` counts among the cases that have a label file, in sorted case-id order; ``patch``
    defaults to 96^3 for volumes and 256^2 for 2D images.

    Args:
        root: the dataset folder (``Dataset001_Name``).
        test_fraction: labeled cases held out for testing when the folder has no ``labelsTs``.
        normalization: ``"zscore"`` per volume and channel, or ``"ct"``: clip to ``ct_window``, scale to [0, 1].
        ct_window: the CT window in HU.
        preload: keep all volumes in memory (the default loads each on use).
        downsample: shrink every volume by this integer factor (block means; the majority label) for
            a CPU-sized run; test and validation cases are scored against their native labels
            (:mod:`mtssl.data.resample`), as the CPU LA protocol does.
        spacing: resample every case to this voxel spacing (mm, in the files' axis order) before any
            downsampling, as nnU-Net does (``mtssl plan`` sets it when the cases' spacings differ);
            test and validation cases are scored on their native grid.
    """
    if spacing is not None and (len(spacing) not in (2, 3) or any(float(s) <= 0 for s in spacing)):
        raise DataError(f"spacing {spacing!r} must list a positive voxel size per spatial axis (mm)")
    if downsample < 1:
        raise DataError(f"downsample must be a positive integer factor (1 keeps the native grid), got {downsample}")
    folder = NNUNetFolder(root)
    train = folder.cases("imagesTr")
    if not train:
        raise DataError(
            f"{folder.root / 'imagesTr'} holds no <case>_0000{folder.file_ending} files (nnU-Net names each "
            "channel file <case>_<4-digit channel>)"
        )
    with_label = [c for c in train if folder.label_file("labelsTr", c)]
    without = [c for c in train if c not in with_label]
    if isinstance(labeled, str):
        missing = [c for c in read_list(labeled) if c in without]
        if missing:
            raise DataError(
                f"labeled list {labeled} names {missing[:5]}, which have no label in {folder.root / 'labelsTr'}"
            )
    if not with_label:
        raise DataError(f"{folder.root / 'labelsTr'} holds no label of an imagesTr case: at least one must be labeled")
    tests = {c: files for c, files in folder.cases("imagesTs").items() if folder.label_file("labelsTs", c)}
    if tests:
        test_ids, pool = list(tests), with_label
    else:
        order = np.random.default_rng(seed).permutation(len(with_label))
        test_ids = sorted(with_label[i] for i in order[: round(test_fraction * len(with_label))])
        pool = [c for c in with_label if c not in test_ids]
    split = select_split(pool, test_ids, labeled, selection, val, seed)
    if without:
        split = dataclasses.replace(
            split,
            unlabeled=split.unlabeled + tuple(without),
            how=split.how + f"; {len(without)} training cases without a label file unlabeled",
        )

    def load(case: str, images: list[Path], label_folder: str | None) -> CaseData:
        data = folder.read_case(case, images, label_folder, normalization, ct_window)
        keep = (case in split.val or case in split.test) and data.label is not None
        if spacing is not None:
            data = resample_case(data, tuple(spacing), len(folder.class_names), keep)
        return downsample_case(data, downsample, len(folder.class_names), keep)

    cases = [Case(c, lambda c=c: load(c, train[c], "labelsTr" if c in with_label else None)) for c in train]
    test_cases = (
        [Case(c, lambda c=c: load(c, tests[c], "labelsTs")) for c in test_ids]
        if tests
        else [c for c in cases if c.id in test_ids]
    )
    return SegmentationData(
        [c for c in cases if c.id not in test_ids],
        test_cases,
        split,
        num_classes=len(folder.class_names),
        spatial_dims=folder.spatial_dims,
        patch=patch or ((96, 96, 96) if folder.spatial_dims == 3 else (256, 256)),
        augment=augment,
        fg_crop_prob=fg_crop_prob,
        preload=preload,
        preprocessing={
            "normalization": normalization,
            "ct_window": list(ct_window),
            "downsample": downsample,
            "spacing": None if spacing is None else [float(s) for s in spacing],
        },
        physical_spacing=folder.spatial_dims == 3,  # PNGs carry no spacing: their distances are in pixels
        class_names=folder.class_names,
    )
