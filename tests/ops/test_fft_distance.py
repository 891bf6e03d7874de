"""The FFT evaluation of the soft distances against the exact log-domain walk, and on real LA labels."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtssl.ops import edt, signed_distance, soft_distance, soft_signed_distance
from mtssl.ops.conv_distance import normalize_signed
from mtssl.ops.fft_distance import FLOOR, distance_cap, fft_kernel_sum
from mtssl.registry import TASKS


def la_crop(label: torch.Tensor, size: tuple[int, ...], step: int = 1) -> torch.Tensor:
    """A ``(1, *size)`` crop centred on the atrium of a label (shifted to fit), every ``step``-th voxel."""
    mask = label[::step, ::step, ::step].bool()
    centre = mask.nonzero().float().mean(0).long()
    starts = [min(max(0, int(c) - n // 2), dim - n) for c, n, dim in zip(centre, size, mask.shape)]
    crop = mask[tuple(slice(s, s + n) for s, n in zip(starts, size))]
    assert crop.shape == size, crop.shape
    return crop[None]


def levelled_logits(mask: torch.Tensor, level: float) -> torch.Tensor:
    """Network-like logits: linear in the signed distance, levelled off at +-level, ``(B, 1, *S)``."""
    exact = edt(mask, dtype=torch.float64) - edt(~mask, dtype=torch.float64)
    return (-2 * exact).clamp(-level, level)[:, None].float()


class TestFFTKernelSum:
    def test_smoke(self):
        sums, mass = fft_kernel_sum(torch.rand(2, 6, 7, 5, dtype=torch.float64), 2.0, kernel="exp", spacing=(1.0,) * 3)
        assert sums.shape == (2, 6, 7, 5) and sums.dtype == torch.float64 and mass > 1

    @pytest.mark.parametrize("shape", [(9, 8), (6, 5, 7)], ids=["2d", "3d"])
    @pytest.mark.parametrize(("kernel", "radius"), [("exp", None), ("exp", 2.5), ("gauss", None)])
    def test_values(self, shape, kernel, radius):
        # Against the sum written out voxel by voxel, in float64.
        p = torch.rand(1, *shape, dtype=torch.float64)
        sums, _ = fft_kernel_sum(p, 1.5, kernel=kernel, radius=radius, spacing=(1.0,) * len(shape))
        grid = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in shape), indexing="ij"), -1)
        r = (grid.reshape(-1, 1, len(shape)) - grid.reshape(1, -1, len(shape))).norm(dim=-1)
        weight = torch.exp(-(r if kernel == "exp" else r.square()) / 1.5)
        if radius is not None:
            weight = weight * (r <= radius)
        torch.testing.assert_close(sums.reshape(-1), weight @ p.reshape(-1), rtol=0, atol=1e-12)

    def test_spacing(self):
        p = torch.zeros(1, 7, 9, dtype=torch.float64)
        p[0, 3, 4] = 1
        sums, _ = fft_kernel_sum(p, 1.0, kernel="exp", spacing=(2.0, 0.5))
        assert sums[0, 4, 4].item() == pytest.approx(math.exp(-2.0), rel=1e-12)
        assert sums[0, 3, 6].item() == pytest.approx(math.exp(-1.0), rel=1e-12)


class TestSoftSignedDistanceFFT:
    @pytest.mark.parametrize("shape", [(2, 1, 11, 9), (2, 1, 9, 8, 7)], ids=["2d", "3d"])
    @pytest.mark.parametrize(("kernel", "h", "radius"), [("exp", 2.0, None), ("exp", 4.0, None), ("exp", 1.0, 3.5)])
    def test_equals_direct(self, shape, kernel, h, radius):
        logits = torch.randn(shape, dtype=torch.float64) * 6
        ref = soft_signed_distance(logits, h, kernel=kernel, radius=radius, method="direct")
        out = soft_signed_distance(logits, h, kernel=kernel, radius=radius, method="fft")
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)

    @pytest.mark.parametrize("level", [10.0, 1e3], ids=["levelled", "binary"])
    def test_equals_direct_on_la_mask(self, la_labels, level):
        mask = la_crop(la_labels["train"][0][1], (16, 16, 12), step=4)
        logits = levelled_logits(mask, level).double()
        ref = soft_signed_distance(logits, 2.0, kernel="exp", normalize=True, method="direct")
        out = soft_signed_distance(logits, 2.0, kernel="exp", normalize=True, method="fft")
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-7)

    def test_accurate_on_levelled_la_logits(self, la_labels):
        # The default seg->sdf (exp, h = 4, whole patch) against the exact SDF target at the LA patch
        # size, logits levelled off at +-10; the former default (Gaussian, h = 0.5) saturates.
        mse = {}
        for cid, label in la_labels["train"][:2]:
            mask = la_crop(label, (112, 112, 80))
            target, logits = signed_distance(mask), levelled_logits(mask, 10.0)
            default = TASKS.create("sdf", h=4.0).from_seg(logits, "sigmoid")[:, 0]
            gauss = soft_signed_distance(logits, 0.5, kernel="gauss", radius=4.0, normalize=True)[:, 0]
            mse[cid] = (F.mse_loss(default, target).item(), F.mse_loss(gauss, target).item())
        assert all(d <= 0.02 and g >= 0.2 for d, g in mse.values()), mse

    @pytest.mark.parametrize("shape", [(1, 1, 5, 6), (1, 2, 4, 5, 3)], ids=["2d", "3d"])
    @pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
    def test_gradcheck(self, shape, activation):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        if activation == "softmax":
            x = torch.randn(shape[0], 3, *shape[2:], dtype=torch.float64, requires_grad=True)

        def fn(v: torch.Tensor) -> torch.Tensor:
            return soft_signed_distance(v, 2.0, kernel="exp", normalize=True, activation=activation, method="fft")

        assert torch.autograd.gradcheck(fn, (x,))

    def test_float32_under_autocast(self):
        x = torch.randn(1, 1, 8, 8, 6).bfloat16()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = soft_signed_distance(x, 2.0, kernel="exp")
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, soft_signed_distance(x.float(), 2.0, kernel="exp"))

    def test_noncontiguous(self):
        x = torch.randn(1, 1, 7, 6, 5).transpose(2, 4)
        torch.testing.assert_close(
            soft_signed_distance(x, 2.0, kernel="exp"), soft_signed_distance(x.contiguous(), 2.0, kernel="exp")
        )

    def test_auto_takes_fft_for_the_whole_patch(self, monkeypatch):
        import mtssl.ops.conv_distance as cd

        calls = []
        monkeypatch.setattr(cd, "fft_kernel_sum", lambda *a, **k: calls.append(a) or fft_kernel_sum(*a, **k))
        soft_signed_distance(torch.randn(1, 1, 16, 16, 12), 2.0, kernel="exp")
        soft_signed_distance(torch.randn(1, 1, 16, 16, 12), 2.0, kernel="exp", radius=2.0)
        soft_signed_distance(torch.randn(1, 1, 16, 16, 12), 0.5, kernel="gauss")
        soft_signed_distance(torch.randn(1, 1, 6, 6, 5), 2.0, kernel="exp")  # tiny: the exact walk is cheap
        assert len(calls) == 1


class TestSoftDistanceFFT:
    def test_cap_without_mass(self):
        logp = torch.full((2, 1, 9, 8, 7), -math.inf)
        logp[1] = 0.0
        out = soft_distance(logp, 0.2, kernel="exp", method="fft")
        # No mass: the sum is floored at FLOOR x the kernel's mass, which sets the distance read there.
        _, mass = fft_kernel_sum(logp[0].double().exp(), 0.2, kernel="exp", spacing=(1.0,) * 3)
        expected = -0.2 * math.log(FLOOR * mass)
        assert expected <= distance_cap(0.2, "exp") == pytest.approx(0.2 * math.log(1 / FLOOR))
        torch.testing.assert_close(out[0], torch.full_like(out[0], expected))
        assert out[1].max() == 0

    def test_equals_direct_within_the_cap(self):
        mask = torch.zeros(1, 1, 12, 10, 9, dtype=torch.float64)
        mask[..., 3:6, 4:8, 2:5] = 1
        logp = mask.log()
        ref = soft_distance(logp, 0.5, kernel="exp", method="direct")
        out = soft_distance(logp, 0.5, kernel="exp", method="fft")
        within = ref < distance_cap(0.5, "exp") - 1
        torch.testing.assert_close(out[within], ref[within], rtol=0, atol=1e-6)

    def test_gradcheck(self):
        x = torch.randn(1, 1, 5, 4, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v: soft_distance(F.logsigmoid(v), 1.0, kernel="exp", method="fft"), (x,))


def test_normalize_signed():
    x = torch.tensor([[[-4.0, -1.0, 0.0, 2.0, 8.0]]])[:, :, None]
    torch.testing.assert_close(normalize_signed(x)[0, 0, 0], torch.tensor([-1.0, -0.25, 0.0, 0.25, 1.0]))
