"""Testing a model: one evaluator for training-time selection, the final test and ``mtssl evaluate``.

Nothing here imports the training loop: ``mtssl evaluate`` builds the model from the checkpoint's
config (:mod:`mtssl.engine.build`), loads its weights, and tests it with the run's
:class:`~mtssl.engine.spec.InferenceSpec`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mtssl.config import apply_overrides, build_dataclass
from mtssl.engine import distributed
from mtssl.engine.build import RunConfig, build_components, build_recipe, build_run_model, inference_spec, seed_run
from mtssl.engine.checkpoint import CheckpointError, check_state_fits, load_checkpoint, load_state_checked
from mtssl.engine.progress import case_progress
from mtssl.engine.protocol import EvalConfig, distance_unit, evaluate_cases, summarize
from mtssl.engine.records import RunFolderError, RunLock, strict_json
from mtssl.engine.spec import InferenceSpec
from mtssl.files import atomic_write, atomic_write_json
from mtssl.model import MultiTaskModel
from mtssl.tasks.outputs import head_of

__all__ = [
    "SELECTIONS",
    "Evaluator",
    "evaluate_run",
    "evaluation_folder",
    "resolve_checkpoint",
    "window_predictor",
    "write_metrics",
]

SELECTIONS = {
    "last": "last iteration",
    "val": "best validation Dice",
    "test": "best TEST Dice (selected on the test set)",
}


def window_predictor(
    model: MultiTaskModel, output: str, device: torch.device, amp: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(n, C, *patch)`` windows to ``output``'s ``(n, K, *patch)`` foreground probabilities (no grad;
    bf16 autocast with ``amp``): the one window prediction of testing and of ``mtssl.load``."""
    task = model.tasks[head_of(output)]

    @torch.no_grad()
    def predict(windows: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return task.to_seg(model(windows)[output].float())

    return predict


class Evaluator:
    """Tests a model on whole cases with a run's inference spec and eval config.

    Under DDP (``torchrun``) each rank tests every ``world_size``-th case and every rank gets all the
    rows, in the cases' order.
    """

    def __init__(
        self, model: MultiTaskModel, spec: InferenceSpec, config: EvalConfig, device: torch.device, amp: bool = False
    ) -> None:
        self.model, self.spec, self.config, self.device, self.amp = model, spec, config, device, amp

    def predict_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``(n, C, *patch)`` windows to the tested output's ``(n, K, *patch)`` probabilities."""
        return window_predictor(self.model, self.spec.output, self.device, self.amp)

    def evaluate(
        self, cases: Sequence[dict[str, Any]], split: str = "test", selection: str = "last", progress: bool = False
    ) -> dict[str, Any]:
        """The summary (means, per class, per case) of testing ``cases``; ``selection`` names how the
        weights were chosen (a key of :data:`SELECTIONS`)."""
        dist = distributed.current()
        dist.broadcast_buffers(self.model)  # the ranks test the checkpoint's model: rank 0's statistics
        n = len(cases) if self.config.max_cases is None else min(len(cases), self.config.max_cases)
        mine = range(dist.rank, n, dist.world_size)
        was_training = self.model.training
        self.model.eval()
        rows = evaluate_cases(
            self.predict_fn(),
            case_progress((cases[i] for i in mine), len(mine), split, progress and dist.main),
            dataclasses.replace(self.config, max_cases=None),
            self.spec.patch,
            self.spec.num_classes,
            self.spec.softmax,
            self.device,
            self.spec.physical_spacing,
            self.spec.slice_size,
        )
        self.model.train(was_training)
        if dist.enabled:
            order = {case: k for k, case in enumerate(cases.ids)}
            rows = sorted((r for part in dist.gather(rows) for r in part), key=lambda r: (order[r["case"]], r["class"]))
        ndim = cases[0]["label"].ndim if n else self.spec.spatial_dims  # a 2D model may test 3D volumes (ACDC)
        summary = summarize(rows, distance_unit(self.spec.physical_spacing, ndim), SELECTIONS[selection])
        summary["class_names"] = {str(c): name for c, name in enumerate(self.spec.class_names, 1)}
        return summary


def write_metrics(out: Path, summary: Mapping[str, Any]) -> None:
    """``metrics.json`` (means, per class, per case, empty predictions; an undefined value is ``null``:
    strict JSON has no NaN token) and a per-case ``metrics.csv`` (NaN kept, which CSV readers take),
    each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", strict_json(summary))
    rows = summary["per_case"]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["case"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "metrics.csv", text.getvalue())


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's ``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
    path = Path(path)
    if path.is_file():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise CheckpointError(f"no checkpoint at {path} (give a .pt file or a run folder with checkpoints/)")


EVALUATION_RECORD = "evaluation.json"


def evaluation_folder(run_dir: Path, overrides: Sequence[str]) -> Path:
    """Where ``mtssl evaluate`` writes by default: ``<run>/evaluations/<name>``, ``default`` without
    overrides, else the overrides spelled out (with a short hash where that name is long), so that
    the training-time ``metrics.json`` is never replaced and each evaluation keeps its own files."""
    if not overrides:
        return run_dir / "evaluations" / "default"
    name = re.sub(r"[^A-Za-z0-9_.=,-]+", "-", "_".join(overrides)).strip("-")
    if len(name) > 60:
        name = f"{name[:50]}-{hashlib.sha256(' '.join(overrides).encode()).hexdigest()[:8]}"
    return run_dir / "evaluations" / name


def _check_destination(folder: Path) -> None:
    """Refuse to write metrics into a folder whose ``metrics.json`` an evaluation did not write (a
    training run's own, or a user's file)."""
    if (folder / "metrics.json").exists() and not (folder / EVALUATION_RECORD).is_file():
        raise RunFolderError(
            f"{folder / 'metrics.json'} was not written by mtssl evaluate (a training run's metrics, or "
            "another file), and is never replaced: leave out --out (the evaluation goes to the run's "
            "evaluations/ folder) or give another folder"
        )


def check_state_before_building(cfg: RunConfig, state: Mapping[str, Any], source: str) -> None:
    """Compare the checkpoint's weights with the model its config describes, built on the ``meta`` device
    (no memory), so that a config asking for a far larger model than its weights fails before anything
    is allocated."""
    try:
        spec = InferenceSpec.from_checkpoint(state)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    with torch.device("meta"):
        model = build_run_model(cfg, build_recipe(cfg), spec.in_channels, spec.spatial_dims, spec.num_classes)
    check_state_fits(model, state["model"], source)


def evaluate_run(target: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None) -> dict[str, Any]:
    """Test a saved run or checkpoint with its own config (plus ``overrides``); returns the summary.

    The metrics go to ``out``, or by default to the run's ``evaluations/<name>/``
    (:func:`evaluation_folder`), beside an ``evaluation.json`` recording the checkpoint and the
    overrides. A training run's own ``metrics.json`` is never replaced.
    """
    ckpt = resolve_checkpoint(target)
    state = load_checkpoint(ckpt)
    if not isinstance(state.get("config"), Mapping):
        raise CheckpointError(
            f"{ckpt} holds no run config (its run was built from Python objects): test it with "
            "mtssl.engine.evaluator.Evaluator and your own model"
        )
    config = apply_overrides(state["config"], overrides)
    run_dir = ckpt.parent.parent
    dest = Path(out) if out is not None else evaluation_folder(run_dir, overrides)
    _check_destination(dest)
    with RunLock(run_dir):  # not while a training run writes the same folder
        cfg = build_dataclass(RunConfig, config)
        device = distributed.pick_device(cfg.train.device)
        check_state_before_building(cfg, state, str(ckpt))
        seed_run(cfg.train, device)
        recipe, data, model = build_components(cfg)
        load_state_checked(model, state["model"], str(ckpt))
        model.to(device)
        cuda = device.type == "cuda"
        if cuda and cfg.train.channels_last:
            model.to_channels_last()
        evaluator = Evaluator(
            model, inference_spec(recipe, data, model, cfg.eval), cfg.eval, device, cfg.train.amp and cuda
        )
        summary = evaluator.evaluate(data.test, "test", cfg.eval.select, progress=cfg.train.progress)
        summary["checkpoint"] = str(ckpt)
        dest.mkdir(parents=True, exist_ok=True)
        record = {"checkpoint": str(ckpt), "overrides": list(overrides), "iteration": state.get("iteration")}
        atomic_write_json(dest / EVALUATION_RECORD, record)
        write_metrics(dest, summary)
    summary["written_to"] = str(dest)
    return summary
