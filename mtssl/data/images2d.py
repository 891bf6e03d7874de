"""Folders of 2D images (PNG/TIFF) with masks, an optional folder of unlabeled images, or 2D slices of volumes."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mtssl.data.cases import Case, CaseData, DataError, numeric_array, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.data.normalize import normalize_image
from mtssl.data.options import shared_options
from mtssl.registry import DATASETS

__all__ = ["image_to_channels", "images2d", "read_image"]

SUFFIXES = (".png", ".tif", ".tiff")
MASK_SUFFIXES = (*SUFFIXES, ".gif", ".bmp")  # lossless formats masks come in (DRIVE's are GIFs)
VOLUME_SUFFIXES = (".npy", ".nii", ".gz")


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def _list_images(folder: Path, suffixes: tuple[str, ...] = SUFFIXES) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=_natural)
    if not files:
        raise DataError(f"{folder} holds no {'/'.join(suffixes)} files")
    return files


def _stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """The files by case id (their stems), refusing two files of one stem (``3.png`` and ``3.tif``)."""
    found: dict[str, Path] = {}
    for path in files:
        if _stem(path) in found:
            raise DataError(
                f"{found[_stem(path)].name} and {path.name} in {path.parent} are both case {_stem(path)!r}; "
                "keep one of them (a case id is the file name without its suffix)"
            )
        found[_stem(path)] = path
    return found


@functools.lru_cache(maxsize=4)
def _read_volume(path: Path) -> np.ndarray:
    """A 3D volume from ``.npy`` or NIfTI (one read serves all of its slices)."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        if path.suffix == ".npy":
            volume = np.load(path)
        else:
            import nibabel as nib

            volume = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # numpy and nibabel raise several types for damaged files
        raise DataError(f"{path} is not a readable volume: {exc}") from exc
    return numeric_array(volume, str(path))


def read_image(path: Path) -> np.ndarray:
    """An image file as an array (H, W) or (H, W, channels), as stored."""
    from PIL import Image

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except OSError as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from exc


def read_mask(path: Path) -> np.ndarray:
    """A mask file as an (H, W) array of its values.

    A palette image (GIF, indexed PNG) gives its gray values when its palette is gray (DRIVE's
    GIFs: 0 and 255), and its palette indices otherwise (VOC's coloured masks: index = class).
    """
    from PIL import Image

    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with Image.open(path) as img:
            if img.mode == "P":
                used = np.unique(np.asarray(img))
                palette = np.asarray(img.getpalette() or [], dtype=np.int64).reshape(-1, 3)
                rgb = palette[used[used < len(palette)]]
                if len(rgb) and (rgb == rgb[:, :1]).all():
                    return np.asarray(img.convert("L"))
            mask = np.asarray(img)
    except OSError as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from exc
    return mask[..., 0] if mask.ndim == 3 else mask


def image_to_channels(image: np.ndarray, normalization: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` image to ``(C, H, W)`` float32, z-scored per channel or scaled to [0, 1]."""
    chw = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if normalization == "unit":
        return normalize_image(chw, "unit")
    return normalize_image(chw.astype(np.float32), "zscore")


@dataclasses.dataclass(frozen=True)
class _Reader:
    """Loads 2D cases: image files with masks of the same name, or slices of volumes."""

    label_folder: Path
    foreground_value: int | None
    normalization: str
    slice_axis: int | None
    mask_name: str | None = None

    def mask_path(self, stem: str, path: Path) -> Path:
        if self.mask_name is not None:
            number = re.search(r"\d+", stem)
            try:
                name = self.mask_name.format(stem=stem, number=number.group() if number else "")
            except (KeyError, IndexError, ValueError) as exc:
                raise DataError(f"data.mask_name {self.mask_name!r} may use {{stem}} and {{number}} only") from exc
            matches = [self.label_folder / name]
        else:  # the image's name, or its stem with any mask format
            matches = [self.label_folder / path.name, *(self.label_folder / f"{stem}{s}" for s in MASK_SUFFIXES)]
        found = next((m for m in matches if m.is_file()), None)
        if found is None:
            tried = ", ".join(m.name for m in matches[:3]) + (", ..." if len(matches) > 3 else "")
            raise DataError(
                f"case {stem}: no mask in {self.label_folder} (tried {tried}); name masks after their images, "
                "or set data.mask_name (e.g. '{number}_manual1.gif')"
            )
        return found

    def load(self, stem: str, path: Path, with_label: bool, index: int | None = None) -> CaseData:
        if index is None:
            image = read_image(path)
            mask = read_mask(self.mask_path(stem, path)) if with_label else None
        else:
            image = np.take(_read_volume(path), index, axis=self.slice_axis)
            mask = (
                np.take(_read_volume(self.mask_path(stem, path)), index, axis=self.slice_axis) if with_label else None
            )
        if mask is not None and self.foreground_value is not None:
            values = np.unique(mask)
            if len(values) > 1 and self.foreground_value not in values:
                raise DataError(
                    f"case {stem}: the mask holds the values {values[:10].tolist()} but not "
                    f"data.foreground_value={self.foreground_value}, so every label would be empty: set "
                    f"data.foreground_value to the foreground's value (e.g. {int(values[-1])}), or null when the "
                    "values are class ids"
                )
            mask = (mask == self.foreground_value).astype(np.uint8)
        return CaseData(image_to_channels(image, self.normalization), mask, (1.0, 1.0))

    def cases(self, stem: str, path: Path, with_label: bool, prefix: str = "") -> list[Case]:
        if self.slice_axis is None:
            return [Case(prefix + stem, lambda: self.load(stem, path, with_label))]
        depth = _read_volume(path).shape[self.slice_axis]
        return [Case(f"{prefix}{stem}:{k}", lambda k=k: self.load(stem, path, with_label, k)) for k in range(depth)]


@DATASETS.register("images2d")
@shared_options("labeled", "selection", "val", "patch", "augment", "fg_crop_prob", "seed")
def images2d(
    root: str,
    image_dir: str = "train/image",
    label_dir: str = "train/label",
    unlabeled_dir: str | None = None,
    test_cases: tuple[str, ...] = (),
    foreground_value: int | None = 255,
    num_classes: int = 1,
    normalization: Literal["zscore", "unit"] = "zscore",
    slice_axis: int | None = None,
    mask_name: str | None = None,
    labeled: int | str | None = None,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    patch: tuple[int, int] = (256, 256),
    augment: tuple[str | dict[str, Any], ...] = ("rot90", "flip", "crop"),
    fg_crop_prob: float = 0.0,
    seed: int = 1337,
) -> SegmentationData:
    """2D images with masks of the same file name; case ids are the file stems, in natural order.

    ``test_cases`` are held out (never trained on); the rest form the training pool, of which
    ``labeled`` are labeled; images in ``unlabeled_dir`` join the unlabeled pool as
    ``unlabeled/<stem>``. A mask pixel is foreground where it equals ``foreground_value``; with
    ``foreground_value: null`` the mask values are the class ids (0..num_classes).

    With ``slice_axis`` set, the files are 3D volumes (``.npy`` or NIfTI, image and mask of the same
    name) and every slice along that axis is a 2D case ``<stem>:<index>``; ``test_cases`` then name
    whole volumes, so no slice of a test volume is trained on.

    For ISBI 2012 (membrane = 0 in the masks, images 20-29 held out, 30 unlabeled images)::

        images2d(root="data/isbi2012", unlabeled_dir="unlabeled", foreground_value=0,
                 test_cases=[str(i) for i in range(20, 30)], labeled=4)

    Args:
        root: base folder; the ``*_dir`` options are relative to it.
        normalization: ``"zscore"`` per image and channel, or ``"unit"`` (divide by the dtype's maximum).
        mask_name: how an image's mask is named, as a format string of ``{stem}`` (the image's file
            name without its suffix) and ``{number}`` (the first number in it): DRIVE's masks are
            ``'{number}_manual1.gif'``. By default a mask has the image's stem and any of
            PNG, TIFF, GIF or BMP.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"image data set not found: {base} is not a folder")
    suffixes = VOLUME_SUFFIXES if slice_axis is not None else SUFFIXES
    images = _by_stem(_list_images(base / image_dir, suffixes))
    unknown = [c for c in test_cases if c not in images]
    if unknown:
        raise DataError(f"test_cases {unknown[:5]} have no image in {base / image_dir}")
    label_folder = base / label_dir

    reader = _Reader(label_folder, foreground_value, normalization, slice_axis, mask_name)
    cases = [c for stem in images if stem not in test_cases for c in reader.cases(stem, images[stem], True)]
    extra = []
    if unlabeled_dir is not None:
        for stem, path in _by_stem(_list_images(base / unlabeled_dir, suffixes)).items():
            extra += reader.cases(stem, path, False, prefix="unlabeled/")
    tests = [c for stem in test_cases for c in reader.cases(stem, images[stem], True)]
    split = select_split([c.id for c in cases], [c.id for c in tests], labeled, selection, val, seed)
    split = dataclasses.replace(split, unlabeled=split.unlabeled + tuple(c.id for c in extra))
    if extra:
        split = dataclasses.replace(split, how=split.how + f"; {len(extra)} images from {unlabeled_dir} unlabeled")
    return SegmentationData(
        cases + extra,
        tests,
        split,
        num_classes=num_classes,
        spatial_dims=2,
        patch=patch,
        augment=augment,
        fg_crop_prob=fg_crop_prob,
        preload=True,
        preprocessing={"normalization": normalization, "label_values": _label_values(foreground_value, num_classes)},
    )


def _label_values(foreground_value: int | None, num_classes: int) -> tuple[int, int] | None:
    """The mask values of background and foreground, for predictions written as the masks are (None: class ids)."""
    if foreground_value is None or num_classes != 1:
        return None
    return (255 if foreground_value == 0 else 0, foreground_value)
