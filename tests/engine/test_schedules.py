import math

import pytest

from mtssl.config import ConfigError
from mtssl.terms.schedules import Schedule, build_schedule


def test_sigmoid_rampup_is_the_literature_formula():
    w = build_schedule({"schedule": "sigmoid", "c": 0.1})
    assert w(0) == pytest.approx(0.1 * math.exp(-5))  # c * e^-5 = 0.007 c at iteration 0
    for it in (149, 150, 1500, 3000, 5999):
        t = min(it // 150, 40)
        assert w(it) == pytest.approx(0.1 * math.exp(-5 * (1 - t / 40) ** 2))
    assert w(6000) == pytest.approx(0.1) and w(20000) == pytest.approx(0.1)


def test_linear_and_constant():
    assert build_schedule(0.3)(12345) == 0.3
    lin = Schedule(schedule="linear", c=1.0, length=100, start=0.5)
    assert lin(0) == 0.5 and lin(50) == pytest.approx(0.75) and lin(500) == 1.0


def test_bad_schedule():
    with pytest.raises(ConfigError, match="'cosine' is not one of 'constant', 'sigmoid', 'linear'"):
        build_schedule({"schedule": "cosine"})
    with pytest.raises(ConfigError, match="expected a number or a schedule"):
        build_schedule("fast")


@pytest.mark.parametrize("iterations", [200, 333, 500, 1200, 6000, 30000])
@pytest.mark.parametrize("until", [0.5, 0.8, 1.0])
def test_a_ramp_set_as_a_fraction_is_full_at_that_point_of_any_run(iterations, until):
    from mtssl.recipes.base import ramp

    w = build_schedule(ramp(0.5, until=until)).for_run(iterations)
    full = next(t for t in range(iterations * 2) if w(t) == pytest.approx(0.5))
    # the ramp moves in 40 steps of a whole number of iterations: full within half a step of the point asked
    assert abs(full - until * iterations) <= max(w.divisor, 2) * 20
    assert w(0) == pytest.approx(0.5 * math.exp(-5)) and w(full - 1) < 0.5


def test_fractions_express_the_recorded_schedules_exactly():
    from mtssl.recipes.base import ramp

    literature = build_schedule(ramp(0.1, divisor=150))  # LA's 6000 iterations
    cpu_grid = build_schedule(ramp(1.0, divisor=10))  # the CPU LA grid's 500 iterations
    assert build_schedule(ramp(0.1, until=1.0)).for_run(6000) == literature
    assert build_schedule(ramp(1.0, until=0.8)).for_run(500) == cpu_grid
    with pytest.raises(ValueError, match=r"needs for_run\(iterations\) first"):
        build_schedule(ramp(0.1))(10)
    with pytest.raises(ConfigError, match=r"until is a fraction of the run, in \[0, 1\], got 1\.5"):
        build_schedule({"schedule": "sigmoid", "until": 1.5})


def test_every_recipe_ramps_over_its_run_by_default(tmp_path):
    from mtssl.engine.trainer import Trainer
    from tests.engine.test_train import tiny_config

    for name in ("mean_teacher", "dtc", "dbisl", "ua_mt", "mcnet"):
        cfg = tiny_config(iterations=80)
        cfg["recipe"] = {"name": name}
        trainer = Trainer.from_config(cfg, tmp_path / name)
        ramped = [t.weight for t in trainer.recipe.terms if t.weight.schedule == "sigmoid"]
        assert ramped and all(w.divisor == 2 and w(80) == pytest.approx(w.c) and w(79) < w.c for w in ramped), name
