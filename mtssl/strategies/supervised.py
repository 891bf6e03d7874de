"""The supervised term: each head against its exact target, on the labeled samples only."""

from __future__ import annotations

import torch

from mtssl.ops.checks import as_float
from mtssl.registry import STRATEGIES
from mtssl.strategies.context import StepContext

__all__ = ["Supervised"]


@STRATEGIES.register("supervised")
class Supervised:
    """Supervision of one output on the labeled samples, with the loss its task defines (:meth:`Task.loss`).

    A segmentation output gets ``dice * Dice + ce * CE`` (softmax CE, or BCE for sigmoid heads),
    Dice in the literature's form on the foreground probabilities. A regression output (sdf, dist)
    gets the MSE to its exact target; an edge output the BCE to the boundary. Losses are named
    ``<output>_dice``, ``<output>_ce``, ``<output>_mse``, ``<output>_bce``.
    """

    def __init__(self, output: str = "seg", dice: float = 1.0, ce: float = 1.0) -> None:
        self.output, self.dice, self.ce = output, dice, ce

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        part = ctx.labeled
        out = as_float(part.outputs[self.output])
        weights = {"dice": self.dice, "ce": self.ce}
        losses = ctx.task_of(self.output).loss(out, ctx.target(self.output), part.label, weights)
        return {f"{self.output}_{name}": value for name, value in losses.items()}
