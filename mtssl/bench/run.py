"""Run a grid's missing cells, then rewrite its tables, statistics and plots from the run folders."""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import torch
import yaml

from mtssl.bench.grid import Cell, load_grid
from mtssl.bench.report import write_report
from mtssl.engine.run import train_run

__all__ = ["run_grid"]

log = logging.getLogger(__name__)


def _run_cell(cell: Cell, folder: Path) -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_run(cell.config, folder)
    seconds = time.perf_counter() - start
    records = (folder / "log.jsonl").read_text().splitlines()
    timing = {
        "seconds": seconds,
        "it_per_s": json.loads(records[-1])["it_per_s"] if records else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        # The process's peak resident memory so far (Linux reports KiB): an upper bound for this cell.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    (folder / "timing.json").write_text(json.dumps(timing))


def run_grid(
    grid_path: str | Path,
    out: str | Path,
    only: str | None = None,
    dry_run: bool = False,
    published: str | Path | None = None,
) -> list[str]:
    """Run every cell without a finished run folder (``metrics.json`` and ``timing.json``), then report.

    Returns the ids of the cells that ran (or, with ``dry_run``, would run).
    """
    out = Path(out)
    grid, cells = load_grid(grid_path, only)
    todo = [
        c
        for c in cells
        if not ((out / "runs" / c.id / "metrics.json").is_file() and (out / "runs" / c.id / "timing.json").is_file())
    ]
    if dry_run:
        for cell in cells:
            log.info("%s %s", "run " if cell in todo else "done", cell.id)
        return [c.id for c in todo]
    for i, cell in enumerate(todo, 1):
        log.info("[%d/%d] %s", i, len(todo), cell.id)
        _run_cell(cell, out / "runs" / cell.id)
    (out / "grid.yaml").write_text(yaml.safe_dump({"grid": str(grid_path), "cells": [c.id for c in cells]}))
    write_report(out, grid, cells, published)
    return [c.id for c in todo]
