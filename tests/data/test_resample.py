"""Resampling to a target spacing, integer downsampling, and scoring at the native resolution."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from mtssl import metrics
from mtssl.data.cases import CaseData, DataError
from mtssl.data.resample import (
    downsample_case,
    resample_case,
    resampled_shape,
    resize,
    to_native,
    upsample_probabilities,
    zoom_nearest,
)
from mtssl.engine.protocol import EvalConfig, evaluate_cases
from mtssl.registry import DATASETS


def test_block_means_majority_labels_and_padding():
    image = np.arange(5 * 4 * 4, dtype=np.float32).reshape(1, 5, 4, 4)
    label = np.zeros((5, 4, 4), np.uint8)
    label[:2, :2, :2] = 2  # one whole block of class 2
    label[2:4, :2, :2] = 1
    label[2, 0, 0] = 0  # 7 of 8 voxels: still class 1
    out = downsample_case(CaseData(image, label, (1.0, 1.0, 2.0)), 2, 2, keep_native=True)
    assert out.image.shape == (1, 3, 2, 2) and out.label.shape == (3, 2, 2)  # 5 -> padded to 6 -> 3
    np.testing.assert_allclose(out.image[0, 0, 0, 0], image[0, :2, :2, :2].mean())
    # The last slab is edge-padded: the mean of slice 4 with itself.
    np.testing.assert_allclose(out.image[0, 2, 1, 1], image[0, 4, 2:, 2:].mean())
    assert out.label[0, 0, 0] == 2 and out.label[1, 0, 0] == 1 and out.label[2, 0, 0] == 0
    assert out.spacing == (2.0, 2.0, 4.0) and out.factor == 2
    np.testing.assert_array_equal(out.native_label, label)
    assert downsample_case(CaseData(image, label, (1.0,) * 3), 2, 2, keep_native=False).native_label is None


def test_upsampling_puts_each_voxel_at_the_centre_of_its_block():
    # A map linear along x (its value is the low-resolution index): native voxel j sits at low-res
    # coordinate (j + 0.5) / 2 - 0.5, which linear interpolation reproduces inside the volume.
    probs = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 3, 2).contiguous()
    up = upsample_probabilities(probs, (7, 6, 4), 2)
    assert up.shape == (1, 7, 6, 4)
    j = torch.arange(1, 7, dtype=torch.float32)
    torch.testing.assert_close(up[0, 1:7, 0, 0], ((j + 0.5) / 2 - 0.5).clamp(0, 3))
    constant = torch.full((1, 4, 3, 2), 0.3)
    torch.testing.assert_close(upsample_probabilities(constant, (7, 6, 4), 2), torch.full((1, 7, 6, 4), 0.3))
    with pytest.raises(ValueError, match="do not match"):
        upsample_probabilities(probs, (9, 6, 4), 2)


def test_bad_factor():
    case = CaseData(np.zeros((1, 4, 4, 4), np.float32), None, (1.0,) * 3)
    with pytest.raises(DataError, match="positive integer"):
        downsample_case(case, 0, 1, keep_native=False)
    with pytest.raises(DataError, match="larger than the volume"):
        downsample_case(case, 8, 1, keep_native=False)


def test_la_downsampled_trains_small_and_scores_native(la_root):
    native = DATASETS.create("la", root=str(la_root), labeled=4)
    small = DATASETS.create("la", root=str(la_root), labeled=4, downsample=2, patch=(48, 48, 32))
    cid = small.split.labeled[0]
    full, half = native.store[cid], small.store[cid]
    assert half.image.shape[1:] == tuple((n + 1) // 2 for n in full.image.shape[1:])
    assert half.native_label is None  # a training case keeps no native label
    item = small.test[0]
    assert item["native_label"].shape == native.test[0]["label"].shape and item["factor"] == 2
    # The downsampled label, upsampled and scored at the native grid, nearly equals the native label:
    # a predictor that returns the (downsampled) truth scores Dice close to 1, computed on native voxels.
    truth = item["label"]

    def oracle(windows: torch.Tensor) -> torch.Tensor:
        return windows  # the "image" below is the downsampled label itself

    fake = dict(item, image=truth[None].float())
    cfg = dataclasses.replace(EvalConfig(), patch=list(truth.shape), stride=list(truth.shape), lcc=False)
    rows = evaluate_cases(oracle, [fake], cfg, truth.shape, 1, False, torch.device("cpu"))
    assert rows[0]["case"] == item["case"] and rows[0]["dice"] > 0.93
    direct = metrics.dice(
        torch.from_numpy(np.kron(truth.numpy(), np.ones((2, 2, 2))) > 0)[None][
            :, : item["native_label"].shape[0], : item["native_label"].shape[1], : item["native_label"].shape[2]
        ],
        item["native_label"][None] > 0,
    )
    assert rows[0]["dice"] >= float(direct[0]) - 0.01  # interpolation is no worse than nearest upsampling


def test_a_run_on_downsampled_la_predicts_native_volumes(la_root, tmp_path):
    import mtssl
    from mtssl.engine.run import train_run

    cfg = {
        "recipe": {"name": "supervised"},
        "data": {"name": "la", "root": str(la_root), "labeled": 2, "downsample": 2, "patch": [32, 32, 16]},
        "model": {"backbone": {"name": "vnet", "n_filters": 4}},
        "train": {"iterations": 2, "progress": False},
        "eval": {"patch": [48, 48, 32], "stride": [48, 48, 32], "max_cases": 1},
    }
    summary = train_run(cfg, tmp_path / "run")
    assert summary["cases"] == 1
    native = DATASETS.create("la", root=str(la_root), labeled=2).test[0]
    probs, labels = mtssl.load(tmp_path / "run")(native["image"])
    assert probs.shape[1:] == labels.shape == tuple(native["label"].shape)  # the native grid


def _ball(shape, spacing, radius_mm=6.0):
    """A ball of ``radius_mm`` at the centre of a ``shape`` grid of ``spacing`` (the same object at any spacing)."""
    axes = np.meshgrid(*[(np.arange(n) + 0.5 - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    distance = np.sqrt(sum(a**2 for a in axes))
    return distance, (distance < radius_mm).astype(np.uint8)


def test_resampling_to_a_spacing_and_back_keeps_the_object():
    # a 40 x 40 x 12 volume of 0.5 x 0.5 x 2 mm to 1 mm isotropic: 20 x 20 x 24 voxels, the same 20 x 20 x 24 mm
    spacing, target = (0.5, 0.5, 2.0), (1.0, 1.0, 1.0)
    distance, label = _ball((40, 40, 12), spacing)
    image = np.exp(-(distance**2) / 50.0)[None].astype(np.float32)  # smooth: linear interpolation is near exact
    out = resample_case(CaseData(image, label, spacing), target, 1, keep_native=True)
    assert out.image.shape == (1, 20, 20, 24) and out.label.shape == (20, 20, 24) == out.grid
    assert out.spacing == target and out.native_spacing == spacing
    np.testing.assert_array_equal(out.native_label, label)
    # the label at the new spacing is the same ball drawn there directly (all but its rim's voxels)
    _, direct = _ball((20, 20, 24), target)
    assert metrics.dice(torch.from_numpy(out.label)[None] > 0, torch.from_numpy(direct)[None] > 0)[0] > 0.95
    # the image is what scipy's linear zoom gives on the same voxel-centre grid (an independent reference)
    reference = ndimage.zoom(image[0], (0.5, 0.5, 2.0), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(out.image[0], reference, atol=1e-6)
    # and back: the image within 3 % of its peak, the label's one-hot probabilities to the native label
    back = resize(torch.from_numpy(out.image), (40, 40, 12)).numpy()
    assert np.abs(back - image).max() < 0.03
    onehot = torch.nn.functional.one_hot(torch.from_numpy(out.label.astype(np.int64)), 2).movedim(-1, 0).float()
    native = to_native(onehot, (40, 40, 12), 1, out.grid).argmax(0)
    assert metrics.dice(native[None] > 0, torch.from_numpy(label)[None] > 0)[0] > 0.95


def test_resampling_then_downsampling_goes_back_through_both():
    spacing = (0.5, 0.5, 2.0)
    _, label = _ball((40, 40, 12), spacing)
    image = label[None].astype(np.float32)
    out = resample_case(CaseData(image, label, spacing), (1.0, 1.0, 1.0), 1, keep_native=True)
    out = downsample_case(out, 2, 1, keep_native=True)
    assert out.image.shape == (1, 10, 10, 12) and out.factor == 2 and out.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(out.native_label, label)  # the resampling's native label, not the grid's
    assert out.grid == (20, 20, 24) and out.native_spacing == spacing
    probs = torch.from_numpy(out.image)
    native = to_native(probs, (40, 40, 12), 2, out.grid)
    assert native.shape == (1, 40, 40, 12)
    assert metrics.dice(native > 0.5, torch.from_numpy(label)[None] > 0)[0] > 0.9


def test_resampling_rules_and_errors():
    assert resampled_shape((512, 512, 40), (0.7, 0.7, 5.0), (1.4, 1.4, 2.5)) == (256, 256, 80)
    case = CaseData(np.zeros((1, 8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    assert resample_case(case, (1.005, 1.0, 1.0), 1, keep_native=True) is case  # at the target already
    with pytest.raises(DataError, match="must give 3 positive sides"):
        resample_case(case, (1.0, 1.0), 1, keep_native=False)
    with pytest.raises(DataError, match="0/255 mask"):
        resample_case(dataclasses.replace(case, label=np.full((8, 8, 8), 255, np.uint8)), (2.0,) * 3, 1, True)


def test_zoom_nearest_is_scipys_order_0_zoom_voxel_for_voxel():
    # ACDC's slices go to 256 x 256 and back (SSL4MIS's test); every shape from 60 to 400 pixels a side
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(60, 400, 2))
        x = rng.random((h, w)) + 1.0  # no zeros of its own, so scipy's zero-filled edges show
        zoomed = ndimage.zoom(x, (256 / h, 256 / w), order=0)
        ours = zoom_nearest(torch.from_numpy(x)[None], (256, 256))[0].numpy()
        np.testing.assert_array_equal(ours, zoomed)
        back = ndimage.zoom(zoomed, (h / 256, w / 256), order=0)
        np.testing.assert_array_equal(zoom_nearest(torch.from_numpy(zoomed)[None], (h, w))[0].numpy(), back)
    # a (C, D, H, W) volume: every channel and axis the same way; an unchanged side is untouched
    volume = torch.from_numpy(rng.random((2, 5, 37, 41)))
    expected = np.stack([ndimage.zoom(v, (1, 64 / 37, 64 / 41), order=0) for v in volume.numpy()])
    np.testing.assert_array_equal(zoom_nearest(volume, (5, 64, 64)).numpy(), expected)
