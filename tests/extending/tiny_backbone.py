"""A new backbone in one file: ``two_convs``, two 3x3(x3) convolutions at full resolution."""

from __future__ import annotations

from torch import nn

from mtssl.registry import BACKBONES


@BACKBONES.register("two_convs")
class TwoConvs(nn.Sequential):
    """Conv, ReLU, conv, ReLU: ``(B, in_channels, *S)`` to ``(B, features, *S)``."""

    def __init__(self, in_channels: int = 1, features: int = 8, spatial_dims: int = 3) -> None:
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        super().__init__(
            conv(in_channels, features, 3, padding=1), nn.ReLU(), conv(features, features, 3, padding=1), nn.ReLU()
        )
        self.out_channels, self.spatial_dims = features, spatial_dims
