"""What a task is: a head, an exact target from a label, and transforms to and from segmentation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

import torch
from torch import nn

from mtssl.ops.checks import as_float, check_mask
from mtssl.ops.losses import mse_loss

__all__ = ["Task", "class_masks"]

SegActivation = Literal["auto", "sigmoid", "softmax"]


def class_masks(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, *S)`` label map (0 = background) to ``(B, K, *S)`` bool masks of classes 1..K."""
    check_mask(label, "label")
    if label.is_floating_point():
        raise TypeError(f"label must be an integer or bool label map, got {label.dtype}")
    classes = torch.arange(1, num_classes + 1, device=label.device).view(1, -1, *([1] * (label.ndim - 1)))
    return label.unsqueeze(1).long() == classes


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """Base of every task. Its dataclass fields are the task's options (``num_classes`` foreground classes).

    Subclasses set ``output_layer`` (the head's last layer: a module type) and implement :meth:`target`,
    :meth:`to_seg` and :meth:`from_seg`; :meth:`loss` (the supervised loss) and :meth:`score` (how a
    map transformed into this task's representation is scored) default to the MSE. Every map is
    ``(B, K, *S)``, one channel per foreground class, except the seg task's head, which adds a
    background channel when it is a softmax. Loss terms name heads and ask their task, so a task's
    options (``k``, ``h``, ...) are set once, on the task, and reach every term.

    The representation contract: a head outputs either its task's representation itself (the sdf and
    dist heads, whose ``output_layer`` is a tanh or sigmoid) or raw logits (the seg and edge heads,
    trained with losses on logits). :meth:`represent` turns a head's output into the representation:
    the space of :meth:`target`, of :meth:`from_seg`'s output and of :meth:`score`'s input. Cross-task
    terms compare representations only, never a logit with a probability.
    """

    num_classes: int = 1
    #: The head convolution's kernel: 1 (the V-Net literature's), or 3 (SSL4MIS's 2D U-Net's output conv).
    head_kernel: int = 1

    output_layer: ClassVar[type[nn.Module]] = nn.Identity
    #: Whether :meth:`to_seg` exists (the edge task has no transform to segmentation).
    has_to_seg: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes counts foreground classes and must be >= 1, got {self.num_classes}")
        if self.head_kernel < 1 or self.head_kernel % 2 == 0:
            raise ValueError(f"head_kernel must be an odd size (1 or 3), got {self.head_kernel}")

    @property
    def out_channels(self) -> int:
        """Channels of the head's output."""
        return self.num_classes

    def head(self, in_channels: int, spatial_dims: int) -> nn.Module:
        """A ``head_kernel`` convolution (1x1 by default) to :attr:`out_channels`, then :attr:`output_layer`."""
        conv = (nn.Conv3d if spatial_dims == 3 else nn.Conv2d)(
            in_channels, self.out_channels, kernel_size=self.head_kernel, padding=self.head_kernel // 2
        )
        return nn.Sequential(conv, self.output_layer())

    def target(self, label: torch.Tensor) -> torch.Tensor:
        """The exact target ``(B, K, *S)`` float32 of a ``(B, *S)`` label map, on its device."""
        raise TypeError(f"{type(self).__name__} defines no target")

    def loss(
        self,
        output: torch.Tensor,
        target: torch.Tensor,
        label: torch.Tensor,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The supervised loss of a float32 head ``output`` against its exact ``target`` (and the ``label``
        map), by component name (:meth:`loss_components`); a component is scaled by its ``weights``
        entry (1 when absent) and left out, not computed, where that is 0."""
        weights = weights or {}
        components = self.loss_components(output, target, label)
        return {name: w * loss() for name, loss in components.items() if (w := weights.get(name, 1.0))}

    def loss_components(
        self, output: torch.Tensor, target: torch.Tensor, label: torch.Tensor
    ) -> dict[str, Callable[[], torch.Tensor]]:
        """Each supervised loss component by name, as a thunk (computed only when weighted): the MSE here."""
        return {"mse": lambda: mse_loss(output, target)}

    def score(self, mapped: torch.Tensor, target: torch.Tensor) -> tuple[str, torch.Tensor]:
        """``(name, loss)`` of a map transformed into this task's representation (float32) against the
        exact target: the MSE here."""
        return "mse", mse_loss(mapped, target)

    def represent(self, output: torch.Tensor) -> torch.Tensor:
        """The head's ``output`` in this task's representation (float32): the output itself here, as the
        head's activation already made it (the class doc's contract)."""
        return as_float(output)

    def to_seg(self, output: torch.Tensor) -> torch.Tensor:
        """This task's head output to foreground probabilities ``(B, K, *S)``."""
        raise TypeError(f"{type(self).__name__} has no transform to segmentation; use it as an auxiliary target")

    def from_seg(self, seg_logits: torch.Tensor, activation: SegActivation = "auto") -> torch.Tensor:
        """Segmentation logits ``(B, C, *S)`` to this task's representation ``(B, K, *S)``, differentiably."""
        raise TypeError(f"{type(self).__name__} defines no transform from segmentation")
