"""Segmentation metrics with the literature's (medpy's) definitions, on the tensor's device.

- ``dice`` = 2|P & T| / (|P| + |T|); ``jaccard`` = |P & T| / |P | T|.
- Surfaces are medpy's: ``mask ^ erosion(mask)`` with a face-connected cross, the outside counted
  as background (:func:`mtssl.ops.boundary` with ``mode="surface"``).
- ``hd95``: the 95th percentile (linear interpolation, as numpy) of the pooled distances from each
  surface voxel of P to T's surface and of T to P's surface.
- ``asd``: mean distance from P's surface to T's surface (one-way, prediction to label).
- ``assd``: the mean of the pooled two-way surface distances (medpy >= 0.5; older medpy averaged
  the two one-way ASDs instead, which differs when the surfaces differ in size).

Distances come from :func:`mtssl.ops.edt`, in voxels unless ``spacing`` is given.

Empty masks: when the prediction or the label of a sample is empty, its surface distances are
undefined, so ``hd95``, ``asd`` and ``assd`` return NaN for it and warn (:class:`EmptyMaskWarning`);
callers count those cases. ``dice`` and ``jaccard`` stay defined (0) when only one is empty, since
an empty prediction of a present object is a real failure that must weigh in the mean; they are NaN
(with the warning) only when both are empty. Nothing is ever scored 0 silently or raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from mtssl.ops.boundary import boundary
from mtssl.ops.checks import check_mask
from mtssl.ops.distance import edt

__all__ = ["METRICS", "EmptyMaskWarning", "asd", "assd", "compute", "dice", "hd95", "jaccard"]


class EmptyMaskWarning(UserWarning):
    """A prediction or label had no foreground, so a metric is NaN for that sample."""


def _binary_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_mask(pred, "pred")
    check_mask(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
    return pred.bool(), target.bool()


def _warn_empty(metric: str, empty: torch.Tensor, what: str) -> None:
    if bool(empty.any()):
        samples = empty.nonzero().flatten().tolist()
        message = f"{metric}: {what} empty for samples {samples}; their value is NaN"
        warnings.warn(message, EmptyMaskWarning, stacklevel=3)


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice coefficient per sample.

    Args:
        pred: ``(B, *S)`` binary prediction.
        target: ``(B, *S)`` binary label.

    Returns:
        ``(B,)`` float64; NaN (with a warning) where both are empty.

    Example:
        >>> dice(torch.tensor([[[1, 1, 0, 0]]]), torch.tensor([[[1, 0, 0, 0]]]))
        tensor([0.6667], dtype=torch.float64)
    """
    p, t = _binary_pair(pred, target)
    dims = tuple(range(1, p.ndim))
    inter = (p & t).sum(dims, dtype=torch.float64)
    total = p.sum(dims, dtype=torch.float64) + t.sum(dims, dtype=torch.float64)
    _warn_empty("dice", total == 0, "prediction and label are both")
    return 2 * inter / total


def jaccard(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Jaccard index (IoU) per sample: ``(B, *S)`` masks in, ``(B,)`` float64 out (NaN if both empty)."""
    p, t = _binary_pair(pred, target)
    dims = tuple(range(1, p.ndim))
    inter = (p & t).sum(dims, dtype=torch.float64)
    union = (p | t).sum(dims, dtype=torch.float64)
    _warn_empty("jaccard", union == 0, "prediction and label are both")
    return inter / union


def _surface_distances(
    pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float] | float | None, metric: str
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Per sample, distances P-surface -> T-surface and T-surface -> P-surface (None where empty)."""
    p, t = _binary_pair(pred, target)
    dims = tuple(range(1, p.ndim))
    empty = ~p.any(dims) | ~t.any(dims)
    _warn_empty(metric, empty, "prediction or label is")
    ps, ts = boundary(p, "surface"), boundary(t, "surface")
    to_t, to_p = edt(torch.cat([ts, ps]), spacing, dtype=torch.float64).chunk(2)  # one batched call
    forward, backward = [], []
    for b, is_empty in enumerate(empty.tolist()):
        forward.append(None if is_empty else to_t[b][ps[b]])
        backward.append(None if is_empty else to_p[b][ts[b]])
    return forward, backward


def _nan(device: torch.device) -> torch.Tensor:
    return torch.tensor(float("nan"), dtype=torch.float64, device=device)


def _hd95(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    return torch.quantile(torch.cat([fwd, bwd]), 0.95)


def _asd(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    return fwd.mean()


def _assd(fwd: torch.Tensor, bwd: torch.Tensor) -> torch.Tensor:
    return torch.cat([fwd, bwd]).mean()


_SURFACE = {"hd95": _hd95, "asd": _asd, "assd": _assd}
#: Every metric :func:`compute` knows.
METRICS = ("dice", "jaccard", "hd95", "asd", "assd")


def compute(
    pred: torch.Tensor,
    target: torch.Tensor,
    names: Sequence[str] = ("dice", "jaccard", "hd95", "asd"),
    spacing: Sequence[float] | float | None = None,
) -> dict[str, torch.Tensor]:
    """Several metrics at once, computing the surface distances only once.

    Args:
        pred: ``(B, *S)`` binary prediction.
        target: ``(B, *S)`` binary label.
        names: metrics from :data:`METRICS`, by default the LA table's four.
        spacing: voxel size per spatial dim; voxels when ``None``.

    Returns:
        ``{name: (B,) float64}``, NaN where a metric is undefined (see the module doc).

    Example:
        >>> a = torch.zeros(1, 8, 8, dtype=torch.bool); a[0, 2:6, 2:6] = True
        >>> {k: round(v.item(), 3) for k, v in compute(a, a.roll(1, dims=1)).items()}
        {'dice': 0.75, 'jaccard': 0.6, 'hd95': 1.0, 'asd': 0.5}
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; known metrics: {', '.join(METRICS)}")
    out = {}
    if "dice" in names:
        out["dice"] = dice(pred, target)
    if "jaccard" in names:
        out["jaccard"] = jaccard(pred, target)
    surface = [n for n in names if n in _SURFACE]
    if surface:
        fwd, bwd = _surface_distances(pred, target, spacing, "/".join(surface))
        for name in surface:
            fn = _SURFACE[name]
            out[name] = torch.stack([_nan(pred.device) if f is None else fn(f, b) for f, b in zip(fwd, bwd)])
    return {n: out[n] for n in names}


def hd95(pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float] | float | None = None) -> torch.Tensor:
    """95th percentile Hausdorff distance per sample (medpy's ``hd95``).

    Args:
        pred: ``(B, *S)`` binary prediction.
        target: ``(B, *S)`` binary label.
        spacing: voxel size per spatial dim; voxels when ``None``.

    Returns:
        ``(B,)`` float64; NaN (with a warning) where either mask is empty.

    Example:
        >>> a = torch.zeros(1, 8, 8, dtype=torch.bool); a[0, 2:6, 2:6] = True
        >>> hd95(a, a.roll(1, dims=1))
        tensor([1.], dtype=torch.float64)
    """
    return compute(pred, target, ("hd95",), spacing)["hd95"]


def asd(pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float] | float | None = None) -> torch.Tensor:
    """Average surface distance from the prediction to the label, per sample (medpy's ``asd``).

    Shapes as :func:`hd95`; ``(B,)`` float64, NaN where either mask is empty.
    """
    return compute(pred, target, ("asd",), spacing)["asd"]


def assd(pred: torch.Tensor, target: torch.Tensor, spacing: Sequence[float] | float | None = None) -> torch.Tensor:
    """Average symmetric surface distance per sample: the mean of the pooled two-way distances (medpy's ``assd``).

    Shapes as :func:`hd95`; ``(B,)`` float64, NaN where either mask is empty.
    """
    return compute(pred, target, ("assd",), spacing)["assd"]
