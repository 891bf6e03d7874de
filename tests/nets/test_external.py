"""The MONAI and segmentation-models-pytorch backbones."""

import sys

import pytest
import torch

from mtssl.registry import BACKBONES


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("monai_unet", {"features": 8, "channels": (8, 16, 32), "strides": (2, 2)}, (2, 1, 16, 16, 8)),
        ("monai_unet", {"spatial_dims": 2}, (2, 1, 32, 32)),
        ("monai_segresnet", {"init_filters": 8}, (2, 1, 16, 16, 8)),
        ("monai_segresnet", {"spatial_dims": 2}, (2, 1, 16, 24)),
    ],
)
def test_monai_forward_backward(name, options, shape):
    net = BACKBONES.create(name, **options)
    x = torch.randn(shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], net.out_channels, *shape[2:])
    out.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["monai_unet", "monai_segresnet"])
def test_missing_monai_is_a_clear_error(monkeypatch, name):
    for module in [m for m in sys.modules if m == "monai" or m.startswith("monai.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "monai", None)
    with pytest.raises(ImportError, match=rf"backbone '{name}' needs MONAI.*pip install 'mtssl\[monai\]'"):
        BACKBONES.create(name)


def test_monai_size_error():
    with pytest.raises(ValueError, match=r"monai_segresnet needs spatial sizes that are multiples of 8"):
        BACKBONES.create("monai_segresnet", init_filters=8)(torch.randn(1, 1, 16, 16, 12))


@pytest.mark.parametrize(
    ("options", "features"),
    [({"encoder_name": "tu-resnet18"}, 16), ({"arch": "FPN", "encoder_name": "resnet18"}, 128)],
    ids=["unet-timm", "fpn"],
)
def test_smp_forward_backward(options, features):
    net = BACKBONES.create("smp", in_channels=1, **options)
    x = torch.randn(2, 1, 64, 32, requires_grad=True)
    out = net(x)
    assert out.shape == (2, features, 64, 32) and net.out_channels == features
    out.mean().backward()
    assert torch.isfinite(x.grad).all()


def test_smp_is_random_by_default_and_pretrained_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"could not load pretrained weights 'imagenet' for encoder 'resnet18'"):
        BACKBONES.create("smp", encoder_name="resnet18", encoder_weights="imagenet")


def test_smp_errors():
    net = BACKBONES.create("smp", encoder_name="resnet18")
    with pytest.raises(ValueError, match=r"multiples of 32; got \(30, 32\)\. The nearest valid size is \(32, 32\)"):
        net(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) for this 2D backbone"):
        net(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(Exception, match="spatial_dims"):
        BACKBONES.create("smp", spatial_dims=3)
