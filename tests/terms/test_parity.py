"""Loss parity: each recipe's total loss and gradients equal a float64 transcription of METHODS.md.

The transcriptions below use plain torch and scipy, not mtssl's terms. The batch is 2 labeled +
2 unlabeled 3D samples; the outputs are float64 leaves; the teacher is a fixed function of its input.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtssl.registry import RECIPES, TASKS
from mtssl.terms.context import StepContext
from tests.ops.test_signed_distance import compute_sdf_reference

SHAPE = (4, 1, 10, 9, 8)
N_LAB = 2
ITERATIONS = {"ramp at its start": 0, "ramp at 1": 6000}


def ramp(c, it):
    return c * math.exp(-5 * (1 - min(it // 150, 40) / 40) ** 2)


def dice(score, target):
    target = target.double()
    inter = (score * target).sum()
    return 1 - (2 * inter + 1e-5) / ((score * score).sum() + (target * target).sum() + 1e-5)


def teacher_logits(x):
    """A fixed 'teacher': two softmax channels from the input, differentiable nowhere we look."""
    return torch.cat([-1.5 * x + 0.2, 2.0 * x - 0.1], 1)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    label = torch.zeros(SHAPE[0], *SHAPE[2:], dtype=torch.long)
    label[:N_LAB, 2:8, 3:7, 2:6] = 1
    return image, label


def leaf(channels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((SHAPE[0], channels, *SHAPE[2:]), generator=g, dtype=torch.float64).requires_grad_()


def ours(recipe, outputs, image, label, iteration, tasks, seed=7):
    ctx = StepContext(
        image=image,
        label=label,
        outputs=outputs,
        tasks=tasks,
        iteration=iteration,
        n_labeled=N_LAB,
        teacher=lambda x: {"seg": teacher_logits(x)},
    )
    torch.manual_seed(seed)
    total = 0
    for term in recipe.for_run(6000).terms:  # the literature's 6000-iteration run
        for value in term.fn(ctx).values():
            total = total + term.weight(iteration) * value
    return total


def grads(total, leaves):
    return torch.autograd.grad(total, leaves)


def noisy(x):
    return x + torch.clamp(torch.randn_like(x) * 0.1, -0.2, 0.2)


def check(ours_total, ref_total, leaves):
    a, b = float(ours_total.detach()), float(ref_total.detach())
    assert abs(a - b) <= 1e-6, (a, b)
    for a, b in zip(grads(ours_total, leaves), grads(ref_total, leaves)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("iteration", ITERATIONS.values(), ids=ITERATIONS.keys())
def test_mean_teacher(iteration):
    image, label = batch()
    seg = leaf(2, 1)
    tasks = {"seg": TASKS.create("seg", softmax=True)}
    total = ours(RECIPES.create("mean_teacher"), {"seg": seg}, image, label, iteration, tasks)
    torch.manual_seed(7)
    probs = torch.softmax(seg, 1)
    sup = 0.5 * (F.cross_entropy(seg[:N_LAB], label[:N_LAB]) + dice(probs[:N_LAB, 1], label[:N_LAB] == 1))
    teacher = torch.softmax(teacher_logits(noisy(image[N_LAB:])), 1)
    ref = sup + ramp(0.1, iteration) * ((probs[N_LAB:] - teacher) ** 2).mean()
    check(total, ref, [seg])


@pytest.mark.parametrize("iteration", ITERATIONS.values(), ids=ITERATIONS.keys())
def test_ua_mt(iteration):
    image, label = batch(1)
    seg = leaf(2, 2)
    tasks = {"seg": TASKS.create("seg", softmax=True)}
    total = ours(RECIPES.create("ua_mt"), {"seg": seg}, image, label, iteration, tasks)
    torch.manual_seed(7)
    probs = torch.softmax(seg, 1)
    sup = 0.5 * (F.cross_entropy(seg[:N_LAB], label[:N_LAB]) + dice(probs[:N_LAB, 1], label[:N_LAB] == 1))
    unlabeled = image[N_LAB:]
    ema = torch.softmax(teacher_logits(noisy(unlabeled)), 1)
    preds = torch.stack([torch.softmax(teacher_logits(noisy(unlabeled)), 1) for _ in range(8)]).mean(0)
    uncertainty = -(preds * torch.log(preds + 1e-6)).sum(1, keepdim=True)
    rampup = math.exp(-5 * (1 - min(iteration, 6000) / 6000) ** 2)
    mask = (uncertainty < (0.75 + 0.25 * rampup) * math.log(2)).double()
    dist = (probs[N_LAB:] - ema) ** 2
    ref = sup + ramp(0.1, iteration) * (mask * dist).sum() / (2 * mask.sum() + 1e-16)
    check(total, ref, [seg])


@pytest.mark.parametrize("iteration", ITERATIONS.values(), ids=ITERATIONS.keys())
def test_dtc(iteration):
    image, label = batch(2)
    seg, sdf = leaf(1, 3), (0.01 * leaf(1, 4)).detach().requires_grad_()
    recipe = RECIPES.create("dtc")
    tasks = {"seg": TASKS.create("seg"), "sdf": TASKS.create("sdf")}
    total = ours(recipe, {"seg": seg, "sdf": sdf}, image, label, iteration, tasks)
    soft = torch.sigmoid(seg)
    gt_dis = torch.from_numpy(compute_sdf_reference(label[:N_LAB].numpy()))
    sup = dice(soft[:N_LAB, 0], label[:N_LAB] == 1) + 0.3 * ((sdf[:N_LAB, 0] - gt_dis) ** 2).mean()
    ref = sup + ramp(1.0, iteration) * ((torch.sigmoid(-1500 * sdf) - soft) ** 2).mean()
    check(total, ref, [seg, sdf])


def sharpening(p, t=0.1):
    contrast = p ** (1 / t)
    return contrast / (contrast + (1 - p) ** (1 / t))


@pytest.mark.parametrize("decoders", [2, 3])
@pytest.mark.parametrize("iteration", ITERATIONS.values(), ids=ITERATIONS.keys())
def test_mcnet(iteration, decoders):
    image, label = batch(3)
    outs = [leaf(2, 10 + i) for i in range(decoders)]
    names = ["seg"] + [f"seg/{i}" for i in range(1, decoders)]
    tasks = {"seg": TASKS.create("seg", softmax=True)}
    total = ours(RECIPES.create("mcnet", decoders=decoders), dict(zip(names, outs)), image, label, iteration, tasks)
    probs = [torch.softmax(o, 1) for o in outs]
    sup = sum(0.5 * dice(p[:N_LAB, 1], label[:N_LAB] == 1) for p in probs)
    cons = sum(
        ((probs[i] - sharpening(probs[j])) ** 2).mean() for i in range(decoders) for j in range(decoders) if i != j
    )
    check(total, sup + ramp(1.0, iteration) * cons, outs)


def test_transcriptions_are_not_trivial():
    # The ramp's two settings differ, so each parity test above covers two different totals.
    assert ramp(1.0, 0) == pytest.approx(math.exp(-5)) and ramp(1.0, 6000) == 1.0
    assert np.isclose(sharpening(torch.tensor(0.6)).item(), 0.6**10 / (0.6**10 + 0.4**10))
