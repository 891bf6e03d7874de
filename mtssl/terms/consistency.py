"""Consistency terms: across tasks through a transform, mean teacher, uncertainty-aware (UA-MT), MC-Net's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from mtssl.ops.checks import as_float
from mtssl.registry import TERMS, UNCERTAINTIES
from mtssl.tasks.outputs import flat, output_name
from mtssl.tasks.seg import Segmentation
from mtssl.terms.context import StepContext, check_transform
from mtssl.terms.schedules import sigmoid_rampup

__all__ = ["CrossTask", "MeanTeacher", "MultiDecoder", "UncertaintyMeanTeacher", "sharpen", "sigmoid_rampup"]

Samples = Literal["all", "unlabeled"]


def _named(base: str, output: str) -> str:
    """A term's one name (its loss and its ``weight/`` key): ``base``, with the output unless it is ``seg``."""
    return base if output == "seg" else f"{base}_{flat(output)}"


def _samples(ctx: StepContext, x: torch.Tensor, which: Samples) -> torch.Tensor:
    return ctx.split(x)[1] if which == "unlabeled" else x


def probabilities(task: Segmentation, logits: torch.Tensor) -> torch.Tensor:
    """All channels' probabilities of a seg head: softmax (background included) or sigmoid."""
    return torch.softmax(as_float(logits), 1) if task.softmax else torch.sigmoid(as_float(logits))


def sharpen(p: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """MC-Net's sharpening: ``p^(1/T) / (p^(1/T) + (1 - p)^(1/T))``."""
    a = p.pow(1.0 / temperature)
    return a / (a + (1.0 - p).pow(1.0 / temperature))


@TERMS.register("cross_task")
class CrossTask:
    """``mean((T(source) - target)^2)``, ``T`` the transform between the two heads' tasks.

    Into a segmentation head, ``T`` is the source task's ``to_seg`` and the target is the target
    head's foreground probability; from a segmentation head, ``T`` is the target task's ``from_seg``
    and the target is the target head's output in its task's representation (:meth:`Task.represent`:
    the SDF itself, the edge head's probability; :meth:`StepContext.mapped`). The tasks' options
    (``k``, ``h``, ``kernel``, ``radius``) set ``T``. DTC's consistency is
    ``CrossTask(source="sdf", target="seg")`` over all samples. ``detach_source`` makes the
    transformed source a fixed teacher (only the target head learns); ``detach_target`` does the
    same for the target.
    """

    def __init__(
        self,
        source: str = "sdf",
        target: str = "seg",
        *,
        samples: Samples = "all",
        detach_target: bool = False,
        detach_source: bool = False,
    ) -> None:
        if detach_source and detach_target:
            raise ValueError("cross_task with both detach_source and detach_target teaches nothing: drop one")
        self.source, self.target, self.samples = source, target, samples
        self.detach_target, self.detach_source = detach_target, detach_source
        self.name = f"consistency_{flat(source)}_{flat(target)}"
        self.reads = (source, target)

    def check(self, task_names: Mapping[str, str]) -> None:
        """A transform must join the two heads' tasks (:func:`~mtssl.terms.context.check_transform`)."""
        check_transform(self.name, self.source, self.target, task_names)

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        mapped = _samples(ctx, ctx.mapped(self.source, self.target), self.samples)
        # the target head's output in its task's representation: a probability, never a logit (Task's contract)
        other = ctx.task_of(self.target).represent(_samples(ctx, ctx.outputs[self.target], self.samples))
        if self.detach_target:
            other = other.detach()
        if self.detach_source:
            mapped = mapped.detach()
        return {self.name: (as_float(mapped) - other).square().mean()}


@TERMS.register("mean_teacher")
class MeanTeacher:
    """Mean-teacher consistency: MSE between student and teacher probabilities on the unlabeled samples.

    Only the teacher's input is noised (``clamp(N(0, std^2), +-clip)``); the student sees the clean
    image. Needs a recipe with an EMA teacher.
    """

    needs_teacher = True

    def __init__(self, output: str = "seg", *, noise_std: float = 0.1, noise_clip: float = 0.2) -> None:
        self.output, self.noise_std, self.noise_clip = output, noise_std, noise_clip
        self.reads = (output,)
        self.name = _named("consistency_teacher", output)

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        task = ctx.task_of(self.output)
        teacher = probabilities(task, ctx.teacher_outputs(self.noise_std, self.noise_clip)[self.output])
        student = probabilities(task, ctx.unlabeled.outputs[self.output])
        return {self.name: (student - teacher).square().mean()}


@TERMS.register("ua_mt")
class UncertaintyMeanTeacher:
    """UA-MT: mean-teacher consistency weighted by the teacher's certainty.

    The votes are ``passes`` noisy teacher passes (``votes: teacher``, UA-MT's), or MC-dropout passes
    of the student without noise (``votes: student``: the student in train mode, no gradient). The
    weighting is a registered uncertainty by name (:mod:`mtssl.terms.uncertainty`); UA-MT's own,
    ``entropy_below``, keeps voxels whose mean's entropy is below
    ``(0.75 + 0.25 * sigmoid_rampup(t, max_iterations)) * ln 2``. The loss is
    ``sum(w * mse) / (C * sum(w) + 1e-16)`` (UA-MT's normalisation).
    """

    needs_teacher = True  # the consistency's target is the teacher's, whichever model gives the uncertainty

    def __init__(
        self,
        output: str = "seg",
        *,
        passes: int = 8,
        noise_std: float = 0.1,
        noise_clip: float = 0.2,
        max_iterations: int = 6000,
        votes: Literal["teacher", "student"] = "teacher",
        uncertainty: str = "entropy_below",
    ) -> None:
        self.output, self.passes, self.max_iterations, self.votes = output, passes, max_iterations, votes
        self.noise_std, self.noise_clip, self.uncertainty = noise_std, noise_clip, uncertainty
        self.name = _named("consistency_uncertain", output)
        ramped = "max_iterations" in UNCERTAINTIES.get(uncertainty).defaults()  # UA-MT's ramp length
        self.weighting = UNCERTAINTIES.create(uncertainty, **({"max_iterations": max_iterations} if ramped else {}))
        self.reads = (output,)

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        task = ctx.task_of(self.output)
        teacher = probabilities(task, ctx.teacher_outputs(self.noise_std, self.noise_clip)[self.output])
        # Each pass is summed as it comes (in order, as UA-MT's code); the passes themselves are kept only
        # for a weighting that reads them (disagreement), not for one of their mean (entropy_below: UA-MT's).
        keep = getattr(self.weighting, "reads_votes", True)
        votes, mean = [], torch.zeros_like(teacher)
        for _ in range(self.passes):
            vote = self._pass(ctx, task)
            mean += vote
            if keep:
                votes.append(vote)
        mean /= self.passes
        weight = self.weighting(votes, mean, ctx.iteration, task.softmax)
        student = probabilities(task, ctx.unlabeled.outputs[self.output])
        dist = (student - teacher).square()
        # a weight shared by the channels (UA-MT's mask) counts once per channel, as UA-MT's code divides
        counted = dist.shape[1] * weight.sum() if weight.shape[1] == 1 else weight.expand_as(dist).sum()
        loss = (weight * dist).sum() / (counted + 1e-16)
        return {self.name: loss}

    def _pass(self, ctx: StepContext, task: Segmentation) -> torch.Tensor:
        if self.votes == "teacher":
            return probabilities(task, ctx.teacher_pass(self.noise_std, self.noise_clip)[self.output])
        if ctx.model is None:
            raise ValueError("MC-dropout uncertainty (votes: student) needs the student's forward in the context")
        with torch.no_grad():
            return probabilities(task, ctx.model(ctx.unlabeled.image)[self.output])


@TERMS.register("multi_decoder")
class MultiDecoder:
    """MC-Net's mutual consistency: ``sum_{i != j} MSE(p_i, sharpen(p_j))`` over all samples and decoders."""

    def __init__(self, output: str = "seg", *, decoders: int = 2, temperature: float = 0.1) -> None:
        self.names = [output_name(output, i) for i in range(decoders)]
        self.temperature = temperature
        self.reads = tuple(self.names)
        self.name = _named("consistency_decoders", output)

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        probs = [probabilities(ctx.task_of(n), ctx.outputs[n]) for n in self.names]
        sharp = [sharpen(p, self.temperature) for p in probs]
        loss = sum(
            (probs[i] - sharp[j]).square().mean() for i in range(len(probs)) for j in range(len(probs)) if i != j
        )
        return {self.name: loss}
