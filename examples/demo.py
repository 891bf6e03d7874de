"""What ``make demo`` runs: supervised and DBiSL on the built-in 2D phantom whose cases vary, over 3 seeds.

    python examples/demo.py [--seeds 0 1 2] [--out runs/demo]
    python examples/demo.py --quick     # 20 iterations, one seed: a smoke test (make demo DEMO_ARGS=--quick)
    python examples/demo.py --easy      # the old demo: the 3D phantom whose cases are alike, one seed
    python examples/demo.py --set train.iterations=500   # the design runs of docs/quickstart.md

The phantom's cases each draw a bias field, a contrast, a noise level and an intensity gain and offset
(``appearance: shifted``, docs/quickstart.md): the 4 labeled cases come from the easy end of that range,
the 20 unlabeled and the 64 test cases from all of it. Both recipes get the same data, network (a small
2D U-Net), labeled crops per step and 1000 steps (``phantom_shifted_supervised.yaml``,
``phantom_shifted_dbisl.yaml``; supervised's batches hold the labeled crops alone), and are tested on
the same cases. The comparison takes the test case as the unit (each case's Dice averaged over the
seeds, Wilcoxon over the cases), as ``mtssl bench`` does; the per-seed differences stand beside it.

Each run trains in a worker process of its own on one thread (``--workers`` at a time, one per core by
default): a network this small gains nothing from a second thread, so two one-thread runs side by
side halve the wall time, and a run's numbers do not depend on how many cores the machine has. A
worker's progress lines go to ``<out>/<recipe>_seed<N>.log``; the demo prints one line per finished run.
A log file of that name that the demo did not write (its first line is the demo's marker) stops the demo
before any training: it is never overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mtssl.bench.stats import compare_paired
from mtssl.config import load_config
from mtssl.engine.run import train_run

CONFIGS = Path(__file__).resolve().parent / "configs"
RECIPES = ("supervised", "dbisl")


def _spread(values: list[float]) -> float:
    """The standard deviation over the seeds (0 for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def beyond_spread(difference: float, seed_spread: float) -> str:
    """Whether a mean paired difference is larger than the spread of its per-seed differences: the demo's
    claim holds only when it is."""
    return "more" if abs(difference) > seed_spread else "not more"


def case_dice(summary: dict) -> dict[str, float]:
    """Each test case's Dice % (one class: one row per case)."""
    return {row["case"]: 100 * row["dice"] for row in summary["per_case"]}


def easy(out: Path, iterations: int) -> None:
    """The old demo: the fixed-appearance 3D phantom, where two labeled volumes already give about 98 Dice."""
    for recipe in RECIPES:
        config = load_config(CONFIGS / f"phantom_{recipe}.yaml", [f"train.iterations={iterations}"])
        summary = train_run(config, out / f"easy_{recipe}", overwrite=True)  # a rerun of the demo replaces it
        Console().print(f"{recipe}: {100 * summary['mean']['dice']:.2f} % Dice on the easy 3D phantom")


def log_path(out: Path, recipe: str, seed: int) -> Path:
    """Where a run's progress lines go."""
    return out / f"{recipe}_seed{seed}.log"


def log_marker(recipe: str, seed: int) -> str:
    """The first line of a run's log: how a rerun knows the file is the demo's own to rewrite."""
    return f"# mtssl demo log: {recipe}, seed {seed}\n"


def check_logs(out: Path, recipe_seeds: list[tuple[str, int]]) -> None:
    """Refuse, before any training, to overwrite a ``<recipe>_seed<N>.log`` in ``out`` that the demo did not write."""
    for recipe, seed in recipe_seeds:
        path = log_path(out, recipe, seed)
        if path.exists():
            with open(path, errors="replace") as file:
                first = file.readline()
            if first != log_marker(recipe, seed):
                raise SystemExit(
                    f"demo: {path} exists and was not written by the demo (its first line is not "
                    f"{log_marker(recipe, seed).strip()!r}); it is left as it is. Move it, or choose another "
                    "folder with --out."
                )


def train_one(recipe: str, seed: int, overrides: list[str], out: Path) -> tuple[dict[str, float], float]:
    """One run in a worker process, on one thread, its output in ``<out>/<recipe>_seed<seed>.log``:
    each test case's Dice % and the seconds it took."""
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    log = open(log_path(out, recipe, seed), "w")  # the demo's own (check_logs): rewritten by a rerun
    log.write(log_marker(recipe, seed))
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        config = load_config(CONFIGS / f"phantom_shifted_{recipe}.yaml", [f"train.seed={seed}", *overrides])
        start = time.perf_counter()
        summary = train_run(config, out / f"{recipe}_seed{seed}", overwrite=True)  # a rerun replaces its own
        return case_dice(summary), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="20 iterations and one seed: a smoke test")
    parser.add_argument("--easy", action="store_true", help="the old demo on the 3D phantom whose cases are alike")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for both configs")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--workers", type=int, default=cores, help="runs at a time (default: one per core)")
    args = parser.parse_args()
    began, out = time.perf_counter(), Path(args.out)
    if args.easy:
        easy(out, 10 if args.quick else 200)
        return
    seeds = args.seeds[:1] if args.quick else args.seeds
    overrides = [*(["train.iterations=20", "data.num_test=4"] if args.quick else []), *args.set]
    config = load_config(CONFIGS / "phantom_shifted_dbisl.yaml", overrides)  # what the table's title says
    scores: dict[str, dict[int, dict[str, float]]] = {recipe: {} for recipe in RECIPES}
    seconds: dict[str, float] = dict.fromkeys(RECIPES, 0.0)
    console = Console()
    check_logs(out, [(recipe, seed) for seed in seeds for recipe in RECIPES])
    # spawn, not fork: a forked torch can hang in its thread pool
    spawn = multiprocessing.get_context("spawn")
    workers = max(1, min(args.workers, len(RECIPES) * len(seeds)))
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        runs = {pool.submit(train_one, r, seed, overrides, out): (r, seed) for seed in seeds for r in RECIPES}
        for done in as_completed(runs):
            recipe, seed = runs[done]
            scores[recipe][seed], took = done.result()
            seconds[recipe] += took
            mean = statistics.mean(scores[recipe][seed].values())
            console.print(f"{recipe}, seed {seed}: {mean:.2f} % Dice in {took:.0f} s ({log_path(out, recipe, seed)})")
    scores = {r: dict(sorted(scores[r].items())) for r in RECIPES}
    result = compare_paired(scores["dbisl"], scores["supervised"])
    cases, steps, data = result.cases, config["train"]["iterations"], config["data"]
    table = Table(title=f"Dice %, shifted 2D phantom, {data['labeled']} of {data['num_train']} labeled, {steps} steps")
    for column in ("seed", "supervised", "DBiSL", "Δ DBiSL - supervised"):
        table.add_column(column, justify="right")
    for seed, diff in result.per_seed.items():
        mean = {r: statistics.mean(scores[r][seed].values()) for r in RECIPES}
        table.add_row(str(seed), f"{mean['supervised']:.2f}", f"{mean['dbisl']:.2f}", f"{diff:+.2f}")
    spread = {r: _spread([statistics.mean(scores[r][s].values()) for s in result.seeds]) for r in RECIPES}
    seed_spread = _spread(list(result.per_seed.values()))  # of the per-seed differences
    table.add_row(
        "mean ± std",
        f"{result.mean_b:.2f} ± {spread['supervised']:.2f}",
        f"{result.mean_a:.2f} ± {spread['dbisl']:.2f}",
        f"{result.difference:+.2f} ± {seed_spread:.2f}",
    )
    console.print(table)
    console.print(
        f"Paired over the {cases} test cases (each averaged over the seeds): Δ {result.difference:+.2f} Dice, "
        f"95 % interval [{result.ci95[0]:+.2f}, {result.ci95[1]:+.2f}], Wilcoxon p = {result.p:.2g}, "
        f"DBiSL better on {result.cases_favouring_a} of {cases}."
    )
    if result.warning:
        console.print(f"⚠ {result.warning}")
    console.print(
        f"What it shows: with {data['labeled']} labeled cases that show little of how the others look, DBiSL also "
        f"learns from the {data['num_train'] - data['labeled']} unlabeled ones; here it is better on "
        f"{result.cases_favouring_a} of {cases} test cases"
        + (
            f", a mean difference of {result.difference:+.2f} points, {beyond_spread(result.difference, seed_spread)} "
            f"than the per-seed differences spread ({seed_spread:.2f})"
            if len(seeds) > 1
            else ""
        )
        + ". The real benchmarks: docs/la_benchmark.md and docs/acdc.md."
    )
    console.print(
        f"make demo: {time.perf_counter() - began:.0f} s wall in all, runs {workers} at a time "
        f"(supervised {seconds['supervised']:.0f} s, DBiSL {seconds['dbisl']:.0f} s of training and testing)"
    )


if __name__ == "__main__":
    main()
