"""Tables, paired statistics and plots of a grid, computed from its run folders alone."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtssl.bench.grid import Cell, Grid
from mtssl.bench.stats import compare_paired, median_over_seeds
from mtssl.config import ConfigError, load_yaml, read_yaml
from mtssl.files import atomic_write

__all__ = ["case_dice", "cell_finished", "collect", "paired_row", "paired_stats", "write_report"]

METRICS = ("dice", "jaccard", "hd95", "asd")
log = logging.getLogger(__name__)

HIGHER_IS_BETTER = {"dice": True, "jaccard": True, "hd95": False, "asd": False}


def _read_json(path: Path, key: str) -> dict[str, Any] | None:
    """``path`` as a JSON object holding ``key``; ``None`` (with a warning naming the file) when it is
    torn or damaged, so that its cell runs again."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"no {key!r} entry")
    except (OSError, ValueError) as exc:
        log.warning("%s is damaged (%s); its cell runs again", path, exc)
        return None
    return value


def cell_finished(folder: Path) -> bool:
    """Whether a cell's run folder holds a readable ``metrics.json`` and ``timing.json``."""
    return (
        _read_json(folder / "metrics.json", "mean") is not None
        and _read_json(folder / "timing.json", "seconds") is not None
    )


def collect(out: Path, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per finished run: the cell, the four metrics, empty predictions, time and revision."""
    rows = []
    for cell in cells:
        folder = out / "runs" / cell.id
        metrics = _read_json(folder / "metrics.json", "mean")
        timing = _read_json(folder / "timing.json", "seconds")
        if metrics is None or timing is None:
            continue
        run = (load_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}).get("run") or {}
        rows.append(
            {
                "recipe": cell.recipe,
                "labels": cell.labels,
                "seed": cell.seed,
                **{m: metrics["mean"][m] for m in METRICS},
                "empty_predictions": metrics["empty_predictions"],
                "seconds": round(timing["seconds"], 1),
                "it_per_s": timing["it_per_s"],
                "peak_gpu_memory_gib": timing["peak_gpu_memory_gib"],
                "peak_rss_gib": round(timing.get("peak_rss_gib") or 0.0, 2),
                "git_revision": run.get("git_revision"),
                "run": str(Path("runs") / cell.id),
            }
        )
    return rows


def _fmt(values: list[float], scale: float) -> tuple[float | None, float | None, str]:
    """Mean, standard deviation over seeds (None with one seed) and the printed ``mean ± std``."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None, None, "n/a"
    mean = statistics.mean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return mean, std, f"{mean * scale:.2f} ± {(std or 0.0) * scale:.2f}"


def _clear_best(cells: list[tuple[float | None, float | None, str]], higher: bool) -> int | None:
    """The index of the best entry when it beats the runner-up by more than either's seed spread
    (both measured over two or more seeds); otherwise None: nothing is bolded on noise."""
    ranked = sorted((c for c in enumerate(cells) if c[1][0] is not None), key=lambda c: c[1][0], reverse=higher)
    if len(ranked) < 2:
        return None
    (i, (best, s1, _)), (_, (second, s2, _)) = ranked[0], ranked[1]
    if s1 is None or s2 is None or abs(best - second) <= max(s1, s2):
        return None
    return i


def case_dice(metrics_file: Path) -> dict[str, float]:
    """A run's Dice per test case from its ``metrics.json``, averaged over the case's classes (a class
    predicted empty scores 0, as in SSL4MIS's tables): the case is the unit of every comparison."""
    by_case: dict[str, list[float]] = {}
    for r in json.loads(Path(metrics_file).read_text())["per_case"]:
        by_case.setdefault(str(r["case"]), []).append(r["dice"])
    return {case: float(np.mean(values)) for case, values in by_case.items()}


def _per_case(out: Path, cell_run: str) -> dict[str, float]:
    return case_dice(out / cell_run / "metrics.json")


def paired_stats(out: Path, rows: list[dict[str, Any]], baseline: str, seed: int = 0) -> list[dict[str, Any]]:
    """Per recipe and label count, against ``baseline`` on the seeds both have: the Wilcoxon test over the
    test cases (each case's Dice averaged over those seeds), the two-level bootstrap 95 % CI of the mean
    difference, the per-seed differences, and the pooled (case x seed) test as a secondary column
    (:mod:`mtssl.bench.stats`)."""
    by_key = {(r["recipe"], r["labels"], r["seed"]): r for r in rows}
    results = []
    for recipe in sorted({r["recipe"] for r in rows} - {baseline}):
        for labels in sorted({r["labels"] for r in rows}):
            ours, theirs = {}, {}
            for (rec, lab, run_seed), row in sorted(by_key.items()):
                base = by_key.get((baseline, lab, run_seed))
                if rec == recipe and lab == labels and base is not None:
                    ours[run_seed], theirs[run_seed] = _per_case(out, row["run"]), _per_case(out, base["run"])
            if not ours:
                continue
            c = compare_paired(ours, theirs, seed=seed)
            results.append(
                {
                    "recipe": recipe,
                    "baseline": baseline,
                    "labels": labels,
                    "seeds": list(c.seeds),
                    "cases": c.cases,
                    "mean_dice_difference": c.difference,
                    "ci95": list(c.ci95),
                    "wilcoxon_p": c.p,
                    "per_seed_difference": {str(s): d for s, d in c.per_seed.items()},
                    "seeds_favouring": [c.seeds_favouring_a, c.seeds_favouring_b],
                    "pooled_wilcoxon_p": c.pooled_p,
                    "warning": c.warning,
                }
            )
    return results


PAIRED_HEADER = (
    "| recipe | against | labels | seeds | cases | mean Δ Dice % | 95 % CI (seeds, then cases) | Wilcoxon p "
    "(cases) | Δ per seed | seeds for / against | pooled p (case x seed, secondary) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
)


def paired_row(s: dict[str, Any]) -> str:
    """One markdown row of :func:`paired_stats`' output (with a warning mark where it has one)."""
    lo, hi = s["ci95"]
    per_seed = ", ".join(f"{100 * d:+.2f}" for d in s["per_seed_difference"].values())
    mark = " ⚠" if s["warning"] else ""
    return (
        f"| {s['recipe']} | {s['baseline']} | {s['labels']} | {len(s['seeds'])}{mark} | {s['cases']} | "
        f"{100 * s['mean_dice_difference']:+.2f} | [{100 * lo:+.2f}, {100 * hi:+.2f}] | {s['wilcoxon_p']:.3g} | "
        f"{per_seed} | {s['seeds_favouring'][0]} / {s['seeds_favouring'][1]} | {s['pooled_wilcoxon_p']:.3g} |"
    )


PAIRED_NOTE = (
    "The unit is the test case: each case's Dice (mean over its classes) is averaged over the seeds both "
    "recipes have, and the Wilcoxon signed-rank test runs over the cases. The interval is a two-level "
    "bootstrap (the seeds resampled, then the cases). ⚠: fewer than 3 seeds, so the spread between seeds is "
    "not measured. The pooled p treats every (case, seed) pair as independent and overstates; it is shown "
    "for comparison with older tables only."
)


def _table(rows: list[dict[str, Any]], published: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| recipe | labels | Dice % | Dice % median | Jaccard % | 95HD | ASD | empty | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[int, list[tuple[str, dict[str, tuple[float | None, float | None, str]], int, int]]] = {}
    medians: dict[tuple[str, int], float | None] = {}
    for labels in sorted({r["labels"] for r in rows}):
        for recipe in dict.fromkeys(r["recipe"] for r in rows):
            sel = [r for r in rows if r["recipe"] == recipe and r["labels"] == labels]
            if sel:
                cells = {m: _fmt([r[m] for r in sel], 100 if m in ("dice", "jaccard") else 1) for m in METRICS}
                medians[recipe, labels] = median_over_seeds([r["dice"] for r in sel])
                groups.setdefault(labels, []).append(
                    (recipe, cells, sum(r["empty_predictions"] for r in sel), len(sel))
                )
    for labels, entries in groups.items():
        best = {m: _clear_best([c[m] for _, c, _, _ in entries], HIGHER_IS_BETTER[m]) for m in METRICS}
        for k, (recipe, cells, empty, n) in enumerate(entries):
            text = [f"**{cells[m][2]}**" if best[m] == k else cells[m][2] for m in METRICS]
            median = medians[recipe, labels]
            text.insert(1, f"{100 * median:.2f}" if median is not None else "n/a")
            lines.append(f"| {recipe} | {labels} | {' | '.join(text)} | {empty} | {n} |")
        for pub in (p for p in published if p.get("labels") == labels):
            values = [f"{pub[m]:.2f}" if pub.get(m) is not None else "—" for m in METRICS]
            values.insert(1, "—")
            lines.append(
                f"| {pub['recipe']} (published: {pub.get('source', 'paper')}) | {labels} | "
                + " | ".join(values)
                + " | — | — |"
            )
    return lines


def _plots(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt

    # Dice against label count: mean over seeds with the seed spread as error bars, on the whole 0-100 scale.
    fig, ax = plt.subplots(figsize=(5, 3.5))
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    counts = sorted({r["labels"] for r in rows})
    dodge = 0.06 * max(counts[-1] - counts[0], 2)  # side by side, so error bars do not hide each other
    for k, recipe in enumerate(recipes):
        labels = sorted({r["labels"] for r in rows if r["recipe"] == recipe})
        per = [[r["dice"] * 100 for r in rows if r["recipe"] == recipe and r["labels"] == n] for n in labels]
        means = [statistics.mean(v) for v in per]
        spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per]
        seeds = "/".join(str(len(v)) for v in per)
        x = [n + (k - (len(recipes) - 1) / 2) * dodge for n in labels]
        ax.errorbar(x, means, yerr=spread, marker="o", capsize=3, label=f"{recipe} ({seeds} seeds)")
    ax.set(xlabel="labeled cases", ylabel="Dice % (mean ± std over seeds)", title="Dice against label count")
    ax.set_xticks(counts)
    ax.set_xlim(counts[0] - 3 * dodge * len(recipes) / 2, counts[-1] + 3 * dodge * len(recipes) / 2)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "dice_vs_labels.png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    groups = sorted({(r["recipe"], r["labels"]) for r in rows}, key=lambda g: (g[1], g[0]))
    data = [
        [v * 100 for r in rows if (r["recipe"], r["labels"]) == g for v in _per_case(out, r["run"]).values()]
        for g in groups
    ]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(groups) + 1), [f"{g[0]}\n{g[1]}" for g in groups], fontsize=7)
    ax.set(ylabel="Dice % per test case", title="Per-case Dice")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(out / "per_case_dice.png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    # Loss curves: one panel per recipe and label count; in it, each loss term's mean over the seeds, the
    # spread between the seeds shaded. (One line per run and term, 24 runs to a panel, was unreadable.)
    groups: dict[tuple[str, int], list[list[dict]]] = {}
    for r in rows:
        path = out / r["run"] / "log.jsonl"
        if path.is_file():
            records = [json.loads(x) for x in path.read_text().splitlines()]
            groups.setdefault((r["recipe"], int(r["labels"])), []).append(records)
    terms = sorted({k for runs in groups.values() for rec in runs for x in rec for k in x if k.startswith("loss/")})
    if not terms:
        return
    color = {term: f"C{i % 10}" for i, term in enumerate(terms)}  # one colour per term in every panel
    cols = min(4, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, ((recipe, labels), runs) in zip(axes.flat, groups.items()):
        for term in terms:
            curves = [{x["iteration"]: x[term] for x in rec if term in x} for rec in runs]
            shared = sorted(set.intersection(*(set(c) for c in curves))) if all(curves) else []
            if not shared:
                continue
            values = np.array([[c[i] for i in shared] for c in curves])
            marker = "o" if len(shared) <= 20 else None  # few records: show where they are
            ax.plot(shared, values.mean(0), lw=1.2 if term == "loss/total" else 0.9, marker=marker, ms=3,
                    color=color[term], ls="-" if term == "loss/total" else "--")  # fmt: skip
            if len(runs) > 1:
                ax.fill_between(shared, values.min(0), values.max(0), color=color[term], alpha=0.15, lw=0)
        ax.set(title=f"{recipe}, {labels} labels ({len(runs)} seed{'s' if len(runs) > 1 else ''})", xlabel="iteration")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    handles = [
        matplotlib.lines.Line2D([], [], color=color[t], lw=1.5, ls="-" if t == "loss/total" else "--") for t in terms
    ]
    fig.legend(handles, [t[5:] for t in terms], loc="lower center", ncol=min(len(terms), 5), fontsize=7, frameon=False)
    fig.suptitle("Loss per term: the mean over seeds, the seeds' range shaded")
    fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(terms) / 5), 1, 1))
    fig.savefig(out / "loss_curves.png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(out: Path, grid: Grid, cells: Sequence[Cell], published: str | Path | None = None) -> None:
    """``results.csv``, ``results.json``, ``results.md``, ``stats.json`` and three PNG plots in ``out``."""
    rows = collect(out, cells)
    if not rows:
        return
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    # Atomic: a reader (or the SLURM task that finishes next) never sees half a table.
    atomic_write(out / "results.csv", table.getvalue())
    atomic_write(out / "results.json", json.dumps(rows, indent=1))
    pub = read_yaml(published) if published else []
    if not isinstance(pub, list) or not all(isinstance(p, dict) for p in pub):
        raise ConfigError(f"{published} must hold a YAML list of rows (recipe, labels, dice, ...)")
    lines = [
        "# Results",
        "",
        "Mean ± std over seeds of the per-run means (± 0.00: one seed), and the median over seeds of the "
        "tested checkpoint's Dice; a value is bold where it is best "
        "for its label count by more than the seed spread of it and the runner-up (never with one seed); "
        "95HD and ASD in voxels (pixels for 2D images) unless the data set has a physical spacing.",
        "",
        *_table(rows, pub or []),
    ]
    stats = paired_stats(out, rows, grid.baseline) if grid.baseline else []
    if stats:
        lines += ["", f"## Paired against {grid.baseline} (Dice)", "", PAIRED_NOTE, "", *PAIRED_HEADER]
        lines += [paired_row(s) for s in stats]
    atomic_write(out / "stats.json", json.dumps(stats, indent=1))
    atomic_write(out / "results.md", "\n".join(lines) + "\n")
    _plots(out, rows)
