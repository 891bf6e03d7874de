"""Extending mtssl from outside the package: a task, a term, an uncertainty weighting, a backbone (one file
each, in this folder) and a recipe in YAML alone; then a model the user built, trained through the Python API."""

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mtssl.config import load_config
from mtssl.registry import BACKBONES, TASKS, TERMS, UNCERTAINTIES

HERE = "tests.extending"
ADDED = ((TASKS, "contour", "contour_task"), (TERMS, "contour_sparsity", "sparsity_term"))
ADDED += ((BACKBONES, "two_convs", "tiny_backbone"), (UNCERTAINTIES, "margin", "margin_uncertainty"))


@pytest.fixture
def extensions():
    """Register this folder's task, term, uncertainty and backbone for one test, then take them out again."""
    for registry, name, module in ADDED:
        if name not in registry:  # a module imported by an earlier test registers again when reloaded
            loaded = sys.modules.get(f"{HERE}.{module}")
            importlib.reload(loaded) if loaded else importlib.import_module(f"{HERE}.{module}")
    yield
    for registry, name, _ in ADDED:
        registry._entries.pop(name, None)  # keep the other tests' registries as they were


def test_a_yaml_recipe_trains_a_new_task_term_and_backbone(extensions, tmp_path):

    from mtssl.engine.run import train_run

    config = load_config(Path(__file__).with_name("recipe.yaml"))
    summary = train_run(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4, 6]
    losses = {k for k in records[-1] if k.startswith("loss/")}
    expected = {"seg_dice", "seg_ce", "contour_mse", "consistency_seg_contour", "contour_sparsity", "total"}
    assert losses == {f"loss/{k}" for k in expected}
    weights = {k: v for k, v in records[-1].items() if k.startswith("weight/")}
    assert weights["weight/contour"] == 0.5 and weights["weight/contour_sparsity"] == 0.1  # one name per term
    assert 0 < weights["weight/consistency_seg_contour"] < 0.3  # the sigmoid ramp, not yet full
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in records)
    assert summary["cases"] == 2 and 0 <= summary["mean"]["dice"] <= 1


def test_a_yaml_recipe_names_what_is_wrong(extensions):
    from mtssl.config import ConfigError
    from mtssl.registry import RECIPES

    with pytest.raises(ConfigError, match=r"recipe.terms\[0\]: unknown term 'contour_sparsty'.*contour_sparsity"):
        RECIPES.create("composed", tasks={"contour": {}}, terms=[{"term": "contour_sparsty"}])
    with pytest.raises(ConfigError, match=r"recipe.terms\[0\]: .* reads the output 'contour', but no head 'contour'"):
        RECIPES.create("composed", tasks={"seg": {}}, terms=[{"term": "contour_sparsity"}])
    with pytest.raises(ConfigError, match=r"recipe.terms\[1\].weight: expected a number or a schedule"):
        RECIPES.create(
            "composed", tasks={"seg": {}}, terms=[{"term": "supervised"}, {"term": "supervised", "weight": "x"}]
        )


def test_a_user_built_model_trains_through_a_trainer_built_from_objects(tmp_path):
    from mtssl.data.phantom import phantom
    from mtssl.engine.build import TrainConfig
    from mtssl.engine.protocol import EvalConfig
    from mtssl.engine.trainer import Trainer
    from mtssl.model import Backbone, MultiTaskModel
    from mtssl.recipes.literature import dtc
    from mtssl.tasks.sdf import SignedDistance
    from mtssl.tasks.seg import Segmentation

    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 6, 3, padding=1), nn.ReLU())
    model = MultiTaskModel(
        Backbone(network, out_channels=6, spatial_dims=3), {"seg": Segmentation(), "sdf": SignedDistance()}
    )
    data = phantom(labeled=2, num_train=4, num_test=2, size=(24, 24, 24), patch=(16, 16, 16))
    train = TrainConfig(iterations=4, log_every=2, checkpoint_every=4, progress=False)
    trainer = Trainer(model, dtc(ramp_divisor=1), data, tmp_path, train, EvalConfig(stride=(16, 16, 16)))
    before = [p.detach().clone() for p in network.parameters()]
    trainer.fit()
    assert trainer.model is model and trainer.iteration == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))  # the user's network learned
    summary = trainer.evaluate("test")
    assert summary["cases"] == 2 and set(summary["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"loss/seg_dice", "loss/sdf_mse", "loss/consistency_sdf_seg"} <= set(records[-1])
    config = (tmp_path / "config.yaml").read_text()
    assert "recipe" not in config and "seed: 1337" in config  # no run config: the objects were built in Python
    with pytest.raises(TypeError, match=r"wrap it as Backbone\(network, out_channels=\.\.\., spatial_dims=\.\.\.\)"):
        MultiTaskModel(network, {"seg": Segmentation()})


@pytest.mark.parametrize("recipe", ["dbisl", "ua_mt"])
def test_a_new_uncertainty_in_one_file_is_taken_by_dbisl_and_ua_mt(extensions, recipe, tmp_path):
    from mtssl.engine.run import train_run
    from mtssl.registry import RECIPES
    from tests.engine.test_train import tiny_config

    built = RECIPES.create(recipe, uncertainty="margin")
    weighted = [t.fn for t in built.terms if getattr(t.fn, "uncertainty", None) is not None]
    assert [type(fn.weighting).__name__ for fn in weighted] == ["Margin"]
    cfg = tiny_config(iterations=2, log_every=1)
    cfg["recipe"] = {"name": recipe, "uncertainty": "margin", **({"passes": 2} if recipe == "ua_mt" else {})}
    cfg["data"]["classes"] = 1
    train_run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    loss = "loss/pseudo_seg" if recipe == "dbisl" else "loss/consistency_uncertain"
    assert [r["iteration"] for r in records] == [1, 2] and all(math.isfinite(r[loss]) for r in records)


def test_the_new_weighting_sets_the_weights_both_recipes_use(extensions):
    from mtssl.registry import RECIPES
    from mtssl.terms.context import StepContext

    torch.manual_seed(0)
    seg, sdf = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6) * 0.05
    tasks = {"seg": TASKS.create("seg"), "sdf": TASKS.create("sdf")}
    teacher_out = {"seg": torch.randn(2, 1, 6, 6), "sdf": sdf.flip(-1)}
    ctx = StepContext(
        image=torch.zeros(2, 1, 6, 6),
        label=torch.zeros(2, 6, 6, dtype=torch.long),
        outputs={"seg": seg, "sdf": sdf},
        tasks=tasks,
        iteration=10,
        n_labeled=0,
        teacher=lambda image: teacher_out,
    )
    # DBiSL: the pseudo-label's weight is |2 fused - 1| of the teacher's two votes (its default source)
    pseudo = next(t.fn for t in RECIPES.create("dbisl", uncertainty="margin").terms if t.fn.name == "pseudo")
    fused = (torch.sigmoid(teacher_out["seg"]) + torch.sigmoid(-50 * teacher_out["sdf"])) / 2
    _, _, weight = pseudo.label(ctx)
    torch.testing.assert_close(weight, (2 * fused - 1).abs()[:, 0])
    # UA-MT (noise off, so every pass is the teacher's): sum(w (s - t)^2) / sum(w), w = |2 t - 1|
    term = TERMS.create("ua_mt", passes=3, noise_std=0.0, uncertainty="margin")
    ctx.tasks["seg"] = TASKS.create("seg", softmax=False)
    t = torch.sigmoid(teacher_out["seg"])
    w = (2 * t - 1).abs()
    expected = (w * (torch.sigmoid(seg) - t).square()).sum() / w.sum()
    torch.testing.assert_close(term(ctx)["consistency_uncertain"], expected)
