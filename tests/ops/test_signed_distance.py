import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries

from mtssl.ops import signed_distance

PATCH = (112, 112, 80)


def compute_sdf_reference(labels: np.ndarray) -> np.ndarray:
    """A transcription of DTC's ``compute_sdf`` (HiLab-git/DTC, code/utils/util.py), in float64."""
    out = np.zeros(labels.shape, dtype=np.float64)
    for b in range(labels.shape[0]):
        posmask = labels[b].astype(bool)
        if posmask.any():
            negmask = ~posmask
            posdis = distance_transform_edt(posmask)
            negdis = distance_transform_edt(negmask)
            boundary = find_boundaries(posmask, mode="inner").astype(np.uint8)
            sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
                posdis.max() - posdis.min()
            )
            sdf[boundary == 1] = 0
            out[b] = sdf
    return out


def crop(label: torch.Tensor, edge: bool) -> torch.Tensor:
    """A patch around the object (``edge=False``) or starting at its centre, so it is cut by the patch edge."""
    idx = label.nonzero()
    centre = ((idx.min(0).values + idx.max(0).values) // 2).tolist()
    starts = []
    for c, n, p in zip(centre, label.shape, PATCH):
        start = c if edge else c - p // 2
        starts.append(int(min(max(start, 0), n - p)))
    return label[tuple(slice(s, s + p) for s, p in zip(starts, PATCH))]


@pytest.fixture(scope="module")
def la_crops(la_labels):
    labels = [lab for split in ("train", "test") for _, lab in la_labels[split]]
    assert len(labels) == 36
    return torch.stack([crop(lab, edge=i % 2 == 1) for i, lab in enumerate(labels)])


class TestSignedDistance:
    def test_equals_dtc_compute_sdf_on_la_crops(self, la_crops):
        touching = [bool(c[0].any() | c[-1].any() | c[:, 0].any() | c[:, -1].any()) for c in la_crops]
        assert sum(touching) >= 18, "half of the crops must cut the object at the patch edge"
        out = signed_distance(la_crops, dtype=torch.float64)
        expected = torch.from_numpy(compute_sdf_reference(la_crops.numpy()))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

    def test_torch_backend_on_la_crops(self, la_crops):
        sub = la_crops[:2]
        out = signed_distance(sub, backend="torch", dtype=torch.float64)
        expected = torch.from_numpy(compute_sdf_reference(sub.numpy()))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("backend", ["torch", "scipy"])
    def test_empty_and_full(self, backend):
        mask = torch.zeros(3, 10, 11, 9, dtype=torch.bool)
        mask[1] = True
        mask[2, 2:8, 3:9, 1:7] = True
        out = signed_distance(mask, backend=backend)
        assert torch.all(out[0] == 0) and torch.all(out[1] == -1)
        assert out[2].min() == -1 and out[2].max() == 1 and torch.isfinite(out).all()

    def test_2d(self):
        mask = torch.zeros(2, 30, 20, dtype=torch.bool)
        mask[0, 5:20, 4:9] = True
        mask[1, :, :3] = True  # touches the edge
        expected = torch.from_numpy(compute_sdf_reference(mask.numpy()))
        for backend in ("torch", "scipy"):
            torch.testing.assert_close(signed_distance(mask, backend=backend, dtype=torch.float64), expected)

    def test_dtype_and_device(self):
        out = signed_distance(torch.zeros(1, 4, 4, 4, dtype=torch.uint8))
        assert out.dtype == torch.float32 and out.device.type == "cpu"

    def test_exception(self):
        with pytest.raises(ValueError, match=r"got \(5,\)"):
            signed_distance(torch.zeros(5, dtype=torch.bool))
