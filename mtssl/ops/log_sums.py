"""The exact evaluation of the kernel sums in the log domain, offset by offset (``method="direct"``).

``log S(x) = logsumexp_y (log p(y) - cost(x - y))`` over a window, never ``log`` of an underflowed
sum: exact wherever the FFT path (:mod:`mtssl.ops.fft_distance`) would floor. The window is walked
in chunks of offsets inside custom autograd functions whose backward recomputes the weights chunk
by chunk, so memory stays a small multiple of the input whatever the window; the Gaussian is
separable and takes one pass per axis.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from mtssl.ops.lines import along_axis, pairwise_cost, row_chunks, stack_size

__all__ = ["log_sums_direct"]

# Log-mass below the cap's level, minus this margin, counts as none: the floor's own weight is then
# e**-20 of that of mass at the cap, so it does not bias distances inside the cap.
_FLOOR_MARGIN = 20.0


def _pad(x: torch.Tensor, pads: Sequence[int], value: float) -> torch.Tensor:
    """Pad the spatial dims of ``(N, *S)`` by ``pads[d]`` on both sides with a constant."""
    spec = []
    for p in reversed(pads):
        spec += [p, p]
    return F.pad(x, spec, value=value)


def _shifted(xp: torch.Tensor, pads: Sequence[int], offset: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """View of the padded ``xp`` such that ``view[:, x] = x_orig[:, x + offset]``."""
    index = (slice(None),) + tuple(slice(p + o, p + o + n) for p, o, n in zip(pads, offset, shape))
    return xp[index]


class _LogCorrelate(torch.autograd.Function):
    """``L(x) = logsumexp_o (a(x + o) - c_o)``, with nothing outside the array (log-mass -inf)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, offsets: tuple, costs: tuple) -> torch.Tensor:
        shape = a.shape[1:]
        pads = [max(abs(o[d]) for o in offsets) for d in range(len(shape))]
        ap = _pad(a, pads, float("-inf"))
        cost = torch.tensor(costs, device=a.device, dtype=a.dtype)
        view = (-1,) + (1,) * a.ndim
        step = stack_size(a.numel())
        out = None
        for start in range(0, len(offsets), step):
            offs = offsets[start : start + step]
            stack = torch.stack([_shifted(ap, pads, o, shape) for o in offs])
            stack.sub_(cost[start : start + len(offs)].view(view))
            part = torch.logsumexp(stack, dim=0)
            out = part if out is None else torch.logaddexp(out, part)
        ctx.save_for_backward(a, out)
        ctx.offsets, ctx.costs, ctx.pads = offsets, cost, pads
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple:
        # dL(x)/da(y) = exp(a(y) - c_o - L(x)) with y = x + o; the exponent is <= 0 by construction.
        a, out = ctx.saved_tensors
        shape = a.shape[1:]
        pads, offsets, cost = ctx.pads, ctx.offsets, ctx.costs
        gp = _pad(grad_out.contiguous(), pads, 0.0)
        lp = _pad(out, pads, float("inf"))  # outside the array: zero weight, zero gradient
        view = (-1,) + (1,) * a.ndim
        step = stack_size(a.numel())
        grad = torch.zeros_like(a)
        for start in range(0, len(offsets), step):
            neg = [tuple(-v for v in o) for o in offsets[start : start + step]]
            weight = torch.stack([_shifted(lp, pads, o, shape) for o in neg])
            weight.neg_().add_(a).sub_(cost[start : start + len(neg)].view(view)).exp_()
            weight.mul_(torch.stack([_shifted(gp, pads, o, shape) for o in neg]))
            grad.add_(weight.sum(dim=0))
        return grad, None, None


class _LogConvAxis(torch.autograd.Function):
    """``L[x] = logsumexp_y (a[y] - cost[x, y])`` along the last dim of ``(M, n)`` lines.

    Evaluated in row chunks of ``(rows, n, n)`` (bounded memory); the backward recomputes each
    chunk's weights ``exp(a[y] - cost[x, y] - L[x])`` (always <= 1) instead of storing them.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(a)
        chunks = row_chunks(a.shape[0], a.shape[1])
        for start in chunks:
            rows = slice(start, start + chunks.step)
            out[rows] = torch.logsumexp(a[rows, None, :] - cost, dim=-1)
        ctx.save_for_backward(a, cost, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple:
        a, cost, out = ctx.saved_tensors
        grad = torch.empty_like(a)
        chunks = row_chunks(a.shape[0], a.shape[1])
        for start in chunks:
            rows = slice(start, start + chunks.step)
            weight = (a[rows, None, :] - cost - out[rows, :, None]).exp_()
            grad[rows] = torch.einsum("rx,rxy->ry", grad_out[rows], weight)
        return grad, None


def _log_conv_axis(a: torch.Tensor, dim: int, cost: torch.Tensor) -> torch.Tensor:
    return along_axis(a, dim, lambda rows: _LogConvAxis.apply(rows, cost))


def _ball(radius: float, spacing: tuple[float, ...], shape: Sequence[int]) -> list[tuple[int, ...]]:
    reach = [min(n - 1, math.floor(radius / s)) for n, s in zip(shape, spacing)]
    grid = itertools.product(*(range(-r, r + 1) for r in reach))
    return [o for o in grid if math.dist([v * s for v, s in zip(o, spacing)], [0.0] * len(o)) <= radius]


def log_sums_direct(
    a: torch.Tensor,
    h: float,
    *,
    kernel: Literal["exp", "gauss"],
    radius: float | None,
    sp: tuple[float, ...],
    cap: float,
) -> torch.Tensor:
    """``log S = log sum_y K(x - y) exp(a(y))`` of ``(N, *S)`` log-masses, walked offset by offset in the log domain."""
    shape, nd = a.shape[1:], a.ndim - 1
    if kernel == "exp":
        offsets = _ball(cap, sp, shape)
        costs = tuple(math.dist([v * s for v, s in zip(o, sp)], [0.0] * nd) / h for o in offsets)
        return _LogCorrelate.apply(a.clamp_min(-cap / h - _FLOOR_MARGIN), tuple(offsets), costs)
    log_sum = a.clamp_min(-(cap**2) / h - _FLOOR_MARGIN)
    for axis, (n, s) in enumerate(zip(shape, sp)):
        reach = n - 1 if radius is None else min(n - 1, math.floor(radius / s))
        if 4 * reach + 2 < n:  # a short window: shifted copies, 2 * reach + 1 of them
            offsets = tuple(tuple(k if d == axis else 0 for d in range(nd)) for k in range(-reach, reach + 1))
            costs = tuple((k * s) ** 2 / h for k in range(-reach, reach + 1))
            log_sum = _LogCorrelate.apply(log_sum, offsets, costs)
            continue
        squared = pairwise_cost(n, s, a)  # a long window: the dense (n x n) pass per line
        cost = squared / h
        if radius is not None:  # truncate the window: no weight beyond the radius
            cost = cost.masked_fill(squared > radius**2, float("inf"))
        log_sum = _log_conv_axis(log_sum, axis + 1, cost)
    return log_sum
