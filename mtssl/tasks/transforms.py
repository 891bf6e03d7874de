"""Cross-task transforms, registered by name (``"sdf->seg"``, ``"seg->sdf"``, ``"dist->seg"``).

Each module is a one-line ``forward`` over an op, computed in float32 under autocast.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mtssl.ops.conv_distance import soft_signed_distance
from mtssl.registry import TRANSFORMS

__all__ = ["DistToSeg", "SdfToSeg", "SegToSdf"]


def _float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@TRANSFORMS.register("sdf->seg")
class SdfToSeg(nn.Module):
    """Foreground probability from a signed distance (negative inside): ``sigmoid(-k * sdf)`` (DTC)."""

    def __init__(self, k: float = 1500.0) -> None:
        super().__init__()
        self.k = k

    def forward(self, sdf: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` signed distances to ``(B, C, *S)`` probabilities."""
        with torch.autocast(device_type=sdf.device.type, enabled=False):
            return torch.sigmoid(-self.k * _float32(sdf))


@TRANSFORMS.register("dist->seg")
class DistToSeg(nn.Module):
    """Foreground probability from an inside distance map: ``2 * sigmoid(k * d) - 1``."""

    def __init__(self, k: float = 1500.0) -> None:
        super().__init__()
        self.k = k

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` distances (0 outside) to ``(B, C, *S)`` probabilities."""
        with torch.autocast(device_type=dist.device.type, enabled=False):
            return 2 * torch.sigmoid(self.k * _float32(dist)) - 1


@TRANSFORMS.register("seg->sdf")
class SegToSdf(nn.Module):
    """Differentiable signed distance from segmentation logits (:func:`mtssl.ops.soft_signed_distance`)."""

    def __init__(
        self,
        h: float = 0.5,
        kernel: Literal["exp", "gauss"] = "gauss",
        radius: float | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.h, self.kernel, self.radius, self.normalize = h, kernel, radius, normalize

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` logits to ``(B, max(C - 1, 1), *S)`` signed distances."""
        return soft_signed_distance(logits, self.h, self.kernel, self.radius, normalize=self.normalize)
