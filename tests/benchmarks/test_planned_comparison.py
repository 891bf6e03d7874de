"""The planned comparison's statistics: the test volume is the unit, over the seeds both recipes have."""

import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from benchmarks.planned_comparison import per_case
from mtssl.bench.stats import compare_paired


def test_each_volume_is_averaged_over_the_common_seeds_first(tmp_path):
    rng = np.random.default_rng(0)
    dice = {("a", s): {f"v{i}": float(rng.uniform(0.5, 0.9)) for i in range(12)} for s in (1, 2, 3)} | {
        ("b", s): {f"v{i}": float(rng.uniform(0.4, 0.8)) for i in range(12)} for s in (1, 2)
    }
    for (recipe, seed), values in dice.items():
        cell = tmp_path / recipe / "runs" / recipe / "labels8" / f"seed{seed}"
        cell.mkdir(parents=True)
        rows = [{"case": c, "class": 1, "dice": d} for c, d in values.items()]
        (cell / "metrics.json").write_text(json.dumps({"per_case": rows}))
    a, b = per_case(tmp_path / "a", "a"), per_case(tmp_path / "b", "b")
    assert sorted(a) == [1, 2, 3] and sorted(b) == [1, 2]
    result = compare_paired(a, b)
    assert result.seeds == (1, 2) and result.cases == 12  # seed 3 has no partner: left out
    cases = [f"v{i}" for i in range(12)]
    mean_a = [(dice["a", 1][c] + dice["a", 2][c]) / 2 for c in cases]
    mean_b = [(dice["b", 1][c] + dice["b", 2][c]) / 2 for c in cases]
    assert result.p == pytest.approx(wilcoxon(mean_a, mean_b).pvalue)  # 12 pairs, not 24
    assert result.difference == pytest.approx(np.mean(mean_a) - np.mean(mean_b))
    assert result.per_seed[2] == pytest.approx(np.mean([dice["a", 2][c] - dice["b", 2][c] for c in cases]))
