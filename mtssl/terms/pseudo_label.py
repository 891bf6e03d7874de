"""DBiSL's pseudo-labels, fused from two tasks.

Fusion and uncertainty (the paper leaves both unpublished; these are mtssl's documented choices):

- ``p_seg = sigmoid(seg)`` and ``p_sdf = sigmoid(-k * sdf)`` are the two tasks' foreground probabilities,
  with a steepness ``k`` of its own (50 by default): at DTC's k = 1500 ``p_sdf`` is a step, so the
  mean of the two is the SDF head's sign on every voxel and the seg head never votes;
- the fused probability is their mean (``fusion: mean``), their geometric mean (``geometric``), or one of them;
- the pseudo-label is ``fused > 0.5`` (``hard``) or ``fused`` itself (soft);
- a voxel counts where its confidence ``|2 fused - 1|`` reaches ``confidence``;
- its weight is an uncertainty weighting of the two votes, by name (:mod:`mtssl.terms.uncertainty`):
  ``1 - |p_seg - p_sdf|`` (``uncertainty: disagreement``), ``1 - H(fused) / ln 2`` (``entropy``), 1
  (``none``), or any other registered one;
- the two probabilities come from the student's own outputs (``votes: student``) or from an EMA
  teacher's forward of the unlabeled images (``votes: teacher``; the recipe needs a teacher).

The pseudo-label and the weights are detached: they teach, they are not taught.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch

from mtssl.ops.checks import as_float
from mtssl.ops.distance import signed_distance
from mtssl.ops.losses import dice_loss, mse_loss
from mtssl.registry import TERMS, UNCERTAINTIES
from mtssl.tasks.transforms import sdf_to_seg
from mtssl.terms.context import StepContext

__all__ = ["FusedPseudoLabel", "fuse"]


Fusion = Literal["mean", "geometric", "seg", "sdf"]
Voters = Literal["student", "teacher"]


def fuse(
    p_seg: torch.Tensor,
    p_sdf: torch.Tensor,
    *,
    fusion: Fusion = "mean",
    uncertainty: str | Callable[..., torch.Tensor] = "disagreement",
    iteration: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused foreground probability and per-voxel weight from two tasks' probabilities (see the module doc);
    ``uncertainty`` is a registered weighting's name or the weighting itself."""
    if fusion == "mean":
        fused = (p_seg + p_sdf) / 2
    elif fusion == "geometric":
        fused = (p_seg * p_sdf).sqrt()
    else:
        fused = p_seg if fusion == "seg" else p_sdf
    weighting = UNCERTAINTIES.create(uncertainty) if isinstance(uncertainty, str) else uncertainty
    return fused, weighting((p_seg, p_sdf), fused, iteration)


@TERMS.register("fused_pseudo_label")
class FusedPseudoLabel:
    """Pseudo-supervision of both tasks on the unlabeled samples by a label fused from both.

    The seg head gets a weighted Dice against the pseudo-label, the SDF head a weighted MSE against
    the exact SDF of the (hard) pseudo-label. Losses: ``pseudo_seg``, ``pseudo_sdf``.
    """

    def __init__(
        self,
        *,
        seg: str = "seg",
        sdf: str = "sdf",
        k: float = 50.0,
        fusion: Fusion = "mean",
        hard: bool = True,
        confidence: float = 0.0,
        uncertainty: str = "disagreement",
        votes: Voters = "student",
    ) -> None:
        self.seg, self.sdf, self.k, self.fusion, self.hard = seg, sdf, k, fusion, hard
        self.confidence, self.uncertainty, self.votes = confidence, uncertainty, votes
        self.weighting = UNCERTAINTIES.create(uncertainty)  # an unknown name lists the registered ones
        self.reads, self.needs_teacher = (seg, sdf), votes == "teacher"
        self.name = "pseudo"  # its losses: pseudo_seg, pseudo_sdf

    def _voters(self, ctx: StepContext) -> Mapping[str, torch.Tensor]:
        return ctx.unlabeled.outputs if self.votes == "student" else ctx.teacher_outputs()

    @torch.no_grad()
    def label(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unlabeled samples' pseudo-label ``(B_u, K, *S)`` (hard or soft), its hard version, and the
        per-voxel weight ``(B_u, *S)``; all detached."""
        voters = self._voters(ctx)
        seg_prob = ctx.task_of(self.seg).to_seg(voters[self.seg])
        sdf_prob = sdf_to_seg(as_float(voters[self.sdf]), self.k)
        fused, weight = fuse(
            seg_prob, sdf_prob, fusion=self.fusion, uncertainty=self.weighting, iteration=ctx.iteration
        )
        weight = weight * ((2 * fused - 1).abs() >= self.confidence)
        hard = fused > 0.5
        return (hard.float() if self.hard else fused), hard, weight.mean(1)  # the weight is shared by the classes

    def __call__(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        unlabeled = ctx.unlabeled.outputs
        seg_prob = ctx.task_of(self.seg).to_seg(unlabeled[self.seg])
        sdf_out = as_float(unlabeled[self.sdf])
        pseudo, hard, voxel_weight = self.label(ctx)
        with torch.no_grad():
            sdf_target = signed_distance(hard.flatten(0, 1)).view(hard.shape)
        return {
            # every channel is a foreground class: none is a background to leave out
            "pseudo_seg": dice_loss(seg_prob, pseudo, weight=voxel_weight, include_background=True),
            "pseudo_sdf": mse_loss(sdf_out, sdf_target, weight=voxel_weight),
        }
