"""Paired comparisons of two recipes with the test case as the unit.

A grid gives each recipe one score per (seed, test case). The seeds are not independent of the cases:
a case that is hard for one seed is hard for the others, and a seed that trained badly is bad on every
case. Pooling the (case, seed) pairs into one signed-rank test counts each case once per seed and
overstates: recomputed from the recorded LA CPU cells, DBiSL against DTC at 4 labels was p = 0.028
pooled over 60 pairs but p = 0.053 over the 20 cases, with per-seed differences of +0.23, +2.60 and
+14.46 Dice points (issue 26). So the comparison here is:

- the **test**: Wilcoxon signed-rank over the test cases, each case's score first averaged over the
  seeds both recipes have;
- the **interval**: a two-level bootstrap of the mean difference, resampling the seeds and then the
  cases (both with replacement), so that the spread between seeds widens it as it should;
- the **per-seed differences** and how many seeds favour each side, beside them;
- the pooled (case x seed) test only as a secondary, labelled column;
- a warning when fewer than :data:`MIN_SEEDS` seeds are shared: the seed spread is then not measured.

scipy's ``wilcoxon`` does the tests; the bootstrap is a few lines of numpy (scipy's ``bootstrap``
resamples one level only).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping

import numpy as np

__all__ = ["MIN_SEEDS", "Comparison", "compare_paired", "median_over_seeds", "two_level_bootstrap"]

MIN_SEEDS = 3

Scores = Mapping[int, Mapping[str, float]]  # {seed: {case: score}}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` over the seeds and cases both have; differences are ``a - b``.

    Attributes:
        seeds: the shared seeds.
        cases: how many test cases both have at every shared seed.
        mean_a, mean_b: each recipe's score, averaged over the cases of the per-case seed means.
        difference: the mean per-case difference (of the seed-averaged scores).
        ci95: the two-level bootstrap's 95 % interval of ``difference``.
        p: Wilcoxon signed-rank p over the cases (seed-averaged): the test.
        cases_favouring_a: cases whose seed-averaged difference is positive.
        per_seed: each seed's mean difference over the cases.
        seeds_favouring_a, seeds_favouring_b: how many seeds' differences are positive, negative.
        pooled_p: Wilcoxon p over all (case, seed) pairs as if independent (secondary; it overstates).
        warning: why the comparison is weak, or ``None``.
    """

    seeds: tuple[int, ...]
    cases: int
    mean_a: float
    mean_b: float
    difference: float
    ci95: tuple[float, float]
    p: float
    cases_favouring_a: int
    per_seed: dict[int, float]
    seeds_favouring_a: int
    seeds_favouring_b: int
    pooled_p: float
    warning: str | None

    def as_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["ci95"] = list(self.ci95)
        out["seeds"] = list(self.seeds)
        return out


def _wilcoxon_p(diffs: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    return float(wilcoxon(diffs).pvalue) if np.any(diffs != 0) else 1.0


def two_level_bootstrap(diffs: np.ndarray, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of a ``(seeds, cases)`` difference table, resampling the
    seeds (rows) and then the cases (columns), each with replacement. With one seed it resamples the
    cases alone."""
    rng = np.random.default_rng(seed)
    n_seeds, n_cases = diffs.shape
    rows = rng.integers(0, n_seeds, size=(n, n_seeds))
    cols = rng.integers(0, n_cases, size=(n, n_cases))
    means = diffs[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def compare_paired(a: Scores, b: Scores, n_boot: int = 4000, seed: int = 0) -> Comparison:
    """Compare ``a`` with ``b`` (``{seed: {case: score}}``), the test case as the unit (module docstring).

    Raises:
        ValueError: when no seed, or no case at the shared seeds, is common to both.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError(f"no seed is shared: {sorted(a)} against {sorted(b)}")
    cases = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    if not cases:
        raise ValueError(f"no test case is scored for both at every shared seed {list(seeds)}")
    table_a = np.array([[a[s][c] for c in cases] for s in seeds], dtype=np.float64)
    table_b = np.array([[b[s][c] for c in cases] for s in seeds], dtype=np.float64)
    diffs = table_a - table_b  # (seeds, cases)
    per_case = diffs.mean(0)
    per_seed = {s: float(d) for s, d in zip(seeds, diffs.mean(1))}
    warning = None
    if len(seeds) < MIN_SEEDS:
        warning = (
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}: the spread between seeds is not measured "
            f"(use at least {MIN_SEEDS}); the interval and the test speak for these seeds only"
        )
    return Comparison(
        seeds=seeds,
        cases=len(cases),
        mean_a=float(table_a.mean()),
        mean_b=float(table_b.mean()),
        difference=float(per_case.mean()),
        ci95=two_level_bootstrap(diffs, n_boot, seed),
        p=_wilcoxon_p(per_case),
        cases_favouring_a=int((per_case > 0).sum()),
        per_seed=per_seed,
        seeds_favouring_a=sum(d > 0 for d in per_seed.values()),
        seeds_favouring_b=sum(d < 0 for d in per_seed.values()),
        pooled_p=_wilcoxon_p(diffs.ravel()),
        warning=warning,
    )


def median_over_seeds(values: list[float]) -> float | None:
    """The median of per-seed values (``None`` when there are none): beside the mean, as the critique of
    single best-seed reporting asks."""
    finite = [v for v in values if v is not None and v == v]
    return float(statistics.median(finite)) if finite else None
