"""Integer downsampling of whole cases, and the way back for scoring at the native resolution.

A CPU-scale protocol trains and predicts on volumes shrunk by an integer factor but scores the
prediction against the native label: the probabilities are upsampled to the native grid first,
so the metrics stay comparable with a full-resolution run's.

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

__all__ = ["downsample_case", "downsample_image", "upsample_probabilities"]


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
    native = data.label if keep_native else None
    return dataclasses.replace(
        data, image=small.numpy(), label=label, spacing=spacing, native_label=native, factor=data.factor * factor
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
