"""Chunking helpers shared by the exact and the soft distance transforms: bounded memory per step."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CHUNK_ELEMENTS", "along_axis", "pairwise_cost", "row_chunks", "stack_size"]

# Elements of one (rows, n, n) block evaluated at once: 2**24 floats is 64 MiB in float32.
CHUNK_ELEMENTS = 1 << 24


def along_axis(x: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to the ``(M, n)`` lines of ``x`` along ``dim`` and put the result back in place."""
    lines = x.movedim(dim, -1)
    shape = lines.shape
    return fn(lines.reshape(-1, shape[-1])).reshape(shape).movedim(-1, dim)


def pairwise_cost(n: int, step: float, like: torch.Tensor) -> torch.Tensor:
    """``((x - y) * step)^2`` for x, y in ``range(n)``, on ``like``'s device and dtype, shape ``(n, n)``."""
    idx = torch.arange(n, device=like.device, dtype=like.dtype)
    return ((idx[:, None] - idx[None, :]) * step).square()


def row_chunks(rows: int, n: int) -> range:
    """Starts of row chunks such that a ``(chunk, n, n)`` block holds at most ``CHUNK_ELEMENTS``."""
    step = max(1, CHUNK_ELEMENTS // (n * n))
    return range(0, rows, step)


def stack_size(numel: int) -> int:
    """How many shifted copies of a ``numel``-element tensor one stacked chunk may hold."""
    return max(1, CHUNK_ELEMENTS // max(numel, 1))
