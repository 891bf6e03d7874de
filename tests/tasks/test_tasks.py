import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.segmentation import find_boundaries

from mtssl.ops import signed_distance
from mtssl.registry import TASKS
from mtssl.tasks.base import class_masks


@pytest.fixture
def label():
    """Two samples, 3D, classes 0..2 (sample 1 has no class 2)."""
    lab = torch.zeros(2, 16, 18, 12, dtype=torch.long)
    lab[0, 3:10, 4:12, 2:9] = 1
    lab[0, 11:15, 10:16, 3:10] = 2
    lab[1, 5:13, 2:9, 4:11] = 1
    return lab


def test_class_masks(label):
    masks = class_masks(label, 2)
    assert masks.shape == (2, 2, 16, 18, 12) and masks.dtype == torch.bool
    assert torch.equal(masks[:, 1], label == 2)
    with pytest.raises(TypeError, match="integer or bool label map"):
        class_masks(label.float(), 2)


def test_seg_channels_and_probabilities():
    assert TASKS.create("seg").out_channels == 1
    assert TASKS.create("seg", num_classes=2).out_channels == 2
    softmax = TASKS.create("seg", num_classes=2, softmax=True)
    assert softmax.out_channels == 3
    logits = torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(softmax.to_seg(logits), torch.softmax(logits, 1)[:, 1:])
    torch.testing.assert_close(TASKS.create("seg").to_seg(logits[:, :1]), torch.sigmoid(logits[:, :1]))


def test_sdf_target_per_class(label):
    target = TASKS.create("sdf", num_classes=2).target(label)
    assert target.shape == (2, 2, 16, 18, 12) and target.dtype == torch.float32
    for c in (1, 2):
        torch.testing.assert_close(target[:, c - 1], signed_distance(label == c))
    assert torch.all(target[1, 1] == 0)  # no class 2 in sample 1: DTC's empty-patch value


def test_dist_target_against_scipy(label):
    target = TASKS.create("dist", num_classes=2).target(label)
    for b in range(2):
        for c in (1, 2):
            mask = (label[b] == c).numpy()
            expected = ndimage.distance_transform_edt(mask)
            expected = expected / expected.max() if mask.any() else expected
            np.testing.assert_allclose(target[b, c - 1].numpy(), expected, atol=1e-6)


def test_edge_target_against_skimage(label):
    target = TASKS.create("edge", num_classes=2).target(label)
    for b in range(2):
        for c in (1, 2):
            expected = find_boundaries((label[b] == c).numpy(), mode="inner")
            assert np.array_equal(target[b, c - 1].numpy().astype(bool), expected)


@pytest.mark.parametrize("name", ["seg", "sdf", "dist", "edge"])
def test_from_seg_shapes(name):
    task = TASKS.create(name, num_classes=2)
    logits = torch.randn(2, 3, 8, 8, 6)  # softmax seg logits: background + 2 classes
    out = task.from_seg(logits, activation="softmax")
    assert out.shape == ((2, 3, 8, 8, 6) if name == "seg" else (2, 2, 8, 8, 6))


def test_heads():
    head = TASKS.create("sdf").head(16, 3)
    assert isinstance(head[1], torch.nn.Tanh)
    out = head(torch.randn(2, 16, 4, 4, 4))
    assert out.shape == (2, 1, 4, 4, 4) and out.abs().max() < 1
    assert isinstance(TASKS.create("dist").head(16, 2)[1], torch.nn.Sigmoid)
    assert sum(p.numel() for p in TASKS.create("seg", softmax=True).head(16, 3).parameters()) == 16 * 2 + 2


def test_edge_has_no_transform_to_seg():
    task = TASKS.create("edge")
    assert not task.has_to_seg
    with pytest.raises(TypeError, match="has no transform to segmentation"):
        task.to_seg(torch.zeros(1, 1, 4, 4))


def test_bad_options():
    with pytest.raises(ValueError, match="num_classes counts foreground classes"):
        TASKS.create("sdf", num_classes=0)
    with pytest.raises(Exception, match=r"'laplace' is not one of 'exp', 'gauss'"):
        TASKS.create("sdf", kernel="laplace")


def test_the_soft_sdf_scale_follows_the_patch_unless_set():
    import torch

    from mtssl.registry import TASKS
    from mtssl.tasks.sdf import patch_h

    # the measured choices (docs/ops.md): 4 at LA's patch, 2 at half its size and at the CPU protocol's
    assert patch_h((112, 112, 80)) == 4.0 and patch_h((56, 56, 40)) == 2.0 and patch_h((64, 64, 32)) == 2.0
    logits = torch.randn(1, 1, 24, 20, 16, dtype=torch.float64) * 5
    follows = TASKS.create("sdf", num_classes=1)
    assert follows.h is None
    fixed = TASKS.create("sdf", num_classes=1, h=0.8)  # (24 * 20 * 16) ** (1 / 3) / 25 = 0.79
    torch.testing.assert_close(follows.from_seg(logits), fixed.from_seg(logits))
    assert not torch.allclose(follows.from_seg(logits), TASKS.create("sdf", num_classes=1, h=2.0).from_seg(logits))


def _dice_per_class_float64(prob, masks):
    """``1 - 2 sum(p t) / (sum p^2 + sum t^2)`` per class over the batch, by hand in float64."""
    p, t = prob.double(), masks.double()
    dims = (0, *range(2, p.ndim))
    return 1 - (2 * (p * t).sum(dims) + 1e-5) / ((p * p).sum(dims) + (t * t).sum(dims) + 1e-5)


@pytest.mark.parametrize("softmax", [False, True], ids=["sigmoid", "softmax"])
def test_multiclass_dice_counts_every_foreground_class(label, softmax):
    """The seg task's Dice (and its score of a mapped output) is the mean over all K foreground classes:
    the first class is not a background to leave out (ACDC's right ventricle was, until issue 25)."""
    task = TASKS.create("seg", num_classes=2, softmax=softmax)
    logits = torch.randn(2, task.out_channels, 16, 18, 12, generator=torch.Generator().manual_seed(3))
    logits.requires_grad_(True)
    target = task.target(label)
    dice = task.loss_components(logits, target, label)["dice"]()
    per_class = _dice_per_class_float64(task.to_seg(logits).detach(), target)
    assert float(dice) == pytest.approx(float(per_class.mean()), rel=1e-5)
    (grad,) = torch.autograd.grad(dice, logits)
    first_class = 1 if softmax else 0
    assert grad[:, first_class].abs().sum() > 0
    mapped = torch.sigmoid(torch.randn(2, 2, 16, 18, 12))
    assert float(task.score(mapped, target)[1]) == pytest.approx(
        float(_dice_per_class_float64(mapped, target).mean()), rel=1e-5
    )


def test_the_seg_to_edge_consistency_pulls_the_edge_head_toward_the_true_boundary():
    """The cross-task term compares the edge head's probability (Task.represent) with the boundary of the
    segmentation. Trained by that consistency alone from a correct segmentation, the edge head ends up
    high on the true boundary and low away from it; comparing its logits instead would leave every voxel
    away from the boundary at sigmoid(0) = 0.5."""
    from mtssl.tasks.edge import Edge
    from mtssl.tasks.seg import Segmentation
    from mtssl.terms.consistency import CrossTask
    from mtssl.terms.context import StepContext

    label = torch.zeros(1, 24, 24, dtype=torch.long)
    label[0, 6:18, 8:20] = 1
    seg_logits = 12.0 * (2 * label.unsqueeze(1).float() - 1)  # a confident, correct segmentation
    edge = torch.zeros(1, 1, 24, 24, requires_grad=True)
    tasks = {"seg": Segmentation(), "edge": Edge()}
    term = CrossTask("seg", "edge")
    optimizer = torch.optim.Adam([edge], lr=0.1)
    for iteration in range(300):
        ctx = StepContext(
            image=torch.zeros(1, 1, 24, 24), label=label, outputs={"seg": seg_logits, "edge": edge},
            tasks=tasks, iteration=iteration, n_labeled=1,
        )  # fmt: skip
        optimizer.zero_grad()
        term(ctx)["consistency_seg_edge"].backward()
        optimizer.step()
    prob = torch.sigmoid(edge.detach())[0, 0]
    truth = torch.from_numpy(find_boundaries(label[0].numpy(), mode="thick"))
    away = ~torch.from_numpy(ndimage.binary_dilation(truth.numpy(), iterations=2))
    assert prob[truth].mean() > 0.3 and prob[away].max() < 0.05
    assert Edge().represent(torch.zeros(1, 1, 2, 2)).eq(0.5).all()  # the representation is a probability
