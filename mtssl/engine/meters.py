"""What the training loop measures and reports: loss means between log records, finiteness, TensorBoard."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mtssl.engine.distributed import Dist

__all__ = ["LossMeans", "NonFiniteLossError", "TensorBoard", "check_finite"]


class LossMeans:
    """The step's loss parts summed on their device (no host sync) until the next log record."""

    def __init__(self, iteration: int) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.tick, self.start = 0, time.perf_counter(), iteration

    def add(self, parts: Mapping[str, torch.Tensor]) -> None:
        """Add one step's parts (an empty mapping: a skipped step, not counted)."""
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += bool(parts)

    def take(self, iteration: int, dist: Dist) -> tuple[dict[str, float], float, list[int]]:
        """The means since the last call (over the ranks under DDP), the iterations per second, and
        the window ``[first, last]`` of iterations they cover; then start afresh."""
        now, count = time.perf_counter(), max(self.count, 1)
        names = sorted(self.sums)
        means = torch.stack([self.sums[k] for k in names]) / count if names else torch.zeros(0)
        if dist.enabled and names:  # the mean over the ranks (the same names on every rank)
            torch.distributed.all_reduce(means)
            means /= dist.world_size
        speed = (iteration - self.start) / max(now - self.tick, 1e-9)
        window = [self.start + 1, iteration]
        self.sums, self.count, self.tick, self.start = {}, 0, now, iteration
        return dict(zip(names, means.tolist())), speed, window

    def record(
        self, iteration: int, lr: float, skipped: int, weights: Mapping[str, float], dist: Dist
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """The loss means (:meth:`take`) and the ``log.jsonl`` record of them at ``iteration``."""
        values, speed, window = self.take(iteration, dist)
        record = {
            "iteration": iteration,
            "lr": lr,
            "it_per_s": speed,
            "window": window,  # the iterations these means cover: after a resume, only those since the resume
            "skipped_steps": skipped,
            **{f"loss/{k}": v for k, v in values.items()},
            **{f"weight/{n}": w for n, w in weights.items()},
        }
        return values, record


class NonFiniteLossError(FloatingPointError):
    """A loss that is NaN or infinite stopped the run (``train.nan_policy: stop``), or every step was skipped."""


def check_finite(parts: Mapping[str, torch.Tensor], iteration: int, dist: Dist) -> None:
    """Raise :class:`NonFiniteLossError` naming the term when a loss part is NaN/Inf on any rank."""
    if not parts:
        return
    values = torch.stack([v.float() for v in parts.values()])
    bad_here = not bool(torch.isfinite(values).all())
    if not dist.any(bad_here):
        return
    hint = "lower the learning rate, enable grad_clip, set train.nan_policy=skip, or check the data"
    if not bad_here:
        raise NonFiniteLossError(f"a loss term is not finite on another rank at iteration {iteration}; {hint}")
    bad = next(k for k, v in parts.items() if not math.isfinite(float(v)))
    where = f" on rank {dist.rank}" if dist.enabled else ""
    raise NonFiniteLossError(f"loss term {bad!r} is {float(parts[bad])} at iteration {iteration}{where}; {hint}")


class TensorBoard:
    """Numeric values as TensorBoard scalars under ``folder`` (opened on first use; a no-op when disabled)."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder, self.enabled = folder, enabled
        self._writer: Any = None
        if enabled:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                from mtssl.config import ConfigError

                raise ConfigError(
                    "train.tensorboard needs the tensorboard package: pip install 'mtssl[tensorboard]' "
                    "(or set train.tensorboard=false; log.jsonl has the same numbers)"
                ) from None

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Write the numeric ``values`` (not ``iteration``) at ``step``."""
        if not self.enabled:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run drops what a killed one wrote past its checkpoint
            self._writer = SummaryWriter(str(self.folder), purge_step=step or None)
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("iteration",):
                self._writer.add_scalar(prefix + key, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
