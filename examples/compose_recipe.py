"""Compose a recipe mtssl does not ship, from registered blocks, without touching the engine.

Segmentation + the inside-distance task: both heads are supervised on the labeled samples, and on
every sample each head is pulled towards the other through the cross-task transforms
(``dist->seg``: ``2 sigmoid(k d) - 1``; ``seg->dist``: the soft distance to the background).

    python examples/compose_recipe.py            # 300 iterations on the 3D phantom, then the test table
    python examples/compose_recipe.py --quick    # a few iterations, for a smoke test
"""

from __future__ import annotations

import argparse
import sys

from mtssl.cli import print_metrics
from mtssl.engine.run import train_run
from mtssl.recipes.base import Recipe, Term
from mtssl.registry import RECIPES
from mtssl.terms.consistency import CrossTask
from mtssl.terms.supervised import Supervised

NAME = "example_seg_dist"


def seg_dist(consistency: float = 0.5, radius: float = 3.0) -> Recipe:
    """Seg + inside distance, each supervised, each consistent with the other's transform."""
    ramp = {"schedule": "sigmoid", "c": consistency}
    return Recipe(
        tasks={"seg": {"task": "seg"}, "dist": {"task": "dist", "radius": radius}},
        terms=(
            Term.of(Supervised("seg")),
            Term.of(Supervised("dist")),
            Term.of(CrossTask("dist", "seg"), ramp),
            Term.of(CrossTask("seg", "dist"), ramp),
        ),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations on small volumes")
    parser.add_argument("--out", default="runs/compose_recipe")
    args = parser.parse_args(argv)
    if NAME not in RECIPES:
        RECIPES.register(NAME)(seg_dist)  # a plugin would do this from its entry point
    small = {"size": [32, 32, 32], "patch": [16, 16, 16], "num_train": 6, "num_test": 2} if args.quick else {}
    config = {
        "recipe": {"name": NAME},
        "data": {"name": "phantom", "labeled": 2, **small},
        "model": {"backbone": {"name": "vnet", "n_filters": 4 if args.quick else 8}},
        "train": {
            "iterations": 10 if args.quick else 300,
            "optimizer": {"name": "adamw", "lr": 0.003},
            "lr_schedule": {"name": "poly"},
            "log_every": 5 if args.quick else 25,
            "progress": not args.quick,
        },
        "eval": {"stride": [16, 16, 16]},
    }
    summary = train_run(config, args.out, overwrite=True)  # a rerun of the example replaces its run
    print_metrics(summary, title="seg + dist recipe")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
