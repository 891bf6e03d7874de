"""What a recipe is. The trainer reads nothing else from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from mtssl.strategies.context import StepContext
from mtssl.strategies.schedules import Schedule, build_schedule

__all__ = ["Recipe", "Teacher", "Term"]

LossTerm = Callable[[StepContext], Mapping[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Term:
    """A loss term and the schedule of its weight."""

    fn: LossTerm
    weight: Schedule = dataclasses.field(default_factory=Schedule)

    @classmethod
    def of(cls, fn: LossTerm, weight: float | Mapping[str, Any] | Schedule = 1.0) -> Term:
        return cls(fn, build_schedule(weight))


@dataclasses.dataclass(frozen=True)
class Teacher:
    """An EMA copy of the model: decay, with warm-up ``min(1 - 1/(t + 1), decay)``, and its mode."""

    decay: float = 0.99
    mode: Literal["train", "eval"] = "train"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A model spec plus weighted loss terms.

    Attributes:
        tasks: head name -> task options (``task:`` names the task when it differs from the head).
        terms: the weighted loss terms; the total loss is their weighted sum.
        teacher: an EMA teacher, or None.
        evaluate: the output whose segmentation is tested (``"seg"``; ``"seg/1"`` for a second decoder).
        backbone: the default backbone (a config's ``model.backbone`` overrides its options).
    """

    tasks: Mapping[str, Mapping[str, Any]]
    terms: tuple[Term, ...]
    teacher: Teacher | None = None
    evaluate: str = "seg"
    backbone: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "vnet"})
