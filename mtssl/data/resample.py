"""Resampling to a target spacing, integer downsampling, and the way back for scoring at the native grid.

A data set whose cases differ in spacing is resampled to one target spacing (nnU-Net's
preprocessing); a CPU-scale protocol also shrinks volumes by an integer factor. Either way the
prediction is scored against the native label: the probabilities go back to the native grid first,
so the metrics stay comparable with a full-resolution run's.

Resampling to a spacing (:func:`resample_case`, :func:`resize`) is torch's linear interpolation
(``F.interpolate``, trilinear in 3D, bilinear in 2D, voxel centres aligned as ``align_corners=False``),
the same call there and back: the image is interpolated, the label as one-hot maps whose argmax is
kept (nnU-Net resamples its labels the same way, a class at a time). The new shape is each side
times ``spacing / target``, rounded (nnU-Net's rule). Torch rather than MONAI's ``Spacing``: MONAI is
an optional dependency, and the way back runs on the probabilities' device inside the evaluator.

Integer downsampling:

- image: the mean of each ``f^d`` block (the volume is edge-padded to a multiple of ``f``);
- label: the class holding most of each block (ties to the lower class);
- back: trilinear (bilinear in 2D) interpolation of the probabilities onto the padded native
  grid, each low-resolution voxel at the centre of its block, then the padding cropped away.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from mtssl.data.cases import CaseData, DataError

__all__ = [
    "downsample_case",
    "downsample_image",
    "resample_case",
    "resampled_shape",
    "resize",
    "to_native",
    "upsample_probabilities",
    "zoom_nearest",
]


def _pad_to_multiple(x: torch.Tensor, factor: int, spatial: int) -> torch.Tensor:
    """Edge-pad the last ``spatial`` dims of ``(N, C, *S)`` up to multiples of ``factor``."""
    pads: list[int] = []
    for n in reversed(x.shape[-spatial:]):
        pads += [0, (-n) % factor]
    return F.pad(x, pads, mode="replicate") if any(pads) else x


def downsample_image(image: torch.Tensor, factor: int) -> torch.Tensor:
    """``(C, *S)`` float image to ``(C, *ceil(S / factor))`` block means, edge-padded to a multiple of ``factor``."""
    if factor == 1:
        return image
    spatial = image.ndim - 1
    pool = F.avg_pool3d if spatial == 3 else F.avg_pool2d
    return pool(_pad_to_multiple(image[None].float(), factor, spatial), factor)[0]


def downsample_case(data: CaseData, factor: int, num_classes: int, keep_native: bool) -> CaseData:
    """``data`` shrunk by ``factor`` along every spatial axis; ``keep_native`` keeps the native label.

    Args:
        data: image ``(C, *S)``, label ``(*S)`` or None.
        factor: the integer factor, >= 1 (1 returns ``data`` unchanged).
        num_classes: foreground classes (labels lie in ``0..num_classes``).
        keep_native: store the native label as ``native_label`` (for test and validation cases).
    """
    if factor == 1:
        return data
    if not isinstance(factor, int) or factor < 1:
        raise DataError(f"downsample must be a positive integer factor, got {factor!r}")
    image = torch.from_numpy(np.ascontiguousarray(data.image, dtype=np.float32))
    spatial = image.ndim - 1
    if min(image.shape[1:]) < factor:
        raise DataError(f"downsample={factor} is larger than the volume's side {tuple(image.shape[1:])}")
    pool = F.avg_pool3d if spatial == 3 else F.avg_pool2d
    small = downsample_image(image, factor)
    label = None
    if data.label is not None:
        if data.label.size and int(data.label.max()) > num_classes:
            raise DataError(
                f"label values {np.unique(data.label)[:10].tolist()} lie outside 0..{num_classes}, so the label "
                f"cannot be downsampled by {factor} (a 0/255 mask? store the foreground as 1)"
            )
        onehot = F.one_hot(torch.from_numpy(data.label.astype(np.int64)), num_classes + 1).movedim(-1, 0).float()
        label = pool(_pad_to_multiple(onehot[None], factor, spatial), factor)[0].argmax(0).numpy().astype(np.uint8)
    spacing = tuple(s * factor for s in data.spacing)
    # a case resampled first keeps the native label it was given there
    native = data.native_label if data.native_label is not None else (data.label if keep_native else None)
    return dataclasses.replace(
        data,
        image=small.numpy(),
        label=label,
        spacing=spacing,
        native_label=native,
        factor=data.factor * factor,
        native_spacing=data.native_spacing or (data.spacing if native is not None else None),
    )


def upsample_probabilities(probs: torch.Tensor, native_shape: tuple[int, ...], factor: int) -> torch.Tensor:
    """``(K, *s)`` probabilities on the downsampled grid to ``(K, *native_shape)`` (see the module doc)."""
    if factor == 1:
        return probs
    padded = [n + (-n) % factor for n in native_shape]
    if list(probs.shape[1:]) != [p // factor for p in padded]:
        raise ValueError(f"probabilities {tuple(probs.shape)} do not match {native_shape} downsampled by {factor}")
    mode = "trilinear" if len(native_shape) == 3 else "bilinear"
    up = F.interpolate(probs[None].float(), size=padded, mode=mode, align_corners=False)[0]
    return up[(slice(None), *(slice(0, n) for n in native_shape))]


def resampled_shape(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> tuple[int, ...]:
    """The shape of a ``shape`` volume at ``spacing`` resampled to ``target``: each side times
    ``spacing / target``, rounded, at least 1 (nnU-Net's rule).

    >>> resampled_shape((100, 100, 20), (1.0, 1.0, 5.0), (2.0, 2.0, 2.5))
    (50, 50, 40)
    """
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target))


def resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(C, *S)`` float values to ``(C, *size)`` by linear interpolation (see the module doc)."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return F.interpolate(x[None].float(), size=tuple(size), mode=mode, align_corners=False)[0]


def resample_case(data: CaseData, target: tuple[float, ...], num_classes: int, keep_native: bool) -> CaseData:
    """``data`` resampled to the ``target`` spacing; ``keep_native`` keeps the native label to score against.

    A case already at ``target`` (within 1 %) is returned unchanged.
    """
    if len(target) != len(data.spacing) or any(t <= 0 for t in target):
        raise DataError(
            f"the target spacing {list(target)} must give {len(data.spacing)} positive sides, as the cases have"
        )
    target = tuple(float(t) for t in target)
    if all(abs(s - t) <= 0.01 * t for s, t in zip(data.spacing, target)):
        return data
    shape = tuple(data.image.shape[1:])
    size = resampled_shape(shape, data.spacing, target)
    image = resize(torch.from_numpy(np.ascontiguousarray(data.image, dtype=np.float32)), size).numpy()
    label = None
    if data.label is not None:
        if data.label.size and int(data.label.max()) > num_classes:
            raise DataError(
                f"label values {np.unique(data.label)[:10].tolist()} lie outside 0..{num_classes}, so the label "
                "cannot be resampled (a 0/255 mask? store the foreground as 1)"
            )
        onehot = F.one_hot(torch.from_numpy(data.label.astype(np.int64)), num_classes + 1).movedim(-1, 0)
        label = resize(onehot.float(), size).argmax(0).numpy().astype(np.uint8)
    return dataclasses.replace(
        data,
        image=image,
        label=label,
        spacing=target,
        native_label=data.label if keep_native else None,
        grid=size,
        native_spacing=tuple(data.spacing),
    )


def to_native(
    probs: torch.Tensor, native_shape: tuple[int, ...], factor: int, grid: tuple[int, ...] | None
) -> torch.Tensor:
    """``(K, *s)`` probabilities on the network's grid back to the native grid: up by the integer
    ``factor`` to the target-spacing ``grid`` (when the case was resampled), then resized to ``native_shape``."""
    if grid is None:
        return upsample_probabilities(probs, native_shape, factor)
    return resize(upsample_probabilities(probs, grid, factor), native_shape)


def _zoom_index(n: int, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices of ``m`` outputs from ``n`` inputs as ``scipy.ndimage.zoom(order=0)`` picks them,
    and which outputs it fills with 0 (its ``constant`` mode, where float error puts the last output
    just past the last input)."""
    scale = (n - 1) / (m - 1) if m > 1 else 0.0
    coords = torch.arange(m, dtype=torch.float64, device=device) * scale
    return torch.floor(coords + 0.5).long().clamp(0, n - 1), coords > n - 1


def zoom_nearest(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(C, *S)`` to ``(C, *size)`` by nearest neighbour, voxel for voxel what
    ``scipy.ndimage.zoom(x, size / S, order=0)`` gives (corners aligned; SSL4MIS zooms ACDC's slices
    to 256x256 and back this way), on the tensor's own device.

    Written here because no library reproduces it: torch's ``nearest`` and ``nearest-exact`` pick
    other source voxels, and scipy runs on the host only. scipy also sets an edge row to 0 when its
    coordinate lands a float's error past the last voxel; so does this, so that scores match.
    """
    out = x
    for axis, (n, m) in enumerate(zip(x.shape[1:], size), start=1):
        if n == m:
            continue
        index, outside = _zoom_index(n, m, x.device)
        out = out.index_select(axis, index)
        if outside.any():
            shape = [1] * out.ndim
            shape[axis] = m
            out = out.masked_fill(outside.view(shape), 0)
    return out
