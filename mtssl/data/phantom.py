"""A deterministic synthetic data set, 3D or 2D, generated in code: no download needed.

Smooth random blob-shaped organs (1 or 3 classes) in MRI-like images: a textured background,
partial-volume blur, a smooth multiplicative bias field and Rician noise, then a per-case z-score.

Two appearances. ``fixed`` (the default): every case has the same contrast, noise and a mild bias
field, so two labeled cases already show what every test case looks like (an easy task: a few
hundred steps of supervised training reach about 98 Dice). ``varied`` (``make demo``'s): each case
draws how hard it is, ``t`` uniform in [0, 1], and its organ is smaller and off-centre; the bias
field's strength grows from 0 to 0.5 with ``t`` (intensity varying by up to e^(+-1) over the image,
which the per-case z-score does not remove), the organ's contrast from 0.25 to 0.6 and the noise
from 0.04 to 0.15. A couple of labeled cases then cover little of what the test cases look like,
while the unlabeled ones cover all of it.

``shifted`` (``make demo``'s) is ``varied`` with two changes that make the labeled few unlike the rest:
the labeled cases draw their ``t`` from the easy quarter of the range (``t / 4``: a weak bias field,
low contrast and noise), and every case's z-scored image is then scaled by a gain ``e^(u t)`` and
shifted by an offset ``1.5 v t`` (``u``, ``v`` uniform in [-1, 1], drawn per case), as if each case came
from a scanner of its own whose intensity scale no per-case normalisation had removed. The labeled
cases (``t <= 1/4``) then show at most a quarter of that shift; the unlabeled and test cases all of it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import ndimage

from mtssl.data.cases import Case, CaseData, DataError, select_split
from mtssl.data.dataset import SegmentationData
from mtssl.data.options import shared_options
from mtssl.registry import DATASETS

__all__ = ["make_phantom", "phantom", "shifted_appearance", "varied_appearance"]

_INTENSITY = (0.25, 0.85, 0.6, 1.0)  # background, class 1, 2, 3


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return field / max(field.std(), 1e-8)


def varied_appearance(index: int) -> dict[str, float]:
    """Case ``index``'s ``bias``, ``noise`` and ``contrast`` in the ``varied`` appearance (the module doc)."""
    t = float(np.random.default_rng(10_000 + index).uniform())
    return {"bias": 0.5 * t, "noise": 0.04 + 0.11 * t, "contrast": 0.25 + 0.35 * t}


def shifted_appearance(index: int, labeled: bool) -> dict[str, float]:
    """Case ``index``'s ``bias``, ``noise``, ``contrast``, ``gain`` and ``offset`` in the ``shifted``
    appearance (the module doc): a labeled case draws from the easy quarter of the ``varied`` range."""
    t = varied_appearance(index)["bias"] / 0.5 * (0.25 if labeled else 1.0)
    u, v = np.random.default_rng(77 + index).uniform(-1, 1, 2)  # the case's scanner: its own stream
    return {
        "bias": 0.5 * t,
        "noise": 0.04 + 0.11 * t,
        "contrast": 0.25 + 0.35 * t,
        "gain": float(np.exp(u * t)),
        "offset": float(1.5 * v * t),
    }


def _blob(rng: np.random.Generator, shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """An ellipsoid at ``centre`` with ``radii`` (in [-1, 1] coordinates), its surface wobbled by a smooth field."""
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = sum(((x - m) / a) ** 2 for x, m, a in zip(grid, centre, radii))
    return r + 0.25 * _smooth_field(rng, shape, sigma=max(shape) / 8) < 1


def make_phantom(
    shape: tuple[int, ...], classes: int, seed: int, appearance: dict[str, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One case: image ``(1, *shape)`` float32 (z-scored) and label ``shape`` uint8 with values 0..classes.

    ``appearance`` (``bias``, ``noise``, ``contrast``: :func:`varied_appearance`) draws one organ of the
    ``varied`` appearance instead of the ``fixed`` one; with a ``gain`` and an ``offset`` as well
    (:func:`shifted_appearance`), the z-scored image is then scaled by the gain and shifted by the offset."""
    if appearance is not None:
        if classes != 1:
            raise DataError("the varied phantom has one organ: classes 1")
        rng = np.random.default_rng(seed)
        # the varied organ: smaller and further off-centre than the fixed one
        centre, radii = rng.uniform(-0.25, 0.25, len(shape)), rng.uniform(0.25, 0.5, len(shape))
        label = _blob(rng, shape, centre, radii).astype(np.uint8)
        intensity = np.where(label > 0, _INTENSITY[0] + appearance["contrast"], _INTENSITY[0]).astype(np.float32)
        image, label = _image(rng, shape, label, intensity, appearance["bias"], appearance["noise"])
        if "gain" in appearance:
            image = (image * appearance["gain"] + appearance["offset"]).astype(np.float32)
        return image, label
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    # Organ centres spread around the middle so that three classes rarely cover each other.
    angles = rng.uniform(0, 2 * np.pi) + np.arange(classes) * 2 * np.pi / classes
    for c in range(classes):
        offset = 0.0 if classes == 1 else 0.35
        centre = rng.uniform(-0.15, 0.15, len(shape))
        centre[0] += offset * np.cos(angles[c])
        centre[1] += offset * np.sin(angles[c])
        radii = rng.uniform(0.45, 0.65, len(shape)) * (1.0 if classes == 1 else 0.55)
        label[_blob(rng, shape, centre, radii)] = c + 1
    intensity = np.take(np.asarray(_INTENSITY, np.float32), label)
    return _image(rng, shape, label, intensity, 0.15, 0.06)


def _image(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    label: np.ndarray,
    intensity: np.ndarray,
    bias: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Texture, partial-volume blur, a bias field of strength ``bias``, Rician noise of std ``noise``, z-score."""
    intensity += 0.05 * _smooth_field(rng, shape, sigma=1.5)  # tissue texture (in place: float32)
    intensity = ndimage.gaussian_filter(intensity, 0.8)  # partial-volume blur
    intensity *= np.exp(bias * _smooth_field(rng, shape, sigma=max(shape) / 3))  # bias field
    draws = rng.normal(0, noise, (2, *shape))
    image = np.sqrt((intensity + draws[0]) ** 2 + draws[1] ** 2)  # Rician, as MRI magnitude
    image = (image - image.mean()) / image.std()
    return image[None].astype(np.float32), label


@DATASETS.register("phantom")
@shared_options("labeled", "selection", "val", "patch", "augment", "fg_crop_prob", "seed")
def phantom(
    spatial_dims: Literal[2, 3] = 3,
    classes: Literal[1, 3] = 1,
    num_train: int = 16,
    num_test: int = 4,
    labeled: int | str | None = 4,
    size: tuple[int, ...] | None = None,
    patch: tuple[int, ...] | None = None,
    selection: Literal["first", "random"] = "first",
    val: float | str | None = None,
    augment: tuple[str | dict[str, Any], ...] = ("rot90", "flip", "crop"),
    fg_crop_prob: float = 0.0,
    seed: int = 0,
    appearance: Literal["fixed", "varied", "shifted"] = "fixed",
) -> SegmentationData:
    """Synthetic organs; the same seed always gives the same volumes.

    ``patch`` defaults to 48x48x32 in 3D and 64x64 in 2D, and ``seed`` also generates the cases.

    Args:
        spatial_dims: 3 (volumes) or 2 (images).
        classes: 1 organ or 3.
        num_train: training cases.
        num_test: test cases.
        size: volume size; 64x64x48 in 3D, 96x96 in 2D by default.
        appearance: ``fixed`` (every case alike, the default), ``varied`` (each case's bias field,
            contrast and noise drawn from a range; one organ) or ``shifted`` (``varied`` with the labeled
            cases from the easy end and each case's own intensity gain and offset: ``make demo``'s); see
            the module doc.
    """
    size = tuple(size or ((64, 64, 48) if spatial_dims == 3 else (96, 96)))
    patch = tuple(patch or ((48, 48, 32) if spatial_dims == 3 else (64, 64)))
    if len(size) != spatial_dims:
        raise DataError(f"size {size} must have {spatial_dims} values for spatial_dims={spatial_dims}")

    ids = [f"phantom{index:03d}" for index in range(num_train + num_test)]
    split = select_split(ids[:num_train], ids[num_train:], labeled, selection, val, seed)
    with_labels = {*split.labeled, *split.val}  # the shifted appearance draws these from the easy end

    def case(index: int) -> Case:
        def load() -> CaseData:
            look = None  # fixed
            if appearance == "varied":
                look = varied_appearance(index)
            elif appearance == "shifted":
                look = shifted_appearance(index, ids[index] in with_labels)
            image, label = make_phantom(size, classes, seed * 100_003 + index, look)
            return CaseData(image, label, (1.0,) * spatial_dims)

        return Case(ids[index], load)

    cases = [case(i) for i in range(num_train + num_test)]
    train, test = cases[:num_train], cases[num_train:]
    return SegmentationData(
        train,
        test,
        split,
        num_classes=classes,
        spatial_dims=spatial_dims,
        patch=patch,
        augment=augment,
        fg_crop_prob=fg_crop_prob,
    )
