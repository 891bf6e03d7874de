import pytest
import torch
from torch import nn

from mtssl.nets.shapes import nearest_multiple
from mtssl.nets.vnet import MCNet, VNet
from mtssl.registry import BACKBONES

HEAD_2CH = 16 * 2 + 2  # the 1x1x1 output conv with 2 channels that each reference counts


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vnet_parameter_count_equals_reference():
    # DTC's VNet(n_channels=1, n_classes=2, n_filters=16, normalization="batchnorm").
    assert n_params(BACKBONES.create("vnet")) + HEAD_2CH == 9_448_866


@pytest.mark.parametrize(
    ("up_sampling", "expected"),
    [(("transpose", "linear"), 12_347_716), (("transpose", "linear", "nearest"), 15_246_566)],
    ids=["mcnet", "mcnet+"],
)
def test_mcnet_parameter_count_equals_reference(up_sampling, expected):
    net = BACKBONES.create("mcnet", up_sampling=up_sampling)
    assert n_params(net) + len(up_sampling) * HEAD_2CH == expected


def test_up_sampling_type_of_each_decoder():
    net = MCNet(up_sampling=("transpose", "linear", "nearest"))
    first_layers = [[block[0] for block in decoder.up] for decoder in net.decoders]
    assert all(isinstance(m, nn.ConvTranspose3d) for m in first_layers[0])
    assert all(isinstance(m, nn.Upsample) and m.mode == "trilinear" and m.align_corners for m in first_layers[1])
    assert all(isinstance(m, nn.Upsample) and m.mode == "nearest" for m in first_layers[2])
    for decoder in net.decoders[1:]:
        assert all(isinstance(block[1], nn.Conv3d) and block[1].kernel_size == (3, 3, 3) for block in decoder.up)
    assert all(isinstance(block[0], nn.ConvTranspose3d) for block in VNet().decoder.up)


def test_dropout_placement():
    net = VNet(n_filters=4)
    assert isinstance(net.encoder.dropout, nn.Dropout3d) and net.encoder.dropout.p == 0.5
    assert isinstance(net.decoder.dropout, nn.Dropout3d)
    assert isinstance(VNet(n_filters=4, has_dropout=False).decoder.dropout, nn.Identity)


@pytest.mark.parametrize(("spatial_dims", "shape"), [(3, (2, 1, 16, 32, 16)), (2, (2, 1, 32, 48))], ids=["3d", "2d"])
@pytest.mark.parametrize("normalization", ["batch", "instance", "group", "none"])
def test_forward_backward(spatial_dims, shape, normalization):
    net = VNet(n_filters=4, normalization=normalization, spatial_dims=spatial_dims)
    x = torch.randn(shape, requires_grad=True)
    out = net(x)
    assert out.shape == (shape[0], 4, *shape[2:])
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_mcnet_returns_one_map_per_decoder():
    net = MCNet(n_filters=4, up_sampling=("transpose", "linear", "nearest"), spatial_dims=2)
    outs = net(torch.randn(2, 1, 32, 16))
    assert len(outs) == 3 and all(o.shape == (2, 4, 32, 16) for o in outs)


def test_dropout_only_in_training():
    net = VNet(n_filters=4).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    torch.testing.assert_close(net(x), net(x))


@pytest.mark.parametrize(("size", "nearest"), [(20, 16), (24, 32), (118, 112), (120, 128), (7, 16), (112, 112)])
def test_nearest_multiple(size, nearest):
    assert nearest_multiple(size, 16) == nearest


def test_size_error_names_the_nearest_valid_size():
    with pytest.raises(
        ValueError, match=r"multiples of 16; got \(16, 16, 20\)\. The nearest valid size is \(16, 16, 16\)"
    ):
        VNet(n_filters=4)(torch.randn(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match=r"MC-Net needs .* nearest valid size is \(112, 112, 80\)"):
        MCNet(n_filters=2)(torch.randn(1, 1, 113, 110, 81))


def test_rank_and_channel_errors():
    with pytest.raises(ValueError, match=r"image must have shape \(B, C, D, H, W\) for this 3D backbone"):
        VNet(n_filters=4)(torch.randn(1, 16, 16, 16))
    with pytest.raises(ValueError, match="in_channels=1"):
        VNet(n_filters=4)(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="at least one decoder"):
        MCNet(up_sampling=())
