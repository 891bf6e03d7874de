"""Exact Euclidean distance transforms and the DTC signed-distance target, on the tensor's device."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from mtssl.ops.boundary import boundary
from mtssl.ops.checks import check_mask, check_spacing
from mtssl.ops.lines import along_axis, pairwise_cost, row_chunks

__all__ = ["edt", "signed_distance"]

Backend = Literal["auto", "torch", "scipy"]


def _diagonal(shape: Sequence[int], spacing: tuple[float, ...]) -> float:
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


def _min_plus_along(f: torch.Tensor, dim: int, step: float) -> torch.Tensor:
    """``out[x] = min_y f[y] + ((x - y) * step)^2`` along ``dim``: one exact separable EDT pass.

    Brute force over the axis, evaluated in row chunks so the (rows, n, n) block stays bounded.
    Felzenszwalb's lower envelope is sequential per line; this is one parallel reduction per chunk.
    """
    n = f.shape[dim]
    if n == 1:
        return f
    cost = pairwise_cost(n, step, f)  # (x, y)

    def one_pass(lines: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(lines)
        chunks = row_chunks(lines.shape[0], n)
        for start in chunks:
            rows = slice(start, start + chunks.step)
            out[rows] = (lines[rows, None, :] + cost).amin(dim=-1)
        return out

    return along_axis(f, dim, one_pass)


def _edt_torch(mask: torch.Tensor, spacing: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    inf = torch.tensor(float("inf"), device=mask.device, dtype=dtype)
    f = torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), inf)
    for axis, step in enumerate(spacing):
        f = _min_plus_along(f, axis + 1, step)
    return f.sqrt()


def _edt_scipy(mask: torch.Tensor, spacing: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    from scipy import ndimage  # the host is the device here

    arr = mask.detach().cpu().numpy()
    out = torch.empty(mask.shape, dtype=torch.float64)
    for b in range(arr.shape[0]):
        if arr[b].any():
            out[b] = torch.from_numpy(ndimage.distance_transform_edt(~arr[b], sampling=spacing))
        else:
            out[b] = float("inf")
    return out.to(device=mask.device, dtype=dtype)


def edt(
    mask: torch.Tensor,
    spacing: Sequence[float] | float | None = None,
    *,
    backend: Backend = "auto",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Exact Euclidean distance from every voxel to the nearest foreground voxel.

    ``edt(mask)[b, x] = min_{y: mask[b, y]} |(x - y) * spacing|``, 0 on foreground voxels; this
    is scipy's ``distance_transform_edt(~mask, sampling=spacing)`` per sample.

    The torch backend runs separable min-plus passes, one per axis (exact, like Felzenszwalb's
    algorithm, but as parallel reductions); CUDA uses it. On CPU, ``"auto"`` dispatches to scipy,
    since the host is then the device.

    A sample with no foreground voxel has no defined distance: it gets the length of the array's
    diagonal in spacing units (an upper bound on any distance inside the array) everywhere.

    Args:
        mask: ``(B, H, W)`` or ``(B, D, H, W)``; nonzero is foreground.
        spacing: voxel size per spatial dim (or one number for all); voxels when ``None``.
        backend: ``"auto"``, ``"torch"`` or ``"scipy"``.
        dtype: floating dtype of the result.

    Returns:
        ``(B, *S)`` distances of dtype ``dtype`` on the mask's device.

    Example:
        >>> m = torch.tensor([[0, 0, 1, 0]], dtype=torch.bool)[:, None, :].expand(1, 2, 4)
        >>> edt(m, backend="torch")[0, 0]
        tensor([2., 1., 0., 1.])
    """
    nd = check_mask(mask)
    sp = check_spacing(spacing, nd)
    if backend not in ("auto", "torch", "scipy"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'scipy', got {backend!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    mask = mask.bool()
    use_scipy = backend == "scipy" or (backend == "auto" and mask.device.type == "cpu")
    dist = _edt_scipy(mask, sp, dtype) if use_scipy else _edt_torch(mask, sp, dtype)
    cap = torch.tensor(_diagonal(mask.shape[1:], sp), device=mask.device, dtype=dtype)
    return torch.where(torch.isinf(dist), cap, dist)


def signed_distance(
    mask: torch.Tensor,
    *,
    backend: Backend = "auto",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-sample normalised signed distance in [-1, 1], negative inside: DTC's ``compute_sdf``.

    ``sdf = minmax(edt(mask)) - minmax(edt(~mask))``, i.e. the normalised distance outside the
    object minus the normalised distance inside it, with skimage's inner boundary
    (``find_boundaries(mode="inner")``, see :func:`mtssl.ops.boundary`) set to 0.
    A sample with no foreground is 0 everywhere (as DTC); a sample that is all foreground is -1
    everywhere (DTC's code divides 0 by 0 there).

    Reference: Luo et al., "Semi-supervised Medical Image Segmentation through Dual-task
    Consistency", AAAI 2021 (HiLab-git/DTC, ``compute_sdf``).

    Args:
        mask: ``(B, H, W)`` or ``(B, D, H, W)``; nonzero is foreground.
        backend: distance backend, as in :func:`edt`.
        dtype: floating dtype of the result.

    Returns:
        ``(B, *S)`` signed distance on the mask's device.

    Example:
        >>> m = torch.zeros(1, 1, 7, dtype=torch.bool); m[..., 2:5] = True
        >>> signed_distance(m)[0, 0]
        tensor([ 1.0000,  0.5000,  0.0000, -1.0000,  0.0000,  0.5000,  1.0000])
    """
    check_mask(mask)
    fg = mask.bool()
    # One batched call: distance to the object (0 inside), then to the background (0 outside).
    outside, inside = edt(torch.cat([fg, ~fg]), backend=backend, dtype=dtype).chunk(2)
    sdf = _minmax(outside) - _minmax(inside)
    sdf = sdf.masked_fill(boundary(fg, "inner"), 0.0)
    dims = tuple(range(1, fg.ndim))
    has_fg = fg.any(dim=dims, keepdim=True)
    has_bg = (~fg).any(dim=dims, keepdim=True)
    degenerate = torch.where(has_fg, -1.0, 0.0).to(dtype)
    return torch.where(has_fg & has_bg, sdf, degenerate)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-sample ``(x - min) / (max - min)``; a constant sample maps to 0 (callers mask it)."""
    dims = tuple(range(1, x.ndim))
    lo = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - lo
    return (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
