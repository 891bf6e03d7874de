"""The distance task: the distance inside the object to the background, normalised to [0, 1]."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch
from torch import nn

from mtssl.ops.conv_distance import normalize_max
from mtssl.ops.distance import edt
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks
from mtssl.tasks.transforms import dist_to_seg, seg_to_dist

__all__ = ["InsideDistance"]


@TASKS.register("dist")
@dataclasses.dataclass(frozen=True, kw_only=True)
class InsideDistance(Task):
    """Inside distance in [0, 1] (sigmoid head), 0 outside, one channel per foreground class.

    Target: ``edt(~mask)`` divided by its per-sample maximum. To segmentation:
    ``2 * sigmoid(k * d) - 1``. From segmentation: the soft distance to the background, normalised.
    """

    k: float = 1500.0
    h: float = 0.5
    kernel: Literal["exp", "gauss"] = "gauss"
    radius: float | None = None

    output_layer: ClassVar[type[nn.Module]] = nn.Sigmoid

    def target(self, label: torch.Tensor) -> torch.Tensor:
        masks = class_masks(label, self.num_classes)
        inside = edt(~masks.flatten(0, 1)).view(masks.shape)
        return normalize_max(inside.masked_fill(~masks, 0.0))

    def to_seg(self, output: torch.Tensor) -> torch.Tensor:
        return dist_to_seg(output, self.k)

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        return seg_to_dist(seg_logits, self.h, self.kernel, self.radius, activation)
