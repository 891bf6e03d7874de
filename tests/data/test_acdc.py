"""ACDC in SSL4MIS's layout: the data set against its files and SSL4MIS's split, the zoom it tests with,
slice-wise inference against a per-slice loop, per-class SDF targets and transforms on a real slice,
and the metrics against medpy on a real volume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

from mtssl import build_model
from mtssl.data.acdc import acdc, slices_of_patients
from mtssl.data.augment import Augment
from mtssl.data.cases import DataError
from mtssl.data.resample import zoom_nearest
from mtssl.engine.protocol import EvalConfig, evaluate_cases
from mtssl.engine.sliding_window import slice_by_slice
from mtssl.registry import TASKS

# SSL4MIS's patients_to_slices for ACDC (train_*_2D.py; "140" there for all 70 patients, "1": 32 in its forks)
PATIENTS_TO_SLICES = {1: 32, 3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}


@pytest.fixture(scope="module")
def data(acdc_root):
    return acdc(str(acdc_root), labeled=3, patch=(128, 128))


def read(root, name):
    with h5py.File(root / "data" / name, "r") as f:
        return f["image"][()], f["label"][()]


def test_counts_and_the_labeled_split_are_ssl4mis(acdc_root, data):
    slices = (acdc_root / "train_slices.list").read_text().split()
    assert len(slices) == 1312
    for patients, count in PATIENTS_TO_SLICES.items():
        assert slices_of_patients(slices, patients) == slices[:count]
    assert list(data.split.labeled) == slices[:68]
    assert list(data.split.unlabeled) == slices[68:]
    assert list(data.split.val) == (acdc_root / "val.list").read_text().split() and len(data.val) == 20
    assert list(data.split.test) == (acdc_root / "test.list").read_text().split() and len(data.test) == 40
    assert not {s.split("_")[0] for s in slices} & {v.split("_")[0] for v in data.split.test}
    assert len(acdc(str(acdc_root), labeled=7).split.labeled) == 136
    assert len(acdc(str(acdc_root), labeled=None).split.unlabeled) == 0
    assert data.num_classes == 3 and data.spatial_dims == 2 and data.class_names[2] == "left ventricle"


def test_cases_are_the_files(acdc_root, data):
    image, label = read(acdc_root, f"slices/{data.split.labeled[5]}.h5")
    case = data.store[data.split.labeled[5]]
    np.testing.assert_array_equal(case.image[0], image)
    np.testing.assert_array_equal(case.label, label)
    image, label = read(acdc_root, f"{data.split.test[3]}.h5")
    item = data.test[3]
    assert item["image"].shape == (1, *image.shape)
    np.testing.assert_array_equal(item["label"].numpy(), label)
    assert set(np.unique(label)) == {0, 1, 2, 3}


def test_training_samples_are_zoomed_slices_with_ssl4mis_augmentation(acdc_root, data):
    sample = data.train[(3, 11)]
    assert sample["image"].shape == (1, 128, 128) and sample["labeled"]
    # without augmentation a sample is the slice zoomed to the patch exactly as scipy's order-0 zoom
    image, label = read(acdc_root, f"slices/{data.split.labeled[3]}.h5")
    plain = Augment(["zoom"], (128, 128))
    zimage, zlabel = plain(image[None], label, np.random.default_rng(0), True, "x")
    factors = (128 / image.shape[0], 128 / image.shape[1])
    np.testing.assert_array_equal(zimage[0], ndimage.zoom(image, factors, order=0))
    np.testing.assert_array_equal(zlabel, ndimage.zoom(label, factors, order=0))
    # half the samples are a rot90 and flip of the zoomed slice, half rotated by a whole angle; order 0
    # keeps the label's classes and the image's values (the rotated corners are 0)
    pipeline = Augment(["rot_flip_or_rotate", "zoom"], (128, 128))
    mirrors = [np.flip(np.rot90(label, k), a) for k in range(4) for a in (0, 1)]
    flipped = 0
    for seed in range(40):
        out, lab = pipeline(image[None], label, np.random.default_rng(seed), True, "x")
        assert set(np.unique(lab)) <= set(np.unique(label)) and set(np.unique(out)) <= set(np.unique(image)) | {0.0}
        flipped += any(
            m.shape == lab.shape and np.array_equal(lab, m)
            for m in (ndimage.zoom(m, np.divide((128, 128), m.shape), order=0) for m in mirrors)
        )
    assert 10 <= flipped <= 30
    assert pipeline.mirror_axes == (0, 1)


def test_the_test_zoom_round_trip_is_exact_on_every_test_volume(data):
    # SSL4MIS zooms each slice up to 256x256 and the prediction back (order 0): up then down is the identity
    for k in range(len(data.test)):
        label = data.test[k]["label"]
        up = zoom_nearest(label, (256, 256))
        assert torch.equal(zoom_nearest(up, tuple(label.shape[1:])), label)
        assert np.array_equal(
            up[0].numpy(), ndimage.zoom(label[0].numpy(), [256 / n for n in label.shape[1:]], order=0)
        )


def test_slice_by_slice_equals_a_per_slice_loop(data):
    torch.manual_seed(0)
    model = build_model({"backbone": {"name": "unet"}, "tasks": {"seg": {"num_classes": 3, "softmax": True}}}).eval()
    stack = data.test[0]["image"]

    @torch.no_grad()
    def predict(x):
        return torch.softmax(model(x)["seg"], 1)[:, 1:]

    ours = slice_by_slice(predict, stack, (128, 128), (64, 64), batch_size=4, size=(128, 128))
    assert ours.shape == (3, *stack.shape[1:])
    for d in range(stack.shape[1]):  # SSL4MIS's test_single_volume: zoom, network, argmax, zoom back
        s = stack[0, d].numpy()
        zoomed = ndimage.zoom(s, (128 / s.shape[0], 128 / s.shape[1]), order=0)
        probs = predict(torch.from_numpy(zoomed)[None, None])[0].numpy()
        labels = np.concatenate([1 - probs.sum(0, keepdims=True), probs]).argmax(0)
        back = ndimage.zoom(labels, (s.shape[0] / 128, s.shape[1] / 128), order=0)
        mine = torch.cat([1 - ours[:, d].sum(0, keepdim=True), ours[:, d]]).argmax(0).numpy()
        np.testing.assert_array_equal(mine, back)
    # without a zoom, each slice is slid over at its own size: the same as sliding_window per slice
    from mtssl.engine.sliding_window import sliding_window

    small = stack[:, :2, :96, :80]
    slid = slice_by_slice(predict, small, (64, 64), (32, 32))
    for d in range(2):
        torch.testing.assert_close(slid[:, d], sliding_window(predict, small[:, d], (64, 64), (32, 32)))


def dtc_sdf(mask: np.ndarray) -> np.ndarray:
    """DTC's compute_sdf for one mask in float64 (scipy EDT, skimage's inner boundary set to 0)."""
    if not mask.any():
        return np.zeros(mask.shape)
    pos, neg = ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask)
    sdf = (neg - neg.min()) / (neg.max() - neg.min()) - (pos - pos.min()) / (pos.max() - pos.min())
    sdf[find_boundaries(mask, mode="inner")] = 0
    return sdf


def test_multiclass_sdf_targets_and_transforms_per_class(acdc_root, data):
    _, label = read(acdc_root, f"slices/{data.split.labeled[10]}.h5")
    label = torch.from_numpy(label.astype(np.int64))[None]
    task = TASKS.create("sdf", num_classes=3)
    target = task.target(label)
    assert target.shape == (1, 3, *label.shape[1:])
    for c in (1, 2, 3):
        np.testing.assert_allclose(target[0, c - 1].numpy(), dtc_sdf(label[0].numpy() == c), atol=1e-5)
    # each class's channel is transformed on its own (sigmoid heads, as DBiSL's and DTC's): the 3-channel
    # map equals three 1-channel ones, in both directions
    logits = torch.randn(1, 3, 64, 48, dtype=torch.float64)
    sdf = TASKS.create("sdf", h=2.0)
    for transform in (sdf.to_seg, lambda x: sdf.from_seg(x, "sigmoid")):
        whole = transform(logits)
        torch.testing.assert_close(whole, torch.cat([transform(logits[:, c : c + 1]) for c in range(3)], 1))


def test_metrics_equal_medpy_on_a_real_volume(data):
    from medpy.metric import binary

    item = data.test[7]
    truth = item["label"]
    # a prediction with errors of every kind: each class shifted by a voxel, part of one erased
    pred = torch.roll(truth, shifts=(1, 2), dims=(1, 2))
    pred[pred == 1] = torch.where(
        torch.rand(int((pred == 1).sum()), generator=torch.Generator().manual_seed(0)) < 0.1, 0, 1
    )
    probs = torch.nn.functional.one_hot(pred, 4).permute(3, 0, 1, 2)[1:].float()

    # score through the evaluator's slice path: a predictor returning the prediction's own slices
    slices = iter(probs.movedim(1, 0))

    def per_slice(x):
        return torch.stack([next(slices) for _ in range(len(x))])

    item = {**item, "image": torch.zeros(1, *truth.shape)}
    rows = evaluate_cases(
        per_slice, [item], EvalConfig(lcc=False, batch_size=1), truth.shape[1:], 3, True, torch.device("cpu")
    )
    for row in rows:
        p, t = (pred == row["class"]).numpy(), (truth == row["class"]).numpy()
        assert row["dice"] == pytest.approx(binary.dc(p, t), abs=1e-6)
        assert row["hd95"] == pytest.approx(binary.hd95(p, t), abs=1e-4)
        assert row["asd"] == pytest.approx(binary.asd(p, t), abs=1e-4)


def test_errors_name_the_problem(acdc_root, tmp_path):
    with pytest.raises(DataError, match=r"docs/data\.md"):
        acdc(str(tmp_path / "nowhere"))
    (tmp_path / "train_slices.list").write_text("")
    with pytest.raises(DataError, match=r"val\.list is missing"):
        acdc(str(tmp_path))
    with pytest.raises(DataError, match="only 70"):
        acdc(str(acdc_root), labeled=71)
