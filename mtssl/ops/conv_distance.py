"""Differentiable distance transforms of probability maps: the convolutional distance transform.

``D(x) = -h log sum_y K(x - y) p(y)`` (the convolutional distance transform of Karam et al., as
used by DBiSL's ``T_s2r``) tends to the exact distance to the mass of ``p`` as ``h -> 0``. The sum
is evaluated exactly in the log domain (:mod:`mtssl.ops.log_sums`: flooring ``p`` at ``eps`` would
cap every distance at about ``h ln(1/eps)``), or by a float64 FFT convolution of the probabilities
(:mod:`mtssl.ops.fft_distance`), O(N log N) for a window as wide as the patch.

Written by hand because no library offers it: kornia's ``distance_transform`` is a probability
-domain approximation (tens of percent short of the true distance), and an eager log-sum-exp over
``(voxels x window)`` materialises gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from mtssl.ops.checks import check_maps, check_spacing
from mtssl.ops.fft_distance import FLOOR, distance_cap, fft_kernel_sum, window_mass
from mtssl.ops.log_sums import log_sums_direct

__all__ = ["foreground_log_probs", "normalize_max", "normalize_signed", "soft_distance", "soft_signed_distance"]

Kernel = Literal["exp", "gauss"]
Activation = Literal["auto", "sigmoid", "softmax"]
Method = Literal["auto", "direct", "fft"]

# Squared distances are floored here before the square root, so its gradient stays finite.
_MIN_SQUARED = 1e-12


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(logp: torch.Tensor, name: str, h: float, kernel: str, radius: float | None, method: str) -> int:
    nd = check_maps(logp, name)
    if not h > 0:
        raise ValueError(f"h must be positive, got {h}")
    if kernel not in ("exp", "gauss"):
        raise ValueError(f"kernel must be 'exp' or 'gauss', got {kernel!r}")
    if radius is not None and not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")
    if method not in ("auto", "direct", "fft"):
        raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
    return nd


# ``auto`` walks the exp kernel's whole-patch window exactly while that costs at most this many terms.
_DIRECT_TERMS = 1 << 22


def _resolve(method: Method, kernel: Kernel, radius: float | None, shape: Sequence[int]) -> str:
    """``auto``: the FFT for the exp kernel over the whole patch unless the exact walk is cheap (a tiny patch)."""
    if method != "auto":
        return method
    if kernel != "exp" or radius is not None:
        return "direct"
    return "direct" if math.prod(shape) * math.prod(2 * n - 1 for n in shape) <= _DIRECT_TERMS else "fft"


def _cap(shape: Sequence[int], spacing: tuple[float, ...], h: float, kernel: str, radius: float | None, method: str):
    """The largest distance the setting can express: the window (or the patch diagonal), and the FFT floor."""
    cap = radius if radius is not None else math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))
    return min(cap, distance_cap(h, kernel)) if method == "fft" else cap


def _log_sums_fft(
    p: torch.Tensor, h: float, kernel: Kernel, radius: float | None, sp: tuple[float, ...], complement: bool
) -> tuple[torch.Tensor, ...]:
    """``log S`` of ``(N, *S)`` probabilities by FFT in float64, floored at ``FLOOR`` x the kernel's mass.

    With ``complement`` also ``log`` of the sum of ``1 - p``: the window's mass minus the first sum.
    """
    sums, mass = fft_kernel_sum(p.double(), h, kernel=kernel, radius=radius, spacing=sp)
    floor = FLOOR * mass
    out = (sums.clamp_min(floor).log(),)
    if complement:
        rest = window_mass(tuple(p.shape[1:]), spacing=sp, h=h, kernel=kernel, radius=radius, device=p.device) - sums
        out += (rest.clamp_min(floor).log(),)
    return out


def _to_distance(log_sum: torch.Tensor, h: float, kernel: Kernel, cap: float) -> torch.Tensor:
    if kernel == "exp":
        return (0.0 - h * log_sum).clamp(0.0, cap)  # 0.0 - x: no -0.0
    return (-h * log_sum).clamp_min(_MIN_SQUARED).sqrt().clamp_max(cap)


def soft_distance(
    logp: torch.Tensor,
    h: float,
    *,
    kernel: Kernel = "gauss",
    radius: float | None = None,
    spacing: Sequence[float] | float | None = None,
    method: Method = "auto",
) -> torch.Tensor:
    """Differentiable distance to the probability mass, from log-probabilities.

    - ``kernel="exp"`` (DBiSL's): ``D(x) = -h log sum_{|x-y| <= radius} exp(-|x - y| / h) p(y)``.
    - ``kernel="gauss"``: ``D(x) = sqrt(-h log sum_y exp(-|x - y|^2 / h) p(y))``.

    ``radius=None`` is a window over the whole patch. Two ways to evaluate the sum
    (``method``; docs/ops.md has their error and time table):

    - ``"direct"``: exact, in the log domain, walking the window offset by offset (the Gaussian is
      separable: one pass per axis). Distances are capped at ``radius`` (else the patch diagonal):
      log-probabilities far below the cap's level (``-cap / h - 20`` for exp, ``-cap^2 / h - 20`` for
      gauss) count as no mass, so a map with no mass at all is the cap everywhere.
    - ``"fft"``: the sum of probabilities as an FFT convolution in float64, O(N log N) whatever the
      window. Sums below ``1e-12`` of the kernel's mass are round-off and are floored there, which also
      caps distances at :func:`mtssl.ops.fft_distance.distance_cap` (``27.6 h`` for exp; for the
      Gaussian ``sqrt(27.6 h)``, too short to be of use at small ``h``).
    - ``"auto"``: ``"fft"`` for the exp kernel over the whole patch (``"direct"`` where that walk is
      cheap: patches of a few hundred voxels), ``"direct"`` otherwise. Mind the FFT's cap at small h.

    Both tend to the exact EDT of the mask ``p > 0`` as ``h -> 0`` (the FFT within its cap), are
    computed in float32 (or float64) whatever the autocast state, and keep memory a few times the input.

    Args:
        logp: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` log-probabilities, each channel on its own.
        h: the kernel's scale, > 0; smaller is closer to the exact distance and less smooth.
        kernel: ``"exp"`` or ``"gauss"``.
        radius: the window radius in spacing units (voxels when ``spacing`` is ``None``).
        spacing: voxel size per spatial dim.
        method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
        ``(B, C, *S)`` distances, float32 for half inputs, else ``logp``'s dtype.

    Example:
        >>> p = torch.zeros(1, 1, 1, 6); p[..., 0] = 1
        >>> soft_distance(p.log(), h=0.05, kernel="exp", radius=6)[0, 0, 0]
        tensor([0., 1., 2., 3., 4., 5.])
    """
    nd = _check(logp, "logp", h, kernel, radius, method)
    sp = check_spacing(spacing, nd)
    b, c, *shape = logp.shape
    method = _resolve(method, kernel, radius, shape)
    cap = _cap(shape, sp, h, kernel, radius, method)
    with torch.autocast(device_type=logp.device.type, enabled=False):
        a = _as_float32(logp).reshape(b * c, *shape)
        if method == "fft":
            (log_sum,) = _log_sums_fft(a.exp(), h, kernel, radius, sp, complement=False)
        else:
            log_sum = log_sums_direct(a, h, kernel=kernel, radius=radius, sp=sp, cap=cap)
        dist = _to_distance(log_sum, h, kernel, cap).to(a.dtype)
    return dist.reshape(b, c, *shape)


def foreground_log_probs(logits: torch.Tensor, activation: Activation = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of each foreground class and of its complement, from logits, in the log domain.

    - ``"sigmoid"``: every channel is an independent binary map; ``log p = logsigmoid(x)``,
      ``log(1 - p) = logsigmoid(-x)``; K channels give K foreground classes.
    - ``"softmax"``: channel 0 is the background; classes 1..C-1 are the foreground, and the
      complement of class k is the log-sum-exp of the other classes' log-probabilities.
    - ``"auto"``: sigmoid for one channel, softmax for more.

    Args:
        logits: ``(B, C, *S)``.
        activation: ``"auto"``, ``"sigmoid"`` or ``"softmax"``.

    Returns:
        ``(log_fg, log_not_fg)``, each ``(B, K, *S)`` with K = C (sigmoid) or C - 1 (softmax).
    """
    check_maps(logits, "logits")
    if activation not in ("auto", "sigmoid", "softmax"):
        raise ValueError(f"activation must be 'auto', 'sigmoid' or 'softmax', got {activation!r}")
    channels = logits.shape[1]
    if activation == "sigmoid" or (activation == "auto" and channels == 1):
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    if channels < 2:
        raise ValueError("softmax logits need at least 2 channels (background and a class)")
    log_p = F.log_softmax(logits, dim=1)
    log_not = [torch.logsumexp(torch.cat([log_p[:, :k], log_p[:, k + 1 :]], dim=1), dim=1) for k in range(1, channels)]
    return log_p[:, 1:], torch.stack(log_not, 1)


def normalize_max(x: torch.Tensor) -> torch.Tensor:
    """Divide each ``(b, c)`` map of ``(B, C, *S)`` by its maximum (floored at 1e-6)."""
    return x / x.amax(dim=tuple(range(2, x.ndim)), keepdim=True).clamp_min(1e-6)


def normalize_signed(x: torch.Tensor) -> torch.Tensor:
    """Divide the positive and the negative part of each ``(b, c)`` map of ``(B, C, *S)`` by its own maximum.

    The soft counterpart of :func:`mtssl.ops.signed_distance`'s normalisation: values in [-1, 1],
    the outside and the inside scaled on their own.
    """
    return normalize_max(x.clamp_min(0)) - normalize_max((-x).clamp_min(0))


def soft_signed_distance(
    logits: torch.Tensor,
    h: float,
    *,
    kernel: Kernel = "gauss",
    radius: float | None = None,
    spacing: Sequence[float] | float | None = None,
    normalize: bool = False,
    activation: Activation = "auto",
    method: Method = "auto",
) -> torch.Tensor:
    """Differentiable signed distance from segmentation logits, negative inside (DTC's sign).

    With the kernel sums ``S_fg = K * p`` and ``S_bg = K * (1 - p)`` of :func:`soft_distance`:

    - exp: ``sdf = -h log(S_fg / S_bg)``. Each soft distance alone reads ``h log(mass)`` short near a
      boundary (``9.2`` voxels for h = 2 in 3D: the kernel's mass over a half space); in their
      difference those offsets cancel, and so does the mass a window loses at the patch's edge.
      It is ``h`` times the logit of the kernel-smoothed probability, capped at the window.
    - gauss: ``sdf = D_fg - D_bg`` with the distances ``sqrt(-h log S)``, each floored at 0.

    Per foreground class (:func:`foreground_log_probs`); ``method`` as in :func:`soft_distance`
    (``"auto"`` takes the float64 FFT for the exp kernel over the whole patch).

    Args:
        logits: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        h: kernel scale, > 0.
        kernel: ``"exp"`` or ``"gauss"``.
        radius: window radius (``None``: the whole patch); distances are capped at it.
        spacing: voxel size per spatial dim.
        normalize: divide the outside and inside parts by their per-sample, per-channel maxima
            (:func:`normalize_signed`), giving values in [-1, 1] like :func:`mtssl.ops.signed_distance`.
        activation: how the logits become probabilities (see :func:`foreground_log_probs`).
        method: ``"auto"``, ``"direct"`` or ``"fft"``.

    Returns:
        ``(B, K, *S)`` signed distances, one channel per foreground class, float32 for half inputs.

    Example:
        >>> x = torch.full((1, 1, 1, 5), -1000.0); x[..., 2] = 1000.0
        >>> soft_signed_distance(x, h=0.05, kernel="exp", radius=3)[0, 0, 0].round()
        tensor([ 2.,  1., -1.,  1.,  2.])
    """
    nd = _check(logits, "logits", h, kernel, radius, method)
    sp = check_spacing(spacing, nd)
    method = _resolve(method, kernel, radius, logits.shape[2:])
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_fg, log_bg = foreground_log_probs(_as_float32(logits), activation)
        b, k, *shape = log_fg.shape
        cap = _cap(shape, sp, h, kernel, radius, method)
        if method == "fft":
            sum_fg, sum_bg = _log_sums_fft(log_fg.double().exp().flatten(0, 1), h, kernel, radius, sp, complement=True)
        else:
            both = torch.cat([log_fg, log_bg]).flatten(0, 1)
            sum_fg, sum_bg = log_sums_direct(both, h, kernel=kernel, radius=radius, sp=sp, cap=cap).chunk(2)
        if kernel == "exp":
            sdf = (h * (sum_bg - sum_fg)).clamp(-cap, cap)
        else:
            sdf = _to_distance(sum_fg, h, kernel, cap) - _to_distance(sum_bg, h, kernel, cap)
        sdf = sdf.to(log_fg.dtype).reshape(b, k, *shape)
        return normalize_signed(sdf) if normalize else sdf
