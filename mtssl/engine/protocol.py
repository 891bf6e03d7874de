"""The literature's test protocol: sliding window, threshold or argmax, largest component, four metrics."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from mtssl import metrics
from mtssl.data.resample import to_native
from mtssl.engine.sliding_window import slice_by_slice, sliding_window

__all__ = ["EvalConfig", "evaluate_cases", "largest_component", "probabilities_to_labels", "summarize"]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How a model is tested.

    Attributes:
        patch: window size (default: the training patch).
        stride: window step (default: half the patch); LA's is (18, 18, 4).
        batch_size: windows per forward pass.
        blend: ``"constant"`` (averaged, the literature's) or ``"gaussian"``.
        threshold: for sigmoid outputs.
        lcc: keep the largest connected component of each class (DTC, SS-Net, BCP).
        select: ``"last"`` checkpoint, best on ``"val"``, or best on ``"test"`` (optimistic; named so).
        select_every: iterations between selection evaluations.
        max_cases: test only the first N cases (for quick checks).
    """

    patch: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    batch_size: int = 8
    blend: Literal["constant", "gaussian"] = "constant"
    threshold: float = 0.5
    lcc: bool = True
    select: Literal["last", "val", "test"] = "last"
    select_every: int = 1000
    max_cases: int | None = None

    def __post_init__(self) -> None:
        from mtssl.config import ConfigError

        for key in ("patch", "stride"):
            sizes = getattr(self, key)
            if sizes is not None and any(s < 1 for s in sizes):
                raise ConfigError(f"eval.{key} must hold positive sizes, got {list(sizes)}")
        for key in ("batch_size", "select_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key} must be a positive integer, got {getattr(self, key)}")
        if self.max_cases is not None and self.max_cases < 0:
            raise ConfigError(f"eval.max_cases must be >= 0 (0: no test) or null (all cases), got {self.max_cases}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"eval.threshold must lie strictly between 0 and 1, got {self.threshold}")


def probabilities_to_labels(probs: torch.Tensor, softmax: bool, threshold: float) -> torch.Tensor:
    """``(K, *S)`` foreground probabilities to a ``(*S)`` label map (0 = background).

    Softmax: the argmax over the background ``1 - sum(p)`` and the classes. Sigmoid: the most likely
    class where it exceeds ``threshold``.
    """
    background = (1 - probs.sum(0, keepdim=True)) if softmax else torch.full_like(probs[:1], threshold)
    if not softmax and probs.shape[0] == 1:
        return (probs[0] > threshold).long()
    return torch.cat([background, probs]).argmax(0)


def largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep, per class, only the largest connected component (full connectivity, as skimage's default)."""
    from scipy import ndimage

    out = np.zeros_like(labels)
    structure = np.ones((3,) * labels.ndim, bool)
    for c in range(1, num_classes + 1):
        components, n = ndimage.label(labels == c, structure=structure)
        if n:
            sizes = np.bincount(components.ravel())[1:]
            out[components == int(sizes.argmax()) + 1] = c
    return out


def evaluate_cases(
    predict: Callable[[torch.Tensor], torch.Tensor],
    cases: Iterable[dict[str, Any]],
    cfg: EvalConfig,
    patch: Sequence[int],
    num_classes: int,
    softmax: bool,
    device: torch.device,
    physical_spacing: bool = False,
    slice_size: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Per case and class: dice, jaccard, hd95, asd (NaN where a distance is undefined) and emptiness.

    Args:
        predict: ``(n, C, *patch)`` windows to ``(n, K, *patch)`` foreground probabilities.
        cases: items with ``image`` ``(C, *S)``, ``label`` ``(*S)``, ``spacing`` and ``case``.
        cfg: the protocol.
        patch: the default window.
        num_classes: K.
        softmax: whether the probabilities are softmax classes (argmax) or sigmoids (threshold).
        device: where the windows run and accumulate.
        physical_spacing: report distances in the cases' spacing (mm) rather than voxels.
        slice_size: a stack of 2D slices (an image with one spatial axis more than the window, for a
            2D network) is predicted slice by slice, each zoomed to this size first (None: slid over
            at its own size); see :func:`~mtssl.engine.sliding_window.slice_by_slice`.
    """
    window = tuple(cfg.patch or patch)
    stride = tuple(cfg.stride or tuple(max(p // 2, 1) for p in window))
    rows = []
    for i, item in enumerate(cases):
        if cfg.max_cases is not None and i >= cfg.max_cases:
            break
        image = item["image"].to(device)
        if image.ndim == len(window) + 2:  # a stack of slices for a 2D network, scored as a volume
            probs = slice_by_slice(predict, image, window, stride, cfg.batch_size, cfg.blend, slice_size)
        else:
            probs = sliding_window(predict, image, window, stride, cfg.batch_size, cfg.blend)
        truth, spacing = item["label"], item["spacing"]
        if "native_label" in item:  # a resampled or downsampled case, scored on its native grid
            truth, spacing = item["native_label"], item["native_spacing"]
            probs = to_native(probs, tuple(truth.shape), int(item["factor"]), item.get("grid"))
        labels = probabilities_to_labels(probs, softmax, cfg.threshold).cpu().numpy()
        if cfg.lcc:
            labels = largest_component(labels, num_classes)
        truth = truth.numpy()
        spacing = tuple(spacing.tolist()) if physical_spacing else None
        for c in range(1, num_classes + 1):
            pred_c = torch.from_numpy(labels == c)[None]
            true_c = torch.from_numpy(truth == c)[None]
            with warnings.catch_warnings():  # empty masks are counted in the summary instead
                warnings.simplefilter("ignore", metrics.EmptyMaskWarning)
                values = metrics.compute(pred_c, true_c, METRIC_NAMES, spacing)
            rows.append(
                {
                    "case": item["case"],
                    "class": c,
                    **{k: float(v[0]) for k, v in values.items()},
                    "empty_prediction": not bool(pred_c.any()),
                    "empty_label": not bool(true_c.any()),
                }
            )
    return rows


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def distance_unit(physical: bool, ndim: int) -> str:
    """The unit of 95HD and ASD: mm with a physical spacing, else pixels for 2D cases and voxels for 3D."""
    return "mm" if physical else "pixels" if ndim == 2 else "voxels"


def summarize(rows: list[dict[str, Any]], units: str, selection: str) -> dict[str, Any]:
    """Means (overall and per class), the per-case rows, and the count of empty predictions.

    Distances that are NaN (an empty prediction or label) are left out of the means and counted
    in ``nan_counts``; Dice and Jaccard of an empty prediction are 0 and count in full.
    """
    classes = sorted({r["class"] for r in rows})
    per_class = {str(c): {m: _mean([r[m] for r in rows if r["class"] == c]) for m in METRIC_NAMES} for c in classes}
    return {
        "mean": {m: _mean([r[m] for r in rows]) for m in METRIC_NAMES},
        "std": {m: _std([r[m] for r in rows]) for m in METRIC_NAMES},
        "per_class": per_class,
        "per_case": rows,
        "cases": len({r["case"] for r in rows}),
        "empty_predictions": sum(r["empty_prediction"] for r in rows),
        "nan_counts": {m: sum(math.isnan(r[m]) for r in rows) for m in METRIC_NAMES},
        "units": {"dice": "fraction", "jaccard": "fraction", "hd95": units, "asd": units},
        "selection": selection,
    }


def _std(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite)) if finite else None
