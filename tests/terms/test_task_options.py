"""A task's options are set once, on the task, and every term that maps through the task uses them."""

import pytest
import torch

from mtssl.config import apply_overrides, build_dataclass
from mtssl.engine.build import RunConfig, build_components
from mtssl.ops.conv_distance import soft_signed_distance
from mtssl.ops.losses import dice_loss, mse_loss
from mtssl.terms.context import StepContext
from tests.engine.test_train import tiny_config


def test_model_tasks_sdf_k_reaches_every_dbisl_term():
    config = {**tiny_config(), "recipe": {"name": "dbisl", "consistency": "both"}}
    config = apply_overrides(config, ["model.tasks.sdf.k=7.0", "model.tasks.sdf.h=1.5"])
    recipe, _, model = build_components(build_dataclass(RunConfig, config))
    assert (model.tasks["sdf"].k, model.tasks["sdf"].h) == (7.0, 1.5)
    torch.manual_seed(0)
    image = torch.randn(2, 1, 16, 16, 16)
    label = torch.zeros(2, 16, 16, 16, dtype=torch.long)
    label[:, 4:12, 4:12, 4:12] = 1
    outputs = model(image)
    teacher = torch.no_grad()(model.eval())  # DBiSL's pseudo-label comes from a teacher: here the model itself
    ctx = StepContext(
        image=image, label=label, outputs=outputs, tasks=model.tasks, iteration=6000, n_labeled=1, teacher=teacher
    )
    values = {}
    for term in recipe.terms:
        values.update(term.fn(ctx))

    seg, sdf = outputs["seg"].float(), outputs["sdf"].float()
    to_seg = torch.sigmoid(-7.0 * sdf)  # the task's k, not DBiSL's default 1500
    to_sdf = soft_signed_distance(seg, 1.5, kernel="exp", normalize=True, activation="sigmoid")
    seg_target, sdf_target = ctx.target("seg"), ctx.target("sdf")
    expected = {
        "consistency_sdf_seg": (to_seg - torch.sigmoid(seg)).square().mean(),
        "consistency_seg_sdf": (to_sdf - sdf).square().mean(),
        "transformed_sdf_to_seg_dice": dice_loss(to_seg[:1], seg_target),
        "transformed_seg_to_sdf_mse": mse_loss(to_sdf[:1], sdf_target),
    }
    for name, value in expected.items():
        assert values[name].item() == pytest.approx(value.item(), rel=1e-5), name
    # and the same terms with the recipe's own k differ: the override is what they used
    default = {**tiny_config(), "recipe": {"name": "dbisl"}}
    _, _, plain_model = build_components(build_dataclass(RunConfig, default))
    assert plain_model.tasks["sdf"].k == 1500.0
    plain_ctx = StepContext(
        image=image, label=label, outputs=outputs, tasks=plain_model.tasks, iteration=6000, n_labeled=1
    )
    assert plain_ctx.mapped("sdf", "seg").sub(to_seg).abs().max() > 1e-3


def test_a_transform_between_two_regression_heads_is_refused():
    from mtssl.registry import TASKS

    tasks = {"sdf": TASKS.create("sdf"), "dist": TASKS.create("dist")}
    outputs = {"sdf": torch.zeros(1, 1, 4, 4), "dist": torch.zeros(1, 1, 4, 4)}
    ctx = StepContext(
        image=torch.zeros(1, 1, 4, 4),
        label=torch.zeros(1, 4, 4, dtype=torch.long),
        outputs=outputs,
        tasks=tasks,
        iteration=0,
        n_labeled=0,
    )
    with pytest.raises(ValueError, match="one of the two must be a segmentation head"):
        ctx.mapped("sdf", "dist")
