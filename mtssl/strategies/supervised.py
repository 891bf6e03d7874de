"""The supervised term: each head against its exact target, on the labeled samples only."""

from __future__ import annotations

import torch

from mtssl.ops.checks import as_float
from mtssl.ops.losses import binary_cross_entropy, cross_entropy, dice_loss, mse_loss
from mtssl.registry import STRATEGIES
from mtssl.strategies.context import StepContext
from mtssl.tasks.edge import Boundary
from mtssl.tasks.seg import Segmentation

__all__ = ["Supervised"]


@STRATEGIES.register("supervised")
class Supervised:
    """Supervision of one output on the labeled samples.

    A segmentation output gets ``dice * Dice + ce * CE`` (softmax CE, or BCE for sigmoid heads),
    Dice in the literature's form on the foreground probabilities. A regression output (sdf, dist)
    gets the MSE to its exact target; an edge output the BCE to the boundary. Losses are named
    ``<output>_dice``, ``<output>_ce``, ``<output>_mse``, ``<output>_bce``.
    """

    def __init__(self, output: str = "seg", dice: float = 1.0, ce: float = 1.0) -> None:
        self.output, self.dice, self.ce = output, dice, ce

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        n = ctx.n_labeled
        out = as_float(ctx.outputs[self.output][:n])
        task = ctx.task_of(self.output)
        name = self.output
        if isinstance(task, Segmentation):
            losses = {}
            label = ctx.label[:n]
            if self.dice:
                losses[f"{name}_dice"] = self.dice * dice_loss(task.to_seg(out), ctx.target(self.output))
            if self.ce:
                ce = cross_entropy(out, label) if task.softmax else binary_cross_entropy(out, ctx.target(self.output))
                losses[f"{name}_ce"] = self.ce * ce
            return losses
        if isinstance(task, Boundary):
            return {f"{name}_bce": binary_cross_entropy(out, ctx.target(self.output))}
        return {f"{name}_mse": mse_loss(out, ctx.target(self.output))}
