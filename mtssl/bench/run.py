"""Run a grid's missing cells, then rewrite its tables, statistics and plots from the run folders.

Cells run one after another, or ``workers`` at a time in worker processes: one per GPU when there
are GPUs (each worker sees only its own, through ``CUDA_VISIBLE_DEVICES``), else CPU processes that
share the cores. A cell is finished once its folder holds ``metrics.json`` and ``timing.json``; an
unfinished one continues from its last checkpoint, so a stopped grid picks up where it was.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from mtssl.bench.grid import Cell, load_grid
from mtssl.bench.report import write_report
from mtssl.config import ConfigError
from mtssl.engine.records import holds_run
from mtssl.engine.run import plan_run, train_run

__all__ = ["run_grid"]

log = logging.getLogger(__name__)


def _run_cell(cell: Cell, folder: Path) -> dict[str, Any]:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    began = time.time()
    train_run(cell.config, folder, resume=holds_run(folder))  # an unfinished cell continues
    seconds = time.perf_counter() - start
    records = (folder / "log.jsonl").read_text().splitlines()
    timing = {
        "seconds": seconds,
        "it_per_s": json.loads(records[-1])["it_per_s"] if records else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        # The process's peak resident memory so far (Linux reports KiB): an upper bound for this cell.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "process": os.getpid(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") if torch.cuda.is_available() else None,
        "started": began,
        "finished": time.time(),
    }
    (folder / "timing.json").write_text(json.dumps(timing))
    return timing


def _start_worker(slots: Any, threads: int) -> None:
    """Runs first in each worker process: take a GPU (or a share of the CPU cores)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)  # before this process first touches CUDA
    torch.set_num_threads(threads)


def _run_parallel(todo: Sequence[Cell], out: Path, workers: int) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    gpus = torch.cuda.device_count()
    if gpus and workers > gpus:
        raise ConfigError(f"--workers {workers} but {gpus} GPUs: run at most one cell per GPU")
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    slots = context.Manager().Queue()
    for w in range(workers):
        slots.put(w if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(slots, threads)) as pool:
        futures = {pool.submit(_run_cell, cell, out / "runs" / cell.id): cell for cell in todo}
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(pending)
            cell = futures[failed[0]]
            raise RuntimeError(f"grid cell {cell.id} failed; fix it and run the grid again") from failed[0].exception()
        for f in done:
            log.info("done %s in %.0f s", futures[f].id, f.result()["seconds"])


def run_grid(
    grid_path: str | Path,
    out: str | Path,
    only: str | None = None,
    dry_run: bool = False,
    published: str | Path | None = None,
    workers: int = 1,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Run every cell without a finished run folder (``metrics.json`` and ``timing.json``), then report.

    Args:
        grid_path: the grid file.
        out: the grid folder.
        only: run only cells whose id matches this wildcard.
        dry_run: check every cell's config, list what would run, and run nothing.
        published: a YAML list of published rows to add to the table.
        workers: cells run at once, each in its own process (one per GPU on a GPU machine).
        overrides: ``key=value`` overrides of every cell, after the grid's own (use a new ``out``
            folder when you change them: finished cells are not re-run).

    Returns the ids of the cells that ran (or, with ``dry_run``, would run).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    grid, cells = load_grid(grid_path, only, overrides)
    todo = [
        c
        for c in cells
        if not ((out / "runs" / c.id / "metrics.json").is_file() and (out / "runs" / c.id / "timing.json").is_file())
    ]
    if dry_run:
        for cell in cells:
            plan_run(cell.config, check_data=False)  # every cell's config is valid (each run checks its data)
            log.info("%s %s", "run " if cell in todo else "done", cell.id)
        return [c.id for c in todo]
    if workers > 1 and len(todo) > 1:
        _run_parallel(todo, out, min(workers, len(todo)))
    else:
        for i, cell in enumerate(todo, 1):
            log.info("[%d/%d] %s", i, len(todo), cell.id)
            _run_cell(cell, out / "runs" / cell.id)
    # The tables cover every finished cell of the grid, not only those this call ran (--only).
    every = cells if only is None else load_grid(grid_path, None, overrides)[1]
    (out / "grid.yaml").write_text(yaml.safe_dump({"grid": str(grid_path), "cells": [c.id for c in every]}))
    write_report(out, grid, every, published)
    return [c.id for c in todo]
