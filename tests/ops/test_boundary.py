import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

from mtssl.ops import boundary, soft_boundary


def blobs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(shape, generator=g).numpy()
    smooth = ndimage.gaussian_filter(noise, sigma=(0,) + (1.5,) * (len(shape) - 1))
    return torch.from_numpy(smooth > np.median(smooth))  # touches the array edge


class TestBoundary:
    @pytest.mark.parametrize("shape", [(3, 20, 17), (2, 12, 15, 9)], ids=["2d", "3d"])
    def test_inner_equals_skimage(self, shape):
        mask = blobs(shape)
        expected = np.stack([find_boundaries(m, mode="inner") for m in mask.numpy()])
        out = boundary(mask, "inner")
        assert out.dtype == torch.bool and out.shape == shape
        assert np.array_equal(out.numpy(), expected)

    @pytest.mark.parametrize("shape", [(3, 20, 17), (2, 12, 15, 9)], ids=["2d", "3d"])
    def test_surface_equals_medpy_definition(self, shape):
        mask = blobs(shape, seed=1)
        nd = len(shape) - 1
        footprint = ndimage.generate_binary_structure(nd, 1)
        expected = np.stack([m ^ ndimage.binary_erosion(m, structure=footprint, iterations=1) for m in mask.numpy()])
        assert np.array_equal(boundary(mask, "surface").numpy(), expected)

    def test_edge_voxels(self):
        full = torch.ones(1, 4, 5, dtype=torch.bool)
        assert not boundary(full, "inner").any()
        assert boundary(full, "surface").sum() == 4 * 5 - 2 * 3

    def test_noncontiguous(self):
        mask = blobs((2, 10, 12, 8)).transpose(1, 2)
        assert torch.equal(boundary(mask, "surface"), boundary(mask.contiguous(), "surface"))

    def test_exception(self):
        with pytest.raises(ValueError, match="mode must be 'inner' or 'surface'"):
            boundary(torch.zeros(1, 3, 3, dtype=torch.bool), "outer")
        with pytest.raises(ValueError, match=r"got \(3, 3\)"):
            boundary(torch.zeros(3, 3, dtype=torch.bool))


class TestSoftBoundary:
    @pytest.mark.parametrize("shape", [(2, 3, 9, 8), (1, 2, 6, 7, 5)], ids=["2d", "3d"])
    def test_values_against_numpy_gradient(self, shape, dtype):
        prob = torch.rand(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
        out = soft_boundary(prob)
        assert out.shape == shape and out.dtype == dtype
        grads = np.gradient(prob.double().numpy(), axis=tuple(range(2, prob.ndim)))
        expected = np.sqrt(sum(g**2 for g in grads) + 1e-12)
        interior = (slice(None), slice(None)) + (slice(1, -1),) * (prob.ndim - 2)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        np.testing.assert_allclose(out[interior].double().numpy(), expected[interior], atol=tol, rtol=tol)

    def test_gradcheck(self):
        prob = torch.rand(1, 1, 4, 5, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(soft_boundary, (prob,))

    def test_exception(self):
        with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(B, C, D, H, W\)"):
            soft_boundary(torch.rand(4, 4))
        with pytest.raises(TypeError, match="floating-point"):
            soft_boundary(torch.ones(1, 1, 4, 4, dtype=torch.long))
