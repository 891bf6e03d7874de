import pytest
import torch
import torch.nn.functional as F

from mtssl.ops import binary_cross_entropy, cross_entropy, dice_loss, mse_loss


def dtc_dice_loss(score, target):
    """DTC / UA-MT ``dice_loss`` (code/utils/losses.py), transcribed."""
    target = target.double()
    smooth = 1e-5
    intersect = torch.sum(score * target)
    y_sum = torch.sum(target * target)
    z_sum = torch.sum(score * score)
    return 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


class TestDiceLoss:
    def test_binary_equals_dtc(self, gen):
        prob = torch.rand(2, 1, 6, 5, 4, generator=gen, dtype=torch.float64)
        label = torch.rand(2, 6, 5, 4, generator=gen) > 0.5
        torch.testing.assert_close(dice_loss(prob, label), dtc_dice_loss(prob[:, 0], label))

    def test_softmax_foreground_equals_ua_mt(self, gen):
        prob = torch.softmax(torch.randn(2, 2, 6, 5, generator=gen, dtype=torch.float64), 1)
        label = (torch.rand(2, 6, 5, generator=gen) > 0.5).long()
        torch.testing.assert_close(dice_loss(prob, label), dtc_dice_loss(prob[:, 1], label == 1))

    def test_multiclass_mean(self, gen):
        prob = torch.softmax(torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64), 1)
        label = torch.randint(0, 3, (2, 6, 5), generator=gen)
        per_class = [dtc_dice_loss(prob[:, c], label == c) for c in range(3)]
        torch.testing.assert_close(dice_loss(prob, label), (per_class[1] + per_class[2]) / 2)
        torch.testing.assert_close(dice_loss(prob, label, include_background=True), sum(per_class) / 3)

    def test_weighted(self, gen):
        prob = torch.rand(2, 1, 6, 5, generator=gen, dtype=torch.float64)
        label = torch.rand(2, 6, 5, generator=gen) > 0.5
        mask = torch.rand(2, 6, 5, generator=gen) > 0.3
        expected = dtc_dice_loss(prob[:, 0][mask], label[mask])
        torch.testing.assert_close(dice_loss(prob, label, weight=mask), expected)

    def test_soft_target_and_perfect(self):
        target = torch.zeros(1, 1, 4, 4)
        target[..., 1:3, 1:3] = 1
        torch.testing.assert_close(dice_loss(target, target), torch.tensor(0.0))

    def test_gradcheck(self, gen):
        prob = torch.rand(1, 1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        label = torch.rand(1, 4, 3, generator=gen) > 0.5
        assert torch.autograd.gradcheck(lambda p: dice_loss(p, label), (prob,))

    def test_exception(self):
        with pytest.raises(ValueError, match=r"target must be a label map of shape \(B, \*S\) = \(1, 4, 4\)"):
            dice_loss(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 5))
        with pytest.raises(ValueError, match=r"weight must have shape \(B, \*S\)"):
            dice_loss(torch.rand(1, 1, 4, 4), torch.zeros(1, 4, 4), weight=torch.ones(4, 4))


class TestMse:
    def test_plain(self, gen):
        x, y = torch.randn(2, 3, 5, 4, generator=gen), torch.randn(2, 3, 5, 4, generator=gen)
        torch.testing.assert_close(mse_loss(x, y), F.mse_loss(x, y))

    def test_masked_equals_ua_mt(self, gen):
        x, y = torch.randn(2, 2, 5, 4, 3, generator=gen), torch.randn(2, 2, 5, 4, 3, generator=gen)
        mask = torch.rand(2, 5, 4, 3, generator=gen) > 0.5
        dist = (x - y) ** 2
        expected = torch.sum(mask[:, None].float() * dist) / (2 * torch.sum(mask.float()) + 1e-16)
        torch.testing.assert_close(mse_loss(x, y, weight=mask), expected)

    def test_empty_mask_is_zero(self):
        x = torch.ones(1, 1, 3, 3)
        assert mse_loss(x, 2 * x, weight=torch.zeros(1, 3, 3, dtype=torch.bool)) == 0

    def test_exception(self):
        with pytest.raises(ValueError, match="input and target must have the same shape"):
            mse_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 2, 3, 3))


class TestCrossEntropy:
    def test_equals_torch(self, gen):
        logits = torch.randn(2, 3, 5, 4, generator=gen)
        label = torch.randint(0, 3, (2, 5, 4), generator=gen)
        torch.testing.assert_close(cross_entropy(logits, label), F.cross_entropy(logits, label))

    def test_masked_is_mean_over_selected(self, gen):
        logits = torch.randn(2, 3, 5, 4, generator=gen)
        label = torch.randint(0, 3, (2, 5, 4), generator=gen)
        mask = torch.rand(2, 5, 4, generator=gen) > 0.5
        expected = F.cross_entropy(logits.movedim(1, -1)[mask], label[mask])
        torch.testing.assert_close(cross_entropy(logits, label, weight=mask), expected)

    def test_soft_target(self, gen):
        logits = torch.randn(2, 3, 5, 4, generator=gen)
        target = torch.softmax(torch.randn(2, 3, 5, 4, generator=gen), 1)
        torch.testing.assert_close(cross_entropy(logits, target), F.cross_entropy(logits, target))

    def test_exception(self):
        with pytest.raises(ValueError, match="C >= 2"):
            cross_entropy(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3))


class TestBinaryCrossEntropy:
    def test_equals_torch(self, gen):
        logits = torch.randn(2, 1, 5, 4, generator=gen)
        target = torch.rand(2, 5, 4, generator=gen)
        expected = F.binary_cross_entropy(torch.sigmoid(logits[:, 0]), target)
        torch.testing.assert_close(binary_cross_entropy(logits, target), expected)

    def test_weighted(self, gen):
        logits = torch.randn(2, 1, 5, 4, generator=gen, dtype=torch.float64)
        target = (torch.rand(2, 5, 4, generator=gen) > 0.5).double()
        w = torch.rand(2, 5, 4, generator=gen, dtype=torch.float64)
        per_voxel = F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
        torch.testing.assert_close(binary_cross_entropy(logits, target, weight=w), (w * per_voxel).sum() / w.sum())

    def test_exception(self):
        with pytest.raises(ValueError, match=r"target must have shape \(1, 2, 3, 3\)"):
            binary_cross_entropy(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3))
