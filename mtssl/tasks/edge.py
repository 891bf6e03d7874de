"""The boundary task: logits of the object's inner boundary, an auxiliary and consistency target."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from mtssl.ops.boundary import boundary
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks
from mtssl.tasks.transforms import seg_to_edge

__all__ = ["Boundary"]


@TASKS.register("edge")
@dataclasses.dataclass(frozen=True)
class Boundary(Task):
    """Boundary logits, one channel per foreground class.

    Target: the inner boundary (:func:`mtssl.ops.boundary`, skimage's). No transform to
    segmentation; from segmentation: the spatial gradient magnitude of the probability.
    """

    has_to_seg: ClassVar[bool] = False

    def target(self, label: torch.Tensor) -> torch.Tensor:
        masks = class_masks(label, self.num_classes)
        return boundary(masks.flatten(0, 1), "inner").view(masks.shape).float()

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        return seg_to_edge(seg_logits, activation)
