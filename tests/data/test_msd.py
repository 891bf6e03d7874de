import json

import nibabel as nib
import numpy as np
import pytest

from mtssl.data.cases import DataError
from mtssl.registry import DATASETS
from tests.conftest import MSD_SPACING as SPACING


def test_loads_back_with_spacing(msd_root):
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), labeled=2)
    assert data.num_classes == 2 and data.spatial_dims == 3
    assert len(data.test) == 1 and len(data.train) == 4  # a seeded 20 % test split
    item = data.test[0]
    assert tuple(item["spacing"].tolist()) == pytest.approx(SPACING)
    original = nib.load(msd_root / "labelsTr" / f"{item['case']}.nii.gz").get_fdata()
    assert np.array_equal(item["label"].numpy(), original)
    image = item["image"].numpy()
    assert image.shape == (1, 16, 16, 12) and abs(image.mean()) < 1e-4 and abs(image.std() - 1) < 1e-3
    batch = next(iter(data.loader(2, 1)))
    assert batch["image"].shape == (2, 1, 8, 8, 8)
    assert batch["spacing"][0].tolist() == pytest.approx(SPACING)


def test_lazy_by_default(msd_root):
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8))
    assert data.store._memory == {}
    preloaded = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), preload=True)
    assert len(preloaded.store._memory) == 5


def test_split_file_ct_window_and_record(msd_root, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["case_0", "case_1", "case_2"], "test": ["case_3", "case_4"]}))
    data = DATASETS.create(
        "msd",
        root=str(msd_root),
        split_file=str(split_file),
        normalization="ct",
        ct_window=(-100.0, 100.0),
        patch=(8, 8, 8),
        labeled=1,
    )
    assert data.split.test == ("case_3", "case_4") and data.split.labeled == ("case_0",)
    image = data.test[0]["image"].numpy()
    assert image.min() >= 0 and image.max() <= 1
    data.split.save(tmp_path / "recorded.json")
    assert json.loads((tmp_path / "recorded.json").read_text())["labeled"] == ["case_0"]


def test_errors(msd_root, tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json not found"):
        DATASETS.create("msd", root=str(tmp_path / "nowhere"))
    (msd_root / "labelsTr" / "case_3.nii.gz").unlink()
    data = DATASETS.create("msd", root=str(msd_root), patch=(8, 8, 8), test_fraction=0.0)  # lazy: loads case_0 only
    with pytest.raises(DataError, match=r"missing file .*case_3\.nii\.gz"):
        data.train[data.train.ids.index("case_3")]
