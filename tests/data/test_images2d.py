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


@pytest.mark.parametrize("naming", ["stem", "pattern"])
def test_tif_images_with_gif_masks(tmp_path, naming):
    # DRIVE's layout: 21_training.tif with 21_manual1.gif; or masks renamed to the image's stem.
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    masks = {}
    for n in (21, 22, 23):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{n}_training.tif"
        )
        mask = np.zeros((40, 36), np.uint8)
        mask[5 + n % 3 : 20, 8:30] = 255
        masks[n] = mask
        name = f"{n}_training.gif" if naming == "stem" else f"{n}_manual1.gif"
        Image.fromarray(mask).save(tmp_path / "masks" / name)
    options = {"mask_name": "{number}_manual1.gif"} if naming == "pattern" else {}
    data = DATASETS.create(
        "images2d",
        root=str(tmp_path),
        image_dir="images",
        label_dir="masks",
        test_cases=["23_training"],
        labeled=2,
        patch=(32, 32),
        **options,
    )
    assert data.split.test == ("23_training",) and data.in_channels == 3
    item = data.test[0]
    assert np.array_equal(item["label"].numpy(), masks[23] == 255)


def test_a_missing_mask_names_what_was_tried(tmp_path):
    from mtssl.data.cases import DataError

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "7_training.tif")
    with pytest.raises(DataError, match=r"case 7_training: no mask in .*masks \(tried 7_manual1\.gif\); name masks"):
        DATASETS.create(
            "images2d",
            root=str(tmp_path),
            image_dir="images",
            label_dir="masks",
            mask_name="{number}_manual1.gif",
            patch=(8, 8),
        )


def test_palette_masks_gray_values_or_class_indices(tmp_path):
    from mtssl.data.images2d import read_mask

    indices = np.zeros((6, 6), np.uint8)
    indices[1:3, 1:3], indices[3:5, 3:5] = 1, 2
    coloured = Image.fromarray(indices, mode="P")
    coloured.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))  # VOC's: index = class
    coloured.save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png"), indices)
    gray = Image.fromarray(indices, mode="P")
    gray.putpalette([0, 0, 0, 255, 255, 255, 7, 7, 7] + [0] * (253 * 3))  # a gray palette: its values
    gray.save(tmp_path / "gray.gif")
    assert np.array_equal(read_mask(tmp_path / "gray.gif"), np.choose(indices, [0, 255, 7]))


def test_a_png_prediction_is_written_with_the_data_sets_own_mask_values(tmp_path):
    """ISBI's masks mark the membrane (the foreground) 0 on 255: a prediction written as a PNG must use the
    same values, so that reading it back as a mask of that data set gives the predicted classes."""
    from mtssl.engine.predictor import read_input, write_prediction

    rng = np.random.default_rng(0)
    for folder in ("train/image", "train/label", "pred"):
        (tmp_path / folder).mkdir(parents=True)
    membrane = np.full((32, 32), 255, np.uint8)
    membrane[:, 10:13] = 0
    for case in ("0", "1"):  # 0 tested, 1 trained on
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"train/image/{case}.png")
        Image.fromarray(membrane).save(tmp_path / f"train/label/{case}.png")
    options = {"root": str(tmp_path), "foreground_value": 0, "test_cases": ["0"], "patch": (32, 32)}
    data = DATASETS.create("images2d", **options)
    assert data.preprocessing["label_values"] == (255, 0)  # background, foreground: into the inference spec

    predicted = np.zeros((32, 32), np.int64)
    predicted[5:20, 4:9] = 1
    _, meta = read_input(tmp_path / "train/image/0.png")
    written = write_prediction(
        tmp_path / "train/image/0.png", predicted, None, meta, tmp_path / "pred", False,
        label_values=data.preprocessing["label_values"],
    )  # fmt: skip
    assert set(np.unique(np.asarray(Image.open(written)))) == {0, 255}
    (tmp_path / "train/label/0.png").unlink()
    written.rename(tmp_path / "train/label/0.png")  # the prediction read back as that data set's mask
    assert np.array_equal(DATASETS.create("images2d", **options).test[0]["label"].numpy(), predicted)
    white = DATASETS.create("images2d", **{**options, "foreground_value": 255}).preprocessing["label_values"]
    assert white == (0, 255)
