"""Whole training runs: train then test, writing ``metrics.json`` and ``metrics.csv``; and dry runs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mtssl.config import ConfigError
from mtssl.engine import distributed
from mtssl.engine.build import (
    backbone_config,
    build_recipe,
    build_run_model,
    fit_backbone_to_data,
    inference_spec,
    named_section,
    run_config,
)
from mtssl.engine.evaluator import write_metrics
from mtssl.engine.records import (
    RunFolderError,
    RunLock,
    check_foreign,
    claim_run,
    clear_run,
    holds_run,
    remove_stale_temp_files,
)
from mtssl.engine.trainer import Trainer
from mtssl.nets.shapes import SizeError
from mtssl.recipes.base import term_names
from mtssl.registry import BACKBONES, DATASETS

if TYPE_CHECKING:
    from mtssl.data.dataset import SegmentationData
    from mtssl.engine.build import RunConfig
    from mtssl.model import MultiTaskModel
    from mtssl.recipes.base import Recipe

__all__ = ["plan_run", "prepare_run_folder", "train_run"]


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
    plan_run(config, check_data=False)  # a bad config fails before the run folder is touched
    device = str(dict(config.get("train") or {}).get("device", "auto"))
    with distributed.session(device) as dist, RunLock(out) if dist.main else nullcontext():
        if dist.main:
            prepare_run_folder(Path(out), resume, overwrite)
        # The trainer (whose DDP wrapper holds the process group) lives only inside this call, so it is
        # freed before the session destroys the group.
        return _train_and_test(config, Path(out), resume, allow_config_change, dist.main)


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a run (hold its lock): refuse a folder of someone else's files, refuse or
    clear (``overwrite``) a finished run unless ``resume``, remove the debris of killed writes, and mark
    it as a run. Only files mtssl wrote are ever removed (:func:`mtssl.files.remove_own`)."""
    check_foreign(out)
    if holds_run(out):
        remove_stale_temp_files(out)
        if not resume:
            if not overwrite:
                raise RunFolderError(
                    f"{out} holds a run already; --resume to continue it, --overwrite to replace it, or another --out"
                )
            clear_run(out)
    claim_run(out)


def _train_and_test(
    config: Mapping[str, Any], out: Path, resume: bool, allow_config_change: bool, main: bool
) -> dict[str, Any] | None:
    trainer = Trainer.from_config(config, out, resume=resume, allow_config_change=allow_config_change)
    try:
        trainer.fit()
        if not len(trainer.data.test):
            return None
        trainer.final_weights()
        summary = trainer.evaluate("test")
        if main:
            write_metrics(out, summary)
            trainer.tensorboard.scalars(summary["mean"], trainer.iteration, prefix="test/")
        return summary
    finally:
        trainer.close()


def first_step(cfg: RunConfig, recipe: Recipe, data: SegmentationData, model: MultiTaskModel) -> list[str]:
    """One training step (forward, every term, backward) of a small batch at the configured patch, on the
    CPU: up to 2 labeled (+ up to 2 unlabeled) crops, as many as the configured batch has, so that batch
    normalisation sees what it will see in the run. Returns the step's loss names. A shape, head or term
    error surfaces here, in ``--dry-run``, instead of at a run's first step. The model it trains is thrown
    away (a dry run trains nothing); the global RNG is put back."""
    import tempfile

    labeled = min(cfg.train.labeled_bs, 2)
    unlabeled = min(cfg.train.batch_size - cfg.train.labeled_bs, 2) if recipe.uses_unlabeled else 0
    tc = dataclasses.replace(
        cfg.train, batch_size=labeled + unlabeled, labeled_bs=labeled, device="cpu", num_workers=0, tensorboard=False
    )
    with torch.random.fork_rng(), tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, recipe, data, tmp, tc, cfg.eval)
        batch = next(iter(trainer.loader))
        try:
            losses = trainer.step(batch)
        except SizeError as exc:  # the crop is the configured patch: name the key and the size to set
            raise ConfigError(
                f"data.patch {list(batch['image'].shape[2:])}: {exc}; set data.patch to {list(exc.nearest)}"
            ) from exc
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            shape = tuple(batch["image"].shape)
            raise ConfigError(
                f"one training step of a batch of shape {shape} (the configured patch) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            trainer.close()
    return sorted(name for name in losses if name != "total")


def plan_run(config: Mapping[str, Any], check_data: bool = True) -> dict[str, Any]:
    """Validate a run config without building the model or training; describe what would run.

    Checks the whole config against :class:`~mtssl.engine.build.RunConfig`, builds the recipe
    (cheap), and checks the data set's and the backbone's options against their registries. With
    ``check_data`` it also builds the data set and checks every case (shapes, dtypes, NaN/Inf, label
    values, channels), one at a time, as a training run does before its first step.
    """
    cfg = run_config(config)
    recipe = build_recipe(cfg)
    data_name, data_options = named_section(cfg.data, "data")
    name, backbone = named_section(backbone_config(cfg, recipe), "model.backbone")
    checked = None
    if check_data:
        data = DATASETS.create(data_name, **data_options)  # validates the options, then loads
        checked = data.check()
        BACKBONES.validate(name, **fit_backbone_to_data(backbone, data.in_channels, data.spatial_dims))
        # The model itself: the tasks' options, the heads' classes, and the tested output.
        model = build_run_model(cfg, recipe, data.in_channels, data.spatial_dims, data.num_classes)
        inference_spec(recipe, data, model, cfg.eval)
        losses = first_step(cfg, recipe, data, model)
    else:
        DATASETS.validate(data_name, **data_options)
        # The data set sets in_channels and spatial_dims at run time; stand-ins where the backbone requires them.
        required = {k for k, v in BACKBONES.get(name).defaults().items() if v is dataclasses.MISSING}
        stand_ins = {k: v for k, v in {"in_channels": 1, "spatial_dims": 3}.items() if k in required}
        BACKBONES.validate(name, **{**stand_ins, **backbone})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "recipe": str(cfg.recipe["name"]),
        "terms": term_names(recipe.terms),
        "heads": list(recipe.tasks),
        "backbone": name,
        "data": data_name,
        "iterations": cfg.train.iterations,
        "batch_per_rank": cfg.train.batch_size,
        "labeled_per_rank": cfg.train.labeled_bs,
        "ranks": world,
        "device": cfg.train.device,
        "cases_checked": checked,
        **({"first_step_losses": losses} if check_data else {}),
    }
