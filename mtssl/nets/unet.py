"""SSL4MIS's 2D U-Net (HiLab-git/SSL4MIS ``code/networks/unet.py``, from PyMIC), the ACDC literature's network.

Layer for layer its ``UNet``: five stages of two 3x3 convolutions with batch normalisation and
LeakyReLU (dropout between the two, 0.05 to 0.5 from the top stage down), max-pool down-sampling,
and up-sampling by a 1x1 convolution then bilinear interpolation (``align_corners=True``), the
skip concatenated before the stage's convolutions. Its output convolution (3x3) belongs to the
task head here: with one 4-channel head of ``head_kernel: 3`` the network has 1,813,764
parameters, as SSL4MIS's ``UNet(in_chns=1, class_num=4)``. SSL4MIS's ``UNet`` sets ``bilinear:
False``, but its ``Decoder`` never passes that to its ``UpBlock`` s, whose default (``True``) builds the
1x1 convolution and the bilinear up-sampling; that is the network SSL4MIS trains, and the one here.
``benchmarks/ssl4mis_parity.py`` loads SSL4MIS's weights into this network (tensor for tensor, in
order) and gets identical logits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mtssl.nets.shapes import check_image, check_multiple
from mtssl.registry import BACKBONES

__all__ = ["UNet"]

_FACTOR = 16  # four max-pools


def _block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    )


class _Up(nn.Module):
    def __init__(self, c_deep: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_deep, c_skip, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.block = _block(2 * c_skip, c_out, 0.0)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, self.up(self.reduce(deep))], dim=1))


@BACKBONES.register("unet")
class UNet(nn.Module):
    """SSL4MIS's 2D U-Net; returns the last decoder features ``(B, features[0], H, W)``.

    Args:
        in_channels: image channels.
        features: the five stages' widths (SSL4MIS: 16, 32, 64, 128, 256).
        dropout: the encoder stages' dropout probabilities (SSL4MIS: 0.05, 0.1, 0.2, 0.3, 0.5).
        spatial_dims: 2 (the network is 2D; a volume is predicted slice by slice).

    Spatial sizes must be multiples of 16 (four max-pools).
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: tuple[int, int, int, int, int] = (16, 32, 64, 128, 256),
        dropout: tuple[float, float, float, float, float] = (0.05, 0.1, 0.2, 0.3, 0.5),
        spatial_dims: Literal[2] = 2,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError("unet is SSL4MIS's 2D U-Net (spatial_dims 2); for volumes use vnet")
        if len(features) != 5 or len(dropout) != 5:
            raise ValueError(f"unet takes five stages: features {features} and dropout {dropout} need 5 entries")
        self.encoder = nn.ModuleList(
            _block(c_in, c, p) for c_in, c, p in zip((in_channels, *features[:-1]), features, dropout)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(_Up(features[i + 1], features[i], features[i]) for i in reversed(range(4)))
        self.in_channels, self.out_channels, self.spatial_dims = in_channels, features[0], 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` image to ``(B, features[0], H, W)`` decoder features."""
        check_image(image, 2, self.in_channels)
        check_multiple(image, _FACTOR, "U-Net")
        skips = []
        x = image
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return x
