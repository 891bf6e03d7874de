"""The paired comparison's unit is the test case: calibration on synthetic tables, and the parts by hand."""

import numpy as np
import pytest
from scipy.stats import wilcoxon

from mtssl.bench.stats import compare_paired, median_over_seeds, two_level_bootstrap


def scores(diffs: np.ndarray, base: float = 0.7) -> tuple[dict, dict]:
    """``a`` and ``b`` score tables whose differences are ``diffs`` ``(seeds, cases)``."""
    a = {
        1337 + s: {f"case{c:02d}": base + float(diffs[s, c]) for c in range(diffs.shape[1])} for s in range(len(diffs))
    }
    b = {1337 + s: {f"case{c:02d}": base for c in range(diffs.shape[1])} for s in range(len(diffs))}
    return a, b


def test_the_parts_against_a_hand_computation():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.02, 0.05, (3, 12))
    a, b = scores(diffs)
    b[1340] = {"case00": 0.5}  # a seed only b has is left out
    result = compare_paired(a, b)
    per_case = diffs.mean(0)
    assert result.seeds == (1337, 1338, 1339) and result.cases == 12
    assert result.difference == pytest.approx(per_case.mean())
    assert result.p == pytest.approx(wilcoxon(per_case).pvalue)  # 12 cases, not 36 pairs
    assert result.pooled_p == pytest.approx(wilcoxon(diffs.ravel()).pvalue)
    assert result.per_seed == pytest.approx({1337 + s: diffs[s].mean() for s in range(3)})
    assert result.seeds_favouring_a + result.seeds_favouring_b == 3
    assert result.cases_favouring_a == int((per_case > 0).sum())
    assert result.warning is None


def test_fewer_than_three_seeds_warn():
    a, b = scores(np.full((2, 5), 0.1))
    assert "2 seeds" in compare_paired(a, b).warning
    with pytest.raises(ValueError, match="no seed is shared"):
        compare_paired({1: {"x": 1.0}}, {2: {"x": 1.0}})


def test_no_recipe_effect_case_correlated_differences_the_pooled_test_overstates():
    """200 tables with no effect of the recipe, where each case's difference repeats across the 3 seeds
    (a case that suits one recipe suits it at every seed): the pooled test rejects about a quarter of
    them, the case-level test and the two-level interval about their nominal 5 %."""
    rng = np.random.default_rng(0)
    pooled = case = interval = 0
    runs = 200
    for i in range(runs):
        diffs = rng.normal(0, 1, 20)[None] + rng.normal(0, 0.3, (3, 20))
        result = compare_paired(*scores(diffs), n_boot=1000, seed=i)
        pooled += result.pooled_p < 0.05
        case += result.p < 0.05
        interval += not result.ci95[0] <= 0 <= result.ci95[1]
    assert pooled / runs > 0.15
    assert case / runs < 0.1 and interval / runs < 0.12


def test_a_gain_from_one_seed_of_three_leaves_the_interval_across_zero():
    """One seed of three carries the whole gain: the pooled test calls it certain, the per-seed
    differences and the seed-resampling interval show that it is not."""
    rng = np.random.default_rng(2)
    diffs = rng.normal(0, 0.02, (3, 40))
    diffs[2] += 0.15
    result = compare_paired(*scores(diffs))
    assert result.pooled_p < 1e-5
    assert result.ci95[0] <= 0 <= result.ci95[1]
    assert sorted(abs(d) < 0.01 for d in result.per_seed.values()) == [False, True, True]


def test_two_level_bootstrap_reduces_to_the_case_bootstrap_with_one_seed():
    diffs = np.random.default_rng(3).normal(0.05, 0.1, (1, 30))
    low, high = two_level_bootstrap(diffs, n=4000)
    sem = diffs.std(ddof=0) / np.sqrt(30)
    assert low == pytest.approx(diffs.mean() - 1.96 * sem, abs=0.3 * sem)
    assert high == pytest.approx(diffs.mean() + 1.96 * sem, abs=0.3 * sem)
    # Seeds that disagree widen it: the same cases, with the seeds shifted apart.
    shifted = np.concatenate([diffs - 0.1, diffs, diffs + 0.1])
    wide = two_level_bootstrap(shifted, n=4000)
    assert wide[1] - wide[0] > 2 * (high - low)


def test_median_over_seeds():
    assert median_over_seeds([0.5, 0.9, 0.6]) == 0.6
    assert median_over_seeds([float("nan"), None]) is None
