"""What a loss term sees at one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mtssl.tasks.base import Task

__all__ = ["BatchPart", "StepContext"]

Forward = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class BatchPart:
    """The labeled or the unlabeled samples of a step: slices (views) of the batch and of the outputs."""

    image: torch.Tensor
    label: torch.Tensor
    outputs: Mapping[str, torch.Tensor]
    spacing: torch.Tensor | None
    case: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.image.shape[0])


@dataclasses.dataclass
class StepContext:
    """One training step's inputs and outputs, shared by every loss term.

    The batch's labeled samples come first: ``ctx.labeled`` and ``ctx.unlabeled`` are the two parts
    (:class:`BatchPart`: image, label, outputs, spacing and case ids, sliced without a device sync).

    Attributes:
        image: ``(B, C, *S)``.
        label: ``(B, *S)``; zeros for unlabeled samples.
        outputs: the model's outputs by name (``"seg"``, ``"sdf"``, ``"seg/1"``, ...).
        tasks: the task of each head name.
        iteration: the current iteration.
        n_labeled: how many samples, from the first, are labeled.
        spacing: ``(B, len(S))`` voxel spacings, when the batch has them.
        case: the samples' case ids, when the batch has them.
        teacher: the EMA teacher's forward (no grad), when the recipe has one.
        model: the student's forward, for terms that need extra passes.
    """

    image: torch.Tensor
    label: torch.Tensor
    outputs: Mapping[str, torch.Tensor]
    tasks: Mapping[str, Task]
    iteration: int
    n_labeled: int
    spacing: torch.Tensor | None = None
    case: Sequence[str] = ()
    teacher: Forward | None = None
    model: Forward | None = None
    _targets: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)
    _transformed: dict[tuple[Any, ...], torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.n_labeled <= self.image.shape[0]:
            raise ValueError(f"n_labeled is {self.n_labeled} for a batch of {self.image.shape[0]} samples")

    def _part(self, part: slice) -> BatchPart:
        outputs = {name: out[part] for name, out in self.outputs.items()}
        spacing = self.spacing[part] if self.spacing is not None else None
        return BatchPart(self.image[part], self.label[part], outputs, spacing, tuple(self.case[part]))

    @property
    def labeled(self) -> BatchPart:
        """The labeled samples (the first ``n_labeled``)."""
        return self._part(slice(None, self.n_labeled))

    @property
    def unlabeled(self) -> BatchPart:
        """The unlabeled samples (after the labeled ones)."""
        return self._part(slice(self.n_labeled, None))

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Any per-sample tensor of this step (a transformed output, say) as its labeled and unlabeled parts."""
        return x[: self.n_labeled], x[self.n_labeled :]

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
                self._targets[head] = self.tasks[head].target(self.labeled.label)
        return self._targets[head]
