"""MONAI's UNet and SegResNet as backbones (MONAI is the optional extra ``mtssl[monai]``).

MONAI is imported inside the entries, so a 3D run with ``vnet`` needs none of it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import torch
from torch import nn

from mtssl.nets.shapes import check_image, check_multiple
from mtssl.registry import BACKBONES

__all__ = ["MonaiSegResNet", "MonaiUNet"]


def _monai_nets(entry: str) -> ModuleType:
    try:
        import monai.networks.nets as nets
    except ImportError as exc:
        raise ImportError(
            f"backbone {entry!r} needs MONAI, an optional dependency: pip install 'mtssl[monai]' (or pip install monai)"
        ) from exc
    return nets


@BACKBONES.register("monai_unet")
class MonaiUNet(nn.Module):
    """MONAI's residual ``UNet``; returns ``(B, features, *S)`` features (its last conv, then PReLU).

    Args:
        in_channels: image channels.
        features: channels handed to the task heads.
        channels: channels per level.
        strides: down-sampling per level; spatial sizes must be multiples of their product.
        num_res_units: residual units per block.
        norm: ``"instance"`` or ``"batch"``.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_channels: int = 1,
        features: int = 16,
        channels: tuple[int, ...] = (16, 32, 64, 128, 256),
        strides: tuple[int, ...] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: Literal["instance", "batch"] = "instance",
        spatial_dims: Literal[2, 3] = 3,
    ) -> None:
        super().__init__()
        nets = _monai_nets("monai_unet")
        self.net = nets.UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=features,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            norm=norm.upper(),
        )
        self.act = nn.PReLU()  # MONAI's UNet ends in a bare conv; the heads get activated features
        self.factor = int(torch.tensor(strides).prod())
        self.in_channels, self.out_channels, self.spatial_dims = in_channels, features, spatial_dims

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` image to ``(B, features, *S)`` features."""
        check_image(image, self.spatial_dims, self.in_channels)
        check_multiple(image, self.factor, "monai_unet")
        return self.act(self.net(image))


@BACKBONES.register("monai_segresnet")
class MonaiSegResNet(nn.Module):
    """MONAI's ``SegResNet`` without its final conv; returns ``(B, init_filters, *S)`` features.

    Args:
        in_channels: image channels.
        init_filters: filters of the first level (and of the returned features).
        blocks_down: residual blocks per encoder level; sizes must be multiples of 2**(levels - 1).
        blocks_up: residual blocks per decoder level.
        dropout_prob: dropout after the first convolution, or None.
        spatial_dims: 2 or 3.
    """

    def __init__(
        self,
        in_channels: int = 1,
        init_filters: int = 16,
        blocks_down: tuple[int, ...] = (1, 2, 2, 4),
        blocks_up: tuple[int, ...] = (1, 1, 1),
        dropout_prob: float | None = None,
        spatial_dims: Literal[2, 3] = 3,
    ) -> None:
        super().__init__()
        nets = _monai_nets("monai_segresnet")
        self.net = nets.SegResNet(
            spatial_dims=spatial_dims,
            init_filters=init_filters,
            in_channels=in_channels,
            out_channels=init_filters,
            dropout_prob=dropout_prob,
            use_conv_final=False,
            blocks_down=blocks_down,
            blocks_up=blocks_up,
        )
        self.factor = 2 ** (len(blocks_down) - 1)
        self.in_channels, self.out_channels, self.spatial_dims = in_channels, init_filters, spatial_dims

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` image to ``(B, init_filters, *S)`` features."""
        check_image(image, self.spatial_dims, self.in_channels)
        check_multiple(image, self.factor, "monai_segresnet")
        return self.net(image)
