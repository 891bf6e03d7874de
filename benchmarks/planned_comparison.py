"""Planned DBiSL against planned supervised on the LA nnU-Net folder, with the test volume as the unit.

    python benchmarks/planned_comparison.py                      # the recorded cells, a markdown table
    python benchmarks/planned_comparison.py --json stats.json    # and the numbers
    python benchmarks/planned_comparison.py --supervised la_nnunet_supervised   # the plan of 2026-12-06

The supervised cells compared are the current planner's (``la_nnunet_supervised_labeled_batch``: a
batch of 2 labeled samples) unless ``--supervised`` names another recorded grid (``la_nnunet_supervised``:
the first planner's 2 labeled + 2 unlabeled, half of them unused).

Reads the cells recorded under ``benchmarks/results/la_nnunet_planned/`` (``record_grid.py``). Each
test volume's Dice is first averaged over the seeds that both recipes have finished; the paired
Wilcoxon signed-rank test then runs over the volumes (20 pairs), never over (volume x seed) pairs,
which are not independent. The per-seed mean differences are shown beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "la_nnunet_planned"


def per_case(folder: Path, recipe: str) -> dict[int, dict[str, float]]:
    """``{seed: {case: Dice}}`` of a recorded grid's finished cells (class 1)."""
    out = {}
    for metrics in sorted(folder.glob(f"runs/{recipe}/labels*/seed*/metrics.json")):
        seed = int(metrics.parent.name[4:])
        rows = json.loads(metrics.read_text())["per_case"]
        out[seed] = {r["case"]: r["dice"] for r in rows if r["class"] == 1}
    return out


def compare(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> dict[str, Any]:
    """``a`` against ``b``: per-volume Dice averaged over the common seeds, the Wilcoxon test over the
    volumes, and each common seed's mean difference."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise SystemExit("no seed has finished for both recipes yet")
    cases = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)))
    mean_a = [statistics.mean(a[s][c] for s in seeds) for c in cases]
    mean_b = [statistics.mean(b[s][c] for s in seeds) for c in cases]
    diffs = [x - y for x, y in zip(mean_a, mean_b)]
    test = wilcoxon(mean_a, mean_b) if any(diffs) else None
    return {
        "seeds": seeds,
        "cases": len(cases),
        "dice_a": statistics.mean(mean_a),
        "dice_b": statistics.mean(mean_b),
        "difference": statistics.mean(diffs),
        "wilcoxon_p": float(test.pvalue) if test is not None else 1.0,
        "volumes_favouring_a": sum(d > 0 for d in diffs),
        "per_seed_difference": {s: statistics.mean(a[s][c] - b[s][c] for c in cases) for s in seeds},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--supervised", default="la_nnunet_supervised_labeled_batch", help="the recorded supervised grid (a folder)"
    )
    args = parser.parse_args()
    dbisl = per_case(args.results / "la_nnunet_dbisl", "dbisl")
    supervised = per_case(args.results / args.supervised, "supervised")
    result = compare(dbisl, supervised)
    print("| seeds | volumes | supervised | DBiSL | difference | Wilcoxon p (volumes) | volumes DBiSL wins |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {', '.join(map(str, result['seeds']))} | {result['cases']} | {100 * result['dice_b']:.2f} | "
        f"{100 * result['dice_a']:.2f} | {100 * result['difference']:+.2f} | {result['wilcoxon_p']:.2g} | "
        f"{result['volumes_favouring_a']} of {result['cases']} |"
    )
    per_seed = ", ".join(f"{s}: {100 * d:+.2f}" for s, d in result["per_seed_difference"].items())
    print(f"\nper-seed mean differences (DBiSL - supervised, Dice %): {per_seed}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
