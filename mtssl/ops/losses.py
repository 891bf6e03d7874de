"""Segmentation and regression losses in the semi-supervised literature's forms.

Every loss takes an optional voxel ``weight`` of shape ``(B, *S)``: a bool mask gives the masked
variant (UA-MT's uncertainty mask), a float map the weighted one (DBiSL's uncertainty weights).
Written by hand because the literature's exact forms matter for reproducing published numbers:
Dice with squared denominators and a 1e-5 smooth term summed over the whole batch, and UA-MT's
masked MSE normalised by ``C * sum(mask) + 1e-16``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtssl.ops.checks import check_maps, check_same_shape

__all__ = ["binary_cross_entropy", "cross_entropy", "dice_loss", "mse_loss"]


def _check_weight(weight: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor | None:
    if weight is None:
        return None
    expected = (ref.shape[0], *ref.shape[2:])
    if tuple(weight.shape) != expected:
        raise ValueError(f"weight must have shape (B, *S) = {expected}; got {tuple(weight.shape)}")
    return weight.to(ref.dtype).unsqueeze(1)


def _dense_target(target: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A ``(B, *S)`` label map, or a ``(B, C, *S)`` soft target, as a float ``(B, C, *S)`` tensor."""
    if target.shape == ref.shape:
        return target.to(ref.dtype)
    expected = (ref.shape[0], *ref.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be a label map of shape (B, *S) = {expected} or a map of shape "
            f"{tuple(ref.shape)}; got {tuple(target.shape)}"
        )
    if ref.shape[1] == 1:
        return target.to(ref.dtype).unsqueeze(1)
    return F.one_hot(target.long(), ref.shape[1]).movedim(-1, 1).to(ref.dtype)


def dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss as UA-MT, DTC and MC-Net compute it.

    ``1 - (2 sum w p t + smooth) / (sum w p^2 + sum w t^2 + smooth)``, summed over the batch and the
    voxels of each channel, then averaged over channels. With one channel (sigmoid) the target is
    the binary label; with C channels (softmax) the label map is one-hot encoded and the background
    channel 0 is left out unless ``include_background``.

    Args:
        prob: ``(B, C, *S)`` probabilities.
        target: ``(B, *S)`` label map, or ``(B, C, *S)`` soft target.
        weight: optional ``(B, *S)`` voxel weights or mask.
        include_background: keep channel 0 when C > 1.
        smooth: added to numerator and denominator.

    Returns:
        Scalar loss.

    Example:
        >>> p = torch.tensor([[[[1.0, 0.0]]]])
        >>> dice_loss(p, torch.tensor([[[1, 0]]]))
        tensor(0.)
    """
    check_maps(prob, "prob")
    t = _dense_target(target, prob)
    w = _check_weight(weight, prob)
    if prob.shape[1] > 1 and not include_background:
        prob, t = prob[:, 1:], t[:, 1:]
    dims = (0, *range(2, prob.ndim))
    pw, tw = (prob, t) if w is None else (prob * w, t * w)
    intersect = (pw * t).sum(dims)
    denominator = (pw * prob).sum(dims) + (tw * t).sum(dims)
    return (1 - (2 * intersect + smooth) / (denominator + smooth)).mean()


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Mean of ``(B, C, *S)`` values; with ``(B, 1, *S)`` weights, ``sum(w v) / (C sum(w) + eps)``."""
    if weight is None:
        return values.mean()
    return (values * weight).sum() / (values.shape[1] * weight.sum() + eps)


def mse_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    eps: float = 1e-16,
) -> torch.Tensor:
    """Mean squared error; weighted, ``sum(w (x - y)^2) / (C sum(w) + eps)`` (UA-MT's masked MSE).

    Args:
        input: ``(B, C, *S)``.
        target: same shape as ``input``.
        weight: optional ``(B, *S)`` voxel weights or mask, shared by the channels.
        eps: keeps an all-zero mask finite (the loss is then 0).

    Returns:
        Scalar loss.

    Example:
        >>> x = torch.zeros(1, 2, 2, 2); y = torch.ones(1, 2, 2, 2)
        >>> mse_loss(x, y, weight=torch.tensor([[[True, False], [False, False]]]))
        tensor(1.)
    """
    check_maps(input, "input")
    check_same_shape(input, target, ("input", "target"))
    return _weighted_mean((input - target.to(input.dtype)).square(), _check_weight(weight, input), eps)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    eps: float = 1e-16,
) -> torch.Tensor:
    """Softmax cross-entropy, averaged over voxels (``sum(w ce) / (sum(w) + eps)`` when weighted).

    Args:
        logits: ``(B, C, *S)`` with C >= 2.
        target: ``(B, *S)`` class indices, or ``(B, C, *S)`` class probabilities.
        weight: optional ``(B, *S)`` voxel weights or mask.
        eps: keeps an all-zero mask finite.

    Returns:
        Scalar loss.
    """
    check_maps(logits, "logits")
    if logits.shape[1] < 2:
        raise ValueError("cross_entropy needs C >= 2 channels of logits; use binary_cross_entropy for one")
    if target.shape == logits.shape:
        ce = F.cross_entropy(logits, target.to(logits.dtype), reduction="none")
    else:
        _dense_target(target, logits[:, :1])  # shape check only
        ce = F.cross_entropy(logits, target.long(), reduction="none")
    return _weighted_mean(ce.unsqueeze(1), _check_weight(weight, logits), eps)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    eps: float = 1e-16,
) -> torch.Tensor:
    """Sigmoid binary cross-entropy from logits (stable), averaged over voxels and channels.

    Args:
        logits: ``(B, C, *S)``, each channel an independent binary problem.
        target: ``(B, *S)`` when C = 1, else ``(B, C, *S)``; values in [0, 1] (soft targets allowed).
        weight: optional ``(B, *S)`` voxel weights or mask.
        eps: keeps an all-zero mask finite.

    Returns:
        Scalar loss.
    """
    check_maps(logits, "logits")
    t = _dense_target(target, logits) if logits.shape[1] == 1 or target.shape == logits.shape else None
    if t is None:
        raise ValueError(f"target must have shape {tuple(logits.shape)}; got {tuple(target.shape)}")
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return _weighted_mean(bce, _check_weight(weight, logits), eps)
