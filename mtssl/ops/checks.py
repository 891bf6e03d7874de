"""Input checks shared by the ops: they name the expected and the actual shapes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["as_float", "check_maps", "check_mask", "check_same_shape", "check_spacing"]


def check_mask(mask: torch.Tensor, name: str = "mask") -> int:
    """Check a mask or label map of shape ``(B, H, W)`` or ``(B, D, H, W)``; return its spatial rank."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (B, H, W) or (B, D, H, W); got {tuple(mask.shape)}")
    return mask.ndim - 1


def check_maps(x: torch.Tensor, name: str = "input") -> int:
    """Check a multi-channel map of shape ``(B, C, H, W)`` or ``(B, C, D, H, W)``; return its spatial rank."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} must have shape (B, C, H, W) or (B, C, D, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x.ndim - 2


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Check that two tensors agree in shape (binding B, C and the spatial dims)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Return the voxel spacing as ``ndim`` positive floats (1.0 each when ``None``)."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, (int, float)):
        spacing = (float(spacing),) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing must have {ndim} values, one per spatial dim; got {len(values)}: {values}")
    if not all(s > 0 and s != float("inf") for s in values):
        raise ValueError(f"spacing must be positive and finite; got {values}")
    return values


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 (autocast outputs) as float32; float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) or not x.is_floating_point() else x
