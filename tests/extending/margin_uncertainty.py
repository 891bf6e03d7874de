"""A new uncertainty weighting in one file: ``margin``, how far the fused probability is from a coin toss.

Registered here, it is at once a choice of DBiSL (``recipe.uncertainty: margin``) and of UA-MT
(``recipe.uncertainty: margin``, or ``uncertainty`` on the ``ua_mt`` term).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mtssl.registry import UNCERTAINTIES


@UNCERTAINTIES.register("margin")
class Margin:
    """``|2 fused - 1|`` per channel: 0 where the votes' combination is 0.5, 1 where it is 0 or 1.

    For a softmax's channels, the margin between the two most probable classes, shared by the channels.
    """

    def __call__(
        self, votes: Sequence[torch.Tensor], fused: torch.Tensor, iteration: int, softmax: bool = False
    ) -> torch.Tensor:
        if softmax:
            top2 = fused.topk(2, dim=1).values
            return (top2[:, :1] - top2[:, 1:]).clamp(0, 1)
        return (2 * fused - 1).abs()
