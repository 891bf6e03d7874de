"""SSL4MIS's 2D U-Net: its parameter count, its shapes and its errors."""

import pytest
import torch

from mtssl import build_model
from mtssl.nets.unet import UNet


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_equals_ssl4mis_unet():
    # SSL4MIS's UNet(in_chns=1, class_num=4): 1,813,764 parameters (its 3x3 output conv is the head here)
    seg = {"softmax": True, "num_classes": 3}
    model = build_model({"backbone": {"name": "unet"}, "tasks": {"seg": {**seg, "head_kernel": 3}}})
    assert n_params(model) == 1_813_764
    # the same network with mtssl's default 1x1 head: 16 x 4 x 8 weights fewer
    assert n_params(build_model({"backbone": {"name": "unet"}, "tasks": {"seg": seg}})) == 1_813_764 - 16 * 4 * 8


def test_shapes_gradients_and_errors():
    net = UNet(in_channels=2)
    x = torch.randn(2, 2, 32, 48, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 16, 32, 48)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.randn(1, 2, 30, 32))
    with pytest.raises(ValueError, match="2D U-Net"):
        UNet(spatial_dims=3)
