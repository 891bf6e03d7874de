"""The supervised terms, on the labeled samples only: each head against its exact target, and a head's output
transformed into another task's representation against that task's exact target."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtssl.config import ConfigError
from mtssl.ops.checks import as_float
from mtssl.registry import TERMS
from mtssl.tasks.outputs import flat, head_of
from mtssl.terms.context import StepContext, check_transform

__all__ = ["Supervised", "TransformedSupervised"]


@TERMS.register("supervised")
class Supervised:
    """Supervision of one output on the labeled samples, with the loss its task defines (:meth:`Task.loss`).

    A segmentation output gets ``dice * Dice + ce * CE`` (softmax CE, or BCE for sigmoid heads),
    Dice in the literature's form on the foreground probabilities. A regression output (sdf, dist)
    gets the MSE to its exact target; an edge output the BCE to the boundary. Losses are named
    ``<output>_dice``, ``<output>_ce``, ``<output>_mse``, ``<output>_bce`` (``seg1_dice`` for ``seg/1``): the
    term's name is the output's, the prefix of its losses and the key of its weight (``weight/seg``).
    ``dice`` and ``ce`` (1 each when unset) apply to segmentation heads only; setting them on another
    head is a config error.
    """

    labeled_only = True  # reads no unlabeled sample (Recipe.uses_unlabeled)

    def __init__(self, output: str = "seg", *, dice: float | None = None, ce: float | None = None) -> None:
        self.output, self.dice, self.ce = output, dice, ce
        self.reads = (output,)
        self.name = flat(output)  # its losses: <name>_dice, <name>_ce, <name>_mse, ...

    def check(self, task_names: Mapping[str, str]) -> None:
        """``dice`` and ``ce`` weigh a segmentation head's two losses; on any other head they would be
        ignored, so setting them there is an error (scale the term with its ``weight`` instead)."""
        task = task_names.get(head_of(self.output))
        if task is not None and task != "seg" and (self.dice is not None or self.ce is not None):
            raise ConfigError(
                f"the supervised term on {self.output!r} sets dice/ce, but {self.output!r} is a {task!r} head, "
                "whose loss has no Dice or CE part (they weigh a segmentation head's losses): drop them, and "
                "scale the term with its weight"
            )

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        part = ctx.labeled
        out = as_float(part.outputs[self.output])
        weights = {"dice": 1.0 if self.dice is None else self.dice, "ce": 1.0 if self.ce is None else self.ce}
        losses = ctx.task_of(self.output).loss(out, ctx.target(self.output), part.label, weights)
        return {f"{self.name}_{part}": value for part, value in losses.items()}


@TERMS.register("transformed_supervised")
class TransformedSupervised:
    """Supervise a transformed output on the labeled samples: ``T(source)`` against ``target``'s exact target.

    ``T`` is the transform between the two heads' tasks (:meth:`StepContext.mapped`), and the target's
    task scores it (:meth:`Task.score`): ``sigmoid(-k sdf)`` with Dice against the label, the soft
    SDF of the seg logits with the MSE against the SDF target.
    """

    labeled_only = True

    def __init__(self, source: str = "sdf", target: str = "seg") -> None:
        self.source, self.target = source, target
        self.name = f"transformed_{flat(source)}_to_{flat(target)}"
        self.reads = (source, target)

    def check(self, task_names: Mapping[str, str]) -> None:
        """A transform must join the two heads' tasks (:func:`~mtssl.terms.context.check_transform`)."""
        check_transform(self.name, self.source, self.target, task_names)

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        mapped = as_float(ctx.split(ctx.mapped(self.source, self.target))[0])
        name, loss = ctx.task_of(self.target).score(mapped, ctx.target(self.target))
        return {f"{self.name}_{name}": loss}
