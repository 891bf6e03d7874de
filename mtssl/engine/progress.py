"""What a training run shows and how it stops: the progress display and the signal handler."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["StopOnSignals", "TrainProgress", "TrainingInterrupted", "case_progress"]


class TrainProgress:
    """Training progress, refreshed when the losses are logged.

    On a terminal: a rich bar whose count, speed and ETA come first and never get cut; the losses
    show as the total and, in the room left, as many terms as fit (folded away first on a narrow
    terminal). Elsewhere (a log file, a CI job), or with ``enabled`` false (``train.progress: false``):
    one plain line per log record, so that a run never trains in silence.
    """

    def __init__(self, total: int, done: int, enabled: bool, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self.console = console or Console(stderr=True)
        self.enabled, self.total = enabled, total
        self.live = enabled and self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]train"),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[speed]}"),
            TextColumn("eta {task.fields[eta]}"),
            BarColumn(bar_width=None, table_column=Column(ratio=1)),
            TextColumn("{task.fields[losses]}", table_column=Column(overflow="ellipsis", no_wrap=True, ratio=3)),
            console=self.console,
            disable=not self.live,
            expand=True,
        )
        self.task = self.progress.add_task("train", total=total, completed=done, speed="", eta="-", losses="")

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    @staticmethod
    def losses(record: Mapping[str, Any]) -> str:
        terms = {k[5:]: v for k, v in record.items() if k.startswith("loss/")}
        total = terms.pop("total", None)
        parts = ([f"total={total:.3f}"] if total is not None else []) + [f"{k}={v:.3f}" for k, v in terms.items()]
        return " ".join(parts)

    def update(self, iteration: int, record: Mapping[str, Any]) -> None:
        speed = f"{record['it_per_s']:.2f} it/s"
        left = (self.total - iteration) / max(record["it_per_s"], 1e-9)  # from the logged speed
        eta = f"{int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
        if self.live:
            self.progress.update(self.task, completed=iteration, speed=speed, eta=eta, losses=self.losses(record))
        else:
            self.console.print(
                f"train {iteration}/{self.total} {speed} eta {eta} {self.losses(record)}",
                highlight=False,
                soft_wrap=True,
            )


def case_progress(items: Any, total: int, split: str, enabled: bool, console: Any = None) -> Any:
    """Yield ``items`` (test cases), showing which one is being tested: a transient bar on a
    terminal, a line per case elsewhere."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    console = console or Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(f"testing ({split})", total=total)
        for k, item in enumerate(items, 1):
            if not console.is_terminal:
                console.print(f"{split} case {k}/{total}: {item['case']}", highlight=False)
            yield item
            bar.advance(task)


class TrainingInterrupted(Exception):
    """SIGTERM, SIGINT or SIGUSR2 arrived; a checkpoint was saved at ``iteration``."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by signal {signum} at iteration {iteration}; saved {checkpoint}")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class StopOnSignals:
    """SIGTERM, SIGINT and SIGUSR2 ask the loop to checkpoint and stop after the current step (main thread
    only). SIGUSR2 is the warning SLURM sends before a time limit or a preemption (``--signal=USR2@s``,
    as submitit asks for it); :mod:`mtssl.bench.slurm` then requeues the task, which resumes.

    Inside the ``with`` block a signal only sets :attr:`signum`; the loop checks it after each step. The
    handlers that were there before (submitit's, for one) are put back when the block ends.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)):
                if signum is not None:
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
