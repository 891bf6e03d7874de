"""Each kind of bad input gets a clear error (or, for a small volume, padding with one warning)."""

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
    with pytest.raises(DataError, match=r"LA data not found.*restore\.py.*<root>/<ID>/mri_norm2\.h5"):
        create(tmp_path / "nowhere")


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
    with pytest.raises(DataError, match="unknown augmentation 'rotate'; known: rot90, flip, crop, noise"):
        create(make_la(tmp_path / "la"), augment=("rotate",))
