"""The run folder's guards and records: one writer at a time, no debris, a log that fails clearly.

- :class:`RunLock`: an exclusive OS lock (``fcntl.flock``) on ``<run>/.lock`` for the whole run. The
  kernel drops it when the process dies, so a ``kill -9`` never leaves a stale lock; a second process
  that wants the folder fails at once with the holder's pid.
- :func:`remove_stale_temp_files`: a write killed mid-way (a checkpoint, ``metrics.json``, the log
  trim) leaves its temp file; under the lock no other writer exists, so every temp file is debris.
- :class:`RunLog`: ``log.jsonl``, one JSON record a line, appended. A failed write (a full disk) raises
  :class:`RunFolderError` with what to do, and takes back its partial line where the disk allows;
  :meth:`RunLog.trim` drops a torn line (with a warning) as well as the records past a resumed iteration.
- :func:`config_changes`: the keys in which a resumed run's config differs from its checkpoint's, and
  :func:`check_resume_config`, which refuses (or records) such a resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from mtssl.config import ConfigError

__all__ = [
    "RUN_FILES",
    "RunFolderError",
    "RunLock",
    "RunLog",
    "check_resume_config",
    "clear_run",
    "config_changes",
    "holds_run",
    "remove_stale_temp_files",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunFolderError(RuntimeError):
    """A run folder that is in use by another process, or that cannot be written."""


class RunLock:
    """Hold ``<folder>/.lock`` exclusively for a ``with`` block (see the module doc).

    Without ``fcntl`` (Windows) it does nothing: the guard is for the POSIX machines runs are made on.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / LOCK_NAME, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunFolderError(
                f"{self.folder} is in use by another mtssl process (pid {holder}); wait for it to finish, "
                "stop it, or give this run another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock; the file stays (removing it would race a new holder)
            self._file = None


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files of killed writes in ``folder`` and ``folder/checkpoints`` (hold the lock)."""
    folder = Path(folder)
    # pathlib's "*" matches dot-files too: the checkpoints' ".last.pt.<pid>.tmp" included
    stale = [p for d in (folder, folder / "checkpoints") if d.is_dir() for p in d.glob("*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
        log.warning("removed %s, left by a write that was killed", path)
    return stale


# What a run writes into its folder (``clear_run`` removes these and nothing else).
RUN_FILES = (
    "config.yaml",
    "split.json",
    "log.jsonl",
    "checkpoints",
    "metrics.json",
    "metrics.csv",
    "config_changes.jsonl",
    "tensorboard",
)


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds (part of) a run: its config, log, checkpoints or metrics."""
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_FILES)


def clear_run(folder: str | Path) -> None:
    """Remove a run's files from ``folder`` (hold the lock), leaving anything else there."""
    folder = Path(folder)
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    log.warning("removed the run in %s (--overwrite)", folder)


class RunLog:
    """``log.jsonl``: appended one record a line, only by the process that writes the run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLog:
        self._file = open(self.path, "a")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record``; a failed write raises :class:`RunFolderError` and leaves no partial line."""
        assert self._file is not None, "use RunLog in a with block"
        line = json.dumps(record) + "\n"
        start = self._file.tell()
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            self._take_back(start)
            raise RunFolderError(
                f"could not write {self.path} ({exc.strerror or exc}) at iteration {record.get('iteration')}; "
                "the last checkpoint is intact; free space or fix the folder, then --resume"
            ) from exc

    def _take_back(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (best effort: shrinking needs no space), and reopen it."""
        assert self._file is not None
        try:
            self._file.close()
        except OSError:
            pass  # the close flushes the failed buffer again and fails the same way
        try:
            os.truncate(self.path, size)
        except OSError as exc:
            log.warning("could not take back the partial line of %s (%s); resume drops it", self.path, exc)
        self._file = open(self.path, "a")

    @staticmethod
    def trim(path: str | Path, iteration: int) -> list[dict[str, Any]]:
        """Keep the records up to ``iteration`` (a resume's), drop later ones and torn lines; return the kept.

        A line that is not a JSON record (a write cut by a kill or a full disk) is dropped with a warning.
        """
        path = Path(path)
        if not path.is_file():
            return []
        lines = path.read_text(errors="replace").splitlines()
        kept, raw = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("iteration"), int):
                    raise ValueError("not a log record")
            except ValueError:
                log.warning("%s: dropped line %d, a torn or foreign record: %.60r", path, number, line)
                continue
            if record["iteration"] <= iteration:
                kept.append(record)
                raw.append(line)
        if len(raw) != len(lines):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in raw))
            tmp.replace(path)
        return kept


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


# Keys that change how a run is watched or where it runs, not what it computes.
FREE_TO_CHANGE = ("train.progress", "train.num_workers", "train.device", "eval.batch_size")


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every key that differs (missing is ``None``),
    except :data:`FREE_TO_CHANGE`."""
    a, b = _flatten(saved), _flatten(new)
    return {
        key: (a.get(key), b.get(key))
        for key in sorted({*a, *b})
        if a.get(key) != b.get(key) and key not in FREE_TO_CHANGE
    }


def check_resume_config(
    saved: Mapping[str, Any], new: Mapping[str, Any], out: Path, iteration: int, allowed: bool, write: bool
) -> None:
    """Refuse a resume whose config ``new`` differs from the checkpoint's ``saved`` (both plain, resolved),
    unless ``allowed``: then warn, and (``write``, rank 0) record the change in ``config_changes.jsonl``."""
    changes = config_changes(saved, new)
    if not changes:
        return
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in list(changes.items())[:6]))
    more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
    if not allowed:
        raise ConfigError(
            f"--resume with a config that differs from the checkpoint's in {len(changes)} key(s): {listed}{more}. "
            f"Resume with the run's own config ({out / 'config.yaml'}), or pass --allow-config-change "
            "to continue with the new values"
        )
    log.warning("resuming with a changed config: %s%s", listed, more)
    if write:
        record = {"iteration": iteration, "changed": {k: list(v) for k, v in changes.items()}}
        with open(out / "config_changes.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
