"""Run a grid's missing cells, then rewrite its tables, statistics and plots from the run folders.

Cells run one after another, or ``workers`` at a time in worker processes: one per GPU when there
are GPUs (each worker sees only its own, through ``CUDA_VISIBLE_DEVICES``), else CPU processes that
share the cores. A cell is finished once its folder holds a readable ``metrics.json`` and ``timing.json``
(both written atomically; a damaged one makes the cell run again, with a warning naming it); an
unfinished one continues from its last checkpoint, so a stopped grid picks up where it was. Every
cell's config is checked before the first runs; a cell that fails does not stop the others, and the
failures are reported together at the end (:class:`GridError`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from mtssl.bench.grid import Cell, Grid, load_grid
from mtssl.bench.report import cell_finished, write_report
from mtssl.config import ConfigError, load_yaml
from mtssl.engine.build import resolved_config
from mtssl.engine.progress import TrainingInterrupted
from mtssl.engine.records import config_changes, holds_run
from mtssl.engine.run import plan_run, train_run
from mtssl.files import atomic_write, atomic_write_json
from mtssl.registry import RegistryError

if TYPE_CHECKING:
    from mtssl.bench.slurm import SlurmOptions

__all__ = ["GridError", "cell_finished", "changed_cells", "grid_status", "report_grid", "run_cell", "run_grid"]

log = logging.getLogger(__name__)


def run_cell(cell: Cell, folder: Path) -> dict[str, Any]:
    """Train and test one cell into ``folder`` (continuing an unfinished run), then write its ``timing.json``."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    began = time.time()
    train_run(cell.config, folder, resume=holds_run(folder))  # an unfinished cell continues
    seconds = time.perf_counter() - start
    speeds = [
        r["it_per_s"] for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if "it_per_s" in r
    ]
    timing = {
        "seconds": seconds,
        "it_per_s": speeds[-1] if speeds else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        # The process's peak resident memory so far (Linux reports KiB): an upper bound for this cell.
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "process": os.getpid(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") if torch.cuda.is_available() else None,
        "started": began,
        "finished": time.time(),
    }
    atomic_write_json(folder / "timing.json", timing)  # written last: a cell is finished once it is there
    return timing


def _start_worker(slots: Any, threads: int) -> None:
    """Runs first in each worker process: take a GPU (or a share of the CPU cores)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    slot = slots.get()
    if slot is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)  # before this process first touches CUDA
    torch.set_num_threads(threads)


def _run_parallel(todo: Sequence[Cell], out: Path, workers: int) -> dict[str, BaseException]:
    """Run ``todo`` in ``workers`` processes; every cell runs, and the failed ones are returned by id."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    gpus = torch.cuda.device_count()
    if gpus and workers > gpus:
        raise ConfigError(f"--workers {workers} but {gpus} GPUs: run at most one cell per GPU")
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    slots = context.Manager().Queue()
    for w in range(workers):
        slots.put(w if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // workers)
    failed: dict[str, BaseException] = {}
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(slots, threads)) as pool:
        futures = {pool.submit(run_cell, cell, out / "runs" / cell.id): cell for cell in todo}
        for future in as_completed(futures):
            cell, error = futures[future], future.exception()
            if isinstance(error, TrainingInterrupted):
                raise error
            if error is not None:
                failed[cell.id] = error
                log.error("cell %s failed: %s: %s", cell.id, type(error).__name__, error)
            else:
                log.info("done %s in %.0f s", cell.id, future.result()["seconds"])
    return failed


def _run_serial(todo: Sequence[Cell], out: Path) -> dict[str, BaseException]:
    """Run ``todo`` one after another; a failed cell is logged and the others still run."""
    failed: dict[str, BaseException] = {}
    for i, cell in enumerate(todo, 1):
        log.info("[%d/%d] %s", i, len(todo), cell.id)
        try:
            run_cell(cell, out / "runs" / cell.id)
        except (TrainingInterrupted, KeyboardInterrupt):
            raise
        except Exception as error:
            failed[cell.id] = error
            log.error("cell %s failed: %s: %s", cell.id, type(error).__name__, error)
    return failed


def _submit(
    grid: Grid,
    todo: list[Cell],
    cells: list[Cell],
    grid_path: str | Path,
    out: Path,
    published: str | Path | None,
    overrides: Sequence[str],
    only: str | None,
    stale: Mapping[str, Any],
    options: SlurmOptions,
) -> list[str]:
    """Submit ``todo``, less the cells already waiting or running in the queue, as one SLURM job array."""
    from mtssl.bench.slurm import in_queue, submit_cells

    queued = in_queue(out, todo)
    todo = [c for c in todo if c.id not in queued]
    if queued:
        log.info("%d cells are already in the queue and are not submitted again", len(queued))
    _set_aside(out, [cid for cid in stale if cid not in queued])
    if not todo:
        return []
    every = cells if only is None else load_grid(grid_path, overrides=overrides)[1]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "grid.yaml", yaml.safe_dump({"grid": str(grid_path), "cells": [c.id for c in every]}))
    ids = submit_cells(todo, every, grid, out, options, str(published) if published else None, _job_name(grid_path))
    log.info("submitted %d cells: %s", len(ids), ", ".join(sorted(set(ids.values()))))
    return list(ids)


def _job_name(grid_path: str | Path) -> str:
    return f"mtssl-{Path(grid_path).stem}"


def grid_status(grid_path: str | Path, out: str | Path, overrides: Sequence[str] = ()) -> str:
    """Each cell of the grid: finished, running, waiting, failed (with its log's last lines), gone or not
    submitted (:func:`mtssl.bench.slurm.cell_states`)."""
    from mtssl.bench.slurm import cell_states, format_states

    _, cells = load_grid(grid_path, overrides=overrides)
    return format_states(cell_states(Path(out), cells))


def report_grid(
    grid_path: str | Path, out: str | Path, published: str | Path | None = None, overrides: Sequence[str] = ()
) -> int:
    """Write the tables, statistics and plots from the finished cells now; returns how many are finished."""
    grid, cells = load_grid(grid_path, overrides=overrides)
    out = Path(out)
    finished = sum(cell_finished(out / "runs" / c.id) for c in cells)
    if not finished:
        raise ConfigError(
            f"no cell of {grid_path} has finished in {out}, so there is no table to write; "
            f"`mtssl bench {grid_path} --out {out} --status` shows where the cells are"
        )
    write_report(out, grid, cells, published)
    return finished


class GridError(RuntimeError):
    """Cells of a grid that failed; the others ran and the tables cover them."""


# Where the data lives is not what a cell computes: a grid whose data moved keeps its cells.
NOT_STALE = ("data.root",)


def changed_cells(out: Path, cells: Sequence[Cell]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Finished cells whose resolved config (their ``config.yaml``) differs from what the grid asks for now:
    ``{cell id: {dotted key: (ran with, asked for)}}``. Keys that do not change the result
    (:data:`~mtssl.engine.records.FREE_TO_CHANGE`, the provenance record, the data's location) are ignored."""
    stale = {}
    for cell in cells:
        folder = out / "runs" / cell.id
        if not cell_finished(folder) or not (folder / "config.yaml").is_file():
            continue
        changes = config_changes(resolved_config(load_yaml(folder / "config.yaml")), resolved_config(cell.config))
        changes = {k: v for k, v in changes.items() if k not in NOT_STALE}
        if changes:
            stale[cell.id] = changes
    return stale


def _describe_changes(stale: dict[str, dict[str, tuple[Any, Any]]]) -> str:
    lines = []
    for cid, changes in list(stale.items())[:5]:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:3])
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        lines.append(f"  {cid}: {listed}{more}")
    if len(stale) > 5:
        lines.append(f"  ... and {len(stale) - 5} more cells")
    return "\n".join(lines)


def _set_aside(out: Path, cell_ids: Sequence[str]) -> None:
    """Move changed cells' run folders (written by mtssl) to ``out/stale/<id>/<time>`` before they rerun."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for cid in cell_ids:
        target = out / "stale" / cid / stamp
        target.parent.mkdir(parents=True, exist_ok=True)
        (out / "runs" / cid).rename(target)
        log.info("moved the changed cell %s to %s", cid, target)


def _check_configs(cells: Sequence[Cell]) -> None:
    """Check every cell's config before the first runs (each run checks its own data when it starts)."""
    bad = {}
    for cell in cells:
        try:
            plan_run(cell.config, check_data=False)
        except (ConfigError, RegistryError) as exc:
            bad[cell.id] = exc
    if bad:
        listed = "; ".join(f"{cid}: {exc}" for cid, exc in list(bad.items())[:5])
        raise ConfigError(f"{len(bad)} of {len(cells)} grid cells have a bad config, nothing ran: {listed}")


def run_grid(
    grid_path: str | Path,
    out: str | Path,
    only: str | None = None,
    dry_run: bool = False,
    published: str | Path | None = None,
    workers: int = 1,
    overrides: Sequence[str] = (),
    rerun_changed: bool = False,
    launcher: str = "local",
    slurm: Mapping[str, Any] | None = None,
) -> list[str]:
    """Run every cell without a finished run folder (``metrics.json`` and ``timing.json``), then report.

    Args:
        grid_path: the grid file.
        out: the grid folder.
        only: run only cells whose id matches this wildcard.
        dry_run: check every cell's config, list what would run, and run nothing.
        published: a YAML list of published rows to add to the table.
        workers: cells run at once, each in its own process (one per GPU on a GPU machine).
        overrides: ``key=value`` overrides of every cell, after the grid's own.
        rerun_changed: rerun the finished cells whose config differs from what the grid (file and
            overrides) asks for now (:func:`changed_cells`), moving their old folders to
            ``out/stale/``; without it such cells stop the grid before anything runs, listed with
            their changes.
        launcher: ``local`` (run here) or ``slurm`` (submit the cells as a job array and return;
            :mod:`mtssl.bench.slurm`).
        slurm: command-line values over the grid file's ``slurm`` section (``--launcher slurm``).

    Returns the ids of the cells that ran (with ``dry_run``, would run; with ``slurm``, were submitted).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher must be local or slurm, got {launcher!r}")
    out = Path(out)
    grid, cells = load_grid(grid_path, only, overrides)
    stale = changed_cells(out, cells)
    if stale and not rerun_changed and not dry_run:
        raise ConfigError(
            f"{len(stale)} finished cell(s) in {out} ran with a config that differs from what the grid asks for "
            f"now (ran with -> asked for):\n{_describe_changes(stale)}\nrerun them with --rerun-changed (their "
            "old folders move to stale/), restore the grid's old values, or use another --out"
        )
    todo = [c for c in cells if c.id in stale or not cell_finished(out / "runs" / c.id)]
    _check_configs(cells)
    options = None
    if launcher == "slurm":  # the resources too, before anything is submitted (and in a dry run)
        from mtssl.bench.slurm import SlurmOptions

        options = SlurmOptions.build(grid.slurm, slurm)
    if dry_run:
        for cell in cells:
            state = "changed" if cell.id in stale else "run " if cell in todo else "done"
            log.info("%s %s", state, cell.id)
        if stale:
            log.warning("changed since they ran (--rerun-changed reruns them):\n%s", _describe_changes(stale))
        return [c.id for c in todo]
    if options is not None:
        return _submit(grid, todo, cells, grid_path, out, published, overrides, only, stale, options)
    _set_aside(out, list(stale))
    if workers > 1 and len(todo) > 1:
        failed = _run_parallel(todo, out, min(workers, len(todo)))
    else:
        failed = _run_serial(todo, out)
    # The tables cover every finished cell of the grid, not only those this call ran (--only).
    every = cells if only is None else load_grid(grid_path, overrides=overrides)[1]
    atomic_write(out / "grid.yaml", yaml.safe_dump({"grid": str(grid_path), "cells": [c.id for c in every]}))
    write_report(out, grid, every, published)
    if failed:
        listed = "\n".join(f"  {cid}: {type(e).__name__}: {e}" for cid, e in failed.items())
        raise GridError(
            f"{len(failed)} of {len(todo)} cells failed (the other cells ran; the tables in {out} cover the "
            f"finished ones):\n{listed}\nfix them and run the same command again: finished cells are kept"
        )
    return [c.id for c in todo]
