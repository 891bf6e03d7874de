"""The recipe-agnostic trainer: it owns the step (AMP, backward, optimizer, EMA) and the checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

import mtssl
from mtssl.config import ConfigError, build_dataclass
from mtssl.data.dataset import SegmentationData
from mtssl.engine import distributed
from mtssl.engine.checkpoint import CheckpointError, load_checkpoint, load_state_checked, save_checkpoint
from mtssl.engine.ema import EMATeacher
from mtssl.engine.evaluate import EvalConfig, evaluate_cases, summarize
from mtssl.engine.optim import LRSchedule, Optimizer, build_optimizer
from mtssl.engine.records import RunLog, config_changes
from mtssl.model import MultiTaskModel, backbone_section, build_model
from mtssl.recipes.base import Recipe, term_names
from mtssl.registry import DATASETS, RECIPES
from mtssl.strategies.context import StepContext
from mtssl.tasks.seg import Segmentation

__all__ = [
    "RunConfig",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "backbone_config",
    "build_components",
    "build_recipe",
    "build_run_model",
    "fit_backbone_to_data",
    "named_section",
]


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT arrived; a checkpoint was saved at ``iteration``."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by signal {signum} at iteration {iteration}; saved {checkpoint}")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop's options (the literature's LA values by default).

    Under ``torchrun`` the batch sizes are per rank; ``sync_batchnorm`` (CUDA only) shares batch
    statistics across ranks and ``find_unused_parameters`` is DDP's option of that name, for
    recipes that leave a head out of some steps. ``keep_checkpoints`` is how many periodic
    checkpoints are kept: ``last.pt`` and the ``keep_checkpoints - 1`` before it
    (``checkpoints/iter-<N>.pt``), which a resume falls back to when ``last.pt`` is damaged.
    ``tensorboard`` also writes every log record and the test metrics as TensorBoard scalars
    under ``<run>/tensorboard`` (needs the ``tensorboard`` package: ``pip install mtssl[tensorboard]``).
    """

    iterations: int = 6000
    batch_size: int = 4
    labeled_bs: int = 2
    optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)
    lr_schedule: LRSchedule = dataclasses.field(default_factory=LRSchedule)
    grad_clip: float | None = None
    amp: bool = True
    channels_last: bool = True
    deterministic: bool = False
    seed: int = 1337
    num_workers: int = 0
    device: str = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = False
    log_every: int = 50
    nan_check_every: int = 50
    nan_policy: Literal["stop", "skip"] = "stop"
    progress: bool = True
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        for key in ("iterations", "batch_size", "labeled_bs", "checkpoint_every", "log_every", "nan_check_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be a positive integer, got {getattr(self, key)}")
        if self.labeled_bs > self.batch_size:
            raise ConfigError(
                f"train.labeled_bs ({self.labeled_bs}) is larger than train.batch_size ({self.batch_size}): "
                "the labeled samples are part of each batch"
            )
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be at least 1 (last.pt), got {self.keep_checkpoints}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: ``recipe``, ``model``, ``data`` (registry names plus options), ``train`` and ``eval``."""

    recipe: dict[str, Any]
    data: dict[str, Any]
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def named_section(section: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """A config section's registry ``name`` and the rest of its options (``where`` names it in errors)."""
    options = dict(section)
    if "name" not in options:
        raise ConfigError(f"{where} needs a name")
    return options.pop("name"), options


def build_recipe(cfg: RunConfig) -> Recipe:
    """The configured recipe."""
    name, options = named_section(cfg.recipe, "recipe")
    return RECIPES.create(name, **options)


def backbone_config(cfg: RunConfig, recipe: Recipe) -> dict[str, Any]:
    """The backbone section to build (with its ``name``): the recipe's options under the config's,
    unless the config picks another backbone."""
    chosen = backbone_section(cfg.model.get("backbone"))
    same = chosen.get("name", recipe.backbone["name"]) == recipe.backbone["name"]
    return {**dict(recipe.backbone), **chosen} if same else chosen


def fit_backbone_to_data(backbone: dict[str, Any], in_channels: int, spatial_dims: int) -> dict[str, Any]:
    """The backbone section with the data's ``in_channels`` and ``spatial_dims``, refusing other values."""
    backbone = dict(backbone)
    for key, value in (("spatial_dims", spatial_dims), ("in_channels", in_channels)):
        if backbone.get(key, value) != value:
            raise ConfigError(
                f"model.backbone.{key} is {backbone[key]} but the data set's is {value}: "
                f"{'2D data needs a 2D backbone and 3D data a 3D one; ' if key == 'spatial_dims' else ''}"
                f"remove model.backbone.{key} (it follows the data)"
            )
        backbone.setdefault(key, value)
    return backbone


def build_run_model(
    cfg: RunConfig, recipe: Recipe, in_channels: int, spatial_dims: int, num_classes: int
) -> MultiTaskModel:
    """The recipe's heads on the configured backbone (``vnet`` by default), sized for the data."""
    backbone = fit_backbone_to_data(backbone_config(cfg, recipe), in_channels, spatial_dims)
    overrides = dict(cfg.model.get("tasks") or {})
    unknown = [k for k in overrides if k not in recipe.tasks]
    if unknown:
        raise ConfigError(f"model.tasks.{unknown[0]}: the recipe's heads are {', '.join(recipe.tasks)}")
    tasks = {
        head: {"num_classes": num_classes, **dict(options), **dict(overrides.get(head) or {})}
        for head, options in recipe.tasks.items()
    }
    return build_model({"backbone": backbone, "tasks": tasks})


def build_components(cfg: RunConfig) -> tuple[Recipe, SegmentationData, MultiTaskModel]:
    """The recipe, the data and the model that a config describes (the model's heads fit the data)."""
    recipe = build_recipe(cfg)
    data_name, data_options = named_section(cfg.data, "data")
    data = DATASETS.create(data_name, **data_options)
    return recipe, data, build_run_model(cfg, recipe, data.in_channels, data.spatial_dims, data.num_classes)


def git_revision() -> str | None:
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


def _plain(value: Any) -> Any:
    """Dataclasses and tuples as plain YAML/JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Trainer:
    """Trains a recipe on a data set and evaluates it, writing everything into ``out``.

    Args:
        config: the run's config mapping (validated into :class:`RunConfig`).
        out: the run folder: ``config.yaml``, ``split.json``, ``log.jsonl``, ``checkpoints/``,
            ``metrics.json`` and ``metrics.csv``.
        resume: continue from ``out/checkpoints/last.pt`` when it exists (from the newest earlier
            checkpoint when ``last.pt`` is damaged).
        allow_config_change: resume even where ``config`` differs from the checkpoint's (otherwise
            refused, naming the keys); the change is recorded in ``out/config_changes.jsonl``.
    """

    def __init__(
        self, config: Mapping[str, Any], out: str | Path, resume: bool = False, allow_config_change: bool = False
    ) -> None:
        self.raw = _plain(config)
        self.cfg = build_dataclass(RunConfig, config)
        self.out = Path(out)
        tc = self.cfg.train
        self.dist = distributed.current()
        self.device = self.dist.device if self.dist.enabled else distributed.pick_device(tc.device)
        if tc.sync_batchnorm and self.device.type != "cuda":
            raise ConfigError(
                "train.sync_batchnorm needs CUDA: SyncBatchNorm has no CPU implementation (gloo ranks keep "
                "their own batch statistics); set train.sync_batchnorm=false"
            )
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(tc.seed)
        self.recipe, self.data, model = build_components(self.cfg)
        self.cuda = self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.cuda and tc.channels_last:
            self.model.to_channels_last()
        # Every rank keeps its own EMA teacher; DDP keeps the students equal, so the teachers stay equal.
        self.teacher = (
            EMATeacher(self.model, self.recipe.teacher.decay, self.recipe.teacher.mode) if self.recipe.teacher else None
        )
        self.net: torch.nn.Module = self.model  # what the step calls: the model, or its DDP wrapper
        if self.dist.enabled:
            torch.manual_seed(tc.seed + self.dist.rank)  # own dropout masks per rank; weights come from rank 0
            if tc.sync_batchnorm:
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.cuda else None,
                find_unused_parameters=tc.find_unused_parameters,
            )
        self.optimizer = build_optimizer(self.model.parameters(), tc.optimizer)
        self.loader = self.data.loader(
            tc.batch_size,
            tc.labeled_bs,
            tc.num_workers,
            tc.seed,
            pin_memory=self.cuda,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.sampler = self.loader.batch_sampler
        self.iteration, self.epoch, self.batch_in_epoch, self.best = 0, 0, 0, -math.inf
        self.skipped, self._signal = 0, None
        self.term_names = term_names(self.recipe.terms)
        self._writer: Any = None  # the TensorBoard writer, opened on first use
        if tc.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "train.tensorboard needs the tensorboard package: pip install 'mtssl[tensorboard]' "
                    "(or set train.tensorboard=false; log.jsonl has the same numbers)"
                ) from None
        self._saved_at: int | None = None  # the iteration of the last.pt this trainer wrote or resumed from
        self.ckpt_dir = self.out / "checkpoints"
        if resume:
            found = self._load_resume_state()
            if found is None:
                log.warning("no checkpoint in %s; starting from scratch", self.ckpt_dir)
            else:
                self._check_config(found[1], allow_config_change)
                self._restore(*found)

    # ----- checkpoints -------------------------------------------------------------------------
    def preprocessing(self) -> dict[str, Any]:
        """Everything inference needs besides the weights."""
        seg = self.model.tasks[self.recipe.evaluate.split("/")[0]]
        patch = list(self.cfg.eval.patch or self.data.patch)
        return {
            **self.data.preprocessing,
            "patch": patch,
            "stride": list(self.cfg.eval.stride or [max(p // 2, 1) for p in patch]),
            "in_channels": self.data.in_channels,
            "spatial_dims": self.data.spatial_dims,
            "num_classes": self.data.num_classes,
            "class_names": [str(c) for c in range(1, self.data.num_classes + 1)],
            "softmax": bool(isinstance(seg, Segmentation) and seg.softmax),
            "output": self.recipe.evaluate,
            "threshold": self.cfg.eval.threshold,
            "lcc": self.cfg.eval.lcc,
            "physical_spacing": self.data.physical_spacing,
        }

    def _rng(self) -> dict[str, torch.Tensor]:
        rng = {"torch": torch.get_rng_state()}
        if self.cuda:
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (every rank's RNG state: call it on every rank under DDP)."""
        rng_ranks = self.dist.gather(self._rng())
        return {
            "iteration": self.iteration,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best,
            "skipped": self.skipped,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "teacher": self.teacher.model.state_dict() if self.teacher else None,
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
            "config": self.raw,
            "preprocessing": self.preprocessing(),
        }

    def history(self) -> list[Path]:
        """The earlier checkpoints kept beside ``last.pt``, newest first."""
        return sorted(self.ckpt_dir.glob("iter-*.pt"), reverse=True)

    def _load_resume_state(self) -> tuple[Path, dict[str, Any]] | None:
        """``last.pt``, or the newest earlier checkpoint that loads when ``last.pt`` is missing or damaged."""
        last = self.ckpt_dir / "last.pt"
        failure = None
        for path in [last, *self.history()]:
            if not path.is_file():
                continue
            try:
                state = load_checkpoint(path, self.device)
            except CheckpointError as exc:
                log.warning("%s; trying the checkpoint before it", exc)
                failure = exc
                continue
            if path != last:
                log.warning("resuming from %s, the newest checkpoint that loads", path)
            return path, state
        if failure is not None:
            raise CheckpointError(f"no checkpoint in {self.ckpt_dir} loads; the last failure: {failure}")
        return None

    def _check_config(self, state: Mapping[str, Any], allowed: bool) -> None:
        """Refuse a resume whose config differs from the checkpoint's, unless ``allowed`` (then record it)."""
        saved = state.get("config")
        if not isinstance(saved, Mapping):
            return
        try:
            before = _plain(build_dataclass(RunConfig, saved))
        except ConfigError:
            before = dict(saved)  # written by another mtssl version: compare it as it is
        changes = config_changes(before, _plain(self.cfg))
        if not changes:
            return
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in list(changes.items())[:6]))
        more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
        if not allowed:
            raise ConfigError(
                f"--resume with a config that differs from the checkpoint's in {len(changes)} key(s): {listed}{more}. "
                f"Resume with the run's own config ({self.out / 'config.yaml'}), or pass --allow-config-change "
                "to continue with the new values"
            )
        log.warning("resuming with a changed config: %s%s", listed, more)
        if self.dist.main:
            record = {"iteration": int(state["iteration"]), "changed": {k: list(v) for k, v in changes.items()}}
            with open(self.out / "config_changes.jsonl", "a") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        load_state_checked(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None:
            self.teacher.model.load_state_dict(state["teacher"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.dist.world_size:
            rng = ranks[self.dist.rank]
            torch.set_rng_state(rng["torch"].cpu())
            if self.cuda and isinstance(rng.get("cuda"), torch.Tensor):
                torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        else:  # another number of ranks: the weights resume exactly, the dropout masks cannot
            log.warning(
                "checkpoint saved by %d ranks, resuming on %d: fresh RNG streams", len(ranks), self.dist.world_size
            )
            torch.manual_seed(self.cfg.train.seed + 7919 * int(state["iteration"]) + self.dist.rank)
        self.iteration, self.epoch = int(state["iteration"]), int(state["epoch"])
        self.batch_in_epoch, self.best = int(state["batch_in_epoch"]), float(state["best"])
        self.skipped = int(state.get("skipped", 0))
        if path.name == "last.pt":
            self._saved_at = self.iteration
        log.info("resumed at iteration %d from %s", self.iteration, path)

    def save(self, name: str = "last.pt") -> Path:
        """Write ``checkpoints/<name>`` atomically (rank 0; every rank must call it under DDP).

        Before ``last.pt`` is replaced, the one it replaces stays as ``iter-<N>.pt`` (a hard link, so it
        costs no space until the new one lands), up to ``train.keep_checkpoints - 1`` of them.
        """
        state, path = self.state(), self.ckpt_dir / name
        if self.dist.main:
            if name == "last.pt":
                self._keep_previous(path)
            save_checkpoint(path, state)
            if name == "last.pt":
                self._saved_at = self.iteration
        self.dist.barrier()  # nobody reads it before it is there
        return path

    def _keep_previous(self, last: Path) -> None:
        keep = self.cfg.train.keep_checkpoints - 1
        if keep > 0 and last.is_file():
            previous = self._saved_at
            if previous is None:  # a last.pt this trainer did not write or resume from
                try:
                    previous = int(load_checkpoint(last)["iteration"])
                except CheckpointError as exc:  # a damaged last.pt is not worth keeping
                    log.warning("not kept: %s", exc)
            if previous is not None:
                kept = self.ckpt_dir / f"iter-{previous:07d}.pt"
                if previous != self.iteration and not kept.exists():
                    try:
                        os.link(last, kept)
                    except OSError:  # a file system without hard links
                        shutil.copy2(last, kept)
        for old in self.history()[max(keep, 0) :]:
            old.unlink(missing_ok=True)

    # ----- the step ----------------------------------------------------------------------------
    def _forward_teacher(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.teacher is not None
        return self.teacher(image)

    def step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss components (no host sync)."""
        tc = self.cfg.train
        image = batch["image"].to(self.device, non_blocking=True)
        if self.cuda and tc.channels_last:
            fmt = torch.channels_last_3d if image.ndim == 5 else torch.channels_last
            image = image.contiguous(memory_format=fmt)
        label = batch["label"].to(self.device, non_blocking=True)
        lr = tc.lr_schedule(tc.optimizer.lr, self.iteration, tc.iterations)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.amp and self.cuda):
            outputs = self.net(image)
            ctx = StepContext(
                image=image,
                label=label,
                labeled=batch["labeled"].to(self.device, non_blocking=True),
                outputs=outputs,
                tasks=self.model.tasks,
                iteration=self.iteration,
                teacher=self._forward_teacher if self.teacher else None,
                model=self.model,
                extra={"n_labeled": int(batch["labeled"].sum())},  # a CPU tensor: no device sync
            )
            total = torch.zeros((), device=self.device)
            parts: dict[str, torch.Tensor] = {}
            for term in self.recipe.terms:
                weight = term.weight(self.iteration)
                for name, value in term.fn(ctx).items():
                    parts[name] = value.detach().float()
                    total = total + weight * value.float()
        self.optimizer.zero_grad(set_to_none=True)
        # A host sync per step, by choice; the ranks skip together so DDP's all-reduce stays paired.
        if tc.nan_policy == "skip" and self.dist.any(not bool(torch.isfinite(total))):
            self.skipped += 1
            return {}
        total.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        if self.teacher is not None:
            self.teacher.update(self.model, self.iteration)
        parts["total"] = total.detach()
        return parts

    # ----- the loop ----------------------------------------------------------------------------
    def write_run_files(self) -> None:
        """``config.yaml`` (the resolved config, versions, git revision, seed) and ``split.json``."""
        if not self.dist.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        resolved = {
            **self.raw,
            "train": _plain(self.cfg.train),
            "eval": _plain(self.cfg.eval),
            "run": {
                "mtssl": mtssl.__version__,
                "torch": str(torch.__version__),
                "cuda": torch.version.cuda,
                "numpy": _version("numpy"),
                "python": platform.python_version(),
                "git_revision": git_revision(),
                "seed": self.cfg.train.seed,
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "labeled": list(self.data.split.labeled),
                "labeled_choice": self.data.split.how,
            },
        }
        (self.out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        self.data.split.save(self.out / "split.json")

    def fit(self) -> None:
        """Train to ``train.iterations``, checkpointing, logging and (optionally) selecting on val/test."""
        tc = self.cfg.train
        log.info("checked %d cases", self.data.check())  # a bad case fails now, not mid-run or after training
        self.write_run_files()
        if self.dist.main:
            RunLog.trim(self.out / "log.jsonl", self.iteration)
        self._sums: dict[str, torch.Tensor] = {}
        self._count, self._tick, self._start_it = 0, time.perf_counter(), self.iteration
        main = self.dist.main
        progress = _Progress(tc.iterations, self.iteration, enabled=tc.progress and main)
        log_file = RunLog(self.out / "log.jsonl") if main else nullcontext()
        with _StopOnSignals(self), progress, log_file:
            while self.iteration < tc.iterations:
                self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch)
                for batch in self.loader:
                    self._after_step(self.step(batch), progress, log_file)
                    if self.iteration >= tc.iterations:
                        break
                else:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    continue
                break

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        """Write the numeric ``values`` as TensorBoard scalars at ``step`` (rank 0, with ``train.tensorboard``)."""
        if not (self.cfg.train.tensorboard and self.dist.main):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run drops what a killed one wrote past its checkpoint
            self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.iteration or None)
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("iteration",):
                self._writer.add_scalar(prefix + key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _after_step(self, parts: dict[str, torch.Tensor], progress: _Progress, log_file: Any) -> None:
        tc = self.cfg.train
        self.iteration += 1
        self.batch_in_epoch += 1
        for k, v in parts.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += bool(parts)
        if parts and self.iteration % tc.nan_check_every == 0:
            self._check_finite(parts)
        if self.iteration % tc.log_every == 0 or self.iteration == tc.iterations:
            self._log(progress, log_file)
        if self.cfg.eval.select != "last" and self.iteration % self.cfg.eval.select_every == 0:
            self._select()
        saved = self.iteration % tc.checkpoint_every == 0 or self.iteration == tc.iterations
        if saved:
            self.save()
        if self.dist.any(self._signal is not None):  # every rank stops after the same step
            path = self.ckpt_dir / "last.pt" if saved else self.save()
            raise TrainingInterrupted(self._signal or 15, self.iteration, path)

    def _log(self, progress: _Progress, log_file: Any) -> None:
        now, count = time.perf_counter(), max(self._count, 1)
        names = sorted(self._sums)
        means = torch.stack([self._sums[k] for k in names]) / count if names else torch.zeros(0)
        if self.dist.enabled and names:  # the mean over the ranks (the same names on every rank)
            torch.distributed.all_reduce(means)
            means /= self.dist.world_size
        values = dict(zip(names, means.tolist()))
        record = {
            "iteration": self.iteration,
            "lr": self.optimizer.param_groups[0]["lr"],
            "it_per_s": (self.iteration - self._start_it) / max(now - self._tick, 1e-9),
            # the iterations these means cover: after a resume, only those since the resume
            "window": [self._start_it + 1, self.iteration],
            "skipped_steps": self.skipped,
            **{f"loss/{k}": v for k, v in values.items()},
            **{f"weight/{n}": t.weight(self.iteration - 1) for n, t in zip(self.term_names, self.recipe.terms)},
        }
        self._check_finite({k: torch.tensor(v) for k, v in values.items()})
        if self.dist.main:
            log_file.write(record)
            self.scalars(record, self.iteration)
            progress.update(self.iteration, record)
        self._sums, self._count, self._tick, self._start_it = {}, 0, now, self.iteration

    def _check_finite(self, parts: Mapping[str, torch.Tensor]) -> None:
        values = torch.stack([v.float() for v in parts.values()])
        bad_here = not bool(torch.isfinite(values).all())
        if not self.dist.any(bad_here):
            return
        hint = "lower the learning rate, enable grad_clip, set train.nan_policy=skip, or check the data"
        if not bad_here:
            raise FloatingPointError(f"a loss term is not finite on another rank at iteration {self.iteration}; {hint}")
        bad = next(k for k, v in parts.items() if not math.isfinite(float(v)))
        where = f" on rank {self.dist.rank}" if self.dist.enabled else ""
        raise FloatingPointError(
            f"loss term {bad!r} is {float(parts[bad])} at iteration {self.iteration}{where}; {hint}"
        )

    # ----- evaluation --------------------------------------------------------------------------
    def predict_fn(self, model: MultiTaskModel | None = None):
        model = model or self.model
        output = self.recipe.evaluate
        task = model.tasks[output.split("/")[0]]

        @torch.no_grad()
        def predict(windows: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.amp and self.cuda):
                return task.to_seg(model(windows)[output].float())

        return predict

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Test the current weights on ``split`` (``"test"`` or ``"val"``).

        Under DDP each rank tests every ``world_size``-th case and every rank gets all the rows.
        """
        cases = self.data.test if split == "test" else self.data.val
        n = len(cases) if self.cfg.eval.max_cases is None else min(len(cases), self.cfg.eval.max_cases)
        mine = range(self.dist.rank, n, self.dist.world_size)
        self.model.eval()
        pre = self.preprocessing()
        shown = self.cfg.train.progress and self.dist.main
        rows = evaluate_cases(
            self.predict_fn(),
            _case_progress((cases[i] for i in mine), len(mine), split, shown),
            dataclasses.replace(self.cfg.eval, max_cases=None),
            self.data.patch,
            self.data.num_classes,
            pre["softmax"],
            self.device,
            self.data.physical_spacing,
        )
        self.model.train()
        if self.dist.enabled:
            order = {case: k for k, case in enumerate(cases.ids)}
            rows = sorted(
                (r for part in self.dist.gather(rows) for r in part), key=lambda r: (order[r["case"]], r["class"])
            )
        selection = {
            "last": "last iteration",
            "val": "best validation Dice",
            "test": "best TEST Dice (selected on the test set)",
        }
        return summarize(rows, "mm" if self.data.physical_spacing else "voxels", selection[self.cfg.eval.select])

    def _select(self) -> None:
        split = self.cfg.eval.select
        if split == "val" and not len(self.data.val):
            raise ConfigError("eval.select: val needs a validation split: set data.val to a fraction or a list file")
        means = self.evaluate(split)["mean"]
        self.scalars(means, self.iteration, prefix=f"{split}/")
        score = means["dice"] or 0.0
        if score > self.best:
            self.best = score
            self.save("best.pt")

    def final_weights(self) -> None:
        """Load the selected checkpoint's weights (best on val/test) before the final test."""
        self.dist.barrier()
        if self.cfg.eval.select != "last" and (self.ckpt_dir / "best.pt").is_file():
            best = self.ckpt_dir / "best.pt"
            load_state_checked(self.model, load_checkpoint(best, self.device)["model"], str(best))


class _Progress:
    """Training progress, refreshed when the losses are logged.

    On a terminal: a rich bar whose count, speed and ETA come first and never get cut; the losses
    show as the total and, in the room left, as many terms as fit (folded away first on a narrow
    terminal). Elsewhere (a log file, a CI job): one plain line per log record.
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

    def __enter__(self) -> _Progress:
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
        elif self.enabled:
            self.console.print(
                f"train {iteration}/{self.total} {speed} eta {eta} {self.losses(record)}",
                highlight=False,
                soft_wrap=True,
            )


def _case_progress(items: Any, total: int, split: str, enabled: bool, console: Any = None) -> Any:
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


class _StopOnSignals:
    """SIGTERM and SIGINT ask the loop to checkpoint and stop after the current step (main thread only)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.previous = trainer, {}

    def __enter__(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.trainer._signal = signum

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
