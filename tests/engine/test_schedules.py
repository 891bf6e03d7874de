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
    lin = Schedule("linear", c=1.0, length=100, start=0.5)
    assert lin(0) == 0.5 and lin(50) == pytest.approx(0.75) and lin(500) == 1.0


def test_bad_schedule():
    with pytest.raises(ConfigError, match="'cosine' is not one of 'constant', 'sigmoid', 'linear'"):
        build_schedule({"schedule": "cosine"})
    with pytest.raises(ConfigError, match="expected a number or a schedule"):
        build_schedule("fast")
