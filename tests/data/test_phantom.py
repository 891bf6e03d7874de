import numpy as np
import pytest

from mtssl.data.phantom import make_phantom
from mtssl.registry import DATASETS


def test_deterministic():
    a, la = make_phantom((32, 32, 24), 1, seed=5)
    b, lb = make_phantom((32, 32, 24), 1, seed=5)
    c, _ = make_phantom((32, 32, 24), 1, seed=6)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_three_classes_all_present(spatial_dims):
    data = DATASETS.create("phantom", spatial_dims=spatial_dims, classes=3, num_train=6, num_test=2, labeled=2)
    for case_id in [*data.split.labeled, *data.split.unlabeled, *data.test.ids]:
        assert set(np.unique(data.store[case_id].label)) == {0, 1, 2, 3}, case_id


def test_mri_like_intensities():
    image, label = make_phantom((64, 64, 48), 1, seed=0)
    assert image.shape == (1, 64, 64, 48) and image.dtype == np.float32
    assert abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    inside, outside = image[0][label == 1], image[0][label == 0]
    assert inside.mean() > outside.mean() + 1.0  # the organ is brighter than the background
    assert 0.05 < label.mean() < 0.5


def test_sizes_and_batches():
    data = DATASETS.create("phantom")
    assert data.store[data.split.labeled[0]].image.shape == (1, 64, 64, 48)
    batch = next(iter(data.loader(4, 2)))
    assert batch["image"].shape == (4, 1, 48, 48, 32)
    data2d = DATASETS.create("phantom", spatial_dims=2, num_train=4, num_test=1, labeled=2)
    assert data2d.store[data2d.split.labeled[0]].image.shape == (1, 96, 96)
    with pytest.raises(ValueError, match="must have 2 values"):
        DATASETS.create("phantom", spatial_dims=2, size=(32, 32, 32))
