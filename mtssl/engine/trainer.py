"""The recipe-agnostic training loop: it owns the step (AMP, backward, optimizer, EMA), the loop and the
checkpoints, and takes everything else built (:mod:`mtssl.engine.build` builds it from a config)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from mtssl.config import ConfigError
from mtssl.data.dataset import SegmentationData
from mtssl.engine import distributed
from mtssl.engine.build import (
    TrainConfig,
    build_components,
    inference_spec,
    plain,
    resolved_config,
    run_config,
    seed_run,
)
from mtssl.engine.checkpoint import CheckpointFolder, load_checkpoint, load_state_checked, restore_rng, rng_state
from mtssl.engine.ema import EMATeacher
from mtssl.engine.evaluator import Evaluator
from mtssl.engine.meters import LossMeans, NonFiniteLossError, TensorBoard, check_finite
from mtssl.engine.optim import build_optimizer
from mtssl.engine.progress import StopOnSignals, TrainingInterrupted, TrainProgress
from mtssl.engine.protocol import EvalConfig
from mtssl.engine.provenance import write_run_files
from mtssl.engine.records import RunLog, check_foreign, check_resume_config, claim_run
from mtssl.model import MultiTaskModel
from mtssl.recipes.base import Recipe, term_names
from mtssl.terms.context import StepContext

__all__ = ["Trainer", "TrainingInterrupted"]

log = logging.getLogger(__name__)


class Trainer:
    """Trains a built model with a recipe on a data set, writing the run folder ``out``.

    Args:
        model: the multi-task model (its heads named as the recipe's ``tasks``).
        recipe: the loss terms and their weight schedules.
        data: the data set (training stream, test and validation cases).
        out: the run folder: ``config.yaml``, ``split.json``, ``log.jsonl``, ``checkpoints/``.
        train: the loop's options (default: the literature's LA values).
        eval: the test's options (default: the literature's protocol).
        config: the run config the objects were built from, recorded in ``config.yaml`` and in the
            checkpoints so that ``mtssl evaluate`` and ``mtssl.load`` can rebuild the model; ``None``
            for objects built in Python (then test with :class:`~mtssl.engine.evaluator.Evaluator`).
        resume: continue from ``out/checkpoints/last.pt`` when it exists (from the newest earlier
            checkpoint when ``last.pt`` is damaged).
        allow_config_change: resume even where ``config`` differs from the checkpoint's (otherwise
            refused, naming the keys); the change is recorded in ``out/config_changes.jsonl``.

    Seed the global RNG before building the model; :meth:`from_config` seeds with ``train.seed``.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        recipe: Recipe,
        data: SegmentationData,
        out: str | Path,
        train: TrainConfig | None = None,
        eval: EvalConfig | None = None,
        config: Mapping[str, Any] | None = None,
        resume: bool = False,
        allow_config_change: bool = False,
    ) -> None:
        tc = self.train_config = train or TrainConfig()
        self.eval_config = eval or EvalConfig()
        self.raw = plain(config) if config is not None else None
        # ramps set as a fraction of the run ("until") become iterations of this run
        self.recipe, self.data, self.out = recipe.for_run(tc.iterations), data, Path(out)
        self.dist = distributed.current()
        self.device = self.dist.pick_device(tc.device)
        if tc.sync_batchnorm and self.device.type != "cuda":
            raise ConfigError(
                "train.sync_batchnorm needs CUDA: SyncBatchNorm has no CPU implementation (gloo ranks keep "
                "their own batch statistics); set train.sync_batchnorm=false"
            )
        self.cuda = self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.cuda and tc.channels_last:
            self.model.to_channels_last()
        # Every rank keeps its own EMA teacher; DDP keeps the students equal, so the teachers stay equal.
        self.teacher = EMATeacher(self.model, recipe.teacher.decay, recipe.teacher.mode) if recipe.teacher else None
        # net: what the step calls (the model, or its DDP wrapper)
        self.model, self.net = self.dist.wrap(self.model, tc.seed, tc.sync_batchnorm, tc.find_unused_parameters)
        self.optimizer = build_optimizer(self.model.parameters(), tc.optimizer)
        rank, world = self.dist.rank, self.dist.world_size
        self.loader = data.loader(tc.batch_size, tc.labeled_bs, tc.num_workers, tc.seed, self.cuda, rank, world)
        self.sampler = self.loader.batch_sampler
        self.spec = inference_spec(recipe, data, self.model, self.eval_config)
        self.evaluator = Evaluator(self.model, self.spec, self.eval_config, self.device, tc.amp and self.cuda)
        self.iteration, self.epoch, self.batch_in_epoch, self.best = 0, 0, 0, -math.inf
        self.skipped, self._signals = 0, StopOnSignals()
        self.tensorboard = TensorBoard(self.out / "tensorboard", enabled=tc.tensorboard and self.dist.main)
        self.checkpoints = CheckpointFolder(self.out / "checkpoints", tc.keep_checkpoints, self.dist)
        if resume:
            found = self.checkpoints.resume(self.device)
            if found is None:
                log.warning("no checkpoint in %s; starting from scratch", self.ckpt_dir)
            else:
                self._check_config(found[1], allow_config_change)
                self._restore(*found)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], out: str | Path, resume: bool = False, allow_config_change: bool = False
    ) -> Trainer:
        """The trainer of a run config (validated into :class:`~mtssl.engine.build.RunConfig`): seeds with
        ``train.seed``, then builds the recipe, the data and the model."""
        cfg = run_config(config)
        seed_run(cfg.train, distributed.current().pick_device(cfg.train.device))
        recipe, data, model = build_components(cfg)
        return cls(model, recipe, data, out, cfg.train, cfg.eval, config, resume, allow_config_change)

    ckpt_dir = property(lambda self: self.checkpoints.folder, doc="The run's ``checkpoints/`` folder.")

    @property
    def recipe(self) -> Recipe:
        """The loss terms and their schedules. Setting another recipe renames the terms and checks its
        loss names again at the next step."""
        return self._recipe

    @recipe.setter
    def recipe(self, recipe: Recipe) -> None:
        self._recipe = recipe
        self.term_names = term_names(recipe.terms)  # weight/<name> in the log
        self._losses_checked = False

    def _check_losses(self, term_name: str, term: Any, names: Any, given_by: dict[str, str]) -> None:
        """A term's loss names, on the first step: none taken by another term (the log would keep one of
        the two and hide the other), each named after the term (so the log joins weight/<name> to it)."""
        own = getattr(term, "name", None)
        for name in names:
            if name in given_by:
                raise ConfigError(
                    f"the terms {given_by[name]} and {term_name} both return a loss named {name!r}: "
                    "two terms computing the same loss on the same heads; drop one (a term's weight scales it)"
                )
            if isinstance(own, str) and name != own and not name.startswith(own + "_"):
                raise ConfigError(
                    f"the term {term_name} returned a loss named {name!r}: a term's losses are named "
                    f"{own!r} or {own!r}_<part>, so that the log joins weight/{own} to them"
                )
            given_by[name] = term_name

    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (every rank's RNG state: call it on every rank under DDP)."""
        rng_ranks = self.dist.gather(rng_state(self.device))
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
            "inference": self.spec.to_dict(),
        }

    def _check_config(self, state: Mapping[str, Any], allowed: bool) -> None:
        """Refuse a resume whose config differs from the checkpoint's, unless ``allowed`` (then record it)."""
        saved = state.get("config")
        if isinstance(saved, Mapping) and self.raw is not None:
            before, after = resolved_config(saved), resolved_config(self.raw)
            check_resume_config(before, after, self.out, int(state["iteration"]), allowed, self.dist.main)

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        load_state_checked(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None:
            self.teacher.model.load_state_dict(state["teacher"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        seed = self.train_config.seed + 7919 * int(state["iteration"])
        restore_rng(ranks, self.dist.rank, self.dist.world_size, self.device, seed)
        self.iteration, self.epoch = int(state["iteration"]), int(state["epoch"])
        self.batch_in_epoch, self.best = int(state["batch_in_epoch"]), float(state["best"])
        self.skipped = int(state.get("skipped", 0))
        log.info("resumed at iteration %d from %s", self.iteration, path)

    def save(self, name: str = "last.pt") -> Path:
        """Write ``checkpoints/<name>`` atomically (rank 0; every rank must call it under DDP); a replaced
        ``last.pt`` stays as ``iter-<N>.pt``, up to ``train.keep_checkpoints - 1`` of them."""
        return self.checkpoints.save(self.state(), name)

    def step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the detached loss components (no host sync)."""
        tc = self.train_config
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
            ctx = StepContext(
                image=image,
                label=label,
                outputs=self.net(image),
                tasks=self.model.tasks,
                iteration=self.iteration,
                n_labeled=int(batch["labeled"].sum()),  # a CPU tensor: no device sync
                spacing=batch.get("spacing"),
                case=tuple(batch.get("case", ())),
                teacher=self.teacher,
                model=self.model,
            )
            total = torch.zeros((), device=self.device)
            parts: dict[str, torch.Tensor] = {}
            given_by: dict[str, str] = {}
            for term_name, term in zip(self.term_names, self.recipe.terms):
                weight = term.weight(self.iteration)
                losses = term.fn(ctx)
                if not self._losses_checked:
                    self._check_losses(term_name, term.fn, losses, given_by)
                for name, value in losses.items():
                    parts[name] = value.detach().float()
                    total = total + weight * value.float()
            self._losses_checked = True
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

    def fit(self) -> None:
        """Train to ``train.iterations``, checkpointing, logging and (optionally) selecting on val/test."""
        tc = self.train_config
        log.info("checked %d cases", self.data.check())  # a bad case fails now, not mid-run or after training
        if self.dist.main:  # config.yaml (the resolved config, versions, git revision, seed) and split.json
            check_foreign(self.out)  # never over a user's config.yaml or log.jsonl
            claim_run(self.out)
            write_run_files(self.out, self.raw, tc, self.eval_config, self.device, self.dist.world_size, self.data)
        if self.dist.main:
            RunLog.trim(self.out / "log.jsonl", self.iteration)
        self._means = LossMeans(self.iteration)
        main = self.dist.main
        progress = TrainProgress(tc.iterations, self.iteration, enabled=tc.progress and main)
        log_file = RunLog(self.out / "log.jsonl") if main else nullcontext()
        with self._signals, progress, log_file:
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
        if self.iteration and self.skipped >= self.iteration:
            raise NonFiniteLossError(
                f"all {self.iteration} steps were skipped as not finite (train.nan_policy: skip): the model never "
                "trained, so it is not tested; lower the learning rate, enable grad_clip, or check the data"
            )

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        self.tensorboard.close()

    def _after_step(self, parts: dict[str, torch.Tensor], progress: TrainProgress, log_file: Any) -> None:
        tc = self.train_config
        self.iteration += 1
        self.batch_in_epoch += 1
        self._means.add(parts)
        if parts and self.iteration % tc.nan_check_every == 0:
            check_finite(parts, self.iteration, self.dist)
        if self.iteration % tc.log_every == 0 or self.iteration == tc.iterations:
            self._log(progress, log_file)
        if self.eval_config.select != "last" and self.iteration % self.eval_config.select_every == 0:
            self._select(log_file)
        saved = self.iteration % tc.checkpoint_every == 0 or self.iteration == tc.iterations
        if saved:
            self.save()
        signum = self._signals.signum
        if self.dist.any(signum is not None):  # every rank stops after the same step
            path = self.ckpt_dir / "last.pt" if saved else self.save()
            raise TrainingInterrupted(signum or 15, self.iteration, path)

    def _log(self, progress: TrainProgress, log_file: Any) -> None:
        weights = {n: t.weight(self.iteration - 1) for n, t in zip(self.term_names, self.recipe.terms)}
        lr = self.optimizer.param_groups[0]["lr"]
        values, record = self._means.record(self.iteration, lr, self.skipped, weights, self.dist)
        check_finite({k: torch.tensor(v) for k, v in values.items()}, self.iteration, self.dist)
        if self.dist.main:
            log_file.write(record)
            self.tensorboard.scalars(record, self.iteration)
            progress.update(self.iteration, record)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Test the current weights on ``split`` (``"test"`` or ``"val"``); every rank gets all the rows."""
        cases = self.data.test if split == "test" else self.data.val
        shown = self.train_config.progress
        return self.evaluator.evaluate(cases, split, self.eval_config.select, progress=shown)

    def _select(self, log_file: Any) -> None:
        """Score ``eval.select``'s split and keep ``best.pt``; ``log.jsonl`` gets the score and the best."""
        split = self.eval_config.select
        if split == "val" and not len(self.data.val):
            raise ConfigError("eval.select: val needs a validation split: set data.val to a fraction or a list file")
        means = self.evaluate(split)["mean"]
        self.tensorboard.scalars(means, self.iteration, prefix=f"{split}/")
        score = means["dice"] or 0.0
        if score > self.best:
            self.best = score
            self.save("best.pt")
        if self.dist.main:
            log_file.write({"iteration": self.iteration, f"{split}/dice": score, f"{split}/best_dice": self.best})

    def final_weights(self) -> None:
        """Load the selected checkpoint's weights (best on val/test) before the final test."""
        self.dist.barrier()
        if self.eval_config.select != "last" and (self.ckpt_dir / "best.pt").is_file():
            best = self.ckpt_dir / "best.pt"
            load_state_checked(self.model, load_checkpoint(best, self.device)["model"], str(best))
