import numpy as np
import pytest
import torch

from mtssl.data.augment import Augment
from mtssl.registry import DATASETS


@pytest.fixture(scope="module")
def la(la_root):
    return DATASETS.create("la", root=str(la_root), labeled=4)


def test_shapes_dtypes_and_split(la, la_root):
    train_list = (la_root / "train.list").read_text().split()
    test_list = (la_root / "test.list").read_text().split()
    assert len(train_list) == 16 and len(test_list) == 20
    assert la.split.labeled == tuple(train_list[:4])  # the literature's: the first N of train.list
    assert la.split.unlabeled == tuple(train_list[4:])
    assert la.split.test == tuple(test_list) and la.test.ids == test_list
    assert la.in_channels == 1 and la.num_classes == 1 and la.spatial_dims == 3
    case = la.store[train_list[0]]
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.image.shape[0] == 1 and case.image.shape[1:] == case.label.shape
    x, y, z = case.label.shape
    assert 148 <= x <= 244 and 132 <= y <= 160 and z == 88
    assert set(np.unique(case.label)) == {0, 1}
    item = la.test[0]
    assert item["image"].shape[1:] == item["label"].shape and item["case"] == test_list[0]


def test_two_stream_batches(la):
    batch = next(iter(la.loader(batch_size=4, labeled_bs=2)))
    assert batch["image"].shape == (4, 1, 112, 112, 80) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 112, 112, 80) and batch["label"].dtype == torch.int64
    assert batch["labeled"].tolist() == [True, True, False, False]
    assert all(c in la.split.labeled for c in batch["case"][:2])
    assert all(c in la.split.unlabeled for c in batch["case"][2:])
    assert batch["label"][2:].sum() == 0  # unlabeled samples never carry their label
    assert batch["spacing"].shape == (4, 3)


def test_crop_and_augment_keep_the_label_aligned(la):
    # Put the label into a second image channel: after rot90, flip and crop it must still equal the label.
    case = la.store[la.split.labeled[0]]
    stacked = np.concatenate([case.image, case.label[None].astype(np.float32)])
    augment = Augment(["rot90", "flip", "crop"], (112, 112, 80))
    for seed in range(12):
        image, label = augment(stacked, case.label, np.random.default_rng(seed), True, "case")
        assert image.shape == (2, 112, 112, 80) and label.shape == (112, 112, 80)
        assert np.array_equal(image[1], label)


def test_rot90_and_flip_match_numpy(la):
    case = la.store[la.split.labeled[1]]
    augment = Augment(["rot90", "flip"], (112, 112, 80))
    image, label = augment(case.image, case.label, np.random.default_rng(7), True, "case")
    rng = np.random.default_rng(7)
    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
    expected = np.flip(np.rot90(case.label, k, axes=(0, 1)), axis=axis)
    assert np.array_equal(label, expected)
    assert np.array_equal(image[0], np.flip(np.rot90(case.image[0], k, axes=(0, 1)), axis=axis))


def test_foreground_biased_crop(la):
    # Crops centred on a random foreground voxel always hold foreground; unbiased ones on LA often do not.
    case = la.store[la.split.labeled[0]]
    biased = Augment(["crop"], (32, 32, 16), fg_crop_prob=1.0)
    plain = Augment(["crop"], (32, 32, 16))
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert all(biased(case.image, case.label, rng, True, "c")[1].any() for rng in rngs)
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert not all(plain(case.image, case.label, rng, True, "c")[1].any() for rng in rngs)
    # Unlabeled samples are never foreground-biased (their labels are unknown).
    rngs = [np.random.default_rng(seed) for seed in range(20)]
    assert not all(biased(case.image, case.label, rng, False, "c")[1].any() for rng in rngs)


def test_zscore_normalization_rescales_each_volume_and_is_recorded(la, la_root):
    import h5py

    zscored = DATASETS.create("la", root=str(la_root), labeled=4, normalization="zscore", downsample=2)
    assert zscored.preprocessing["normalization"] == "zscore" and la.preprocessing["normalization"] == "none"
    case = zscored.split.test[0]
    with h5py.File(la_root / case / "mri_norm2.h5", "r") as f:
        raw = f["image"][()].astype(np.float64)
    expected = (raw - raw.mean()) / raw.std()  # float64 reference, then 2x block means
    x, y, z = (s // 2 * 2 for s in raw.shape)
    blocks = expected[:x, :y, :z].reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(1, 3, 5))
    got = zscored.store[case].image[0]
    assert got.shape == tuple(-(-s // 2) for s in raw.shape)  # an odd side is edge-padded
    np.testing.assert_allclose(got[: x // 2, : y // 2, : z // 2], blocks, atol=1e-4)
    assert abs(raw.std() - 1) > 0.05  # the h5 image itself is not unit-spread, so the test can fail
