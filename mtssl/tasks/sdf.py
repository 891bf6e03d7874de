"""The signed-distance task: tanh regression of DTC's normalised SDF (negative inside)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch
from torch import nn

from mtssl.ops.conv_distance import soft_signed_distance
from mtssl.ops.distance import signed_distance
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks
from mtssl.tasks.transforms import sdf_to_seg, warn_if_saturated

__all__ = ["SignedDistance", "patch_h"]


@TASKS.register("sdf")
@dataclasses.dataclass(frozen=True, kw_only=True)
class SignedDistance(Task):
    """Signed distance in [-1, 1] (tanh head), one channel per foreground class, negative inside.

    Target: :func:`mtssl.ops.signed_distance` per class. To segmentation: ``sigmoid(-k * sdf)``.
    From segmentation: the normalised :func:`mtssl.ops.soft_signed_distance` with ``h``,
    ``kernel`` and ``radius``. ``h: null`` follows the patch (:func:`patch_h`: its geometric mean
    side / 25 voxels), which gives the measured choices (docs/ops.md): 4 at LA's 112x112x80 and 2 at
    half that size.
    """

    k: float = 1500.0
    h: float | None = None
    kernel: Literal["exp", "gauss"] = "exp"
    radius: float | None = None

    output_layer: ClassVar[type[nn.Module]] = nn.Tanh

    def target(self, label: torch.Tensor) -> torch.Tensor:
        masks = class_masks(label, self.num_classes)
        sdf = signed_distance(masks.flatten(0, 1))
        return sdf.view(masks.shape)

    def to_seg(self, output: torch.Tensor) -> torch.Tensor:
        return sdf_to_seg(output, self.k)

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        patch = tuple(seg_logits.shape[2:])
        warn_if_saturated(self.radius, patch)
        h = self.h if self.h is not None else patch_h(patch)
        return soft_signed_distance(
            seg_logits, h, kernel=self.kernel, radius=self.radius, normalize=True, activation=activation
        )


def patch_h(patch: tuple[int, ...]) -> float:
    """The soft SDF's ``h`` for a patch: its geometric mean side / 25 voxels, to 0.1: the values measured on
    LA (docs/ops.md): 4 at 112x112x80, and 2 at half that size (56x56x40, and the CPU protocol's 64x64x32)."""
    return round(math.prod(patch) ** (1.0 / len(patch)) / 25.0, 1)
