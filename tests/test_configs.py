"""Every example config validates, and the LA ones carry the protocol's values."""

from pathlib import Path

import pytest

from mtssl.config import build_dataclass, load_config
from mtssl.engine.build import RunConfig, build_recipe

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))
RUNS = [p for p in CONFIGS if "recipe" in load_config(p)]


@pytest.mark.parametrize("path", RUNS, ids=[p.stem for p in RUNS])
def test_run_config_validates(path):
    cfg = build_dataclass(RunConfig, load_config(path))
    build_recipe(cfg)


@pytest.mark.parametrize("path", RUNS, ids=[p.stem for p in RUNS])
def test_no_shipped_config_warns_on_its_default_path(path):
    """A shipped config's transforms run at its patch without a SaturationWarning (a soft SDF whose window
    is under half the patch): the warning is for a user's choice that hurts, never for a default."""
    import warnings

    import torch

    from mtssl.registry import TASKS
    from mtssl.tasks.dist import InsideDistance
    from mtssl.tasks.sdf import SignedDistance
    from mtssl.tasks.transforms import SaturationWarning

    cfg = build_dataclass(RunConfig, load_config(path))
    recipe = build_recipe(cfg)
    patch = tuple(cfg.data.get("patch") or ((48, 48, 32) if cfg.data.get("spatial_dims", 3) == 3 else (64, 64)))
    for head, options in recipe.tasks.items():
        options = {**options, **cfg.model.get("tasks", {}).get(head, {})}
        task = TASKS.create(options.pop("task", head), **options)
        if isinstance(task, (SignedDistance, InsideDistance)):  # the tasks with a soft transform from seg
            with warnings.catch_warnings():
                warnings.simplefilter("error", SaturationWarning)
                task.from_seg(torch.zeros(1, 1, *patch))


@pytest.mark.parametrize("labeled", [4, 8, 16, 80])
def test_la_protocol_values(labeled):
    cfg = build_dataclass(RunConfig, load_config(CONFIGS[0].parent / f"la_supervised_{labeled}.yaml"))
    assert cfg.data["labeled"] == labeled and tuple(cfg.data["patch"]) == (112, 112, 80)
    t = cfg.train
    assert (t.iterations, t.batch_size, t.seed) == (6000, 4, 1337)
    assert (t.optimizer.name, t.optimizer.lr, t.optimizer.momentum, t.optimizer.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert (t.lr_schedule.name, t.lr_schedule.step, t.lr_schedule.gamma) == ("step", 2500, 0.1)
    assert cfg.eval.stride == (18, 18, 4) and cfg.eval.lcc and cfg.eval.select == "last"


@pytest.mark.parametrize("recipe", ["mean_teacher", "ua_mt", "dtc", "mcnet", "dbisl"])
@pytest.mark.parametrize("labeled", [4, 8, 16])
def test_every_recipe_on_la(recipe, labeled):
    cfg = build_dataclass(RunConfig, load_config(CONFIGS[0].parent / f"la_{recipe}_{labeled}.yaml"))
    assert cfg.recipe["name"] == recipe and cfg.data["labeled"] == labeled
    assert cfg.train.iterations == (15000 if recipe == "mcnet" else 6000)
    assert cfg.train.lr_schedule.name == ("constant" if recipe == "mcnet" else "step")
    assert (cfg.train.batch_size, cfg.train.labeled_bs) == (4, 2) and cfg.eval.stride == (18, 18, 4)


def test_isbi_dbisl_quick(tmp_path):
    """The 2D ISBI config in a quick mode: 2 iterations, 64x64 crops, one held-out image."""
    import json

    from mtssl.engine.run import train_run
    from tests.conftest import data_dir, require_data

    root = require_data(data_dir() / "isbi2012", "the ISBI 2012 data set")
    quick = [
        f"data.root={root}",
        "data.patch=[64, 64]",
        "train.iterations=2",
        "train.log_every=1",
        "train.progress=false",
        "eval.patch=[64, 64]",
        "eval.stride=[64, 64]",
        "eval.max_cases=1",
    ]
    cfg = load_config(CONFIGS[0].parent / "isbi2012_dbisl.yaml", quick)
    summary = train_run(cfg, tmp_path)
    assert summary["cases"] == 1 and summary["per_case"][0]["case"] == "20"
    assert json.loads((tmp_path / "split.json").read_text())["labeled"] == ["0", "1", "2", "3"]


def test_compose_recipe_example(tmp_path):
    import runpy

    module = runpy.run_path(str(CONFIGS[0].parent.parent / "compose_recipe.py"))
    summary = module["main"](["--quick", "--out", str(tmp_path)])
    assert summary["cases"] == 2 and 0 <= summary["mean"]["dice"] <= 1


@pytest.mark.parametrize("recipe", ["supervised", "mean_teacher", "dtc", "dbisl"])
@pytest.mark.parametrize("labeled", [3, 7])
def test_acdc_protocol_values(recipe, labeled):
    """SSL4MIS's ACDC protocol (docs/acdc.md): 256x256 slices, batch 24 (12 + 12, or all labeled for
    supervised), SGD 0.01 with poly decay, 30000 iterations, selection on validation every 200."""
    cfg = build_dataclass(RunConfig, load_config(CONFIGS[0].parent / f"acdc_{recipe}_{labeled}.yaml"))
    assert cfg.recipe["name"] == recipe and cfg.data["name"] == "acdc" and cfg.data["labeled"] == labeled
    assert tuple(cfg.data["patch"]) == (256, 256) and cfg.model["backbone"]["name"] == "unet"
    t = cfg.train
    assert (t.iterations, t.batch_size, t.labeled_bs) == (30000, 24, 24 if recipe == "supervised" else 12)
    assert (t.optimizer.name, t.optimizer.lr, t.optimizer.momentum, t.optimizer.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        1e-4,
    )
    assert (t.lr_schedule.name, t.lr_schedule.power) == ("poly", 0.9)
    assert (cfg.eval.select, cfg.eval.select_every, cfg.eval.lcc) == ("val", 200, False)
    if recipe != "supervised":  # the unsupervised weights full at the end, as SSL4MIS's sigmoid_rampup(t // 150, 200)
        assert cfg.recipe["ramp_divisor"] * 40 == 30000


@pytest.mark.parametrize("recipe", ["mean_teacher", "dbisl"])
def test_acdc_cpu_protocol_runs_2d_multiclass_and_selects_on_validation(recipe, tmp_path, acdc_root):
    """A few iterations of the CPU ACDC protocol on the real data, 64x64 slices: a 2D, 3-class run that
    scores validation volumes slice by slice, logs each score, keeps the best, and tests volumes."""
    import json

    from mtssl.engine.run import train_run

    quick = [
        f"data.root={acdc_root}",
        f"recipe={{name: {recipe}, ramp_divisor: 1}}",
        "data.patch=[64, 64]",  # at 32x32 the soft SDF takes its exact (slow) walk
        "train.labeled_bs=4",
        "train.iterations=4",
        "train.log_every=2",
        "train.progress=false",
        "eval.select_every=2",
        "eval.max_cases=2",
    ]
    summary = train_run(load_config(CONFIGS[0].parent / "acdc_cpu_supervised.yaml", quick), tmp_path)
    assert summary["cases"] == 2 and set(summary["class_names"].values()) == {
        "right ventricle",
        "myocardium",
        "left ventricle",
    }
    assert summary["selection"] == "best validation Dice"
    first = summary["per_case"][0]["case"]
    assert first == (acdc_root / "test.list").read_text().split()[0]
    assert [r["class"] for r in summary["per_case"] if r["case"] == first] == [1, 2, 3]
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    scores = [r for r in records if "val/dice" in r]
    assert [r["iteration"] for r in scores] == [2, 4]
    assert scores[-1]["val/best_dice"] == max(r["val/dice"] for r in scores)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
