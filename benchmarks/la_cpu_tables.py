"""The CPU LA protocol's tables, from the cells recorded under ``benchmarks/results/la_cpu/``.

    python benchmarks/la_cpu_tables.py            # markdown for docs/la_benchmark.md

Per recipe and label count: Dice % per seed, the mean and standard deviation over seeds, empty
predictions and run times; then each recipe paired against supervised, the mean teacher and DTC
(each pair once) on the same test cases, each case's Dice averaged over the seeds both have (the
harness's Wilcoxon test over the cases, two-level bootstrap CI and per-seed differences,
:func:`mtssl.bench.report.paired_stats`); then the share of the
gap between supervised with 4 labels and with all 80 that DBiSL closes. Only recorded cells
count; a missing one shows as "—".

    python benchmarks/la_cpu_tables.py --data /path/to/LA   # + which test cases are hard, and why

With ``--data``, a last table: each test case's Dice at 4 labels averaged over every recorded run
of the main grid, beside the intensity spread (standard deviation) of its ``mri_norm2.h5`` image, and
their Spearman correlation: the h5 volumes were normalised before they were cropped around the atrium,
so their intensity scales differ, and the dim ones are the ones a 4-label network misses.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mtssl.bench.report import PAIRED_HEADER, paired_row, paired_stats

RESULTS = Path(__file__).resolve().parent / "results" / "la_cpu"
ORDER = ("supervised", "mean_teacher", "dtc", "dbisl")
SEEDS = (1337, 1338, 1339)


def cells(grid: Path) -> list[dict]:
    """Every recorded cell of a grid folder: recipe, labels, seed, its run folder, Dice, empties, seconds."""
    rows = []
    for metrics in sorted((grid / "runs").glob("*/labels*/seed*/metrics.json")):
        folder = metrics.parent
        summary = json.loads(metrics.read_text())
        timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").is_file() else {}
        rows.append(
            {
                "recipe": folder.parent.parent.name,
                "labels": int(folder.parent.name[len("labels") :]),
                "seed": int(folder.name[len("seed") :]),
                "run": str(folder.relative_to(grid / "runs")),
                "dice": 100 * summary["mean"]["dice"],
                "empty": summary.get("empty_predictions", 0),
                "seconds": timing.get("seconds"),
            }
        )
    return rows


def seed_table(rows: list[dict], order: tuple[str, ...] = ORDER) -> list[str]:
    lines = [
        "| recipe | labels | seed 1337 | seed 1338 | seed 1339 | mean ± std over seeds | empty | run time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    recipes = [r for r in order if any(c["recipe"] == r for c in rows)]
    recipes += sorted({c["recipe"] for c in rows} - set(recipes))
    for labels in sorted({c["labels"] for c in rows}):
        for recipe in recipes:
            mine = {c["seed"]: c for c in rows if c["recipe"] == recipe and c["labels"] == labels}
            if not mine:
                continue
            dice = [mine[s]["dice"] for s in sorted(mine)]
            spread = (
                f"{statistics.mean(dice):.2f} ± {statistics.stdev(dice):.2f}" if len(dice) > 1 else f"{dice[0]:.2f}"
            )
            per_seed = " | ".join(f"{mine[s]['dice']:.2f}" if s in mine else "—" for s in SEEDS)
            empty = sum(c["empty"] for c in mine.values())
            seconds = ", ".join(f"{mine[s]['seconds']:.0f}" for s in sorted(mine) if mine[s]["seconds"] is not None)
            lines.append(f"| {recipe} | {labels} | {per_seed} | {spread} | {empty} | {seconds} |")
    return lines


def paired_table(grid: Path, rows: list[dict], baselines: tuple[str, ...]) -> list[str]:
    lines = list(PAIRED_HEADER)
    shown = set()
    for baseline in baselines:
        for s in paired_stats(grid / "runs", rows, baseline):
            if (baseline, s["recipe"], s["labels"]) in shown:
                continue  # the same pairs as an earlier row, negated
            shown.add((s["recipe"], baseline, s["labels"]))
            lines.append(paired_row(s))
    return lines


def gap_closed(rows: list[dict], bounds: list[dict], recipe: str = "dbisl", labels: int = 4) -> str | None:
    """The share of the gap between supervised-``labels`` and supervised-80 that ``recipe`` closes, over
    the seeds all three have."""
    full = {c["seed"]: c["dice"] for c in bounds if c["recipe"] == "supervised" and c["labels"] == 80}
    low = {c["seed"]: c["dice"] for c in rows if c["recipe"] == "supervised" and c["labels"] == labels}
    ours = {c["seed"]: c["dice"] for c in rows if c["recipe"] == recipe and c["labels"] == labels}
    seeds = sorted(set(low) & set(ours))
    if not full or not seeds:
        return None
    top, bottom, got = (
        statistics.mean(full.values()),
        statistics.mean(low[s] for s in seeds),
        statistics.mean(ours[s] for s in seeds),
    )
    return (
        f"{recipe} at {labels} labels closes {100 * (got - bottom) / (top - bottom):.0f} % of the gap between "
        f"supervised-{labels} ({bottom:.2f}, seeds {', '.join(map(str, seeds))}) and supervised-80 "
        f"({top:.2f}, seeds {', '.join(map(str, sorted(full)))}): {got:.2f}"
    )


def case_difficulty(grid: Path, rows: list[dict], data: Path, labels: int = 4) -> list[str]:
    """Per test case: its image's intensity standard deviation and its Dice over every run at ``labels``."""
    import h5py
    from scipy.stats import spearmanr

    dice: dict[str, list[float]] = {}
    runs = [c for c in rows if c["labels"] == labels]
    for cell in runs:
        for case in json.loads((grid / "runs" / cell["run"] / "metrics.json").read_text())["per_case"]:
            dice.setdefault(case["case"], []).append(100 * case["dice"])
    spread = {}
    for case in dice:
        with h5py.File(data / case / "mri_norm2.h5", "r") as f:
            spread[case] = float(f["image"][...].std())
    order = sorted(dice, key=lambda c: statistics.mean(dice[c]))
    rho, p = spearmanr([spread[c] for c in order], [statistics.mean(dice[c]) for c in order])
    lines = [
        f"Test cases at {labels} labels over {len(runs)} runs: Spearman rho = {rho:.2f} (p = {p:.2g}) between the "
        "image's intensity standard deviation and its mean Dice.",
        "",
        "| case | image std | mean Dice % | min | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in order:
        mean, low, high = statistics.mean(dice[c]), min(dice[c]), max(dice[c])
        lines.append(f"| {c} | {spread[c]:.2f} | {mean:.1f} | {low:.1f} | {high:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--data", type=Path, help="the LA folder: adds the per-test-case table")
    args = parser.parse_args(argv)
    main_grid, ablation, bounds = (args.results / g for g in ("la_cpu", "la_cpu_ablation", "la_cpu_bounds"))
    rows = cells(main_grid)
    print("\n".join(seed_table(rows)), end="\n\n")
    print("\n".join(paired_table(main_grid, rows, ("supervised", "mean_teacher", "dtc"))), end="\n\n")
    closed = gap_closed(rows, cells(bounds) if bounds.is_dir() else [])
    if closed:
        print(closed, end="\n\n")
    if ablation.is_dir():
        ablated = cells(ablation)
        print("\n".join(seed_table(ablated, ("dbisl",))), end="\n\n")
        print("\n".join(paired_table(ablation, ablated, ("dbisl",))))
    if args.data is not None:
        print("\n" + "\n".join(case_difficulty(main_grid, rows, args.data)))


if __name__ == "__main__":
    main()
