import math

import pytest
import torch

from mtssl.engine.sliding_window import gaussian_weight, sliding_window, window_starts

LA_PATCH, LA_STRIDE = (112, 112, 80), (18, 18, 4)


def reference_starts(size, patch, stride):
    """DTC's test_single_case: sx = ceil((w - p) / s) + 1 windows, xs = min(s * x, w - p)."""
    count = math.ceil((size - patch) / stride) + 1
    return [min(stride * x, size - patch) for x in range(count)]


def test_starts_equal_the_reference_on_all_la_test_shapes(la_labels):
    counts = []
    for _, label in la_labels["test"]:
        n = 1
        for size, patch, stride in zip(label.shape, LA_PATCH, LA_STRIDE):
            starts = window_starts(size, patch, stride)
            assert starts == reference_starts(size, patch, stride)
            assert starts[-1] == size - patch  # flush with the far edge
            n *= len(starts)
        counts.append(n)
    assert len(counts) == 20 and min(counts) == 45 and max(counts) == 84


def conv_predictor(channels_out=2, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(1, channels_out, 3, padding=1)

    @torch.no_grad()
    def predict(x):
        return torch.sigmoid(conv(x))

    return predict


def per_window_loop(predict, image, patch, stride):
    """The reference loop: one window at a time, summed probabilities divided by counts."""
    size = image.shape[1:]
    total, count = None, torch.zeros(size)
    grids = [window_starts(s, p, st) for s, p, st in zip(size, patch, stride)]
    for x in grids[0]:
        for y in grids[1]:
            for z in grids[2]:
                region = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
                prob = predict(image[(slice(None), *region)][None])[0]
                total = torch.zeros((prob.shape[0], *size)) if total is None else total
                total[(slice(None), *region)] += prob
                count[region] += 1
    return total / count


def test_equals_a_per_window_loop_and_batches_the_windows():
    image = torch.randn(1, 37, 30, 21)
    patch, stride = (16, 12, 10), (7, 5, 4)
    predict = conv_predictor()
    calls = []

    def counted(x):
        calls.append(x.shape[0])
        return predict(x)

    out = sliding_window(counted, image, patch, stride, batch_size=8)
    expected = per_window_loop(predict, image, patch, stride)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    n_windows = math.prod(len(window_starts(s, p, st)) for s, p, st in zip(image.shape[1:], patch, stride))
    assert len(calls) == math.ceil(n_windows / 8) and sum(calls) == n_windows and max(calls) == 8


def test_pads_a_small_image_and_crops_back():
    image = torch.randn(1, 10, 30, 21)
    out = sliding_window(conv_predictor(), image, (16, 12, 10), (8, 8, 8))
    assert out.shape == (2, 10, 30, 21) and torch.isfinite(out).all()


def test_gaussian_blend_of_a_constant_is_that_constant():
    image = torch.randn(1, 30, 30, 20)

    def constant(x):
        return torch.full((x.shape[0], 1, *x.shape[2:]), 0.25)

    out = sliding_window(constant, image, (16, 16, 8), (8, 8, 4), blend="gaussian")
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    w = gaussian_weight((9, 9))
    assert w.max() == 1 and w[4, 4] == 1 and w[0, 0] < w[4, 4]


def test_errors():
    with pytest.raises(ValueError, match="need 3 values"):
        sliding_window(conv_predictor(), torch.randn(1, 8, 8, 8), (4, 4), (2, 2))
    with pytest.raises(ValueError, match="blend must be"):
        sliding_window(conv_predictor(), torch.randn(1, 8, 8, 8), (4, 4, 4), (2, 2, 2), blend="max")
