import numpy as np
import pytest
import torch
from scipy import ndimage

from mtssl.ops import edt


def scipy_edt(mask: torch.Tensor, spacing=None) -> torch.Tensor:
    return torch.stack([torch.from_numpy(ndimage.distance_transform_edt(~m.numpy(), sampling=spacing)) for m in mask])


def random_mask(shape, p=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < p


class TestEdt:
    def test_smoke(self):
        out = edt(random_mask((1, 8, 8)))
        assert out.dtype == torch.float32 and out.shape == (1, 8, 8)

    @pytest.mark.parametrize("shape", [(2, 13, 9), (2, 7, 11, 6)], ids=["2d", "3d"])
    @pytest.mark.parametrize("backend", ["torch", "scipy"])
    def test_shape(self, shape, backend):
        assert edt(random_mask(shape), backend=backend).shape == shape

    @pytest.mark.parametrize("shape", [(3, 17, 23), (3, 9, 14, 11)], ids=["2d", "3d"])
    @pytest.mark.parametrize("spacing", [None, "aniso"])
    def test_torch_backend_equals_scipy_float64(self, shape, spacing):
        mask = random_mask(shape, seed=len(shape))
        sp = None if spacing is None else (0.7, 2.5, 1.3)[: len(shape) - 1]
        out = edt(mask, sp, backend="torch", dtype=torch.float64)
        torch.testing.assert_close(out, scipy_edt(mask, sp), atol=1e-6, rtol=0)

    @pytest.mark.parametrize("backend", ["torch", "scipy"])
    def test_empty_and_full(self, backend):
        mask = random_mask((3, 6, 7, 5), seed=3)
        mask[1] = False
        mask[2] = True
        out = edt(mask, (1.0, 2.0, 3.0), backend=backend, dtype=torch.float64)
        diagonal = np.sqrt(6**2 + 14**2 + 15**2)
        torch.testing.assert_close(out[1], torch.full((6, 7, 5), diagonal, dtype=torch.float64))
        assert torch.all(out[2] == 0)
        torch.testing.assert_close(out[0], scipy_edt(mask[:1], (1.0, 2.0, 3.0))[0], atol=1e-6, rtol=0)

    def test_backends_agree_float32(self):
        mask = random_mask((2, 30, 20, 10), p=0.01)
        torch.testing.assert_close(edt(mask, backend="torch"), edt(mask, backend="scipy"))

    def test_chunked_min_plus(self, monkeypatch):
        import mtssl.ops.lines as lines

        monkeypatch.setattr(lines, "CHUNK_ELEMENTS", 50)  # forces many row chunks
        mask = random_mask((2, 9, 8, 7))
        torch.testing.assert_close(edt(mask, backend="torch", dtype=torch.float64), scipy_edt(mask), atol=1e-6, rtol=0)

    def test_noncontiguous(self):
        mask = random_mask((2, 12, 9, 7)).transpose(1, 3)
        assert not mask.is_contiguous()
        torch.testing.assert_close(edt(mask, backend="torch", dtype=torch.float64), scipy_edt(mask.contiguous()))

    def test_integer_mask(self):
        mask = random_mask((1, 9, 9))
        torch.testing.assert_close(edt(mask.to(torch.uint8) * 3), edt(mask))

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"mask": torch.zeros(4, 4, dtype=torch.bool)}, ValueError, r"\(B, H, W\) or \(B, D, H, W\); got \(4, 4\)"),
            ({"mask": torch.zeros(1, 4, 4, dtype=torch.bool), "spacing": (1.0,)}, ValueError, "2 values"),
            ({"mask": torch.zeros(1, 4, 4, dtype=torch.bool), "spacing": (1.0, 0.0)}, ValueError, "positive"),
            ({"mask": torch.zeros(1, 4, 4, dtype=torch.bool), "backend": "cuda"}, ValueError, "backend must be"),
            ({"mask": torch.zeros(1, 4, 4, dtype=torch.bool), "dtype": torch.int32}, TypeError, "floating"),
            ({"mask": np.zeros((1, 4, 4), dtype=bool)}, TypeError, "torch.Tensor"),
        ],
    )
    def test_exception(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            edt(**kwargs)
