"""A new loss term in one file: ``contour_sparsity``, the mean of a head's output on the unlabeled samples
(a contour is thin, so most of a contour map should be 0)."""

from __future__ import annotations

import torch

from mtssl.registry import TERMS
from mtssl.terms.context import StepContext


@TERMS.register("contour_sparsity")
class ContourSparsity:
    """``mean(output)`` over the unlabeled samples; logged as ``<output>_sparsity``."""

    def __init__(self, output: str = "contour") -> None:
        self.output = output
        self.reads = (output,)  # the outputs it reads, checked against the recipe's heads
        self.name = f"{output}_sparsity"  # its one name: weight/<name> in the log, and its loss's

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {self.name: ctx.unlabeled.outputs[self.output].float().mean()}
