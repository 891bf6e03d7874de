"""What a loss term sees at one step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch

from mtssl.tasks.base import Task
from mtssl.tasks.outputs import head_of
from mtssl.tasks.seg import Segmentation

__all__ = ["BatchPart", "StepContext", "check_transform"]

Forward = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def check_transform(term: str, source: str, target: str, task_names: Mapping[str, str]) -> None:
    """Refuse, as a config error, a term that maps head ``source`` into head ``target``'s representation when
    no transform joins their tasks (``task_names``: head -> task name). A task's transforms go to and from
    segmentation only (its ``to_seg`` and ``from_seg``): two other tasks are joined through a seg head."""
    from mtssl.config import ConfigError
    from mtssl.registry import TASKS

    src, tgt = task_names.get(head_of(source)), task_names.get(head_of(target))
    if src is None or tgt is None or src == "seg":  # from segmentation: every task's from_seg
        return
    if tgt == "seg":
        if getattr(TASKS.get(src).factory, "has_to_seg", True):
            return
        raise ConfigError(
            f"the term {term} maps {source!r} (the {src} task) into segmentation, and the {src} task has no "
            f"transform to segmentation: map the other way (source: {target}, target: {source})"
        )
    raise ConfigError(
        f"the term {term} maps {source!r} (the {src} task) into {target!r} (the {tgt} task), and no transform "
        f"joins two tasks that are not segmentations: go through a seg head, with two terms "
        f"(source: {source}, target: <seg head>) and (source: <seg head>, target: {target})"
    )


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


@dataclasses.dataclass(kw_only=True)
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
    _teacher_outputs: dict[tuple[float, float], Mapping[str, torch.Tensor]] = dataclasses.field(
        default_factory=dict, repr=False
    )

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
        return self.tasks[head_of(output)]

    def mapped(self, source: str, target: str) -> torch.Tensor:
        """The ``source`` output over all samples in the ``target`` output's representation, computed once
        per step and shared by every term that asks (DBiSL's transformed supervision and consistency).

        Into a segmentation head: the source task's ``to_seg`` (``sigmoid(-k sdf)`` for the sdf task).
        From a segmentation head: the target task's ``from_seg`` of the source logits (the soft SDF
        with the sdf task's ``h``, ``kernel`` and ``radius``). The tasks' options set the transforms.
        """
        key = (source, head_of(target))
        if key not in self._mapped:
            source_task, target_task = self.task_of(source), self.task_of(target)
            if isinstance(target_task, Segmentation):
                self._mapped[key] = source_task.to_seg(self.outputs[source])
            elif isinstance(source_task, Segmentation):
                self._mapped[key] = target_task.from_seg(self.outputs[source], source_task.seg_activation)
            else:
                raise ValueError(
                    f"no transform from {source!r} ({type(source_task).__name__}) to {target!r} "
                    f"({type(target_task).__name__}): one of the two must be a segmentation head; join them "
                    "through one (source -> seg, then seg -> target)"
                )
        return self._mapped[key]

    def target(self, output: str) -> torch.Tensor:
        """The exact target of an output's task for the labeled samples, float32, computed once per step."""
        head = head_of(output)
        if head not in self._targets:
            with torch.autocast(device_type=self.label.device.type, enabled=False):
                self._targets[head] = self.tasks[head].target(self.labeled.label)
        return self._targets[head]

    def teacher_outputs(self, noise_std: float = 0.0, noise_clip: float = 0.0) -> Mapping[str, torch.Tensor]:
        """The EMA teacher's outputs on the unlabeled images, computed once per step for each noise and
        shared by every term that asks (a mean-teacher term and a UA-MT term then pull toward one target).

        With ``noise_std > 0`` the teacher's input is noised, ``image + clamp(N(0, std^2), -clip, clip)``
        (the mean teacher's); with 0 it sees the clean images. :meth:`teacher_pass` draws fresh noise.
        """
        key = (float(noise_std), float(noise_clip))
        if key not in self._teacher_outputs:
            self._teacher_outputs[key] = self.teacher_pass(noise_std, noise_clip)
        return self._teacher_outputs[key]

    def teacher_pass(self, noise_std: float = 0.0, noise_clip: float = 0.0) -> Mapping[str, torch.Tensor]:
        """One more forward of the EMA teacher on the unlabeled images with freshly drawn noise (UA-MT's
        Monte-Carlo passes); :meth:`teacher_outputs` is the cached one."""
        if self.teacher is None:
            raise ValueError("this term reads an EMA teacher, and the recipe has none: add one (recipe.teacher)")
        image = self.unlabeled.image
        if noise_std > 0:
            image = image + torch.clamp(torch.randn_like(image) * noise_std, -noise_clip, noise_clip)
        return self.teacher(image)
