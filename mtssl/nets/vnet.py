"""The literature's V-Net (UA-MT, DTC, SASSNet, MC-Net) and MC-Net's multi-decoder variant.

Layer for layer the networks of HiLab-git/DTC ``code/networks/vnet.py`` and ycwu1997/MC-Net
``VNet.py``: 3x3x3 conv stages with normalisation and ReLU, stride-2 conv down-sampling, additive
skips, and Dropout(0.5) on the deepest encoder features and the last decoder features when
``has_dropout`` is set. Up-sampling is ConvTranspose (V-Net), or, in MC-Net's extra decoders,
trilinear / nearest interpolation followed by a 3x3x3 conv. The 1x1x1 output convolution belongs
to the task head: with one 2-channel head, ``vnet`` has 9,448,866 parameters and ``mcnet`` 12,347,716
(2 decoders) or 15,246,566 (3), as the references.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mtssl.nets.shapes import check_image, check_multiple
from mtssl.registry import BACKBONES

__all__ = ["MCNet", "VNet", "VNetDecoder", "VNetEncoder"]

Normalization = Literal["batch", "instance", "group", "none"]
UpSampling = Literal["transpose", "linear", "nearest"]

_STAGES_DOWN = (1, 2, 3, 3, 3)
_STAGES_UP = (3, 3, 2, 1)
_FACTOR = 16  # four stride-2 stages


def _norm(kind: Normalization, channels: int, nd: int) -> list[nn.Module]:
    if kind == "batch":
        return [(nn.BatchNorm3d if nd == 3 else nn.BatchNorm2d)(channels)]
    if kind == "instance":
        return [(nn.InstanceNorm3d if nd == 3 else nn.InstanceNorm2d)(channels)]
    if kind == "group":
        return [nn.GroupNorm(num_groups=16 if channels % 16 == 0 else 1, num_channels=channels)]
    return []


def _conv(nd: int) -> type[nn.Module]:
    return nn.Conv3d if nd == 3 else nn.Conv2d


def _conv_stages(n_stages: int, c_in: int, c_out: int, norm: Normalization, nd: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_stages):
        layers += [_conv(nd)(c_in if i == 0 else c_out, c_out, 3, padding=1), *_norm(norm, c_out, nd), nn.ReLU(True)]
    return nn.Sequential(*layers)


def _down(c_in: int, c_out: int, norm: Normalization, nd: int) -> nn.Sequential:
    return nn.Sequential(_conv(nd)(c_in, c_out, 2, stride=2), *_norm(norm, c_out, nd), nn.ReLU(True))


def _up(c_in: int, c_out: int, norm: Normalization, nd: int, mode: UpSampling) -> nn.Sequential:
    if mode == "transpose":
        layers = [(nn.ConvTranspose3d if nd == 3 else nn.ConvTranspose2d)(c_in, c_out, 2, stride=2)]
    elif mode == "linear":
        linear = "trilinear" if nd == 3 else "bilinear"
        layers = [nn.Upsample(scale_factor=2, mode=linear, align_corners=True), _conv(nd)(c_in, c_out, 3, padding=1)]
    else:
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), _conv(nd)(c_in, c_out, 3, padding=1)]
    return nn.Sequential(*layers, *_norm(norm, c_out, nd), nn.ReLU(True))


def _dropout(enabled: bool, nd: int) -> nn.Module:
    return (nn.Dropout3d if nd == 3 else nn.Dropout2d)(0.5) if enabled else nn.Identity()


class VNetEncoder(nn.Module):
    """V-Net encoder: five conv stages, four stride-2 down-samplings; returns the 5 stage outputs."""

    def __init__(self, in_channels: int, n_filters: int, normalization: Normalization, has_dropout: bool, nd: int):
        super().__init__()
        widths = [n_filters * 2**i for i in range(5)]
        self.stages = nn.ModuleList(
            _conv_stages(s, c_in, c, normalization, nd)
            for s, c_in, c in zip(_STAGES_DOWN, [in_channels, *widths[1:]], widths)
        )
        self.down = nn.ModuleList(_down(widths[i], widths[i + 1], normalization, nd) for i in range(4))
        self.dropout = _dropout(has_dropout, nd)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.down[i - 1](features[-1]))
            features.append(x)
        features[-1] = self.dropout(features[-1])
        return features


class VNetDecoder(nn.Module):
    """V-Net decoder: up-sample, add the skip, conv stages; returns ``(B, n_filters, *S)`` features."""

    def __init__(self, n_filters: int, normalization: Normalization, has_dropout: bool, nd: int, up: UpSampling):
        super().__init__()
        widths = [n_filters * 2**i for i in range(5)]
        self.up_sampling = up
        self.up = nn.ModuleList(_up(widths[i + 1], widths[i], normalization, nd, up) for i in reversed(range(4)))
        self.stages = nn.ModuleList(
            _conv_stages(s, c, c, normalization, nd) for s, c in zip(_STAGES_UP, reversed(widths[:4]))
        )
        self.dropout = _dropout(has_dropout, nd)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, stage, skip in zip(self.up, self.stages, reversed(features[:-1])):
            x = stage(up(x) + skip)
        return self.dropout(x)


@BACKBONES.register("vnet")
class VNet(nn.Module):
    """The literature's V-Net; returns the last decoder features ``(B, n_filters, *S)``.

    Args:
        in_channels: image channels.
        n_filters: base filters (16 in the literature); the deepest stage has 16x as many.
        normalization: ``"batch"`` (the literature's), ``"instance"``, ``"group"`` or ``"none"``.
        has_dropout: Dropout(0.5) on the deepest encoder and the last decoder features in training.
        spatial_dims: 3 for volumes, 2 for images.

    Spatial sizes must be multiples of 16 (four stride-2 stages).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_filters: int = 16,
        normalization: Normalization = "batch",
        has_dropout: bool = True,
        spatial_dims: Literal[2, 3] = 3,
    ) -> None:
        super().__init__()
        self.encoder = VNetEncoder(in_channels, n_filters, normalization, has_dropout, spatial_dims)
        self.decoder = VNetDecoder(n_filters, normalization, has_dropout, spatial_dims, "transpose")
        self.in_channels, self.out_channels, self.spatial_dims = in_channels, n_filters, spatial_dims

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` image to ``(B, n_filters, *S)`` decoder features."""
        check_image(image, self.spatial_dims, self.in_channels)
        check_multiple(image, _FACTOR, "V-Net")
        return self.decoder(self.encoder(image))


@BACKBONES.register("mcnet")
class MCNet(nn.Module):
    """MC-Net / MC-Net+: a shared V-Net encoder and several decoders that differ in up-sampling.

    ``forward`` returns one ``(B, n_filters, *S)`` feature map per decoder (a list); each decoder
    gets its own task heads. Decoder ``i`` up-samples with ``up_sampling[i]``: MC-Net uses
    ``("transpose", "linear")``, MC-Net+ adds ``"nearest"``.

    Args:
        in_channels: image channels.
        n_filters: base filters.
        normalization: as :class:`VNet`.
        has_dropout: as :class:`VNet`, per decoder.
        up_sampling: one entry per decoder.
        spatial_dims: 3 or 2.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_filters: int = 16,
        normalization: Normalization = "batch",
        has_dropout: bool = True,
        up_sampling: tuple[UpSampling, ...] = ("transpose", "linear"),
        spatial_dims: Literal[2, 3] = 3,
    ) -> None:
        super().__init__()
        if len(up_sampling) < 1:
            raise ValueError("mcnet needs at least one decoder in up_sampling, e.g. ('transpose', 'linear')")
        self.encoder = VNetEncoder(in_channels, n_filters, normalization, has_dropout, spatial_dims)
        self.decoders = nn.ModuleList(
            VNetDecoder(n_filters, normalization, has_dropout, spatial_dims, up) for up in up_sampling
        )
        self.in_channels, self.out_channels, self.spatial_dims = in_channels, n_filters, spatial_dims
        self.branches = len(up_sampling)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in_channels, *S)`` image to a list of ``(B, n_filters, *S)``, one per decoder."""
        check_image(image, self.spatial_dims, self.in_channels)
        check_multiple(image, _FACTOR, "MC-Net")
        features = self.encoder(image)
        return [decoder(features) for decoder in self.decoders]
