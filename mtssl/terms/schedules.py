"""Weight schedules for loss terms: a number (constant), or ``{schedule: ..., ...}``.

- ``sigmoid`` (the literature's ramp-up, UA-MT / DTC / MC-Net):
  ``c * exp(-5 (1 - min(t, L) / L)^2)`` with ``t = iteration // divisor`` (150) and ``L = length`` (40);
  at iteration 0 it is ``c * e^-5``.
- ``linear``: from ``start`` to ``c`` over ``length`` iterations, then ``c``.
- ``constant``: ``c``.

``until`` (a fraction of the run, 0 to 1) sets a ramp's end at the same point of any run, in place of
``divisor`` (sigmoid: ``divisor = round(until * iterations / length)``) or ``length`` (linear:
``length = round(until * iterations)``); the trainer fixes it for its run (:meth:`Schedule.for_run`).
At ``until: 1`` a 6000-iteration run gets the literature's divisor 150, exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

from mtssl.config import ConfigError, build_dataclass

__all__ = ["Schedule", "build_schedule", "sigmoid_rampup"]


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - clip(current / length, 0, 1))^2)``, the literature's ramp (1 when ``length`` is 0)."""
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    """A weight as a function of the iteration (see the module doc)."""

    schedule: Literal["constant", "sigmoid", "linear"] = "constant"
    c: float = 1.0
    divisor: int = 150
    length: int = 40
    start: float = 0.0
    until: float | None = None

    def __post_init__(self) -> None:
        for key in ("c", "start"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"weight {key} must be a finite number >= 0, got {value}")
        if self.divisor < 1:
            raise ConfigError(
                f"weight divisor must be a positive integer (iterations per ramp step), got {self.divisor}"
            )
        if self.length < 0:
            raise ConfigError(f"weight length must be >= 0, got {self.length}")
        if self.until is not None and not 0.0 <= self.until <= 1.0:
            raise ConfigError(f"weight until is a fraction of the run, in [0, 1], got {self.until}")

    def for_run(self, iterations: int) -> Schedule:
        """This schedule with ``until`` turned into iterations for a run of ``iterations`` (unchanged
        without ``until``)."""
        if self.until is None or self.schedule == "constant":
            return dataclasses.replace(self, until=None)
        end = self.until * iterations
        if self.schedule == "sigmoid":
            return dataclasses.replace(self, until=None, divisor=max(1, round(end / max(self.length, 1))))
        return dataclasses.replace(self, until=None, length=max(0, round(end)))

    def __call__(self, iteration: int) -> float:
        if self.until is not None:
            raise ValueError("a schedule set by 'until' (a fraction of the run) needs for_run(iterations) first")
        if self.schedule == "constant":
            return self.c
        if self.schedule == "sigmoid":
            return self.c * sigmoid_rampup(iteration // self.divisor, self.length)
        frac = min(iteration / max(self.length, 1), 1.0)
        return self.start + (self.c - self.start) * frac


def build_schedule(spec: float | Mapping[str, Any] | Schedule, where: str = "weight") -> Schedule:
    """A :class:`Schedule` from a number (constant) or a mapping of its fields."""
    if isinstance(spec, Schedule):
        return spec
    try:
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return Schedule(schedule="constant", c=float(spec))
        if isinstance(spec, Mapping):
            return build_dataclass(Schedule, spec, where)
    except ConfigError as exc:
        if str(exc).startswith(where):  # build_dataclass named the key already
            raise
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: expected a number or a schedule mapping, got {spec!r}")
