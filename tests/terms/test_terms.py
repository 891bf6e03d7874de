"""Each term on hand-made tensors with a known value, and SSL gradients from unlabeled samples alone."""

import math

import pytest
import torch

from mtssl.model import MultiTaskModel
from mtssl.nets.vnet import VNet
from mtssl.registry import TASKS, TERMS
from mtssl.terms.consistency import sharpen, sigmoid_rampup
from mtssl.terms.context import StepContext
from mtssl.terms.pseudo_label import fuse

SEG = TASKS.create("seg")
SOFTMAX = TASKS.create("seg", softmax=True)
SDF = TASKS.create("sdf")
SignedDistance = type(SDF)


def ctx(outputs, tasks, n_labeled=0, teacher=None, iteration=6000, label=None, image=None):
    first = next(iter(outputs.values()))
    b, spatial = first.shape[0], first.shape[2:]
    image = torch.zeros(b, 1, *spatial) if image is None else image
    label = torch.zeros(b, *spatial, dtype=torch.long) if label is None else label
    return StepContext(
        image=image,
        label=label,
        outputs=outputs,
        tasks=tasks,
        iteration=iteration,
        n_labeled=n_labeled,
        teacher=teacher,
    )


def test_cross_task_known_values():
    term = TERMS.create("cross_task", source="sdf", target="seg")
    zero = torch.zeros(2, 1, 4, 4)
    assert term(ctx({"sdf": zero, "seg": zero}, {"sdf": SDF, "seg": SEG}))["consistency_sdf_seg"] == 0
    inside = torch.full((2, 1, 4, 4), -1.0)  # sigmoid(1500) = 1 against sigmoid(0) = 0.5
    value = term(ctx({"sdf": inside, "seg": zero}, {"sdf": SDF, "seg": SEG}))["consistency_sdf_seg"]
    assert value == pytest.approx(0.25)
    unlabeled = TERMS.create("cross_task", samples="unlabeled")
    mixed = torch.cat([torch.full((1, 1, 4, 4), -1.0), torch.zeros(1, 1, 4, 4)])
    assert (
        unlabeled(ctx({"sdf": mixed, "seg": zero}, {"sdf": SDF, "seg": SEG}, n_labeled=1))["consistency_sdf_seg"] == 0
    )


def test_mean_teacher_known_value():
    student = torch.zeros(2, 2, 4, 4)  # softmax 0.5 / 0.5
    teacher = lambda x: {"seg": torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1).expand(x.shape[0], 2, 4, 4)}  # noqa: E731
    value = TERMS.create("mean_teacher")(
        ctx({"seg": student}, {"seg": SOFTMAX}, n_labeled=1, teacher=teacher, image=torch.zeros(2, 1, 4, 4))
    )
    assert value["consistency_teacher"] == pytest.approx(0.0625)  # (0.5 - 0.75)^2 on both channels
    with pytest.raises(ValueError, match="reads an EMA teacher, and the recipe has none"):
        TERMS.create("mean_teacher")(ctx({"seg": student}, {"seg": SOFTMAX}))


def test_ua_mt_masks_uncertain_voxels():
    student = torch.zeros(1, 2, 2, 2)
    logits = torch.zeros(1, 2, 2, 2)
    logits[..., 0] = torch.tensor([0.0, 10.0]).view(2, 1)  # left column certain, right column p = 0.5
    teacher = lambda x: {"seg": logits.expand(x.shape[0], -1, -1, -1)}  # noqa: E731
    term = TERMS.create("ua_mt", passes=2, noise_std=0.0)
    # At iteration 0 the threshold is about 0.75 ln 2: the p = 0.5 voxels (entropy ln 2) are masked out.
    out = term(ctx({"seg": student}, {"seg": SOFTMAX}, teacher=teacher, iteration=0))["consistency_uncertain"]
    p = torch.softmax(torch.tensor([0.0, 10.0]), 0)
    expected = ((p - 0.5) ** 2).sum() * 2 / (2 * 2 + 1e-16)  # only the 2 certain voxels count
    assert out == pytest.approx(float(expected), rel=1e-5)
    assert sigmoid_rampup(0, 6000) == pytest.approx(math.exp(-5)) and sigmoid_rampup(6000, 6000) == 1


def test_sharpen_and_multi_decoder():
    p = torch.tensor([0.5, 0.6, 0.0, 1.0])
    torch.testing.assert_close(sharpen(p), torch.tensor([0.5, 0.6**10 / (0.6**10 + 0.4**10), 0.0, 1.0]))
    hard = torch.tensor([-50.0, 50.0]).view(1, 2, 1, 1).expand(2, 2, 3, 3)
    term = TERMS.create("multi_decoder", decoders=2)
    assert term(ctx({"seg": hard, "seg/1": hard}, {"seg": SOFTMAX}))["consistency_decoders"] < 1e-12
    half = torch.zeros(2, 2, 3, 3)
    assert term(ctx({"seg": half, "seg/1": hard}, {"seg": SOFTMAX}))["consistency_decoders"] == pytest.approx(0.5)


def test_fusion_and_uncertainty_weights_follow_the_formula():
    # Left: the tasks agree (0.9, 0.9); right: they disagree (0.9, 0.1).
    p_seg = torch.tensor([[0.9, 0.9]])
    p_sdf = torch.tensor([[0.9, 0.1]])
    fused, weight = fuse(p_seg, p_sdf, fusion="mean", uncertainty="disagreement")
    torch.testing.assert_close(fused, torch.tensor([[0.9, 0.5]]))
    torch.testing.assert_close(weight, torch.tensor([[1.0, 0.2]]))
    _, entropy = fuse(p_seg, p_sdf, fusion="mean", uncertainty="entropy")
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    torch.testing.assert_close(entropy, torch.tensor([[1 - h, 0.0]]), atol=1e-6, rtol=0)
    geometric, ones = fuse(p_seg, p_sdf, fusion="geometric", uncertainty="none")
    torch.testing.assert_close(geometric, torch.tensor([[0.9, 0.3]]))
    assert torch.all(ones == 1)


def test_fused_pseudo_label_weights_the_disagreeing_region_down():
    seg_logits = torch.full((1, 1, 4, 4), math.log(9))  # p_seg = 0.9 everywhere
    sdf = torch.full((1, 1, 4, 4), -1.0)  # p_sdf = 1 on the left half ...
    sdf[..., 2:] = 1.0  # ... and 0 on the right half: the tasks disagree there
    term = TERMS.create("fused_pseudo_label")
    full = term(ctx({"seg": seg_logits, "sdf": sdf}, {"seg": SEG, "sdf": SDF}))
    uniform = TERMS.create("fused_pseudo_label", uncertainty="none")(
        ctx({"seg": seg_logits, "sdf": sdf}, {"seg": SEG, "sdf": SDF})
    )
    # Left: fused 0.95 -> pseudo 1, weight 0.9; right: fused 0.45 -> pseudo 0, weight 0.1.
    p = torch.full((4, 4), 0.9)
    w = torch.ones(4, 4) * 0.9
    w[:, 2:] = 0.1
    t = torch.zeros(4, 4)
    t[:, :2] = 1
    expected = 1 - (2 * (w * p * t).sum() + 1e-5) / ((w * p * p).sum() + (w * t * t).sum() + 1e-5)
    assert full["pseudo_seg"] == pytest.approx(float(expected), rel=1e-5)
    assert full["pseudo_seg"] != pytest.approx(float(uniform["pseudo_seg"]))


def tiny_model(tasks):
    torch.manual_seed(0)
    return MultiTaskModel(VNet(n_filters=4, has_dropout=False), tasks)


@pytest.mark.parametrize(
    ("name", "options", "tasks", "teacher"),
    [
        ("mean_teacher", {}, {"seg": SOFTMAX}, True),
        ("ua_mt", {"passes": 2}, {"seg": SOFTMAX}, True),
        ("cross_task", {}, {"seg": SEG, "sdf": SDF}, False),
        ("cross_task", {"source": "seg", "target": "sdf"}, {"seg": SEG, "sdf": SignedDistance(h=0.5)}, False),
        ("multi_decoder", {}, {"seg": SOFTMAX}, False),
        ("fused_pseudo_label", {}, {"seg": SEG, "sdf": SDF}, False),
    ],
    ids=["mean_teacher", "ua_mt", "sdf->seg", "seg->sdf", "multi_decoder", "fused_pseudo_label"],
)
def test_ssl_terms_train_from_unlabeled_samples_only(name, options, tasks, teacher):
    from mtssl.nets.vnet import MCNet

    model = (
        tiny_model(tasks) if name != "multi_decoder" else MultiTaskModel(MCNet(n_filters=4, has_dropout=False), tasks)
    )
    image = torch.randn(2, 1, 16, 16, 16)
    outputs = model(image)
    other = tiny_model(tasks)
    context = ctx(outputs, tasks, n_labeled=0, image=image, teacher=(lambda x: other(x)) if teacher else None)
    losses = TERMS.create(name, **options)(context)
    total = sum(losses.values())
    total.backward()
    grad = sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None)
    assert grad > 0 and torch.isfinite(grad)


def test_transformed_supervised_known_values():
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    label[:, :, :2] = 1
    inside = torch.where(label[:, None] == 1, -1.0, 1.0)  # a perfect SDF sign: sigmoid(-1500 sdf) is the label
    term = TERMS.create("transformed_supervised", source="sdf", target="seg")
    out = term(ctx({"sdf": inside, "seg": torch.zeros(2, 1, 4, 4)}, {"sdf": SDF, "seg": SEG}, n_labeled=2, label=label))
    assert out["transformed_sdf_to_seg_dice"] == pytest.approx(0.0, abs=1e-6)
    flipped = term(
        ctx({"sdf": -inside, "seg": torch.zeros(2, 1, 4, 4)}, {"sdf": SDF, "seg": SEG}, n_labeled=2, label=label)
    )
    assert flipped["transformed_sdf_to_seg_dice"] == pytest.approx(1.0, abs=1e-4)


def test_mc_dropout_uncertainty_from_the_student():
    tasks = {"seg": SOFTMAX}
    model = tiny_model(tasks)
    image = torch.randn(2, 1, 16, 16, 16)
    outputs = model(image)
    other = tiny_model(tasks)
    context = ctx(outputs, tasks, n_labeled=0, image=image, teacher=lambda x: other(x))
    context.model = model
    loss = TERMS.create("ua_mt", passes=2, votes="student")(context)["consistency_uncertain"]
    assert torch.isfinite(loss)
    context.model = None
    with pytest.raises(ValueError, match="needs the student's forward"):
        TERMS.create("ua_mt", passes=2, votes="student")(context)


def test_the_seg_head_votes_on_the_fused_pseudo_label():
    # The SDF head is just outside the object everywhere (sdf = +0.005): sigmoid(-1500 sdf) = 0.0006,
    # so with DTC's k the mean fusion is the SDF head's sign whatever the seg head says. With the
    # pseudo-label's own steepness (k = 50: p_sdf = 0.44) a confident seg head turns the label.
    sdf = torch.full((2, 1, 4, 4), 0.005)
    outputs = {"sdf": sdf}
    labels = {}
    for k in (1500.0, 50.0):
        term = TERMS.create("fused_pseudo_label", k=k)
        for seg in (-3.0, 3.0):
            outputs["seg"] = torch.full((2, 1, 4, 4), seg)
            labels[k, seg] = term.label(ctx(outputs, {"seg": SEG, "sdf": SDF}))[0]
    assert torch.equal(labels[1500.0, -3.0], labels[1500.0, 3.0])  # DTC's k: the seg head never votes
    assert labels[50.0, -3.0].sum() == 0 and labels[50.0, 3.0].min() == 1


def test_the_teacher_source_fuses_the_teachers_outputs_not_the_students():
    # Student: confident background on both heads. Teacher: confident foreground on both heads.
    student = {"seg": torch.full((2, 1, 4, 4), -5.0), "sdf": torch.full((2, 1, 4, 4), 0.5)}
    teacher_out = {"seg": torch.full((1, 1, 4, 4), 5.0), "sdf": torch.full((1, 1, 4, 4), -0.5)}
    seen = []

    def teacher(image):
        seen.append(image.shape[0])
        return teacher_out

    tasks = {"seg": SEG, "sdf": SDF}
    from_teacher = TERMS.create("fused_pseudo_label", votes="teacher")
    pseudo, _, weight = from_teacher.label(ctx(student, tasks, n_labeled=1, teacher=teacher))
    assert seen == [1]  # the teacher sees the unlabeled sample only
    assert pseudo.min() == 1 and weight.min() > 0.99
    own, _, _ = TERMS.create("fused_pseudo_label", votes="student").label(
        ctx(student, tasks, n_labeled=1, teacher=teacher)
    )
    assert own.max() == 0
    with pytest.raises(ValueError, match="reads an EMA teacher, and the recipe has none"):
        from_teacher(ctx(student, tasks, n_labeled=1))
    with pytest.raises(ValueError, match="'ema' is not one of 'student', 'teacher'"):
        TERMS.create("fused_pseudo_label", votes="ema")

    from mtssl.registry import RECIPES

    assert RECIPES.create("dbisl").teacher.decay == 0.99  # the default: pseudo-labels from a teacher
    assert RECIPES.create("dbisl", pseudo_source="student").teacher is None
    assert RECIPES.create("dbisl", pseudo=False).teacher is None


def test_dbisl_ramps_every_unsupervised_and_transformed_term():
    from mtssl.registry import RECIPES

    recipe = RECIPES.create("dbisl", ramp_divisor=10, consistency="both")
    weights = {
        f"{type(t.fn).__name__}:{getattr(t.fn, 'name', None) or getattr(t.fn, 'output', '')}": t.weight
        for t in recipe.terms
    }
    ramped = {k: w for k, w in weights.items() if not k.startswith("Supervised")}
    assert len(ramped) == 5, weights  # two transformed, two consistency, the pseudo-label
    for name, w in ramped.items():
        assert w(0) == pytest.approx(w.c * math.exp(-5)), name
        assert w(200) < w(399) < w.c and w(400) == pytest.approx(w.c) == w(10_000), name
    for name, w in weights.items():
        if name.startswith("Supervised"):
            assert w(0) == w(10_000), name  # the supervised terms act from the first step


@pytest.mark.parametrize(("name", "ramped_terms"), [("mean_teacher", 1), ("ua_mt", 1), ("dtc", 1), ("mcnet", 1)])
def test_every_recipe_ramps_its_unsupervised_terms_on_one_schedule(name, ramped_terms):
    # A CPU grid of 500 iterations ramps every recipe the same way (ramp_divisor 10: full at 400);
    # the default stays the literature's 6000 iterations.
    from mtssl.registry import RECIPES

    for divisor, full in ((10, 400), (150, 6000)):
        recipe = RECIPES.create(name, ramp_divisor=divisor)
        ramped = [t for t in recipe.terms if type(t.fn).__name__ != "Supervised"]
        assert len(ramped) == ramped_terms, recipe.terms
        for t in ramped:
            w = t.weight
            assert w(0) == pytest.approx(w.c * math.exp(-5))
            assert w(full // 2) < w(full - 1) < w.c and w(full) == pytest.approx(w.c) == w(10 * full)
        for t in recipe.terms:
            if type(t.fn).__name__ == "Supervised":
                assert t.weight(0) == t.weight(10 * full)


@pytest.mark.parametrize("detach", ["source", "target"])
def test_cross_task_detached_side_gets_no_gradient(detach):
    seg = torch.randn(2, 1, 8, 8, requires_grad=True)
    sdf = (torch.rand(2, 1, 8, 8) - 0.5).requires_grad_()
    term = TERMS.create("cross_task", source="seg", target="sdf", **{f"detach_{detach}": True})
    term(ctx({"seg": seg, "sdf": sdf}, {"seg": SEG, "sdf": SignedDistance(h=1.0)}))["consistency_seg_sdf"].backward()
    taught, teacher = (sdf, seg) if detach == "source" else (seg, sdf)
    assert teacher.grad is None and taught.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="teaches nothing"):
        TERMS.create("cross_task", detach_source=True, detach_target=True)


def test_the_pseudo_label_dice_counts_every_foreground_class():
    """With K = 2 classes the pseudo-label's Dice is the mean of both classes' Dice (none is a background)."""
    tasks = {"seg": TASKS.create("seg", num_classes=2), "sdf": TASKS.create("sdf", num_classes=2)}
    g = torch.Generator().manual_seed(5)
    outputs = {"seg": torch.randn(2, 2, 12, 12, generator=g), "sdf": torch.tanh(torch.randn(2, 2, 12, 12, generator=g))}
    term = TERMS.create("fused_pseudo_label", uncertainty="none", votes="student")
    step = ctx(outputs, tasks)
    pseudo, _, weight = term.label(step)
    assert torch.all(weight == 1)
    prob, t = torch.sigmoid(outputs["seg"]).double(), pseudo.double()
    per_class = 1 - (2 * (prob * t).sum((0, 2, 3)) + 1e-5) / ((prob * prob).sum((0, 2, 3)) + t.sum((0, 2, 3)) + 1e-5)
    assert float(term(step)["pseudo_seg"]) == pytest.approx(float(per_class.mean()), rel=1e-5)


def test_a_new_uncertainty_weighting_is_one_registration_and_both_recipes_take_it_by_name():
    """A weighting registered once is taken by name by DBiSL's pseudo-label (recipe.uncertainty) and by the
    UA-MT term; a weighting of 0 silences both losses, and an unknown name lists the registered ones."""
    from mtssl.registry import RECIPES, UNCERTAINTIES, RegistryError

    @UNCERTAINTIES.register("test_nothing_counts")
    class NothingCounts:
        def __call__(self, votes, fused, iteration, softmax=False):
            return torch.zeros_like(fused[:, :1])

    try:
        recipe = RECIPES.create("dbisl", uncertainty="test_nothing_counts", pseudo_source="student")
        pseudo = next(t.fn for t in recipe.terms if t.name == "pseudo")
        seg, sdf = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
        losses = pseudo(ctx({"seg": seg, "sdf": sdf}, {"seg": SEG, "sdf": SDF}, n_labeled=1))
        assert losses["pseudo_seg"] == 0 and losses["pseudo_sdf"] == 0
        logits = torch.randn(2, 2, 2, 2)
        teacher = lambda x: {"seg": logits[: x.shape[0]]}  # noqa: E731
        term = TERMS.create("ua_mt", passes=2, noise_std=0.0, uncertainty="test_nothing_counts")
        student = torch.randn(1, 2, 2, 2)
        assert term(ctx({"seg": student}, {"seg": SOFTMAX}, teacher=teacher))["consistency_uncertain"] == 0
        assert "max_iterations" in UNCERTAINTIES.get("entropy_below").defaults()  # UA-MT's ramp goes to its own
    finally:
        UNCERTAINTIES._entries.pop("test_nothing_counts", None)
    with pytest.raises(RegistryError, match=r"unknown uncertainty 'entropyy'. Did you mean 'entropy'"):
        RECIPES.create("dbisl", uncertainty="entropyy")


def test_disagreement_of_several_votes_is_their_spread():
    from mtssl.terms.uncertainty import Disagreement

    votes = [torch.tensor([0.2, 0.9]), torch.tensor([0.6, 0.9]), torch.tensor([0.4, 0.8])]
    torch.testing.assert_close(Disagreement()(votes, votes[0], 0), torch.tensor([0.6, 0.9]))
