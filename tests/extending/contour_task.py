"""A new task in one file: ``contour``, a [0, 1] regression of each class's inner boundary.

Its target is the exact inner boundary; from segmentation it is the soft boundary of the
foreground probability (the gradient magnitude, 0.5 beside a step), doubled and clamped to [0, 1].
It has no transform to segmentation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from mtssl.ops.boundary import boundary, soft_boundary
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks


@TASKS.register("contour")
@dataclasses.dataclass(frozen=True)
class Contour(Task):
    """Inner-boundary regression in [0, 1] (sigmoid head), one channel per foreground class."""

    output_layer: ClassVar[type[nn.Module]] = nn.Sigmoid
    has_to_seg: ClassVar[bool] = False

    def target(self, label: torch.Tensor) -> torch.Tensor:
        masks = class_masks(label, self.num_classes)
        return boundary(masks.flatten(0, 1), "inner").view(masks.shape).float()

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        prob = torch.softmax(seg_logits.float(), 1)[:, 1:] if activation == "softmax" else seg_logits.float().sigmoid()
        return (2 * soft_boundary(prob)).clamp(0, 1)
