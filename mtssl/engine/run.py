"""Whole runs: train then test, or test a saved run, writing ``metrics.json`` and ``metrics.csv``."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from mtssl.config import apply_overrides, build_dataclass
from mtssl.engine import distributed
from mtssl.engine.checkpoint import CheckpointError, load_checkpoint, load_state_checked
from mtssl.engine.records import RunFolderError, RunLock, clear_run, holds_run, remove_stale_temp_files
from mtssl.engine.trainer import (
    RunConfig,
    Trainer,
    backbone_config,
    build_recipe,
    fit_backbone_to_data,
    named_section,
)
from mtssl.registry import BACKBONES, DATASETS

__all__ = ["evaluate_run", "plan_run", "resolve_checkpoint", "train_run", "write_metrics"]


def _null_nan(value: Any) -> Any:
    """NaN as ``None``: strict JSON has no NaN token (``metrics.csv`` keeps NaN, which CSV readers take)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _null_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_nan(v) for v in value]
    return value


def write_metrics(out: Path, summary: Mapping[str, Any]) -> None:
    """``metrics.json`` (means, per class, per case, empty predictions; an undefined value is ``null``)
    and a per-case ``metrics.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(_null_nan(summary), indent=1, allow_nan=False))
    tmp.replace(out / "metrics.json")
    rows = summary["per_case"]
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)


def train_run(
    config: Mapping[str, Any],
    out: str | Path,
    resume: bool = False,
    allow_config_change: bool = False,
    overwrite: bool = False,
) -> dict[str, Any] | None:
    """Train, then test on the test split (if any) with the selected weights; returns the summary.

    A folder that already holds a run is never overwritten silently: without ``resume`` (continue
    it) or ``overwrite`` (remove its files first) it is refused. The run folder is locked for the
    whole run (:class:`~mtssl.engine.records.RunLock`: a second process fails naming this one's
    pid), and the temp files of killed writes are removed first.
    Started by ``torchrun`` (``WORLD_SIZE`` > 1), every rank joins the process group for the run:
    DDP training, sharded testing, and rank 0 writing (and locking) the folder.
    """
    device = str(dict(config.get("train") or {}).get("device", "auto"))
    with distributed.session(device) as dist, RunLock(out) if dist.main else nullcontext():
        if dist.main:
            remove_stale_temp_files(out)
            if holds_run(out) and not resume:
                if not overwrite:
                    raise RunFolderError(
                        f"{out} holds a run already; --resume to continue it, --overwrite to replace it, "
                        "or another --out"
                    )
                clear_run(out)
        # The trainer (whose DDP wrapper holds the process group) lives only inside this call, so it is
        # freed before the session destroys the group.
        return _train_and_test(config, Path(out), resume, allow_config_change, dist.main)


def _train_and_test(
    config: Mapping[str, Any], out: Path, resume: bool, allow_config_change: bool, main: bool
) -> dict[str, Any] | None:
    trainer = Trainer(config, out, resume=resume, allow_config_change=allow_config_change)
    try:
        trainer.fit()
        if not len(trainer.data.test):
            return None
        trainer.final_weights()
        summary = trainer.evaluate("test")
        if main:
            write_metrics(out, summary)
            trainer.scalars(summary["mean"], trainer.iteration, prefix="test/")
        return summary
    finally:
        trainer.close()


def plan_run(config: Mapping[str, Any], check_data: bool = True) -> dict[str, Any]:
    """Validate a run config without building the model or training; describe what would run.

    Checks the whole config against :class:`~mtssl.engine.trainer.RunConfig`, builds the recipe
    (cheap), and checks the data set's and the backbone's options against their registries. With
    ``check_data`` it also builds the data set and checks every case (shapes, dtypes, NaN/Inf, label
    values, channels), one at a time, as a training run does before its first step.
    """
    cfg = build_dataclass(RunConfig, config)
    recipe = build_recipe(cfg)
    data_name, data_options = named_section(cfg.data, "data")
    name, backbone = named_section(backbone_config(cfg, recipe), "model.backbone")
    checked = None
    if check_data:
        data = DATASETS.create(data_name, **data_options)  # validates the options, then loads
        checked = data.check()
        BACKBONES.validate(name, **fit_backbone_to_data(backbone, data.in_channels, data.spatial_dims))
    else:
        DATASETS.validate(data_name, **data_options)
        # The data set sets in_channels and spatial_dims at run time; stand-ins where the backbone requires them.
        required = {k for k, v in BACKBONES.get(name).defaults().items() if v is dataclasses.MISSING}
        stand_ins = {k: v for k, v in {"in_channels": 1, "spatial_dims": 3}.items() if k in required}
        BACKBONES.validate(name, **{**stand_ins, **backbone})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "recipe": str(cfg.recipe["name"]),
        "terms": [getattr(t.fn, "__name__", type(t.fn).__name__) for t in recipe.terms],
        "heads": list(recipe.tasks),
        "backbone": name,
        "data": data_name,
        "iterations": cfg.train.iterations,
        "batch_per_rank": cfg.train.batch_size,
        "labeled_per_rank": cfg.train.labeled_bs,
        "ranks": world,
        "device": cfg.train.device,
        "cases_checked": checked,
    }


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
    path = Path(path)
    if path.is_file():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise CheckpointError(f"no checkpoint at {path} (give a .pt file or a run folder with checkpoints/)")


def evaluate_run(target: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None) -> dict[str, Any]:
    """Test a saved run or checkpoint with its own config (plus overrides); writes the metrics files."""
    ckpt = resolve_checkpoint(target)
    state = load_checkpoint(ckpt)
    config = apply_overrides(state["config"], overrides)
    run_dir = Path(out) if out is not None else ckpt.parent.parent
    with RunLock(run_dir):  # not while a training run writes the same folder
        trainer = Trainer(config, run_dir)
        load_state_checked(trainer.model, state["model"], str(ckpt))
        summary = trainer.evaluate("test")
        summary["checkpoint"] = str(ckpt)
        write_metrics(run_dir, summary)
    return summary
