"""Input checks for backbones: rank, channels, and the spatial sizes a network can take."""

from __future__ import annotations

import torch

__all__ = ["SizeError", "check_image", "check_multiple", "nearest_multiple"]


class SizeError(ValueError):
    """An input whose spatial sizes the network cannot take; ``nearest`` is the closest size it can."""

    def __init__(self, message: str, nearest: tuple[int, ...]) -> None:
        super().__init__(message)
        self.nearest = nearest


def check_image(image: torch.Tensor, spatial_dims: int, in_channels: int) -> None:
    """Check a ``(B, C, *S)`` image against the backbone's spatial rank and input channels."""
    dims = "D, H, W" if spatial_dims == 3 else "H, W"
    if not isinstance(image, torch.Tensor) or image.ndim != spatial_dims + 2:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must have shape (B, C, {dims}) for this {spatial_dims}D backbone; got {got}")
    if image.shape[1] != in_channels:
        raise ValueError(
            f"image has {image.shape[1]} channels but the backbone was built with in_channels={in_channels}"
        )


def nearest_multiple(size: int, factor: int) -> int:
    """The multiple of ``factor`` closest to ``size`` (at least ``factor``; ties round up)."""
    return max(factor, factor * round(size / factor + 1e-9))


def check_multiple(image: torch.Tensor, factor: int, network: str) -> None:
    """Fail with the nearest valid size unless every spatial size of ``image`` is a multiple of ``factor``."""
    sizes = tuple(image.shape[2:])
    if any(s % factor for s in sizes):
        nearest = tuple(nearest_multiple(s, factor) for s in sizes)
        raise SizeError(
            f"{network} needs spatial sizes that are multiples of {factor}; got {sizes}. "
            f"The nearest valid size is {nearest}: crop or pad the input to it",
            nearest,
        )
