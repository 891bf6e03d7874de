"""What a loss term sees at one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from mtssl.tasks.base import Task
from mtssl.tasks.seg import Segmentation

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
    _mapped: dict[tuple[str, str], torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)

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

    def mapped(self, source: str, target: str) -> torch.Tensor:
        """The ``source`` output over all samples in the ``target`` output's representation, computed once
        per step and shared by every term that asks (DBiSL's transformed supervision and consistency).

        Into a segmentation head: the source task's ``to_seg`` (``sigmoid(-k sdf)`` for the sdf task).
        From a segmentation head: the target task's ``from_seg`` of the source logits (the soft SDF
        with the sdf task's ``h``, ``kernel`` and ``radius``). The tasks' options set the transforms.
        """
        key = (source, target.split("/")[0])
        if key not in self._mapped:
            source_task, target_task = self.task_of(source), self.task_of(target)
            if isinstance(target_task, Segmentation):
                self._mapped[key] = source_task.to_seg(self.outputs[source])
            elif isinstance(source_task, Segmentation):
                self._mapped[key] = target_task.from_seg(self.outputs[source], source_task.seg_activation)
            else:
                raise ValueError(
                    f"no transform from {source!r} ({type(source_task).__name__}) to {target!r} "
                    f"({type(target_task).__name__}): one of the two must be a segmentation head"
                )
        return self._mapped[key]

    def target(self, output: str) -> torch.Tensor:
        """The exact target of an output's task for the labeled samples, float32, computed once per step."""
        head = output.split("/")[0]
        if head not in self._targets:
            with torch.autocast(device_type=self.label.device.type, enabled=False):
                self._targets[head] = self.tasks[head].target(self.labeled.label)
        return self._targets[head]
