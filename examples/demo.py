"""What ``make demo`` runs: supervised and DBiSL on the built-in 3D phantom, 2 labeled volumes, side by side.

    python examples/demo.py [--iterations 200] [--out runs/demo]
    python examples/demo.py --quick     # 10 iterations on small volumes: a smoke test (make demo DEMO_ARGS=--quick)

Both train with the same budget and seed, then test on the same 4 volumes. One seed is no
evidence of a gain: ``benchmarks/phantom_gap.py`` shows how much the supervised result moves
across seeds with 2 labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mtssl.config import load_config
from mtssl.engine.run import train_run

CONFIGS = Path(__file__).resolve().parent / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--quick", action="store_true", help="10 iterations on 32^3 volumes with a 4-filter V-Net")
    args = parser.parse_args()
    began = time.perf_counter()
    quick = ["data.size=[32,32,32]", "data.patch=[16,16,16]", "model.backbone.n_filters=4", "eval.stride=[16,16,16]"]
    iterations = 10 if args.quick else args.iterations
    table = Table(title=f"3D phantom, 2 labeled of 16, {iterations} iterations, 4 test volumes, one seed")
    # Five metric columns fit 80 terminal columns and the docs' code blocks at 1280 px (Jaccard is in metrics.json).
    for column in ("recipe", "Dice %", "95HD (voxels)", "ASD (voxels)", "empty", "time"):
        table.add_column(column, justify="right", no_wrap=column == "recipe")  # names whole on 80 columns
    for recipe in ("supervised", "dbisl"):
        overrides = [f"train.iterations={iterations}", *(quick if args.quick else [])]
        config = load_config(CONFIGS / f"phantom_{recipe}.yaml", overrides)
        start = time.perf_counter()
        summary = train_run(config, Path(args.out) / recipe, overwrite=True)  # a rerun of the demo replaces it
        seconds = time.perf_counter() - start
        mean, std = summary["mean"], summary["std"]
        table.add_row(
            recipe,
            f"{100 * mean['dice']:.2f} ± {100 * std['dice']:.2f}",
            f"{mean['hd95']:.2f} ± {std['hd95']:.2f}",
            f"{mean['asd']:.2f} ± {std['asd']:.2f}",
            str(summary["empty_predictions"]),
            f"{seconds:.0f} s",
        )
    Console().print(table)
    Console().print("One seed: no evidence of a gain (see benchmarks/phantom_gap.py).")
    Console().print(f"make demo: {time.perf_counter() - began:.0f} s wall in all (data, both runs, testing)")


if __name__ == "__main__":
    main()
