"""Atomic, checksummed checkpoints loaded with ``weights_only=True``.

A file is ``MAGIC`` + the SHA-256 of the payload (64 hex digits) + the ``torch.save`` payload. It is
written to a temp file in the same folder, fsynced, then renamed over the old one, so a crash, a
kill or a full disk mid-write leaves the previous checkpoint intact and no temp file behind; a file
damaged later fails its checksum at load.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "load_state_checked", "save_checkpoint"]

FORMAT = "mtssl-checkpoint-1"
MAGIC = b"MTSSLCK1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, corrupt or of another model."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically with a checksum (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        kept = "the previous checkpoint is intact" if path.is_file() else "no checkpoint was written"
        raise CheckpointError(
            f"could not write {path} ({exc.strerror or exc}); {kept}; free space or fix the folder, then --resume"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs from the file) after checking its checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an mtssl checkpoint (no {MAGIC.decode()} header)")
    digest, payload = data[len(MAGIC) : len(MAGIC) + 64].decode(errors="replace"), data[len(MAGIC) + 64 :]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt (checksum mismatch); use an earlier checkpoint")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's own message suggests weights_only=False, which would run the file's code: keep only its reason.
        reason = re.search(r"WeightsUnpickler error: ([^\n]*?)\.(?:\s|$)", str(exc))
        raise CheckpointError(
            f"{path} is refused: it holds a pickled object that a weights-only load does not allow"
            f"{f' ({reason.group(1)})' if reason else ''}. Loading it could run code, so mtssl never does; "
            "use a checkpoint that mtssl wrote"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable mtssl checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mtssl checkpoint (no '{FORMAT}' marker)")
    return state


def load_state_checked(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)``, failing with the missing, unexpected and mismatched keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{title} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise CheckpointError(
            f"{source} does not fit this model (another recipe, backbone or class count?); " + "; ".join(parts)
        )
    module.load_state_dict(state)
