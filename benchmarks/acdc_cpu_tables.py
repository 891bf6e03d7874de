"""The CPU ACDC protocol's tables, from the cells recorded under ``benchmarks/results/acdc_cpu/``.

    python benchmarks/acdc_cpu_tables.py            # markdown for docs/acdc.md

Per recipe and patient count: Dice % per seed, the mean and standard deviation over the seeds (the
seed spread) and run times; the supervised bounds; then DBiSL against supervised, the mean teacher and
DTC with **the volume as the unit**: each test volume's Dice (mean over its 3 classes) is averaged over
the seeds both recipes have, and the Wilcoxon signed-rank test runs over the 40 volumes, the per-seed
mean differences beside it (pooling volume x seed pairs as independent would overstate the evidence);
then DBiSL's ablation against the full recipe at 3 patients, the same way; then SSL4MIS's reference
code against mtssl (``benchmarks/ssl4mis_parity.py``), per seed and paired over the volumes. Only
recorded cells count; a missing one shows as "—".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported as benchmarks.*
from la_cpu_tables import cells, seed_table

from mtssl.bench.report import case_dice
from mtssl.bench.stats import compare_paired

RESULTS = Path(__file__).resolve().parent / "results" / "acdc_cpu"
ORDER = ("supervised", "mean_teacher", "dtc", "dbisl")
ABLATION = ("dbisl_no_transformed", "dbisl_no_consistency", "dbisl_no_pseudo", "dbisl_no_uncertainty")


def per_volume(grid: Path, recipe: str, labels: int) -> dict[int, dict[str, float]]:
    """``{seed: {volume: Dice}}`` of a recorded grid's finished cells of ``recipe`` at ``labels`` (each
    volume's Dice the mean over its classes; a class predicted empty scores 0, as in SSL4MIS's)."""
    return {
        int(metrics.parent.name[4:]): case_dice(metrics)
        for metrics in sorted(grid.glob(f"runs/{recipe}/labels{labels}/seed*/metrics.json"))
    }


COMPARISON_HEADER = (
    "| recipe | against | patients | seeds | Dice % | against's | Δ (volumes, seed-averaged) | 95 % CI "
    "(seeds, then volumes) | Wilcoxon p (volumes) | volumes better | Δ per seed | pooled p (secondary) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)


def comparison_table(pairs: list[tuple[str, Path, str, Path, int]]) -> list[str]:
    lines = list(COMPARISON_HEADER)
    for name, grid, against, other, labels in pairs:
        lines.append(
            comparison_row(name, against, labels, per_volume(grid, name, labels), per_volume(other, against, labels))
        )
    return lines


def comparison_row(
    name: str, against: str, labels: int, a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]
) -> str:
    """One row of :func:`comparison_table`: ``a`` against ``b`` (each ``{seed: {volume: Dice}}``) on the
    seeds both have, the volume as the unit."""
    if not set(a) & set(b):
        return f"| {name} | {against} | {labels} | — | | | | | | | | |"
    c = compare_paired(a, b)
    seeds = ", ".join(f"{100 * d:+.2f}" for d in c.per_seed.values())
    lo, hi = c.ci95
    return (
        f"| {name} | {against} | {labels} | {len(c.seeds)}{' ⚠' if c.warning else ''} | {100 * c.mean_a:.2f} "
        f"| {100 * c.mean_b:.2f} | {100 * c.difference:+.2f} | [{100 * lo:+.2f}, {100 * hi:+.2f}] | {c.p:.3g} "
        f"| {c.cases_favouring_a}/{c.cases} | {seeds} | {c.pooled_p:.3g} |"
    )


def parity_comparison(folder: Path, grids: list[Path]) -> list[str]:
    """mtssl's run against SSL4MIS's code, per recipe at 3 patients, paired over the test volumes as
    :func:`comparison_table` pairs recipes (both are scored by mtssl's evaluator). mtssl's runs come from
    ``grids`` (the main grid, and the parity's extra seeds)."""
    lines = list(COMPARISON_HEADER)
    for recipe in ("supervised", "mean_teacher"):
        ours = {seed: dice for grid in grids for seed, dice in per_volume(grid, recipe, 3).items()}
        for code, prefix in REFERENCES.items():
            reference = {seed: case_dice(path) for seed, (path, _) in reference_runs(folder, recipe, prefix).items()}
            if reference:
                lines.append(comparison_row(f"{recipe} (mtssl)", code, 3, ours, reference))
    return lines


def class_table(grids: list[Path], order: tuple[str, ...] = ORDER) -> list[str]:
    """Dice % per class (mean over the recorded seeds) and the volumes where a class was predicted empty."""
    lines = [
        "| recipe | patients | seeds | right ventricle | myocardium | left ventricle | empty (RV / Myo / LV) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    found: dict[tuple[str, int], list[dict]] = {}
    for grid in grids:
        for metrics in sorted(grid.glob("runs/*/labels*/seed*/metrics.json")):
            key = (metrics.parent.parent.parent.name, int(metrics.parent.parent.name[len("labels") :]))
            found.setdefault(key, []).append(json.loads(metrics.read_text()))
    names = [r for r in order if any(k[0] == r for k in found)] + sorted({k[0] for k in found} - set(order))
    for labels in sorted({k[1] for k in found}):
        for recipe in names:
            runs = found.get((recipe, labels))
            if not runs:
                continue
            dice = [100 * statistics.mean(r["per_class"][c]["dice"] for r in runs) for c in ("1", "2", "3")]
            empty = [
                sum(row["empty_prediction"] for r in runs for row in r["per_case"] if row["class"] == c)
                for c in (1, 2, 3)
            ]
            lines.append(
                f"| {recipe} | {labels} | {len(runs)} | {dice[0]:.2f} | {dice[1]:.2f} | {dice[2]:.2f} "
                f"| {' / '.join(map(str, empty))} |"
            )
    return lines


#: SSL4MIS's runs as the parity tables show them: the parity runs, and the ``--foreground-dice``
#: diagnostic's (``ssl4mis_fgdice_*``: SSL4MIS with mtssl's Dice, not parity), each under its own name.
REFERENCES = {"SSL4MIS": "ssl4mis", "SSL4MIS, fg Dice (diagnostic)": "ssl4mis_fgdice"}


def reference_runs(folder: Path, recipe: str, prefix: str = "ssl4mis") -> dict[int, tuple[Path, dict]]:
    """SSL4MIS's runs of ``recipe`` at 3 patients whose files start with ``prefix``, ``{seed: (file,
    record)}``: the parity runs by default (the diagnostic's ``ssl4mis_fgdice_*`` files stay out)."""
    runs = {}
    for path in sorted(folder.glob(f"{prefix}_{recipe}_3_s*.json")):
        record = json.loads(path.read_text())
        runs[record["seed"]] = (path, record)
    return runs


def parity_table(folder: Path, grids: list[Path]) -> list[str]:
    """SSL4MIS's code against mtssl's, per recipe at 3 patients: Dice per seed (every seed either code
    ran; "—" where one did not), mean ± seed spread. mtssl's runs come from ``grids``."""
    ours = {(c["recipe"], c["seed"]): c for grid in grids for c in cells(grid) if c["labels"] == 3}
    table: list[tuple[str, str, dict[int, dict]]] = []
    for recipe in ("supervised", "mean_teacher"):
        codes = {
            code: {
                seed: {"dice": 100 * record["mean"]["dice"], "seconds": record["seconds"]}
                for seed, (_, record) in reference_runs(folder, recipe, prefix).items()
            }
            for code, prefix in REFERENCES.items()
        }
        codes["mtssl"] = {seed: c for (r, seed), c in ours.items() if r == recipe}
        table += [(recipe, code, runs) for code, runs in codes.items() if runs]
    seeds = sorted({seed for _, _, runs in table for seed in runs})
    lines = [  # the seeds in one column, so that the table fits the docs' width however many there are
        f"| recipe | code | Dice % at seeds {', '.join(map(str, seeds))} | mean ± std over seeds | run time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for recipe, code, runs in table:
        dice = [runs[s]["dice"] for s in sorted(runs)]
        spread = f"{statistics.mean(dice):.2f} ± {statistics.stdev(dice):.2f}" if len(dice) > 1 else f"{dice[0]:.2f}"
        per_seed = ", ".join(f"{runs[s]['dice']:.2f}" if s in runs else "—" for s in seeds)
        seconds = ", ".join(f"{runs[s]['seconds']:.0f}" for s in sorted(runs) if runs[s].get("seconds") is not None)
        lines.append(f"| {recipe} | {code} | {per_seed} | {spread} | {seconds} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    main_grid, bounds, ablation = (args.results / name for name in ("main", "bounds", "ablation"))
    rows = cells(main_grid) + cells(bounds)
    print("#### Dice % per seed\n")
    print("\n".join(seed_table(rows, ORDER)))
    print("\n#### Dice % per class\n")
    print("\n".join(class_table([main_grid, bounds, ablation])))
    print("\n#### DBiSL against each baseline (the volume is the unit)\n")
    pairs = [("dbisl", main_grid, other, main_grid, labels) for labels in (3, 7) for other in ORDER[:3]]
    print("\n".join(comparison_table(pairs)))
    if cells(ablation):
        print("\n#### DBiSL's ablation at 3 patients: each part removed alone, against the full recipe\n")
        print("\n".join(seed_table(cells(ablation), ABLATION)))
        print()
        print("\n".join(comparison_table([(name, ablation, "dbisl", main_grid, 3) for name in ABLATION])))
    if (args.results / "ssl4mis").is_dir():
        # mtssl's supervised runs at the parity's extra seeds (the main grid's cell config) sit beside the grid
        extra = args.results / "parity_extra"
        grids = [main_grid, *([extra] if extra.is_dir() else [])]
        print("\n#### SSL4MIS's code against mtssl's, 3 patients\n")
        print("\n".join(parity_table(args.results / "ssl4mis", grids)))
        print()
        print("\n".join(parity_comparison(args.results / "ssl4mis", grids)))


if __name__ == "__main__":
    main()
