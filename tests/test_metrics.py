import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from mtssl import metrics


def bbox_crop(*masks: np.ndarray, margin: int = 3) -> tuple[np.ndarray, ...]:
    """Crop to the union's bounding box plus a background margin (surface distances are unchanged)."""
    union = np.logical_or.reduce(masks)
    idx = np.argwhere(union)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, union.shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    return tuple(m[window] for m in masks)


@pytest.fixture(scope="module")
def la_pairs(la_labels):
    """Each of the 20 LA test labels against a copy eroded twice (even cases) or shifted (odd cases)."""
    pairs = []
    for i, (cid, label) in enumerate(la_labels["test"]):
        lab = label.numpy().astype(bool)
        if i % 2 == 0:
            kind, pred = "eroded", ndimage.binary_erosion(lab, iterations=2)
        else:
            kind, pred = "shifted", np.roll(lab, (3, -2, 1), axis=(0, 1, 2))
        pairs.append((f"{cid}-{kind}", *bbox_crop(pred, lab)))
    assert len(pairs) == 20
    return pairs


MEDPY = {"dice": "dc", "jaccard": "jc", "hd95": "hd95", "asd": "asd", "assd": "assd"}


def test_equals_medpy_on_la_test_labels(la_pairs):
    import medpy.metric.binary as reference

    for case, pred, label in la_pairs:
        ours = metrics.compute(torch.from_numpy(pred)[None], torch.from_numpy(label)[None], names=metrics.METRICS)
        for name, value in ours.items():
            expected = getattr(reference, MEDPY[name])(pred, label)
            assert value.dtype == torch.float64 and value.shape == (1,)
            assert abs(value.item() - expected) <= 1e-4, (case, name, value.item(), expected)


@pytest.mark.parametrize("name", ["hd95", "asd", "assd"])
def test_equals_medpy_with_spacing(la_pairs, name):
    import medpy.metric.binary as reference

    spacing = (0.625, 0.625, 2.5)
    for case, pred, label in la_pairs[:4]:
        value = getattr(metrics, name)(torch.from_numpy(pred)[None], torch.from_numpy(label)[None], spacing)
        expected = getattr(reference, name)(pred, label, voxelspacing=spacing)
        assert abs(value.item() - expected) <= 1e-4, (case, value.item(), expected)


def test_compute_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'hd99'; known metrics: dice, jaccard, hd95, asd, assd"):
        metrics.compute(torch.ones(1, 3, 3), torch.ones(1, 3, 3), names=("hd99",))


def test_batched_equals_per_sample():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 20, 18, generator=g) > 0.6
    label = torch.rand(3, 20, 18, generator=g) > 0.6
    for fn in (metrics.dice, metrics.jaccard, metrics.hd95, metrics.asd, metrics.assd):
        batched = fn(pred, label)
        single = torch.cat([fn(pred[i : i + 1], label[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, single)


def test_2d_square_values():
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 2:6, 2:6] = True
    b = a.roll(2, dims=2)
    torch.testing.assert_close(metrics.dice(a, b), torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(metrics.jaccard(a, b), torch.tensor([1 / 3], dtype=torch.float64))
    assert metrics.hd95(a, b).item() == 2.0


@pytest.mark.parametrize("fn", [metrics.hd95, metrics.asd, metrics.assd])
def test_empty_prediction_or_label_is_nan_with_warning(fn):
    label = torch.zeros(3, 8, 8, dtype=torch.bool)
    label[:2, 2:5, 2:5] = True
    pred = label.clone()
    pred[1] = False  # empty prediction; sample 2 has an empty label
    with pytest.warns(metrics.EmptyMaskWarning, match=r"empty for samples \[1, 2\]"):
        out = fn(pred, label)
    assert out[0] == 0 and torch.isnan(out[1:]).all()


def test_dice_empty_cases():
    label = torch.zeros(2, 6, 6, dtype=torch.bool)
    label[0, 1:3, 1:3] = True
    pred = torch.zeros_like(label)
    with pytest.warns(metrics.EmptyMaskWarning, match=r"both empty for samples \[1\]"):
        out = metrics.dice(pred, label)
    assert out[0] == 0 and torch.isnan(out[1])


def test_exception():
    with pytest.raises(ValueError, match=r"pred and target must have the same shape; got \(1, 4, 4\) and \(1, 4, 5\)"):
        metrics.hd95(torch.ones(1, 4, 4), torch.ones(1, 4, 5))
    with pytest.raises(ValueError, match=r"pred must have shape \(B, H, W\) or \(B, D, H, W\)"):
        metrics.dice(torch.ones(4), torch.ones(4))


def test_metrics_do_not_import_medpy():
    code = (
        "import sys, torch, mtssl.metrics as m; m.hd95(torch.ones(1, 3, 3), torch.ones(1, 3, 3)); "
        "print('medpy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_public_names():
    code = "import mtssl.ops as o, mtssl.metrics as m; print(sorted(set(o.__all__) | set(m.__all__)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in (
        "edt",
        "signed_distance",
        "soft_distance",
        "soft_signed_distance",
        "boundary",
        "soft_boundary",
        "dice_loss",
        "mse_loss",
        "cross_entropy",
        "binary_cross_entropy",
        "dice",
        "jaccard",
        "hd95",
        "asd",
        "assd",
    ):
        assert repr(name) in result.stdout
