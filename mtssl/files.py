"""The files mtssl writes: atomic writes, the names it owns, and the one function that deletes.

mtssl deletes or overwrites only files it wrote itself. Two rules make that checkable:

- Every file mtssl writes into a run folder has a name from :data:`OWN_NAMES` (a pattern per file,
  relative to the folder), and every temp file of an atomic write is ``.<name>.<pid>.tmp`` beside
  its target, where ``<name>`` is again one of mtssl's names. A user's ``draft.tmp`` or
  ``checkpoints/my_model.pth`` matches neither.
- :func:`remove_own` is the only function in the package that removes files (``grep -rn "unlink\\|rmtree"
  mtssl`` finds it alone), and it refuses any path whose name is not mtssl's.

:func:`atomic_write` writes a temp file, fsyncs it and renames it over the target, so a kill or a
full disk leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "OWN_NAMES",
    "atomic_write",
    "atomic_write_json",
    "is_own",
    "is_own_temp",
    "remove_own",
    "temp_name",
]

# Every file mtssl writes into a run folder, a bench cell or a grid folder (paths relative to it).
OWN_NAMES = (
    r"\.mtssl-run",
    r"\.lock",
    r"config\.yaml",
    r"split\.json",
    r"log\.jsonl",
    r"metrics\.json",
    r"metrics\.csv",
    r"config_changes\.jsonl",
    r"timing\.json",
    r"checkpoints/(last|best)\.pt",
    r"checkpoints/iter-\d{7,}\.pt",
    r"tensorboard/events\.out\.tfevents\.[^/]+",
    r"evaluations/[^/]+/(evaluation\.json|metrics\.json|metrics\.csv)",
)
_OWN = re.compile(r"(?:" + "|".join(OWN_NAMES) + r")")
_TEMP = re.compile(r"\.(?P<name>[^/]+)\.\d+\.tmp")


def temp_name(path: Path) -> Path:
    """The temp file an atomic write of ``path`` goes through: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_own(relative: str | Path) -> bool:
    """Whether ``relative`` (a path inside a run folder, with ``/``) names a file mtssl writes."""
    return _OWN.fullmatch(Path(relative).as_posix()) is not None


def is_own_temp(relative: str | Path) -> bool:
    """Whether ``relative`` is the temp file of an atomic write of one of mtssl's files."""
    rel = Path(relative)
    match = _TEMP.fullmatch(rel.name)
    return match is not None and is_own(rel.parent / match["name"])


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a fsynced temp file renamed over it (see the module doc).

    Raises:
        OSError: the write failed (a full disk, a read-only folder); ``path`` is as it was, and the
            temp file is gone.
    """
    path = Path(path)
    tmp = temp_name(path)
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            remove_own(path.parent, [tmp.name], temp_of=path.name)
    return path


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    """``value`` as strict JSON (no ``NaN`` token: a NaN must be ``None`` first), written atomically."""
    return atomic_write(path, json.dumps(value, indent=indent, allow_nan=False))


def remove_own(folder: str | Path, names: Iterable[str | Path], temp_of: str | None = None) -> list[Path]:
    """Remove the files ``names`` (relative to ``folder``) that mtssl wrote; return those removed.

    A name that is not one of mtssl's (:data:`OWN_NAMES`, or the temp file of one) is refused with
    ``ValueError``, whatever the caller meant: this is where "never delete a user's file" is enforced.
    A folder left empty by the removal (``checkpoints/``, ``tensorboard/``) is removed too.
    ``temp_of`` names the file a temp file belongs to, for an atomic write outside a run folder.
    """
    folder = Path(folder)
    removed = []
    for name in names:
        rel = Path(name)
        own = is_own(rel) or is_own_temp(rel)
        if not own and temp_of is not None:
            match = _TEMP.fullmatch(rel.name)
            own = match is not None and match["name"] == temp_of
        if not own:
            raise ValueError(f"refusing to remove {folder / rel}: mtssl did not write a file of that name")
        path = folder / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
            parent = path.parent
            if parent != folder and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    return removed
