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
