"""Registry-driven smoke tests: every registered entry is built with its defaults and exercised."""

import pytest
import torch

from mtssl.registry import REGISTRIES

ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


@pytest.mark.parametrize(("kind", "name"), ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_entry_builds_with_defaults(kind, name):
    assert REGISTRIES[kind].create(name) is not None


TRANSFORMS = REGISTRIES["transform"].names()


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("shape", [(2, 1, 12, 10), (2, 1, 8, 7, 6)], ids=["2d", "3d"])
def test_transform_forward_backward(name, shape):
    transform = REGISTRIES["transform"].create(name)
    x = torch.randn(shape, requires_grad=True)
    out = transform(x)
    assert out.shape == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_float32_under_autocast(name):
    transform = REGISTRIES["transform"].create(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = transform(torch.randn(1, 1, 6, 6, 5).bfloat16())
    assert out.dtype == torch.float32


def test_transform_values():
    sdf = torch.tensor([-0.01, 0.0, 0.01]).view(1, 1, 1, 3)
    expected = torch.sigmoid(torch.tensor([15.0, 0.0, -15.0])).view(1, 1, 1, 3)
    torch.testing.assert_close(REGISTRIES["transform"].create("sdf->seg")(sdf), expected)
    dist = torch.tensor([0.0, 0.001]).view(1, 1, 1, 2)
    expected = (2 * torch.sigmoid(torch.tensor([0.0, 1.5])) - 1).view(1, 1, 1, 2)
    torch.testing.assert_close(REGISTRIES["transform"].create("dist->seg", k=1500)(dist), expected)


@pytest.mark.parametrize("name", REGISTRIES["backbone"].names())
def test_backbone_forward_backward(name):
    net = REGISTRIES["backbone"].create(name)
    x = torch.randn(2, 1, 16, 16, 16, requires_grad=True)  # batch 2: batchnorm at the 1-voxel deepest stage
    out = net(x)
    assert out.shape[0] == 2 and out.shape[2:] == x.shape[2:]
    out.mean().backward()
    assert torch.isfinite(x.grad).all()
