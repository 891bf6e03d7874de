"""A grid's cells on a SLURM cluster, through submitit: one job array per submission, one cell per task.

``mtssl bench GRID --out DIR --launcher slurm`` submits every cell that is neither finished nor already
in the queue as one job array (``--array-parallelism`` tasks at once) and returns. Each task trains and
tests its cell into ``DIR/runs/<cell>`` exactly as a local run does; the last task to finish writes the
tables (``--report`` writes them at any time from the finished cells). ``--status`` lists what runs,
waits, failed (with its log's last lines) or finished. ``DIR`` must be on a file system that the
nodes share; submitit's pickles and logs go to ``DIR/slurm``, and ``DIR/slurm/jobs.json`` maps each
cell to its job.

Time limits and preemption: the job asks SLURM for ``SIGUSR2`` ``signal_delay_s`` seconds before its
time limit (``--signal=USR2@...``, submitit's convention). The trainer takes ``SIGUSR2`` like ``SIGTERM``:
it finishes the step, saves a checkpoint and stops; the task then hands the signal to submitit, which
requeues it, and the requeued task resumes the cell from that checkpoint (the trainer's own resume,
bit-identical to an uninterrupted run). A task requeued from outside (``scontrol requeue``, a
preemption with ``PreemptMode=REQUEUE``) gets ``SIGTERM``, saves the same way, and resumes when it runs
again. A cell that fails with an error is not requeued: its task ends failed and ``--status`` shows the
error; a time limit is retried ``max_timeouts`` times at most.

submitit is how Hydra's launcher, DomainBed and DINO hand work to SLURM; it writes the sbatch script,
pickles the task, and handles the signal and the requeue. What is written here is the grid's side: which
cells to submit, the task that runs one, and the status read from ``squeue`` and submitit's result files
(no ``sacct``: it needs a SLURM accounting database that many clusters, and the tests' one, lack).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtssl.bench.grid import Cell, Grid
from mtssl.bench.report import cell_finished, write_report
from mtssl.config import ConfigError, build_dataclass
from mtssl.files import atomic_write_json

__all__ = ["CellTask", "SlurmOptions", "cell_states", "format_states", "submit_cells"]

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """Per-cell resources and behaviour: a grid file's ``slurm:`` section, overridden from the command line.

    Attributes:
        partition: the partition (None: the cluster's default).
        time: minutes per cell (a task that outlasts it is requeued from its checkpoint).
        cpus_per_task: CPU cores per cell (the cell's torch threads).
        gpus_per_node: GPUs per cell.
        mem_gb: memory per cell in GB (None: the cluster's default).
        account: the account to charge.
        array_parallelism: the most cells that run at once.
        signal_delay_s: how long before the time limit SLURM sends SIGUSR2 (a checkpoint must fit in it).
        max_timeouts: how often a cell may be requeued after reaching its time limit.
        sbatch: more ``#SBATCH`` lines, ``{"qos": "high"}`` for ``#SBATCH --qos=high``.
        setup: shell lines run before each cell (``module load ...``, activating an environment).
    """

    partition: str | None = None
    time: int = 60
    cpus_per_task: int = 2
    gpus_per_node: int = 0
    mem_gb: float | None = None
    account: str | None = None
    array_parallelism: int = 8
    signal_delay_s: int = 120
    max_timeouts: int = 3
    sbatch: dict[str, str] = dataclasses.field(default_factory=dict)
    setup: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def build(cls, section: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> SlurmOptions:
        """The grid file's ``slurm`` section with the command line's non-None values over it, checked."""
        section, given = dict(section or {}), {k: v for k, v in (overrides or {}).items() if v is not None}
        merged = {**section, **given}
        if isinstance(section.get("sbatch"), Mapping) and "sbatch" in given:
            merged["sbatch"] = {**section["sbatch"], **given["sbatch"]}
        options = build_dataclass(cls, merged, where="slurm")
        for name in ("time", "cpus_per_task", "array_parallelism"):
            if getattr(options, name) < 1:
                raise ConfigError(f"slurm.{name} must be at least 1, got {getattr(options, name)}")
        if options.gpus_per_node < 0 or options.signal_delay_s < 0 or options.max_timeouts < 0:
            raise ConfigError("slurm.gpus_per_node, slurm.signal_delay_s and slurm.max_timeouts must be >= 0")
        return options

    def executor_parameters(self, job_name: str) -> dict[str, Any]:
        """submitit ``SlurmExecutor`` parameters."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time,
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s,
            "additional_parameters": dict(self.sbatch),
            "setup": list(self.setup),
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"
        if self.account:
            params["account"] = self.account
        return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'mtssl[slurm]' (or pip install submitit)"
        ) from exc
    return submitit


class CellTask:
    """What one array task runs: its cell (resumed from the checkpoint when the task was requeued), then
    the grid's tables if it was the last cell to finish. submitit pickles it for the node."""

    def __init__(self, cell: Cell, out: Path, grid: Grid, every: Sequence[Cell], published: str | None) -> None:
        self.cell, self.out, self.grid, self.every, self.published = cell, Path(out), grid, list(every), published

    def __call__(self) -> dict[str, Any]:
        import torch

        from mtssl.bench.run import run_cell
        from mtssl.engine.progress import TrainingInterrupted

        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        try:
            timing = run_cell(self.cell, self.out / "runs" / self.cell.id)
        except TrainingInterrupted as stop:
            print(f"mtssl: cell {self.cell.id} {stop}", file=sys.stderr, flush=True)  # into the task's log
            if stop.signum == signal.SIGUSR2:
                # The checkpoint is saved and the trainer has given SIGUSR2 back to submitit's handler,
                # which checkpoints this task (checkpoint() below) and requeues it.
                signal.raise_signal(signal.SIGUSR2)
            raise  # SIGTERM: the scheduler is requeueing or cancelling the job; it decides what follows
        if all(cell_finished(self.out / "runs" / c.id) for c in self.every):
            self.out.joinpath("slurm").mkdir(parents=True, exist_ok=True)
            with open(self.out / "slurm" / "report.lock", "w") as lock:  # two last cells may finish at once
                fcntl.flock(lock, fcntl.LOCK_EX)
                write_report(self.out, self.grid, self.every, self.published)
        return timing

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on SIGUSR2: run this task again; the cell resumes from its checkpoint."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def _jobs_file(out: Path) -> Path:
    return out / "slurm" / "jobs.json"


def submitted_jobs(out: Path) -> dict[str, str]:
    """``{cell id: SLURM job id}`` of the grid folder's submissions (the latest per cell)."""
    path = _jobs_file(out)
    return json.loads(path.read_text()) if path.is_file() else {}


def submit_cells(
    todo: Sequence[Cell],
    every: Sequence[Cell],
    grid: Grid,
    out: Path,
    options: SlurmOptions,
    published: str | None,
    job_name: str,
) -> dict[str, str]:
    """Submit ``todo`` as one job array; returns ``{cell id: job id}`` (also recorded in ``slurm/jobs.json``)."""
    submitit = _submitit()
    executor = submitit.SlurmExecutor(folder=out / "slurm", max_num_timeout=options.max_timeouts)
    executor.update_parameters(**options.executor_parameters(job_name))
    with executor.batch():
        jobs = [executor.submit(CellTask(cell, out, grid, every, published)) for cell in todo]
    ids = {cell.id: str(job.job_id) for cell, job in zip(todo, jobs)}
    atomic_write_json(_jobs_file(out), {**submitted_jobs(out), **ids})
    return ids


def _queue(job_ids: Sequence[str]) -> dict[str, str]:
    """``{job id: state}`` for those of ``job_ids`` that ``squeue`` still lists (array tasks one by one)."""
    if not job_ids:
        return {}
    try:
        listed = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i %T", "--states=all"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"squeue failed ({exc}); is this a SLURM login node with squeue on the PATH?") from exc
    states = dict(line.split(maxsplit=1) for line in listed.splitlines() if line.strip())
    return {jid: states[jid].strip() for jid in job_ids if jid in states}


def _log_tail(out: Path, job_id: str, lines: int = 8) -> str:
    for name in (f"{job_id}_0_log.err", f"{job_id}_0_log.out"):
        path = out / "slurm" / name
        if path.is_file():
            text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            if text:
                return "\n".join(text[-lines:])
    return "(no log yet)"


def _failed(out: Path, job_id: str) -> bool:
    """Whether submitit recorded an error for the job (its result pickle holds ``("error", traceback)``)."""
    path = out / "slurm" / f"{job_id}_0_result.pkl"
    if not path.is_file():
        return False
    from submitit.core.utils import pickle_load

    try:
        return pickle_load(path)[0] == "error"
    except Exception:  # a torn pickle: the task died while writing it
        return True


def cell_states(out: Path, cells: Sequence[Cell]) -> list[tuple[str, str, str]]:
    """``(cell id, state, detail)`` per cell: finished, running, waiting, failed, gone (left the queue
    unfinished: cancelled or killed) or not submitted; ``detail`` is the job id, and the log's last lines
    for a failed or gone cell."""
    jobs = submitted_jobs(out)
    queue = _queue([jobs[c.id] for c in cells if c.id in jobs and not cell_finished(out / "runs" / c.id)])
    rows = []
    for cell in cells:
        job = jobs.get(cell.id)
        if cell_finished(out / "runs" / cell.id):
            rows.append((cell.id, "finished", job or "local"))
        elif job is None:
            rows.append((cell.id, "not submitted", ""))
        elif queue.get(job) in RUNNING:
            rows.append((cell.id, "running", job))
        elif queue.get(job) in QUEUED:
            rows.append((cell.id, "waiting", f"{job} ({queue[job].lower()})"))
        else:  # out of the queue, or ended (failed, cancelled, timed out, or completed without its metrics)
            state = "failed" if job in queue or _failed(out, job) else "gone"
            ended = f" ({queue[job].lower()})" if job in queue else ""
            rows.append((cell.id, state, f"{job}{ended}\n{_log_tail(out, job)}"))
    return rows


def format_states(rows: Sequence[tuple[str, str, str]]) -> str:
    """The status as text: a line per cell (and its log's last lines, indented), then the counts."""
    lines = []
    for cell_id, state, detail in rows:
        first, *rest = (detail or "").split("\n")
        lines.append(f"{state:<14} {cell_id}  {first}".rstrip())
        lines += [f"    {line}" for line in rest]
    counts: dict[str, int] = {}
    for _, state, _ in rows:
        counts[state] = counts.get(state, 0) + 1
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    return "\n".join(lines)


def in_queue(out: Path, cells: Sequence[Cell]) -> set[str]:
    """The cells whose submitted job is still waiting or running (not to be submitted again)."""
    return {cid for cid, state, _ in cell_states(out, cells) if state in ("running", "waiting")}
