"""The run folder's guards and records: one writer at a time, no debris, a log that fails clearly.

- :class:`RunLock`: an exclusive OS lock (``fcntl.flock``) on ``<run>/.lock`` for the whole run. The
  kernel drops it when the process dies, so a ``kill -9`` never leaves a stale lock; a second process
  that wants the folder fails at once with the holder's pid.
- :func:`holds_run`, :func:`claim_run`, :func:`check_foreign`: a run folder is recognised by mtssl's own
  ``.mtssl-run`` marker (or a checkpoint with mtssl's header), never by file names alone, and a folder
  that is not a run but holds files of a run's names is refused rather than overwritten.
- :func:`remove_stale_temp_files`, :func:`clear_run`: a write killed mid-way leaves its temp file; under
  the lock no other writer exists, so mtssl's own temp files are debris. Both remove through
  :func:`mtssl.files.remove_own`, which takes only the names mtssl writes.
- :class:`RunLog`: ``log.jsonl``, one JSON record a line, appended. A failed write (a full disk) raises
  :class:`RunFolderError` with what to do, and takes back its partial line where the disk allows;
  :meth:`RunLog.trim` drops a torn line (with a warning) as well as the records past a resumed iteration.
- :func:`config_changes`: the keys in which a resumed run's config differs from its checkpoint's, and
  :func:`check_resume_config`, which refuses (or records) such a resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from mtssl.config import ConfigError
from mtssl.files import atomic_write, atomic_write_json, is_own, is_own_temp, remove_own

__all__ = [
    "MARKER",
    "CheckpointError",
    "RunFolderError",
    "RunLock",
    "RunLog",
    "check_foreign",
    "check_resume_config",
    "claim_run",
    "clear_run",
    "config_changes",
    "holds_run",
    "remove_stale_temp_files",
    "strict_json",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, corrupt or of another model (:mod:`mtssl.engine.checkpoint`;
    defined here, with no torch import, so that the command line can catch it cheaply)."""


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


MARKER = ".mtssl-run"
MARKER_FORMAT = "mtssl-run-1"


def _own_files(folder: Path) -> list[str]:
    """The files under ``folder`` whose names are mtssl's (:func:`mtssl.files.is_own`), relative, sorted."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if (path.is_file() or path.is_symlink()) and (is_own(rel) or is_own_temp(rel)):
            found.append(rel.as_posix())
    return sorted(found)


def holds_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds a run that mtssl wrote: its ``.mtssl-run`` marker, or (a run written
    before the marker existed) a checkpoint with mtssl's header. A user's ``config.yaml`` or
    ``checkpoints/`` folder does not make a run."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    from mtssl.engine.checkpoint import MAGIC

    for name in (n for n in _own_files(folder) if n.startswith("checkpoints/")):
        try:
            with open(folder / name, "rb") as f:
                if f.read(len(MAGIC)) == MAGIC:
                    return True
        except OSError:
            continue
    return False


def check_foreign(folder: str | Path) -> None:
    """Refuse a folder that holds no run but files with the names a run writes (a user's ``config.yaml``,
    ``log.jsonl``, ``checkpoints/last.pt``): mtssl would overwrite them."""
    folder = Path(folder)
    clashes = [n for n in _own_files(folder) if n not in (LOCK_NAME, MARKER) and is_own(n)]
    if clashes and not holds_run(folder):
        shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise RunFolderError(
            f"{folder} is not an mtssl run folder (no {MARKER} marker) but holds files a run would write: {shown}. "
            "mtssl overwrites only its own files: give the run another --out, or move those files"
        )


def claim_run(folder: str | Path) -> None:
    """Mark ``folder`` as a run folder (hold the lock): the marker :func:`holds_run` recognises."""
    import mtssl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / MARKER).is_file():
        atomic_write_json(folder / MARKER, {"format": MARKER_FORMAT, "mtssl": mtssl.__version__})


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files of killed writes of mtssl's own files in ``folder`` (hold the lock).

    Only mtssl's temp names (``.<own name>.<pid>.tmp``, :func:`mtssl.files.is_own_temp`) are touched: a
    user's ``draft.tmp`` stays.
    """
    folder = Path(folder)
    stale = remove_own(folder, [n for n in _own_files(folder) if is_own_temp(n)])
    for path in stale:
        log.warning("removed %s, left by a write that was killed", path)
    return stale


def clear_run(folder: str | Path) -> list[Path]:
    """Remove the files a run wrote from ``folder`` (hold the lock), leaving anything else there: a file
    is removed only when its name is one of mtssl's (:func:`mtssl.files.remove_own`)."""
    folder = Path(folder)
    removed = remove_own(folder, [n for n in _own_files(folder) if n not in (LOCK_NAME, MARKER)])
    log.warning("removed the run in %s (--overwrite): %d files", folder, len(removed))
    return removed


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
        line = json.dumps(strict_json(record), allow_nan=False) + "\n"
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
            atomic_write(path, "".join(line + "\n" for line in raw))
        return kept


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float as ``None``: strict JSON has no ``NaN`` token, and a
    reader (``jq``, a browser, ``json.loads(..., parse_constant=...)``) should not need to know ours."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


# Keys that change how a run is watched, where it runs or how often it is saved, not what it computes:
# the sampler's batches do not depend on the workers, checkpoints and logs draw no random numbers, the
# finiteness check only reads the losses, and the windows of a test are summed in the same order in any
# batch. ``run`` is the provenance record ``config.yaml`` carries, rewritten by every run.
FREE_TO_CHANGE = (
    "train.progress",
    "train.num_workers",
    "train.device",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.tensorboard",
    "train.nan_check_every",
    "eval.batch_size",
)


def config_changes(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every key that differs (missing is ``None``),
    except :data:`FREE_TO_CHANGE`."""
    a, b = _flatten(saved), _flatten(new)
    return {
        key: (a.get(key), b.get(key))
        for key in sorted({*a, *b})
        if a.get(key) != b.get(key) and key not in FREE_TO_CHANGE and not key.startswith("run.")
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
