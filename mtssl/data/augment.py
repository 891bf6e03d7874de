"""Per-sample augmentation with an explicit random generator (identical for any number of workers).

The literature's LA pipeline (UA-MT, DTC) is ``rot90`` (k in 0..3 over axes 0, 1), then a flip of
axis 0 or 1, then a random crop; a side not larger than the patch is first padded by
``(patch - side) // 2 + 3`` on each side.

SSL4MIS's 2D pipeline (ACDC; its ``RandomGenerator``) is ``rot_flip_or_rotate`` then ``zoom``: with
probability 1/2 a rot90 and a flip, else a rotation by a whole angle in ``[-20, 20)`` degrees (nearest
neighbour, the corners filled with 0), then the whole image zoomed to the patch (nearest neighbour,
``scipy.ndimage.zoom(order=0)``) instead of cropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtssl.data.cases import DataError

__all__ = ["AUGMENTATIONS", "Augment", "crop", "pad_for_crop", "rotate", "zoom_to"]


def pad_for_crop(image: np.ndarray, label: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pad like the reference where a side is <= the patch; returns whether it padded."""
    sides = label.shape
    if all(s > p for s, p in zip(sides, patch)):
        return image, label, False
    pads = [max((p - s) // 2 + 3, 0) if s <= p else 0 for s, p in zip(sides, patch)]
    spec = [(w, w) for w in pads]
    return np.pad(image, [(0, 0), *spec]), np.pad(label, spec), True


def crop(
    image: np.ndarray,
    label: np.ndarray,
    patch: Sequence[int],
    rng: np.random.Generator,
    foreground: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``patch`` of ``image`` ``(C, *S)`` and ``label`` ``(*S)``; around a foreground voxel if asked."""
    starts = []
    fg = np.argwhere(label > 0) if foreground else None
    centre = fg[rng.integers(len(fg))] if fg is not None and len(fg) else None
    for axis, (s, p) in enumerate(zip(label.shape, patch)):
        if centre is None:
            starts.append(int(rng.integers(0, s - p)))  # as the reference: the last start is never drawn
        else:
            starts.append(int(np.clip(centre[axis] - p // 2, 0, s - p)))
    window = tuple(slice(a, a + p) for a, p in zip(starts, patch))
    return image[(slice(None), *window)], label[window]


def rotate(image: np.ndarray, label: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``(C, H, W, ...)`` and ``(H, W, ...)`` by ``angle`` degrees in the plane of the first two
    spatial axes, as SSL4MIS's ``random_rotate``: ``scipy.ndimage.rotate(order=0, reshape=False)``."""
    from scipy import ndimage

    image = ndimage.rotate(image, angle, axes=(2, 1), order=0, reshape=False)
    return image, ndimage.rotate(label, angle, axes=(1, 0), order=0, reshape=False)


def zoom_to(image: np.ndarray, label: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` ``(C, *S)`` and ``label`` ``(*S)`` zoomed to ``size`` by nearest neighbour
    (``scipy.ndimage.zoom(order=0)``, as SSL4MIS zooms each ACDC slice to 256x256)."""
    from scipy import ndimage

    if tuple(label.shape) == tuple(size):
        return image, label
    factors = [n / s for n, s in zip(size, label.shape)]
    return ndimage.zoom(image, [1, *factors], order=0), ndimage.zoom(label, factors, order=0)


class Augment:
    """A configured pipeline: a list of ``"rot90"``, ``"flip"``, ``"crop"``, ``"rot_flip_or_rotate"``,
    ``"zoom"`` and ``{"noise": {...}}`` steps.

    Args:
        steps: names, or single-key mappings of a name to its options (``noise``: ``std``, ``clip``;
            ``rot_flip_or_rotate``: ``angle``, the largest rotation in degrees, 20 by default).
        patch: the crop size.
        fg_crop_prob: probability that a labeled sample's crop is centred on a foreground voxel.
    """

    def __init__(self, steps: Sequence[str | dict[str, Any]], patch: Sequence[int], fg_crop_prob: float = 0.0):
        self.steps: list[tuple[str, dict[str, Any]]] = []
        for step in steps:
            name, options = (step, {}) if isinstance(step, str) else next(iter(step.items()))
            if name not in AUGMENTATIONS:
                raise DataError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")
            self.steps.append((name, dict(options or {})))
        self.patch = tuple(patch)
        self.fg_crop_prob = fg_crop_prob
        self._warned_pad = False

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The spatial axes this pipeline mirrors (``rot90`` over axes 0, 1 and ``flip`` of axis 0 or
        1 both make those two mirror images of each other): where test-time mirroring stays in the
        training distribution, as nnU-Net keeps its inference mirror axes to the trained ones."""
        return (0, 1) if any(name in ("rot90", "flip", "rot_flip_or_rotate") for name, _ in self.steps) else ()

    @property
    def crops(self) -> bool:
        """Whether the pipeline crops the patch out of each case (else ``zoom`` resizes the whole case)."""
        return any(name == "crop" for name, _ in self.steps)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator, labeled: bool, case: str
    ) -> tuple[np.ndarray, np.ndarray]:
        for name, options in self.steps:
            if name == "rot90":
                k = int(rng.integers(0, 4))
                image, label = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k, axes=(0, 1))
            elif name == "flip":
                axis = int(rng.integers(0, 2))
                image, label = np.flip(image, axis=axis + 1), np.flip(label, axis=axis)
            elif name == "rot_flip_or_rotate":  # SSL4MIS's RandomGenerator: python's random, here the sample's rng
                if rng.random() < 0.5:
                    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
                    image, label = np.rot90(image, k, axes=(1, 2)), np.rot90(label, k, axes=(0, 1))
                    image, label = np.flip(image, axis=axis + 1), np.flip(label, axis=axis)
                else:
                    limit = int(options.get("angle", 20))
                    angle = int(rng.integers(-limit, limit))
                    image, label = rotate(np.ascontiguousarray(image), np.ascontiguousarray(label), angle)
            elif name == "zoom":
                image, label = zoom_to(np.ascontiguousarray(image), np.ascontiguousarray(label), self.patch)
            elif name == "crop":
                image, label, padded = pad_for_crop(image, label, self.patch)
                if padded and not self._warned_pad:
                    self._warned_pad = True
                    warnings.warn(
                        f"case {case}: a side of {label.shape} is not larger than the patch {self.patch}; "
                        "padding with zeros as the reference does (said once)",
                        stacklevel=2,
                    )
                fg = labeled and self.fg_crop_prob > 0 and rng.random() < self.fg_crop_prob
                image, label = crop(image, label, self.patch, rng, foreground=fg)
            else:  # noise
                std, clip = float(options.get("std", 0.1)), float(options.get("clip", 0.2))
                image = image + np.clip(rng.normal(0.0, std, image.shape), -clip, clip).astype(np.float32)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


AUGMENTATIONS = ("rot90", "flip", "crop", "rot_flip_or_rotate", "zoom", "noise")
