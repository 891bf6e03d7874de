"""Every example config validates, and the LA ones carry the protocol's values."""

from pathlib import Path

import pytest

from mtssl.config import build_dataclass, load_config
from mtssl.engine.trainer import RunConfig, build_recipe

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
