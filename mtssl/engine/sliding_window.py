"""Sliding-window inference with batched windows and accumulation on the device.

The windows are the literature's (DTC / UA-MT ``test_single_case``): along each axis the starts are
``min(i * stride, size - patch)`` for ``i in 0 .. ceil((size - patch) / stride)``, so the last window
is flush with the far edge; a side smaller than the patch is zero-padded symmetrically first.
Overlapping probabilities are averaged (or Gaussian-weighted).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["gaussian_weight", "slice_by_slice", "sliding_window", "window_starts"]


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Starts of the windows along one axis (the reference formula; ``size >= patch``)."""
    count = math.ceil((size - patch) / stride) + 1
    return [min(stride * i, size - patch) for i in range(count)]


def gaussian_weight(
    patch: Sequence[int], sigma_scale: float = 0.125, device: torch.device | None = None
) -> torch.Tensor:
    """A separable Gaussian importance map over the patch (sigma = patch * sigma_scale), max 1."""
    weight = torch.ones((), device=device)
    for n in patch:
        x = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        g = torch.exp(-0.5 * (x / (n * sigma_scale)) ** 2)
        weight = weight[..., None] * g
    return (weight / weight.max()).clamp_min(1e-3)


def sliding_window(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 8,
    blend: Literal["constant", "gaussian"] = "constant",
) -> torch.Tensor:
    """Predict a whole image window by window.

    Args:
        predictor: maps ``(n, C, *patch)`` windows to ``(n, K, *patch)`` probabilities.
        image: ``(C, *S)`` on the device the predictor runs on.
        patch: window size per spatial dim.
        stride: step per spatial dim.
        batch_size: windows per predictor call.
        blend: ``"constant"`` averages overlapping windows; ``"gaussian"`` weights their centres.

    Returns:
        ``(K, *S)`` float32 probabilities on the image's device.
    """
    nd = image.ndim - 1
    if len(patch) != nd or len(stride) != nd:
        raise ValueError(
            f"patch {tuple(patch)} and stride {tuple(stride)} need {nd} values for an image of {tuple(image.shape)}"
        )
    if blend not in ("constant", "gaussian"):
        raise ValueError(f"blend must be 'constant' or 'gaussian', got {blend!r}")
    size = image.shape[1:]
    pads = [max(p - s, 0) for s, p in zip(size, patch)]
    if any(pads):
        spec = []
        for p in reversed(pads):
            spec += [p // 2, p - p // 2]
        image = F.pad(image, spec)
    padded = image.shape[1:]
    starts = list(itertools.product(*(window_starts(s, p, st) for s, p, st in zip(padded, patch, stride))))
    weight = gaussian_weight(patch, device=image.device) if blend == "gaussian" else None
    total = None
    count = torch.zeros(padded, device=image.device)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        windows = torch.stack([image[(slice(None), *(slice(a, a + p) for a, p in zip(s, patch)))] for s in chunk])
        probs = predictor(windows).float()
        if total is None:
            total = torch.zeros((probs.shape[1], *padded), device=image.device)
        for s, prob in zip(chunk, probs):
            region = tuple(slice(a, a + p) for a, p in zip(s, patch))
            if weight is None:
                total[(slice(None), *region)] += prob
                count[region] += 1
            else:
                total[(slice(None), *region)] += prob * weight
                count[region] += weight
    out = total / count
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, size))
    return out[(slice(None), *crop)]


def slice_by_slice(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    stack: torch.Tensor,
    patch: Sequence[int],
    stride: Sequence[int],
    batch_size: int = 8,
    blend: Literal["constant", "gaussian"] = "constant",
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Predict a stack of 2D slices ``(C, D, H, W)`` with a 2D network, slice by slice along axis 0.

    With ``size`` (SSL4MIS's ACDC test), each slice is zoomed to ``size`` by nearest neighbour
    (``scipy.ndimage.zoom(order=0)`` exactly, :func:`mtssl.data.resample.zoom_nearest`), predicted, and
    its probabilities zoomed back the same way; nearest neighbour commutes with the argmax, so this
    equals zooming back the label map. Where ``size`` is the window, ``batch_size`` slices go through
    the network at once; otherwise each slice is slid over with :func:`sliding_window`.

    Returns:
        ``(K, D, H, W)`` float32 probabilities on the stack's device.
    """
    from mtssl.data.resample import zoom_nearest

    if stack.ndim != 4 or len(patch) != 2:
        raise ValueError(f"slice_by_slice takes a (C, D, H, W) stack and a 2D patch, got {tuple(stack.shape)}, {patch}")
    channels, depth, height, width = stack.shape
    slices = stack.movedim(1, 0)  # (D, C, H, W)
    if size is not None:
        slices = zoom_nearest(slices.reshape(depth * channels, height, width), tuple(size))
        slices = slices.reshape(depth, channels, *size)
    if tuple(slices.shape[2:]) == tuple(patch):
        probs = torch.cat([predictor(slices[i : i + batch_size]).float() for i in range(0, depth, batch_size)])
    else:
        probs = torch.stack([sliding_window(predictor, s, patch, stride, batch_size, blend) for s in slices])
    classes = probs.shape[1]
    if size is not None:
        probs = zoom_nearest(probs.reshape(depth * classes, *size), (height, width)).reshape(
            depth, classes, height, width
        )
    return probs.movedim(0, 1).contiguous()
