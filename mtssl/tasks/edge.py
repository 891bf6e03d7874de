"""The boundary task: logits of the object's inner boundary, an auxiliary and consistency target."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import torch

from mtssl.ops.boundary import boundary
from mtssl.ops.checks import as_float
from mtssl.ops.losses import binary_cross_entropy
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks
from mtssl.tasks.transforms import seg_to_edge

__all__ = ["Edge"]


@TASKS.register("edge")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Edge(Task):
    """Boundary logits, one channel per foreground class.

    Target: the inner boundary (:func:`mtssl.ops.boundary`, skimage's). No transform to
    segmentation; from segmentation: the spatial gradient magnitude of the probability, compared with
    the head's probability (:meth:`represent`), not its logits.
    """

    has_to_seg: ClassVar[bool] = False

    def loss_components(
        self, output: torch.Tensor, target: torch.Tensor, label: torch.Tensor
    ) -> dict[str, Callable[[], torch.Tensor]]:
        """``bce``: the BCE of the boundary logits against the exact boundary."""
        return {"bce": lambda: binary_cross_entropy(output, target)}

    def target(self, label: torch.Tensor) -> torch.Tensor:
        masks = class_masks(label, self.num_classes)
        return boundary(masks.flatten(0, 1), "inner").view(masks.shape).float()

    def represent(self, output: torch.Tensor) -> torch.Tensor:
        """The boundary probability ``sigmoid(logits)``: what the target (0/1) and :meth:`from_seg` (a
        gradient magnitude of probabilities, 0.5 beside a sharp step) are, and what a consistency compares."""
        return torch.sigmoid(as_float(output))

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        return seg_to_edge(seg_logits, activation)
