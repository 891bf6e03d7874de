"""Testing a model: one evaluator for training-time selection, the final test and ``mtssl evaluate``.

Nothing here imports the training loop: ``mtssl evaluate`` builds the model from the checkpoint's
config (:mod:`mtssl.engine.build`), loads its weights, and tests it with the run's
:class:`~mtssl.engine.spec.InferenceSpec`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mtssl.config import apply_overrides, build_dataclass
from mtssl.engine import distributed
from mtssl.engine.build import RunConfig, build_components, inference_spec, seed_run
from mtssl.engine.checkpoint import CheckpointError, load_checkpoint, load_state_checked
from mtssl.engine.evaluate import EvalConfig, evaluate_cases, summarize
from mtssl.engine.progress import case_progress
from mtssl.engine.records import RunLock
from mtssl.engine.spec import InferenceSpec
from mtssl.model import MultiTaskModel

__all__ = ["SELECTIONS", "Evaluator", "evaluate_run", "resolve_checkpoint", "window_predictor", "write_metrics"]

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
    task = model.tasks[output.split("/")[0]]

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
        )
        self.model.train(was_training)
        if dist.enabled:
            order = {case: k for k, case in enumerate(cases.ids)}
            rows = sorted((r for part in dist.gather(rows) for r in part), key=lambda r: (order[r["case"]], r["class"]))
        return summarize(rows, "mm" if self.spec.physical_spacing else "voxels", SELECTIONS[selection])


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
    if not isinstance(state.get("config"), Mapping):
        raise CheckpointError(
            f"{ckpt} holds no run config (its run was built from Python objects): test it with "
            "mtssl.engine.evaluator.Evaluator and your own model"
        )
    config = apply_overrides(state["config"], overrides)
    run_dir = Path(out) if out is not None else ckpt.parent.parent
    with RunLock(run_dir):  # not while a training run writes the same folder
        cfg = build_dataclass(RunConfig, config)
        device = distributed.pick_device(cfg.train.device)
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
        write_metrics(run_dir, summary)
    return summary
