"""Copy the small result files of a grid's finished cells into the repository, as they land.

    python benchmarks/record_grid.py runs/la_cpu             # -> benchmarks/results/la_cpu/la_cpu/

A CPU grid outlasts a session, and its run folders (checkpoints included) stay out of git. This
keeps what the tables and the paired statistics need: the grid's ``results.csv``, ``results.md``
and ``stats.json``, and each finished cell's ``metrics.json`` and ``metrics.csv`` (per case),
``timing.json``, ``config.yaml`` and ``log.jsonl`` (the losses and the selection scores). Cells
without ``metrics.json`` are unfinished and skipped.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID_FILES = ("results.csv", "results.md", "stats.json")
CELL_FILES = ("metrics.json", "metrics.csv", "timing.json", "config.yaml", "log.jsonl")


def record(grid: Path, dest: Path) -> list[str]:
    """Copy ``grid``'s result files into ``dest``; return the ids of the recorded cells."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in GRID_FILES:
        if (grid / name).exists():
            shutil.copy2(grid / name, dest / name)
    cells = []
    for metrics in sorted((grid / "runs").glob("*/labels*/seed*/metrics.json")):
        cell = metrics.parent
        cell_id = str(cell.relative_to(grid / "runs"))
        (dest / "runs" / cell_id).mkdir(parents=True, exist_ok=True)
        for name in CELL_FILES:
            if (cell / name).exists():
                shutil.copy2(cell / name, dest / "runs" / cell_id / name)
        cells.append(cell_id)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="a grid folder written by mtssl bench --out")
    parser.add_argument("--dest", type=Path, help="default: benchmarks/results/la_cpu/<grid folder name>")
    args = parser.parse_args()
    dest = args.dest or HERE / "results" / "la_cpu" / args.grid.resolve().name
    cells = record(args.grid, dest)
    print(f"recorded {len(cells)} finished cells into {dest}: {', '.join(cells) or 'none'}")


if __name__ == "__main__":
    main()
