"""Each kind of bad input gets a clear error (or, for a small volume, padding with one warning)."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from mtssl.data.cases import DataError
from mtssl.registry import DATASETS


def make_la(root, cases=4, shape=(20, 18, 12), corrupt=None):
    """A tiny LA-layout folder; ``corrupt(case_index, image, label)`` may return a replacement pair or write a file."""
    ids = [f"C{i}" for i in range(cases)]
    for i, cid in enumerate(ids):
        (root / cid).mkdir(parents=True)
        image = np.random.default_rng(i).normal(size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[5:12, 5:12, 3:9] = 1
        if corrupt is not None:
            out = corrupt(i, image, label, root / cid / "mri_norm2.h5")
            if out == "written":
                continue
            if out is not None:
                image, label = out
        with h5py.File(root / cid / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = image, label
    (root / "train.list").write_text("\n".join(ids[:3]) + "\n")
    (root / "test.list").write_text(ids[3] + "\n")
    return root


def create(root, **options):
    return DATASETS.create("la", root=str(root), labeled=2, patch=(16, 16, 8), **options)


def test_missing_folder_says_how_to_get_la(tmp_path):
    with pytest.raises(DataError, match=r"LA data not found.*docs/data\.md.*<root>/<ID>/mri_norm2\.h5") as caught:
        create(tmp_path / "nowhere")
    assert "../shared" not in str(caught.value)  # a path of this repository's test set-up, not a user's
    assert "## Getting LA and ACDC" in (Path(__file__).parents[2] / "docs" / "data.md").read_text()


def test_missing_list_and_file(tmp_path):
    root = make_la(tmp_path / "la")
    (root / "test.list").unlink()
    with pytest.raises(DataError, match=r"test\.list is missing"):
        create(root)
    root = make_la(tmp_path / "la2")
    (root / "C1" / "mri_norm2.h5").unlink()
    with pytest.raises(DataError, match=r"missing file .*C1/mri_norm2\.h5"):
        create(root)


def test_h5_without_label(tmp_path):
    def drop_label(i, image, label, path):
        if i == 0:
            with h5py.File(path, "w") as f:
                f["image"] = image
            return "written"
        return None

    with pytest.raises(DataError, match=r"C0/mri_norm2\.h5 has no 'label' dataset \(it holds \['image'\]\)"):
        create(make_la(tmp_path / "la", corrupt=drop_label))


def test_corrupt_h5(tmp_path):
    def garbage(i, image, label, path):
        if i == 1:
            path.write_bytes(b"not an hdf5 file at all")
            return "written"
        return None

    with pytest.raises(DataError, match=r"C1/mri_norm2\.h5 is not a readable HDF5 file"):
        create(make_la(tmp_path / "la", corrupt=garbage))


def test_shapes_differ(tmp_path):
    def shrink(i, image, label, path):
        return (image, label[:-1]) if i == 2 else None

    with pytest.raises(DataError, match=r"case C2: image shape \(20, 18, 12\) and label shape \(19, 18, 12\) differ"):
        create(make_la(tmp_path / "la", corrupt=shrink))


def test_label_values_outside_classes(tmp_path):
    def three(i, image, label, path):
        label = label.copy()
        label[0, 0, 0] = 3
        return (image, label) if i == 0 else None

    with pytest.raises(DataError, match=r"case C0: label values \[0, 1, 3\] lie outside 0\.\.1"):
        create(make_la(tmp_path / "la", corrupt=three))


def test_nan_in_image(tmp_path):
    def nan(i, image, label, path):
        image = image.copy()
        image[1, 2, 3], image[0, 0, 0] = np.nan, np.inf
        return (image, label) if i == 3 else None

    with pytest.raises(DataError, match="case C3: image has 2 NaN or Inf values"):
        create(make_la(tmp_path / "la", corrupt=nan))


def test_crop_larger_than_volume_pads_and_warns_once(tmp_path):
    data = DATASETS.create("la", root=str(make_la(tmp_path / "la")), labeled=2, patch=(24, 16, 16))
    with pytest.warns(UserWarning, match="padding with zeros as the reference does") as record:
        samples = [data.train[(i % 3, i)] for i in range(6)]
    assert len([w for w in record if "padding" in str(w.message)]) == 1
    assert all(s["image"].shape == (1, 24, 16, 16) and s["label"].shape == (24, 16, 16) for s in samples)


def test_empty_labeled_set(tmp_path):
    with pytest.raises(DataError, match="the labeled set is empty"):
        DATASETS.create("la", root=str(make_la(tmp_path / "la")), labeled=0)


def test_unknown_augmentation(tmp_path):
    with pytest.raises(
        DataError, match=r"unknown augmentation .rotate.; known: rot90, flip, crop, rot_flip_or_rotate, zoom, noise"
    ):
        create(make_la(tmp_path / "la"), augment=("rotate",))


# --- Issue 23: silent garbage and raw tracebacks in the loaders, each now a named error ---


def test_a_zero_size_case_is_refused_not_padded(tmp_path):
    def empty(i, image, label, path):
        return (np.zeros((0, 18, 12), np.float32), np.zeros((0, 18, 12), np.uint8)) if i == 3 else None

    with pytest.raises(DataError, match=r"case C3: the image is empty \(shape \(1, 0, 18, 12\)\)"):
        create(make_la(tmp_path / "la", corrupt=empty))


@pytest.mark.parametrize("bad_id", ["../elsewhere", "/etc", "C0/../../up", ".."])
def test_la_case_ids_cannot_leave_the_data_folder(tmp_path, bad_id):
    root = make_la(tmp_path / "la")
    (root / "train.list").write_text(f"C0\nC1\n{bad_id}\n")
    with pytest.raises(DataError, match=rf"LA case id {re.escape(repr(bad_id))} is not a folder name inside"):
        create(root)


def test_a_0_255_label_with_downsample_is_named(tmp_path):
    def scaled(i, image, label, path):
        return image, label * 255

    with pytest.raises(
        DataError, match=r"label values \[0, 255\] lie outside 0\.\.1, so the label cannot be downsampled"
    ):
        create(make_la(tmp_path / "la", corrupt=scaled), downsample=2)


def test_duplicate_case_ids_are_named(tmp_path):
    root = make_la(tmp_path / "la")
    (root / "train.list").write_text("C0\nC1\nC1\n")
    with pytest.raises(DataError, match=r"train\.list names 'C1' more than once; list each case once"):
        create(root)
    (root / "train.list").write_text("C0\nC1\nC2\n")
    (root / "test.list").write_text("C3\nC1\n")  # a training case tested too
    with pytest.raises(DataError, match=r"case ids must be unique, but 'C1' appear\(s\) more than once"):
        create(root)


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_0_1_masks_with_the_default_foreground_value_are_refused(tmp_path):
    for i in range(3):
        _png(tmp_path / "train" / "image" / f"{i}.png", np.full((16, 16), 100 + i, np.uint8))
        mask = np.zeros((16, 16), np.uint8)
        mask[4:9, 4:9] = 1  # a 0/1 mask: with foreground_value 255 every label would be empty
        _png(tmp_path / "train" / "label" / f"{i}.png", mask)
    with pytest.raises(
        DataError, match=r"case 0: the mask holds the values \[0, 1\] but not data.foreground_value=255"
    ):
        DATASETS.create("images2d", root=str(tmp_path), patch=(8, 8))
    data = DATASETS.create("images2d", root=str(tmp_path), patch=(8, 8), foreground_value=1)
    assert int(data.store["0"].label.sum()) == 25  # with the right value, the foreground is there


def test_two_images_of_one_case_are_refused(tmp_path):
    for name in ("3.png", "3.tif", "4.png"):
        _png(tmp_path / "train" / "image" / name, np.zeros((16, 16), np.uint8))
        _png(tmp_path / "train" / "label" / name, np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match=r"3\.(png|tif) and 3\.(png|tif) in .* are both case '3'; keep one"):
        DATASETS.create("images2d", root=str(tmp_path), patch=(8, 8))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", r"data\.split_file .*split\.json is not valid JSON"),
        ('{"train": ["case_0"]}', r"must be a JSON object with 'train' and 'test' lists of case ids"),
        ('["case_0"]', r"must be a JSON object with 'train' and 'test' lists"),
    ],
    ids=["not-json", "no-test", "a-list"],
)
def test_a_broken_msd_split_file_is_named(msd_root, tmp_path, text, match):
    (tmp_path / "split.json").write_text(text)
    with pytest.raises(DataError, match=match):
        DATASETS.create("msd", root=str(msd_root), split_file=str(tmp_path / "split.json"), patch=(8, 8, 8))
