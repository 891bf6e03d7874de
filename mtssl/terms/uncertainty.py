"""Uncertainty weightings: how much each voxel's unsupervised loss counts, from several probability maps
of the same voxels (the votes).

DBiSL's votes are its two tasks' foreground probabilities (the seg head's and ``sigmoid(-k sdf)``),
UA-MT's are Monte-Carlo passes of the teacher. A weighting is registered in
:data:`~mtssl.registry.UNCERTAINTIES` (``mtssl list uncertainty``) and called as
``weighting(votes, fused, iteration, softmax)``:

- ``votes``: the probability maps, each ``(B, C, *S)``;
- ``fused``: their combination (DBiSL's fused probability; UA-MT's mean over passes);
- ``iteration``: the step (a weighting may ramp);
- ``softmax``: whether the channels are a softmax's (background included, summing to 1) rather than
  independent foreground probabilities;

and returns the weight, in [0, 1], broadcastable to ``(B, C, *S)``. A weighting of ``fused`` alone sets
``reads_votes = False``, so that UA-MT need not keep its Monte-Carlo passes in memory (it then passes
none). The recipes take a weighting by name (``recipe.uncertainty: entropy`` for DBiSL,
``recipe.uncertainty`` or the ``ua_mt`` term's ``uncertainty`` for UA-MT), so a new weighting is one
registered class in one file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mtssl.registry import UNCERTAINTIES
from mtssl.terms.schedules import sigmoid_rampup

__all__ = ["Disagreement", "Entropy", "EntropyBelow", "NoWeight"]


@UNCERTAINTIES.register("disagreement")
class Disagreement:
    """``1 - (max - min)`` over the votes: ``1 - |p_seg - p_sdf|`` for DBiSL's two tasks (its default)."""

    def __call__(
        self, votes: Sequence[torch.Tensor], fused: torch.Tensor, iteration: int, softmax: bool = False
    ) -> torch.Tensor:
        if len(votes) == 2:  # DBiSL's two tasks: exactly its published form
            return 1 - (votes[0] - votes[1]).abs()
        stacked = torch.stack(list(votes))
        return 1 - (stacked.amax(0) - stacked.amin(0))


@UNCERTAINTIES.register("entropy")
class Entropy:
    """``1 - H(fused) / ln 2``, each channel's binary entropy of the fused probability (1 where it is sure)."""

    reads_votes = False  # a weighting of the fused probability alone

    def __call__(
        self, votes: Sequence[torch.Tensor], fused: torch.Tensor, iteration: int, softmax: bool = False
    ) -> torch.Tensor:
        f = fused.clamp(1e-6, 1 - 1e-6)
        return 1 + (f * f.log() + (1 - f) * (1 - f).log()) / math.log(2)


@UNCERTAINTIES.register("none")
class NoWeight:
    """Every voxel counts fully (weight 1)."""

    reads_votes = False  # a weighting of the fused probability alone

    def __call__(
        self, votes: Sequence[torch.Tensor], fused: torch.Tensor, iteration: int, softmax: bool = False
    ) -> torch.Tensor:
        return torch.ones_like(fused)


@UNCERTAINTIES.register("entropy_below")
class EntropyBelow:
    """UA-MT's mask: 1 where the entropy of the mean over the votes is below
    ``(0.75 + 0.25 * sigmoid_rampup(iteration, max_iterations)) * ln 2``, else 0.

    The entropy sums over the channels: a softmax's categorical entropy, or for independent sigmoid
    channels both outcomes of each (UA-MT's code, with its ``1e-6`` inside the log). The mask is
    ``(B, 1, *S)``: a voxel counts for every class or for none.
    """

    reads_votes = False  # a weighting of the fused probability alone

    def __init__(self, max_iterations: int = 6000) -> None:
        self.max_iterations = max_iterations

    def __call__(
        self, votes: Sequence[torch.Tensor], fused: torch.Tensor, iteration: int, softmax: bool = False
    ) -> torch.Tensor:
        mean = fused if softmax else torch.cat([1 - fused, fused], 1)
        uncertainty = -(mean * torch.log(mean + 1e-6)).sum(1, keepdim=True)
        threshold = (0.75 + 0.25 * sigmoid_rampup(iteration, self.max_iterations)) * math.log(2)
        return (uncertainty < threshold).float()
