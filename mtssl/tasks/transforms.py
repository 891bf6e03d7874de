"""Cross-task transforms, registered by name.

| name | from | to | formula |
| --- | --- | --- | --- |
| ``sdf->seg`` | signed distance (negative inside) | foreground probability | ``sigmoid(-k * sdf)`` (DTC) |
| ``dist->seg`` | inside distance (0 outside) | foreground probability | ``2 * sigmoid(k * d) - 1`` |
| ``seg->sdf`` | segmentation logits | signed distance | :func:`mtssl.ops.soft_signed_distance` |
| ``seg->dist`` | segmentation logits | inside distance in [0, 1] | soft distance to the background, normalised |
| ``seg->edge`` | segmentation logits | boundary map | :func:`mtssl.ops.soft_boundary` of the probability |

All work in 2D and 3D and per channel (one channel per foreground class), in float32 under
autocast. Each module is a one-line ``forward`` over its function.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from mtssl.ops.boundary import soft_boundary
from mtssl.ops.checks import as_float
from mtssl.ops.conv_distance import (
    Activation,
    Kernel,
    foreground_log_probs,
    normalize_max,
    soft_distance,
    soft_signed_distance,
)
from mtssl.registry import TRANSFORMS

__all__ = [
    "DistToSeg",
    "SaturationWarning",
    "SdfToSeg",
    "SegToDist",
    "SegToEdge",
    "SegToSdf",
    "dist_to_seg",
    "sdf_to_seg",
    "seg_to_dist",
    "seg_to_edge",
    "warn_if_saturated",
]


def sdf_to_seg(sdf: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """``(B, K, *S)`` signed distances (negative inside) to foreground probabilities ``sigmoid(-k sdf)``."""
    with torch.autocast(device_type=sdf.device.type, enabled=False):
        return torch.sigmoid(-k * as_float(sdf))


def dist_to_seg(dist: torch.Tensor, k: float = 1500.0) -> torch.Tensor:
    """``(B, K, *S)`` inside distances (0 outside) to foreground probabilities ``2 sigmoid(k d) - 1``."""
    with torch.autocast(device_type=dist.device.type, enabled=False):
        return 2 * torch.sigmoid(k * as_float(dist)) - 1


def seg_to_dist(
    logits: torch.Tensor,
    h: float = 0.5,
    kernel: Kernel = "gauss",
    radius: float | None = None,
    activation: Activation = "auto",
) -> torch.Tensor:
    """Soft inside distance in [0, 1]: the soft distance to the background, divided by its maximum.

    ``(B, C, *S)`` logits to ``(B, K, *S)``; see :func:`mtssl.ops.soft_distance` for h, kernel, radius.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        _, log_not_fg = foreground_log_probs(as_float(logits), activation)
        return normalize_max(soft_distance(log_not_fg, h, kernel, radius))


def seg_to_edge(logits: torch.Tensor, activation: Activation = "auto") -> torch.Tensor:
    """Soft boundary: the spatial gradient magnitude of each foreground probability, ``(B, K, *S)``."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_fg, _ = foreground_log_probs(as_float(logits), activation)
        return soft_boundary(log_fg.exp())


class SaturationWarning(UserWarning):
    """A soft transform's window is too short for a normalised map to reach its target."""


def warn_if_saturated(radius: float | None, patch: tuple[int, ...]) -> None:
    """Warn (:class:`SaturationWarning`) when a normalised soft SDF's window ``radius`` is under half the patch."""
    if radius is not None and 2 * radius < max(patch):
        warnings.warn(
            f"seg->sdf: radius {radius:g} is under half the patch ({patch}), so the normalised map saturates "
            "at +-1 beyond it and stops matching the SDF target there; radius: null (the whole patch, by FFT) "
            "avoids it",
            SaturationWarning,
            stacklevel=1,  # this line: shown once per process, not once per calling module
        )


@TRANSFORMS.register("sdf->seg")
class SdfToSeg(nn.Module):
    """Foreground probability from a signed distance (negative inside): ``sigmoid(-k * sdf)`` (DTC)."""

    def __init__(self, k: float = 1500.0) -> None:
        super().__init__()
        self.k = k

    def forward(self, sdf: torch.Tensor) -> torch.Tensor:
        return sdf_to_seg(sdf, self.k)


@TRANSFORMS.register("dist->seg")
class DistToSeg(nn.Module):
    """Foreground probability from an inside distance map: ``2 * sigmoid(k * d) - 1``."""

    def __init__(self, k: float = 1500.0) -> None:
        super().__init__()
        self.k = k

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        return dist_to_seg(dist, self.k)


@TRANSFORMS.register("seg->sdf")
class SegToSdf(nn.Module):
    """Differentiable signed distance from segmentation logits (:func:`mtssl.ops.soft_signed_distance`)."""

    def __init__(
        self,
        h: float = 4.0,
        kernel: Literal["exp", "gauss"] = "exp",
        radius: float | None = None,
        normalize: bool = True,
        activation: Literal["auto", "sigmoid", "softmax"] = "auto",
    ) -> None:
        super().__init__()
        self.h, self.kernel, self.radius, self.normalize, self.activation = h, kernel, radius, normalize, activation

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            warn_if_saturated(self.radius, tuple(logits.shape[2:]))
        return soft_signed_distance(logits, self.h, self.kernel, self.radius, None, self.normalize, self.activation)


@TRANSFORMS.register("seg->dist")
class SegToDist(nn.Module):
    """Differentiable inside distance in [0, 1] from segmentation logits (:func:`seg_to_dist`)."""

    def __init__(
        self,
        h: float = 0.5,
        kernel: Literal["exp", "gauss"] = "gauss",
        radius: float | None = None,
        activation: Literal["auto", "sigmoid", "softmax"] = "auto",
    ) -> None:
        super().__init__()
        self.h, self.kernel, self.radius, self.activation = h, kernel, radius, activation

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return seg_to_dist(logits, self.h, self.kernel, self.radius, self.activation)


@TRANSFORMS.register("seg->edge")
class SegToEdge(nn.Module):
    """Differentiable boundary map from segmentation logits (:func:`seg_to_edge`)."""

    def __init__(self, activation: Literal["auto", "sigmoid", "softmax"] = "auto") -> None:
        super().__init__()
        self.activation = activation

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return seg_to_edge(logits, self.activation)
