"""2D encoder-decoders from segmentation-models-pytorch, with any of its or timm's encoders.

``encoder_name="tu-<timm model>"`` takes any timm encoder. Weights are random by default
(``encoder_weights=None``); pretrained ones load only when asked, and fail clearly offline.
smp (and timm) are imported inside the entry.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mtssl.nets.shapes import check_image, check_multiple
from mtssl.registry import BACKBONES

__all__ = ["SmpBackbone"]


@BACKBONES.register("smp")
class SmpBackbone(nn.Module):
    """An smp encoder-decoder (Unet by default) without its segmentation conv; returns decoder features.

    Args:
        arch: smp architecture name, e.g. ``"Unet"``, ``"UnetPlusPlus"``, ``"FPN"``, ``"DeepLabV3Plus"``.
        encoder_name: smp encoder, or ``"tu-<name>"`` for a timm one.
        encoder_weights: ``None`` (random, the default) or a pretrained tag such as ``"imagenet"``.
        encoder_depth: encoder stages; sizes must be multiples of 2**encoder_depth.
        in_channels: image channels.
        spatial_dims: 2 (smp is 2D only).
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        in_channels: int = 1,
        spatial_dims: Literal[2] = 2,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp  # heavy: pulls in timm and huggingface_hub

        try:
            model = smp.create_model(
                arch,
                encoder_name=encoder_name,
                encoder_weights=encoder_weights,
                encoder_depth=encoder_depth,
                in_channels=in_channels,
                classes=1,
            )
        except Exception as exc:
            if encoder_weights is None:
                raise
            raise RuntimeError(
                f"could not load pretrained weights {encoder_weights!r} for encoder {encoder_name!r}: "
                f"{type(exc).__name__}: {exc}. mtssl never downloads by default; put the weights in the "
                "Hugging Face cache beforehand, or use encoder_weights=None"
            ) from exc
        head = model.segmentation_head
        self.out_channels = head[0].in_channels
        model.segmentation_head = head[1]  # keep only its up-sampling (Identity for Unet)
        self.model = model
        self.factor = 2**encoder_depth
        self.in_channels, self.spatial_dims = in_channels, spatial_dims
        self.arch = arch

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` image to ``(B, out_channels, H, W)`` decoder features."""
        check_image(image, 2, self.in_channels)
        check_multiple(image, self.factor, f"smp {self.arch}")
        return self.model(image)
