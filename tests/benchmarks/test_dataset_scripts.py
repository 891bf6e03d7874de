"""The scripts that turn LA and ACDC into nnU-Net folders, on tiny folders in their source layouts."""

import json
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from mtssl.registry import DATASETS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import acdc_to_nnunet


def test_acdc_volumes_are_rebuilt_from_slices_and_load_as_nnunet(tmp_path):
    src = tmp_path / "acdc"
    (src / "data" / "slices").mkdir(parents=True)
    names = []  # the list's patient order decides who is labeled; slices listed out of order within a volume
    for volume, depth in (("patient001_frame01", 3), ("patient001_frame12", 3), ("patient002_frame01", 2)):
        for k in reversed(range(depth)):
            name = f"{volume}_slice_{k}"
            names.append(name)
            with h5py.File(src / "data" / "slices" / f"{name}.h5", "w") as f:
                f["image"] = np.full((8, 10), k, np.float32)  # the slice index, to check the order
                f["label"] = np.full((8, 10), k % 4, np.uint8)
    (src / "train_slices.list").write_text("\n".join(names) + "\n")
    with h5py.File(src / "data" / "patient003_frame01.h5", "w") as f:
        f["image"] = np.random.default_rng(0).random((3, 8, 10)).astype(np.float32)
        f["label"] = np.ones((3, 8, 10), np.uint8)
    (src / "test.list").write_text("patient003_frame01\n")
    out = tmp_path / "Dataset003_ACDC"
    acdc_to_nnunet.build(src, out, labeled_patients=1)
    image = np.asarray(nib.load(out / "imagesTr" / "patient001_frame12_0000.nii.gz").dataobj)
    assert image.shape == (8, 10, 3) and [float(image[0, 0, k]) for k in range(3)] == [0.0, 1.0, 2.0]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "patient001_frame01.nii.gz",
        "patient001_frame12.nii.gz",
    ]
    assert json.loads((out / "dataset.json").read_text())["labels"]["myocardium"] == 2
    data = DATASETS.create("nnunet", root=str(out), patch=(8, 8, 2))
    assert data.split.labeled == ("patient001_frame01", "patient001_frame12")
    assert data.split.unlabeled == ("patient002_frame01",) and data.split.test == ("patient003_frame01",)
    assert data.class_names == ("right ventricle", "myocardium", "left ventricle")


def test_isbi_pngs_become_a_2d_nnunet_folder(tmp_path):
    import isbi_to_nnunet
    from PIL import Image

    src = tmp_path / "isbi"
    for folder in ("train/image", "train/label", "unlabeled"):
        (src / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(src / "train" / "image" / f"{i}.png")
        mask = np.full((16, 16), 255, np.uint8)
        mask[:, i % 16] = 0  # the membrane is 0 in the source masks
        Image.fromarray(mask).save(src / "train" / "label" / f"{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(src / "unlabeled" / f"{i}.png")
    out = tmp_path / "Dataset002_ISBI"
    isbi_to_nnunet.build(src, out, labeled=2)
    label = np.asarray(Image.open(out / "labelsTr" / "isbi_001.png"))
    assert label.dtype == np.uint8 and label.sum() == 16 and label[:, 1].all()  # the membrane column is class 1
    data = DATASETS.create("nnunet", root=str(out), patch=(16, 16))
    assert data.spatial_dims == 2 and data.class_names == ("membrane",)
    assert data.split.labeled == ("isbi_000", "isbi_001")
    assert len(data.split.unlabeled) == 18 + 3 and data.split.test == tuple(f"isbi_test_{i:03d}" for i in range(20, 30))
