"""Atomic, checksummed checkpoints loaded with ``weights_only=True``.

A file is ``MAGIC`` + the SHA-256 of the payload (64 hex digits) + the ``torch.save`` payload. It is
written to a temp file in the same folder, fsynced, then renamed over the old one, so a crash, a
kill or a full disk mid-write leaves the previous checkpoint intact and no temp file behind; a file
damaged later fails its checksum at load.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mtssl.engine.records import CheckpointError  # defined there: the CLI names it without importing torch
from mtssl.files import atomic_write, remove_own

__all__ = [
    "CheckpointError",
    "CheckpointFolder",
    "check_state_fits",
    "checkpoint_history",
    "find_resumable",
    "keep_previous",
    "load_checkpoint",
    "load_state_checked",
    "restore_rng",
    "rng_state",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT = "mtssl-checkpoint-1"
MAGIC = b"MTSSLCK1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically with a checksum (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    try:
        atomic_write(path, MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload)
    except OSError as exc:
        kept = "the previous checkpoint is intact" if path.is_file() else "no checkpoint was written"
        raise CheckpointError(
            f"could not write {path} ({exc.strerror or exc}); {kept}; free space or fix the folder, then --resume"
        ) from exc
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
    check_state_fits(module, state, source)
    module.load_state_dict(state)


def check_state_fits(module: torch.nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Fail with the missing, unexpected and mismatched keys unless ``state`` fits ``module``'s
    parameters and buffers (``module`` may live on the ``meta`` device: only shapes are compared)."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors")
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


def checkpoint_history(folder: Path) -> list[Path]:
    """The earlier checkpoints kept beside ``last.pt`` (``iter-<N>.pt``), newest first."""
    return sorted((p for p in folder.glob("iter-*.pt") if re.fullmatch(r"iter-\d{7,}\.pt", p.name)), reverse=True)


def find_resumable(folder: Path, device: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """``folder/last.pt``, or the newest earlier checkpoint that loads when ``last.pt`` is missing or
    damaged; ``None`` when there is none at all."""
    last = folder / "last.pt"
    failure = None
    for path in [last, *checkpoint_history(folder)]:
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path, device)
        except CheckpointError as exc:
            log.warning("%s; trying the checkpoint before it", exc)
            failure = exc
            continue
        if path != last:
            log.warning("resuming from %s, the newest checkpoint that loads", path)
        return path, state
    if failure is not None:
        raise CheckpointError(f"no checkpoint in {folder} loads; the last failure: {failure}")
    return None


def keep_previous(last: Path, previous: int | None, iteration: int, keep: int) -> None:
    """Before ``last`` is replaced at ``iteration``, keep it as ``iter-<previous>.pt`` (a hard link: no
    space until the new one lands) and drop all but the ``keep`` newest kept ones.

    ``previous`` is the iteration ``last`` holds, when the caller knows it (else it is read, and a
    damaged ``last`` is not kept).
    """
    if keep > 0 and last.is_file():
        if previous is None:
            try:
                previous = int(load_checkpoint(last)["iteration"])
            except CheckpointError as exc:
                log.warning("not kept: %s", exc)
        if previous is not None:
            kept = last.parent / f"iter-{previous:07d}.pt"
            if previous != iteration and not kept.exists():
                try:
                    os.link(last, kept)
                except OSError:  # a file system without hard links
                    shutil.copy2(last, kept)
    dropped = checkpoint_history(last.parent)[max(keep, 0) :]
    remove_own(last.parent.parent, [f"{last.parent.name}/{old.name}" for old in dropped])


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG state (and CUDA's on a CUDA device)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(
    ranks: list[dict[str, torch.Tensor]], rank: int, world_size: int, device: torch.device, seed: int
) -> None:
    """Set this rank's RNG state from a checkpoint's per-rank states; with another number of ranks
    the weights resume exactly but the dropout masks cannot, so fresh streams are seeded from ``seed``."""
    if len(ranks) == world_size:
        rng = ranks[rank]
        torch.set_rng_state(rng["torch"].cpu())
        if device.type == "cuda" and isinstance(rng.get("cuda"), torch.Tensor):
            torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
    else:
        log.warning("checkpoint saved by %d ranks, resuming on %d: fresh RNG streams", len(ranks), world_size)
        torch.manual_seed(seed + rank)


class CheckpointFolder:
    """A run's ``checkpoints/``: ``last.pt`` replaced atomically with the ``keep - 1`` before it kept as
    ``iter-<N>.pt``, and ``best.pt``. Rank 0 writes; under DDP every rank calls :meth:`save`."""

    def __init__(self, folder: Path, keep: int, dist: Any) -> None:
        self.folder, self.keep, self.dist = folder, keep, dist
        self.saved_at: int | None = None  # the iteration of the last.pt written or resumed from here

    def save(self, state: dict[str, Any], name: str = "last.pt") -> Path:
        """Write ``state`` as ``name``; a replaced ``last.pt`` is kept as ``iter-<N>.pt`` first."""
        path = self.folder / name
        if self.dist.main:
            if name == "last.pt":
                keep_previous(path, self.saved_at, int(state["iteration"]), self.keep - 1)
            save_checkpoint(path, state)
            if name == "last.pt":
                self.saved_at = int(state["iteration"])
        self.dist.barrier()  # nobody reads it before it is there
        return path

    def resume(self, device: str | torch.device) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to resume from (:func:`find_resumable`), or ``None``."""
        found = find_resumable(self.folder, device)
        if found is not None and found[0].name == "last.pt":
            self.saved_at = int(found[1]["iteration"])
        return found
