"""The cross-task transforms' functions. A task is their one home: its ``to_seg`` and ``from_seg`` call them
with the task's options (``k``, ``h``, ``kernel``, ``radius``), and terms reach them only through the tasks
(:meth:`~mtssl.terms.context.StepContext.mapped`), so an option is set once, on the task.

| transform | the task's method | formula |
| --- | --- | --- |
| ``sdf->seg`` | ``sdf`` task's ``to_seg`` | ``sigmoid(-k * sdf)`` (DTC), sdf negative inside |
| ``dist->seg`` | ``dist`` task's ``to_seg`` | ``2 * sigmoid(k * d) - 1``, d the inside distance (0 outside) |
| ``seg->sdf`` | ``sdf`` task's ``from_seg`` | the normalised :func:`mtssl.ops.soft_signed_distance` of the logits |
| ``seg->dist`` | ``dist`` task's ``from_seg`` | :func:`seg_to_dist`: soft distance to the background / its maximum |
| ``seg->edge`` | ``edge`` task's ``from_seg`` | :func:`seg_to_edge`: gradient magnitude of the probability |

All work in 2D and 3D and per channel (one channel per foreground class), in float32 under autocast.
Between two tasks that are not segmentations there is no transform: a term goes through a seg head
(``sdf -> seg``, then ``seg -> dist``), as the terms' checks say.
"""

from __future__ import annotations

import warnings

import torch

from mtssl.ops.boundary import soft_boundary
from mtssl.ops.checks import as_float
from mtssl.ops.conv_distance import (
    Activation,
    Kernel,
    foreground_log_probs,
    normalize_max,
    soft_distance,
)

__all__ = [
    "SaturationWarning",
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
        return normalize_max(soft_distance(log_not_fg, h, kernel=kernel, radius=radius))


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
