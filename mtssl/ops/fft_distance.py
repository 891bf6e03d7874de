"""Kernel sums ``S(x) = sum_y K(x - y) p(y)`` by FFT in float64: a window as wide as the patch at O(N log N).

The log-domain walk of :mod:`mtssl.ops.conv_distance` costs one term per voxel and window offset,
which a patch-wide window of the (non-separable) ``exp(-|r|/h)`` kernel makes millions per voxel.
A convolution theorem product costs a few FFTs of the zero-padded patch instead. It works on
probabilities, not log-probabilities, so the sums carry float64 round-off of about 1e-16 of
their largest value: :data:`FLOOR` (relative to the kernel's total mass) is where a sum stops
being trusted, and flooring there caps every soft distance (see :func:`distance_cap`).

Written by hand because no library offers a linear (not circular) FFT convolution with a
radial kernel in 2D and 3D on the tensor's device; ``torch.fft`` (MKL / pocketfft on the CPU,
cuFFT on CUDA) does the transforms and autograd their adjoints.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["FLOOR", "distance_cap", "fast_length", "fft_kernel_sum", "window_mass"]

# Float64 FFT round-off measured on 2 x 64x64x48 exp(-|r|/2) sums stays below 1e-14 of the kernel's
# mass; two decades above it, a sum is trusted to about 1 % (benchmarks/targets.py records the error).
FLOOR = 1e-12


def distance_cap(h: float, kernel: str) -> float:
    """The largest distance an FFT sum can express: ``h ln(1 / FLOOR)`` (exp), its square root (gauss).

    A signed distance reaches it (its two sums' ratio is at most ``1 / FLOOR``); a one-sided distance
    stops ``h ln(mass)`` short of it, at the floor ``FLOOR * mass`` (e.g. 45 voxels for exp at h = 2 in 3D).
    """
    d = h * math.log(1 / FLOOR)
    return d if kernel == "exp" else math.sqrt(d)


def fast_length(n: int) -> int:
    """The smallest length >= n whose only prime factors are 2, 3 and 5 (fast for every FFT library)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _reach(shape: tuple[int, ...], spacing: tuple[float, ...], radius: float | None) -> tuple[int, ...]:
    """Kernel half-width per axis: the window's radius or the patch, whichever is smaller."""
    if radius is None:
        return tuple(n - 1 for n in shape)
    return tuple(min(n - 1, math.floor(radius / s)) for n, s in zip(shape, spacing))


@functools.lru_cache(maxsize=8)
def _spectrum(
    padded: tuple[int, ...],
    reach: tuple[int, ...],
    spacing: tuple[float, ...],
    h: float,
    kernel: str,
    radius: float | None,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    """The kernel's rFFT on the padded grid (negative offsets wrapped to the end) and its total mass."""
    axes = []
    for p, r, s in zip(padded, reach, spacing):
        idx = torch.arange(p, device=device, dtype=torch.float64)
        offset = torch.where(idx <= r, idx, idx - p)
        offset = offset.masked_fill(offset.abs() > r, math.inf)  # beyond the reach: no weight
        axes.append(offset * s)
    grids = torch.meshgrid(*axes, indexing="ij")
    squared = sum(g.square() for g in grids)
    cost = squared.sqrt() if kernel == "exp" else squared
    if radius is not None:
        cost = cost.masked_fill(squared > radius**2, math.inf)
    weights = torch.exp(-cost / h)
    return torch.fft.rfftn(weights), float(weights.sum())


def fft_kernel_sum(
    p: torch.Tensor,
    h: float,
    *,
    kernel: str,
    spacing: tuple[float, ...],
    radius: float | None = None,
) -> tuple[torch.Tensor, float]:
    """``S = K * p`` over ``p``'s spatial dims, nothing outside the array, and the kernel's total mass.

    Args:
        p: ``(N, *S)`` float64 probabilities (or any non-negative weights), S of length 2 or 3.
        h: the kernel's scale, > 0.
        kernel: ``"exp"`` (``exp(-|r| / h)``) or ``"gauss"`` (``exp(-|r|^2 / h)``).
        radius: the window's radius in spacing units; ``None`` is the whole patch.
        spacing: voxel size per spatial dim.

    Returns:
        ``(N, *S)`` float64 sums, differentiable in ``p``, and the kernel's mass (its sum over the window).
    """
    shape = tuple(p.shape[1:])
    reach = _reach(shape, spacing, radius)
    # Linear, not circular: x - y spans -(n-1)..(n-1), and offsets past the reach carry no weight,
    # so n + reach samples keep every wrapped product at a zero of the kernel.
    padded = tuple(fast_length(n + r) for n, r in zip(shape, reach))
    spectrum, mass = _spectrum(padded, reach, spacing, float(h), kernel, radius, p.device)
    return _Convolve.apply(p, spectrum, padded), mass


def _convolve(x: torch.Tensor, spectrum: torch.Tensor, padded: tuple[int, ...]) -> torch.Tensor:
    """The linear convolution of ``(N, *S)`` with the kernel: rFFT zero-padded to ``padded``, product, crop."""
    dims = tuple(range(1, x.ndim))
    out = torch.fft.irfftn(torch.fft.rfftn(x, s=padded, dim=dims).mul_(spectrum), s=padded, dim=dims)
    return out[(slice(None), *(slice(0, n) for n in x.shape[1:]))]


class _Convolve(torch.autograd.Function):
    """``S = K * p``; the kernel is even, so the adjoint (the backward) is the same convolution of the gradient.

    One rFFT and one inverse each way, where autograd through ``torch.fft`` and the padding spends
    about twice as long (measured in benchmarks/targets.py's setting) on copies and complex adjoints.
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, spectrum: torch.Tensor, padded: tuple[int, ...]) -> torch.Tensor:
        ctx.save_for_backward(spectrum)
        ctx.padded = padded
        return _convolve(p, spectrum, padded)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple:
        (spectrum,) = ctx.saved_tensors
        return _convolve(grad, spectrum, ctx.padded), None, None


# Memoised constants (kernel spectra and window masses) per shape, setting and device: a run sees
# one or two patch shapes, and rebuilding them would add an FFT per call. A few MiB each (65 MiB of
# complex128 for a 112x112x80 patch's whole-patch spectrum), so only the last few are kept.
@functools.lru_cache(maxsize=8)
def window_mass(
    shape: tuple[int, ...],
    *,
    spacing: tuple[float, ...],
    h: float,
    kernel: str,
    radius: float | None,
    device: torch.device,
) -> torch.Tensor:
    """``K * 1``: the kernel's mass inside the array at each voxel, ``(*S)`` float64 (cached per setting).

    With ``p + q = 1`` (a probability and its complement) ``K * q = window_mass - K * p``, so a
    signed distance needs one FFT convolution, not two; both sums carry the same absolute round-off.
    """
    ones = torch.ones((1, *shape), dtype=torch.float64, device=device)
    return fft_kernel_sum(ones, h, kernel=kernel, radius=radius, spacing=tuple(spacing))[0][0]
