"""The literature's V-Net (UA-MT, DTC, SASSNet, MC-Net), as a backbone that returns decoder features.

Layer for layer the network of HiLab-git/DTC ``code/networks/vnet.py``: 3x3x3 conv stages with
normalisation and ReLU, stride-2 conv down-sampling, ConvTranspose up-sampling, additive skips,
and Dropout3d(0.5) on the deepest encoder features and the last decoder features when
``has_dropout`` is set. The 1x1x1 output convolution is the task head's, not the backbone's:
with one 2-channel head the whole model has 9,448,866 parameters, as the reference.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mtssl.registry import BACKBONES

__all__ = ["VNet"]

Normalization = Literal["batch", "instance", "group", "none"]


def _norm(kind: Normalization, channels: int, nd: int) -> list[nn.Module]:
    if kind == "batch":
        return [(nn.BatchNorm3d if nd == 3 else nn.BatchNorm2d)(channels)]
    if kind == "instance":
        return [(nn.InstanceNorm3d if nd == 3 else nn.InstanceNorm2d)(channels)]
    if kind == "group":
        return [nn.GroupNorm(num_groups=16 if channels % 16 == 0 else 1, num_channels=channels)]
    return []


def _conv_stages(n_stages: int, c_in: int, c_out: int, norm: Normalization, nd: int) -> nn.Sequential:
    conv = nn.Conv3d if nd == 3 else nn.Conv2d
    layers: list[nn.Module] = []
    for i in range(n_stages):
        layers += [conv(c_in if i == 0 else c_out, c_out, 3, padding=1), *_norm(norm, c_out, nd), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _resample(c_in: int, c_out: int, norm: Normalization, nd: int, up: bool) -> nn.Sequential:
    if up:
        layer = (nn.ConvTranspose3d if nd == 3 else nn.ConvTranspose2d)(c_in, c_out, 2, stride=2)
    else:
        layer = (nn.Conv3d if nd == 3 else nn.Conv2d)(c_in, c_out, 2, stride=2)
    return nn.Sequential(layer, *_norm(norm, c_out, nd), nn.ReLU(inplace=True))


@BACKBONES.register("vnet")
class VNet(nn.Module):
    """V-Net encoder-decoder; ``forward`` returns the last decoder features ``(B, n_filters, *S)``.

    Args:
        in_channels: image channels.
        n_filters: base filters (16 in the literature); the deepest stage has 16x as many.
        normalization: ``"batch"`` (the literature's), ``"instance"``, ``"group"`` or ``"none"``.
        has_dropout: Dropout3d(0.5) on the deepest encoder and the last decoder features in training.
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
        nd, n, norm = spatial_dims, n_filters, normalization
        widths = [n, 2 * n, 4 * n, 8 * n, 16 * n]
        stages = [1, 2, 3, 3, 3]
        self.encoder = nn.ModuleList(
            _conv_stages(s, c_in, c, norm, nd) for s, c_in, c in zip(stages, [in_channels, *widths[1:]], widths)
        )
        self.down = nn.ModuleList(_resample(widths[i], widths[i + 1], norm, nd, up=False) for i in range(4))
        self.up = nn.ModuleList(_resample(widths[i + 1], widths[i], norm, nd, up=True) for i in reversed(range(4)))
        self.decoder = nn.ModuleList(_conv_stages(s, c, c, norm, nd) for s, c in zip([3, 3, 2, 1], widths[3::-1]))
        self.dropout = (nn.Dropout3d if nd == 3 else nn.Dropout2d)(0.5) if has_dropout else nn.Identity()
        self.out_channels = n
        self.spatial_dims = nd

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` image to ``(B, n_filters, *S)`` decoder features."""
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"image must have shape (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W); got {tuple(image.shape)}"
            )
        if any(s % 16 for s in image.shape[2:]):
            raise ValueError(f"V-Net needs spatial sizes that are multiples of 16; got {tuple(image.shape[2:])}")
        skips = []
        x = image
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i < 4:
                skips.append(x)
                x = self.down[i](x)
        x = self.dropout(x)
        for up, stage, skip in zip(self.up, self.decoder, reversed(skips)):
            x = stage(up(x) + skip)
        return self.dropout(x)
