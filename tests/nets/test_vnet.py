import pytest
import torch

from mtssl.nets.vnet import VNet
from mtssl.registry import BACKBONES


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_equals_reference():
    # DTC's VNet(n_channels=1, n_classes=2, n_filters=16, normalization="batchnorm"): 9,448,866 parameters,
    # of which the 1x1x1 output convolution (the task head here) holds 16 * 2 + 2.
    assert n_params(BACKBONES.create("vnet")) + 16 * 2 + 2 == 9_448_866


@pytest.mark.parametrize(("spatial_dims", "shape"), [(3, (2, 1, 16, 32, 16)), (2, (2, 1, 32, 48))], ids=["3d", "2d"])
@pytest.mark.parametrize("normalization", ["batch", "instance", "group", "none"])
def test_forward_backward(spatial_dims, shape, normalization):
    net = VNet(n_filters=4, normalization=normalization, spatial_dims=spatial_dims)
    x = torch.randn(shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], 4, *shape[2:])
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_dropout_only_in_training():
    net = VNet(n_filters=4).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(net(x), net(x))


def test_exception():
    net = VNet(n_filters=4)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.randn(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, D, H, W\)"):
        net(torch.randn(1, 16, 16, 16))
