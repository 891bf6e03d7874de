"""The segmentation task: logits, sigmoid (binary or multi-label) or softmax (with a background channel)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from mtssl.ops.checks import as_float
from mtssl.ops.losses import binary_cross_entropy, cross_entropy, dice_loss
from mtssl.registry import TASKS
from mtssl.tasks.base import SegActivation, Task, class_masks

__all__ = ["Segmentation"]


@TASKS.register("seg")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Segmentation(Task):
    """Segmentation logits: K sigmoid channels, or K + 1 softmax channels (channel 0 = background).

    Options: ``num_classes`` foreground classes; ``softmax`` adds the background channel (UA-MT's
    2-channel binary V-Net) instead of independent sigmoids (DTC's 1-channel head).
    """

    softmax: bool = False

    @property
    def out_channels(self) -> int:
        return self.num_classes + 1 if self.softmax else self.num_classes

    @property
    def seg_activation(self) -> SegActivation:
        """How this head's logits become probabilities."""
        return "softmax" if self.softmax else "sigmoid"

    def loss_components(
        self, output: torch.Tensor, target: torch.Tensor, label: torch.Tensor
    ) -> dict[str, Callable[[], torch.Tensor]]:
        """``dice``: Dice (the literature's form) of the foreground probabilities; ``ce``: softmax CE
        of the label map, or the BCE of sigmoid logits.

        Every channel of :meth:`to_seg` is a foreground class (softmax's background is already dropped),
        so the Dice keeps channel 0: ``dice_loss``'s default would drop it as a background, which left
        the first class (ACDC's right ventricle) without a Dice term until issue 25 found it.
        """
        return {
            "dice": lambda: dice_loss(self.to_seg(output), target, include_background=True),
            "ce": lambda: cross_entropy(output, label) if self.softmax else binary_cross_entropy(output, target),
        }

    def score(self, mapped: torch.Tensor, target: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Dice of probabilities transformed from another task against the foreground masks."""
        return "dice", dice_loss(mapped, target, include_background=True)

    def target(self, label: torch.Tensor) -> torch.Tensor:
        """Foreground masks ``(B, K, *S)`` as float32 (the label map itself serves CE / Dice)."""
        return class_masks(label, self.num_classes).float()

    def to_seg(self, output: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=output.device.type, enabled=False):
            logits = as_float(output)
            return torch.softmax(logits, 1)[:, 1:] if self.softmax else torch.sigmoid(logits)

    def represent(self, output: torch.Tensor) -> torch.Tensor:
        """The foreground probabilities (:meth:`to_seg`): what a consistency into this head compares."""
        return self.to_seg(output)

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        return seg_logits
