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
which are not independent, with the two-level bootstrap interval (:mod:`mtssl.bench.stats`). The
per-seed mean differences are shown beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mtssl.bench.report import case_dice
from mtssl.bench.stats import compare_paired

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "la_nnunet_planned"


def per_case(folder: Path, recipe: str) -> dict[int, dict[str, float]]:
    """``{seed: {case: Dice}}`` of a recorded grid's finished cells (the mean over a case's classes)."""
    return {
        int(metrics.parent.name[4:]): case_dice(metrics)
        for metrics in sorted(folder.glob(f"runs/{recipe}/labels*/seed*/metrics.json"))
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
    result = compare_paired(dbisl, supervised)
    print(
        "| seeds | volumes | supervised | DBiSL | difference | 95 % CI (seeds, then volumes) | Wilcoxon p (volumes) "
        "| volumes DBiSL wins |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    lo, hi = result.ci95
    print(
        f"| {', '.join(map(str, result.seeds))} | {result.cases} | {100 * result.mean_b:.2f} | "
        f"{100 * result.mean_a:.2f} | {100 * result.difference:+.2f} | [{100 * lo:+.2f}, {100 * hi:+.2f}] | "
        f"{result.p:.2g} | {result.cases_favouring_a} of {result.cases} |"
    )
    per_seed = ", ".join(f"{s}: {100 * d:+.2f}" for s, d in result.per_seed.items())
    print(f"\nper-seed mean differences (DBiSL - supervised, Dice %): {per_seed}")
    if result.warning:
        print(f"warning: {result.warning}")
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=1))


if __name__ == "__main__":
    main()
