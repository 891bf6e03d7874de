"""Tables, paired statistics and plots of a grid, computed from its run folders alone."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mtssl.bench.grid import Cell, Grid

__all__ = ["collect", "paired_stats", "write_report"]

METRICS = ("dice", "jaccard", "hd95", "asd")
HIGHER_IS_BETTER = {"dice": True, "jaccard": True, "hd95": False, "asd": False}


def collect(out: Path, cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per finished run: the cell, the four metrics, empty predictions, time and revision."""
    rows = []
    for cell in cells:
        folder = out / "runs" / cell.id
        if not (folder / "metrics.json").is_file():
            continue
        metrics = json.loads((folder / "metrics.json").read_text())
        timing = json.loads((folder / "timing.json").read_text())
        run = yaml.safe_load((folder / "config.yaml").read_text()).get("run", {})
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


def _fmt(values: list[float], scale: float) -> tuple[float | None, str]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None, "n/a"
    mean = statistics.mean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return mean, f"{mean * scale:.2f} ± {std * scale:.2f}"


def _per_case(out: Path, cell_run: str) -> dict[str, float]:
    metrics = json.loads((out / cell_run / "metrics.json").read_text())
    return {f"{r['case']}:{r['class']}": r["dice"] for r in metrics["per_case"]}


def paired_stats(out: Path, rows: list[dict[str, Any]], baseline: str, seed: int = 0) -> list[dict[str, Any]]:
    """Per recipe and label count: Wilcoxon signed-rank over paired test cases (all seeds) and a
    bootstrap 95 % CI of the mean Dice difference to ``baseline``."""
    from scipy.stats import wilcoxon

    by_key = {(r["recipe"], r["labels"], r["seed"]): r for r in rows}
    results = []
    for recipe in sorted({r["recipe"] for r in rows} - {baseline}):
        for labels in sorted({r["labels"] for r in rows}):
            diffs = []
            for (rec, lab, seed), row in sorted(by_key.items()):
                base = by_key.get((baseline, lab, seed))
                if rec != recipe or lab != labels or base is None:
                    continue
                ours, theirs = _per_case(out, row["run"]), _per_case(out, base["run"])
                diffs += [ours[k] - theirs[k] for k in sorted(ours) if k in theirs]
            if not diffs:
                continue
            d = np.asarray(diffs)
            p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
            rng = np.random.default_rng(seed)
            boot = rng.choice(d, size=(2000, len(d)), replace=True).mean(1)
            results.append(
                {
                    "recipe": recipe,
                    "baseline": baseline,
                    "labels": labels,
                    "pairs": len(d),
                    "mean_dice_difference": float(d.mean()),
                    "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                    "wilcoxon_p": p,
                }
            )
    return results


def _table(rows: list[dict[str, Any]], published: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| recipe | labels | Dice % | Jaccard % | 95HD | ASD | empty | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[int, list[tuple[str, dict[str, tuple[float | None, str]], int, int]]] = {}
    for labels in sorted({r["labels"] for r in rows}):
        for recipe in dict.fromkeys(r["recipe"] for r in rows):
            sel = [r for r in rows if r["recipe"] == recipe and r["labels"] == labels]
            if sel:
                cells = {m: _fmt([r[m] for r in sel], 100 if m in ("dice", "jaccard") else 1) for m in METRICS}
                groups.setdefault(labels, []).append(
                    (recipe, cells, sum(r["empty_predictions"] for r in sel), len(sel))
                )
    for labels, entries in groups.items():
        best = {}
        for m in METRICS:
            values = [c[m][0] for _, c, _, _ in entries if c[m][0] is not None]
            best[m] = (max if HIGHER_IS_BETTER[m] else min)(values) if values else None
        for recipe, cells, empty, n in entries:
            text = [f"**{cells[m][1]}**" if cells[m][0] == best[m] else cells[m][1] for m in METRICS]
            lines.append(f"| {recipe} | {labels} | {' | '.join(text)} | {empty} | {n} |")
        for pub in (p for p in published if p.get("labels") == labels):
            values = [f"{pub[m]:.2f}" if pub.get(m) is not None else "—" for m in METRICS]
            lines.append(
                f"| {pub['recipe']} (published: {pub.get('source', 'paper')}) | {labels} | "
                + " | ".join(values)
                + " | — | — |"
            )
    return lines


def _plots(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        labels = sorted({r["labels"] for r in rows if r["recipe"] == recipe})
        means = [
            statistics.mean(r["dice"] * 100 for r in rows if r["recipe"] == recipe and r["labels"] == n) for n in labels
        ]
        ax.plot(labels, means, marker="o", label=recipe)
    ax.set(xlabel="labeled cases", ylabel="Dice %", title="Dice against label count")
    ax.legend()
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
    fig.tight_layout()
    fig.savefig(out / "per_case_dice.png", dpi=100, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        records = [json.loads(line) for line in (out / r["run"] / "log.jsonl").read_text().splitlines()]
        ax.plot(
            [x["iteration"] for x in records],
            [x["loss/total"] for x in records],
            lw=0.8,
            label=f"{r['recipe']} {r['labels']} s{r['seed']}",
        )
    ax.set(xlabel="iteration", ylabel="total loss", title="Loss curves")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(out: Path, grid: Grid, cells: Sequence[Cell], published: str | Path | None = None) -> None:
    """``results.csv``, ``results.json``, ``results.md``, ``stats.json`` and three PNG plots in ``out``."""
    rows = collect(out, cells)
    if not rows:
        return
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    pub = yaml.safe_load(Path(published).read_text()) if published else []
    lines = [
        "# Results",
        "",
        "Mean ± std over seeds of the per-run means; best per label count in bold; "
        "95HD and ASD in voxels unless the data set has a physical spacing.",
        "",
        *_table(rows, pub or []),
    ]
    stats = paired_stats(out, rows, grid.baseline) if grid.baseline else []
    if stats:
        lines += [
            "",
            f"## Paired against {grid.baseline} (Dice, per test case, all seeds)",
            "",
            "| recipe | labels | pairs | mean Δ Dice % | 95 % CI (bootstrap) | Wilcoxon p |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in stats:
            lo, hi = s["ci95"]
            lines.append(
                f"| {s['recipe']} | {s['labels']} | {s['pairs']} | {100 * s['mean_dice_difference']:+.2f} | "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}] | {s['wilcoxon_p']:.3g} |"
            )
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plots(out, rows)
