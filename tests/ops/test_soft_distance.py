import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mtssl.ops import edt, soft_distance, soft_signed_distance
from mtssl.registry import TASKS

HS = (1.0, 0.5, 0.2, 0.1)


def ball3d() -> torch.Tensor:
    zz, yy, xx = torch.meshgrid(*(torch.arange(24.0),) * 3, indexing="ij")
    return ((zz - 11.3) ** 2 + (yy - 12.1) ** 2 + (xx - 11.7) ** 2) < 6.2**2


def box3d() -> torch.Tensor:
    box = torch.zeros(20, 20, 20, dtype=torch.bool)
    box[6:13, 7:15, 5:14] = True
    return box


def disk2d() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    return ((yy - 19.6) ** 2 + (xx - 20.3) ** 2) < 9.3**2


def max_error(mask: torch.Tensor, h: float, kernel: str, radius: float | None) -> float:
    exact = edt(mask[None], dtype=torch.float64)[0]
    soft = soft_distance(mask.double().log()[None, None], h, kernel=kernel, radius=radius)[0, 0]
    within = exact <= (radius if radius is not None else math.inf)
    return (soft - exact)[within].abs().max().item()


class TestSoftDistance:
    def test_smoke(self):
        out = soft_distance(torch.randn(2, 1, 6, 7).clamp_max(0), h=0.5)
        assert out.shape == (2, 1, 6, 7) and torch.isfinite(out).all()

    @pytest.mark.parametrize("shape", [(2, 3, 9, 8), (1, 2, 6, 7, 5)], ids=["2d", "3d"])
    @pytest.mark.parametrize(("kernel", "radius"), [("gauss", None), ("gauss", 2.0), ("exp", 2.5)])
    def test_shape_and_dtype(self, shape, kernel, radius, dtype):
        logp = F.logsigmoid(torch.randn(shape, dtype=dtype))
        out = soft_distance(logp, 0.5, kernel=kernel, radius=radius)
        assert out.shape == shape and out.dtype == dtype

    @pytest.mark.parametrize(
        ("mask", "kernel", "radius"),
        [(ball3d, "gauss", None), (disk2d, "gauss", None), (box3d, "exp", 4.0), (disk2d, "exp", 8.0)],
        ids=["ball-gauss", "disk-gauss", "box-exp", "disk-exp"],
    )
    def test_converges_to_edt(self, mask, kernel, radius):
        errors = [max_error(mask(), h, kernel, radius) for h in HS]
        assert all(a > b for a, b in itertools.pairwise(errors)), errors
        assert errors[-1] <= 0.1, errors

    def test_exp_kernel_bias_is_bounded_by_ties(self):
        # With m voxels tied at the nearest distance the exp kernel reads h*ln(m) short; on a digital
        # ball up to 3 voxels tie (inner corners of the staircase), so the error stays near h*ln(3).
        assert max_error(ball3d(), 0.05, "exp", 4.0) <= 0.05 * math.log(3) + 0.01

    def test_spacing(self):
        mask = box3d()
        spacing = (0.8, 1.5, 1.2)
        exact = edt(mask[None], spacing, dtype=torch.float64)[0]
        soft = soft_distance(mask.double().log()[None, None], 0.05, kernel="gauss", spacing=spacing)[0, 0]
        assert (soft - exact).abs().max() <= 0.1

    @pytest.mark.parametrize(("kernel", "radius"), [("gauss", None), ("gauss", 3.0), ("exp", 3.0)])
    def test_finite_without_mass(self, kernel, radius):
        logp = torch.full((2, 1, 6, 5, 4), -math.inf)
        logp[1] = 0.0  # all mass
        out = soft_distance(logp, 0.2, kernel=kernel, radius=radius)
        assert torch.isfinite(out).all()
        cap = radius if radius is not None else math.sqrt(6**2 + 5**2 + 4**2)
        torch.testing.assert_close(out[0], torch.full_like(out[0], cap))
        assert out[1].max() < 1e-3

    @pytest.mark.parametrize(("kernel", "radius"), [("gauss", None), ("gauss", 1.5), ("exp", 2.5)])
    @pytest.mark.parametrize("shape", [(1, 1, 5, 6), (1, 2, 4, 5, 3)], ids=["2d", "3d"])
    def test_gradcheck(self, kernel, radius, shape):
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda v: soft_distance(F.logsigmoid(v), 0.7, kernel=kernel, radius=radius), (x,)
        )

    @pytest.mark.parametrize(("kernel", "radius"), [("gauss", None), ("gauss", 2.0), ("exp", 2.0)])
    def test_chunked_equals_unchunked(self, monkeypatch, kernel, radius):
        import mtssl.ops.lines as lines

        x = torch.randn(1, 2, 6, 5, 4, dtype=torch.float64, requires_grad=True)
        ref = soft_distance(F.logsigmoid(x), 0.5, kernel=kernel, radius=radius)
        (grad_ref,) = torch.autograd.grad(ref.square().sum(), x)
        monkeypatch.setattr(lines, "CHUNK_ELEMENTS", 100)
        out = soft_distance(F.logsigmoid(x), 0.5, kernel=kernel, radius=radius)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(grad, grad_ref)

    def test_float32_under_autocast(self):
        logp = F.logsigmoid(torch.randn(1, 1, 6, 6, 4)).bfloat16()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = soft_distance(logp, 0.5)
        assert out.dtype == torch.float32

    def test_noncontiguous(self):
        x = F.logsigmoid(torch.randn(1, 1, 7, 6, 5)).transpose(2, 4)
        torch.testing.assert_close(soft_distance(x, 0.3), soft_distance(x.contiguous(), 0.3))

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"logp": torch.zeros(1, 5, 5), "h": 1.0}, ValueError, r"\(B, C, H, W\)"),
            ({"logp": torch.zeros(1, 1, 5, 5), "h": 0.0}, ValueError, "h must be positive"),
            ({"logp": torch.zeros(1, 1, 5, 5), "h": 1.0, "kernel": "laplace"}, ValueError, "'exp' or 'gauss'"),
            ({"logp": torch.zeros(1, 1, 5, 5), "h": 1.0, "method": "fast"}, ValueError, "'direct' or 'fft'"),
            ({"logp": torch.zeros(1, 1, 5, 5), "h": 1.0, "radius": -1.0}, ValueError, "radius must be positive"),
            ({"logp": torch.zeros(1, 1, 5, 5), "h": 1.0, "spacing": (1, 1, 1)}, ValueError, "2 values"),
        ],
    )
    def test_exception(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            soft_distance(**kwargs)


class TestSoftSignedDistance:
    def test_binary_sign_and_limit(self):
        mask = box3d()
        logits = torch.where(mask, 1e4, -1e4).double()[None, None]  # saturated: no mass left
        out = soft_signed_distance(logits, 0.05, kernel="gauss")[0, 0]
        exact = edt(mask[None], dtype=torch.float64)[0] - edt(~mask[None], dtype=torch.float64)[0]
        assert (out - exact).abs().max() <= 0.1
        assert (out[mask] < 0).all() and (out[~mask] > 0).all()

    def test_multiclass_matches_binary(self):
        # Two softmax channels (bg, fg) with logits (0, x) give the sigmoid of x for the foreground.
        x = torch.randn(2, 1, 7, 6, 5, dtype=torch.float64)
        two = torch.cat([torch.zeros_like(x), x], dim=1)
        torch.testing.assert_close(soft_signed_distance(two, 0.4), soft_signed_distance(x, 0.4))

    def test_multiclass_shape(self):
        out = soft_signed_distance(torch.randn(2, 4, 9, 8), 0.5, kernel="exp", radius=2.0)
        assert out.shape == (2, 3, 9, 8)

    def test_normalize(self):
        mask = box3d()
        logits = torch.where(mask, 30.0, -30.0)[None, None]
        out = soft_signed_distance(logits, 0.1, normalize=True)
        assert out.min() >= -1 and out.max() <= 1
        torch.testing.assert_close(out.max(), torch.tensor(1.0))

    def test_gradcheck(self):
        x = torch.randn(1, 3, 4, 5, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda v: soft_signed_distance(v, 0.5, kernel="exp", radius=2.0, normalize=True), (x,)
        )

    def test_the_sdf_task_calls_the_function_with_its_options(self):
        x = torch.randn(2, 1, 8, 7, 6)
        task = TASKS.create("sdf", h=0.3, kernel="exp", radius=None)
        torch.testing.assert_close(task.from_seg(x), soft_signed_distance(x, 0.3, kernel="exp", normalize=True))
