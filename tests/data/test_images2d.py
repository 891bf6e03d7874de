import numpy as np
import pytest
from PIL import Image

from mtssl.registry import DATASETS
from tests.conftest import data_dir, require_data

TEST_BLOCK = tuple(str(i) for i in range(20, 30))


@pytest.fixture(scope="module")
def isbi():
    root = require_data(data_dir() / "isbi2012", "the ISBI 2012 data set")
    data = DATASETS.create(
        "images2d", root=str(root), unlabeled_dir="unlabeled", foreground_value=0, test_cases=TEST_BLOCK, labeled=4
    )
    return root, data


def test_isbi_split(isbi):
    _, data = isbi
    assert data.split.labeled == ("0", "1", "2", "3")
    pool_unlabeled = tuple(str(i) for i in range(4, 20))
    assert data.split.unlabeled[:16] == pool_unlabeled
    assert len(data.split.unlabeled) == 16 + 30 and all(c.startswith("unlabeled/") for c in data.split.unlabeled[16:])
    assert data.split.test == TEST_BLOCK and data.test.ids == list(TEST_BLOCK)
    assert not set(TEST_BLOCK) & set(data.train.ids)  # the held-out block never reaches training


def test_isbi_foreground_is_the_membrane(isbi):
    root, data = isbi
    png = np.asarray(Image.open(root / "train" / "label" / "3.png"))
    label = data.store["3"].label
    assert np.array_equal(label, (png == 0).astype(np.uint8))
    assert 0.1 < label.mean() < 0.4  # membranes are the minority class
    image = data.test[0]["image"]
    assert image.shape == (1, 512, 512) and abs(float(image.mean())) < 1e-3  # z-scored


def test_isbi_batches(isbi):
    _, data = isbi
    batch = next(iter(data.loader(batch_size=4, labeled_bs=2)))
    assert batch["image"].shape == (4, 1, 256, 256) and batch["label"].shape == (4, 256, 256)
    assert batch["labeled"].tolist() == [True, True, False, False]


def test_multiclass_masks_and_unit_normalization(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40), 100 + i, np.uint8)).save(tmp_path / "img" / f"im{i}.png")
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, 5:15], mask[20:30, 20:30] = 1, 2
        Image.fromarray(mask).save(tmp_path / "msk" / f"im{i}.png")
    data = DATASETS.create(
        "images2d",
        root=str(tmp_path),
        image_dir="img",
        label_dir="msk",
        foreground_value=None,
        num_classes=2,
        normalization="unit",
        test_cases=("im2",),
        patch=(32, 32),
    )
    assert set(np.unique(data.store["im0"].label)) == {0, 1, 2}
    assert np.allclose(data.store["im1"].image, 101 / 255)


def test_slices_of_volumes(tmp_path):
    (tmp_path / "vol").mkdir()
    (tmp_path / "seg").mkdir()
    for i in range(3):
        volume = np.random.default_rng(i).normal(size=(40, 36, 5)).astype(np.float32)
        mask = np.zeros((40, 36, 5), np.uint8)
        mask[10:30, 8:20, :] = 1
        mask[..., 4] = 0
        np.save(tmp_path / "vol" / f"v{i}.npy", volume)
        np.save(tmp_path / "seg" / f"v{i}.npy", mask)
    data = DATASETS.create(
        "images2d",
        root=str(tmp_path),
        image_dir="vol",
        label_dir="seg",
        slice_axis=2,
        foreground_value=1,
        test_cases=("v2",),
        labeled=6,
        patch=(32, 32),
    )
    assert data.split.labeled == tuple(f"v0:{k}" for k in range(5)) + ("v1:0",)
    assert data.split.test == tuple(f"v2:{k}" for k in range(5))  # a test volume's slices stay out of training
    sample = data.store["v1:4"]
    assert sample.image.shape == (1, 40, 36) and not sample.label.any()
    assert np.array_equal(data.store["v0:2"].label, np.load(tmp_path / "seg" / "v0.npy")[..., 2])
    batch = next(iter(data.loader(4, 2)))
    assert batch["image"].shape == (4, 1, 32, 32)
