"""Where a run came from: ``config.yaml`` (the resolved config, versions, git revision, seed) and ``split.json``."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

import mtssl
from mtssl.data.dataset import SegmentationData
from mtssl.engine.build import TrainConfig, plain
from mtssl.engine.protocol import EvalConfig
from mtssl.files import atomic_write

__all__ = ["git_revision", "write_run_files"]


def git_revision() -> str | None:
    """The mtssl checkout's git revision, when it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_run_files(
    out: Path,
    config: Mapping[str, Any] | None,
    train: TrainConfig,
    eval: EvalConfig,
    device: torch.device,
    world_size: int,
    data: SegmentationData,
) -> None:
    """``out/config.yaml``: the run ``config`` (none for objects built in Python) with the resolved
    ``train`` and ``eval`` sections and a ``run`` record; ``out/split.json``: the labeled cases."""
    out.mkdir(parents=True, exist_ok=True)
    resolved = {
        **dict(config or {}),
        "train": plain(train),
        "eval": plain(eval),
        "run": {
            "mtssl": mtssl.__version__,
            "torch": str(torch.__version__),
            "cuda": torch.version.cuda,
            "numpy": _version("numpy"),
            "python": platform.python_version(),
            "git_revision": git_revision(),
            "seed": train.seed,
            "device": str(device),
            "world_size": world_size,
            "labeled": list(data.split.labeled),
            "labeled_choice": data.split.how,
        },
    }
    atomic_write(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    data.split.save(out / "split.json")
