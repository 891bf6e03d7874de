"""What a loss term sees at one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mtssl.tasks.base import Task

__all__ = ["StepContext"]


@dataclasses.dataclass
class StepContext:
    """One training step's inputs and outputs, shared by every loss term.

    Attributes:
        image: ``(B, C, *S)``.
        label: ``(B, *S)``; zeros for unlabeled samples.
        labeled: ``(B,)`` bool; labeled samples come first.
        outputs: the model's outputs by name (``"seg"``, ``"sdf"``, ``"seg/1"``, ...).
        tasks: the task of each head name.
        iteration: the current iteration.
        teacher: the EMA teacher's forward (no grad), when the recipe has one.
        model: the student's forward, for terms that need extra passes.
    """

    image: torch.Tensor
    label: torch.Tensor
    labeled: torch.Tensor
    outputs: dict[str, torch.Tensor]
    tasks: dict[str, Task]
    iteration: int
    teacher: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    model: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    _targets: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    _transformed: dict[tuple, torch.Tensor] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_labeled(self) -> int:
        """Labeled samples in the batch (they come first); read from the batch layout, no device sync."""
        return int(self.extra.get("n_labeled", 0))

    def task_of(self, output: str) -> Task:
        """The task behind an output name (``"sdf/1"`` -> the ``sdf`` head's task)."""
        return self.tasks[output.split("/")[0]]

    def transformed(self, output: str, transform: nn.Module) -> torch.Tensor:
        """``transform(outputs[output])`` over all samples, computed once per step for equal transforms.

        DBiSL's transformed supervision (labeled half) and its consistency (all samples) both need
        ``seg->sdf`` of the seg logits; the transforms work sample by sample, so one evaluation
        sliced serves both. Transforms count as equal when their type and options are.
        """
        options = tuple(sorted((k, v) for k, v in vars(transform).items() if not k.startswith("_") and k != "training"))
        key = (output, type(transform).__qualname__, options)
        if key not in self._transformed:
            self._transformed[key] = transform(self.outputs[output])
        return self._transformed[key]

    def target(self, output: str) -> torch.Tensor:
        """The exact target of an output's task for the labeled samples, float32, computed once per step."""
        head = output.split("/")[0]
        if head not in self._targets:
            with torch.autocast(device_type=self.label.device.type, enabled=False):
                self._targets[head] = self.tasks[head].target(self.label[: self.n_labeled])
        return self._targets[head]
