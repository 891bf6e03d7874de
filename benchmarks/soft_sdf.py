"""The soft-SDF rows of ``benchmarks/targets.py``: every variant's time, arithmetic bound and error.

Variants (kernel, h, window, evaluation): the former default (Gaussian, whole axis, log domain),
a pruned Gaussian window (radius 8), the former quick-grid setting (exp, radius 4), and the exp
kernel over the whole patch by float64 FFT at h = 2 and h = 4 (the new default).

- Time: forward + backward of ``soft_signed_distance(..., normalize=True)`` on 2 x 64x64x48 logits,
  median wall and CPU seconds.
- Bound: the log-domain walks cost one ``exp`` per voxel and window offset, forward and again in the
  backward's recompute; the bound is that count over this machine's measured ``exp`` rate. The FFT
  variants are bounded by the transforms they need (two forward, two backward per map), timed bare.
- Error against the exact log-domain result of the same kernel and h over the whole patch, in
  normalised SDF units, on a real LA crop (20x20x12, every third voxel), logits levelled off at +-10.
- MSE against the exact SDF target on two real LA crops of 64x64x48, logits levelled at +-10 and +-20.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import timed_cpu

from mtssl.ops import edt, signed_distance, soft_signed_distance
from mtssl.ops.fft_distance import fast_length

__all__ = ["soft_sdf_rows"]

HERE = Path(__file__).resolve().parent
SIZE = (2, 64, 64, 48)
# (kernel, h, radius, method): None is the whole axis or patch.
VARIANTS = [
    ("gauss", 0.5, None, "direct"),
    ("gauss", 0.5, 8.0, "direct"),
    ("exp", 0.5, 4.0, "direct"),
    ("exp", 2.0, None, "fft"),
    ("exp", 4.0, None, "fft"),
]


def la_labels(count: int) -> list[torch.Tensor]:
    """The first ``count`` LA training labels, from a restored copy (restored once into the cache)."""
    import h5py

    cache = Path(os.environ.get("MTSSL_CACHE", Path.home() / ".cache" / "mtssl")) / "la-shard0"
    if not (cache / "train.list").exists():
        data = Path(os.environ.get("MTSSL_DATA", HERE.parents[1] / "shared" / "data"))
        restore = data / "la" / "restore.py"
        if not restore.exists():
            raise SystemExit(f"the LA data is not at {data / 'la'}; set MTSSL_DATA to the folder holding la/")
        subprocess.run([sys.executable, str(restore), str(cache), "--shards", "0"], check=True, capture_output=True)
    labels = []
    for cid in (cache / "train.list").read_text().split()[:count]:
        with h5py.File(cache / cid / "mri_norm2.h5", "r") as f:
            labels.append(torch.from_numpy(f["label"][:]).bool())
    return labels


def crop(mask: torch.Tensor, size: tuple[int, ...], step: int = 1) -> torch.Tensor:
    """A crop of ``size`` centred on the atrium (shifted to fit inside the volume), every ``step``-th voxel."""
    mask = mask[::step, ::step, ::step]
    centre = mask.nonzero().float().mean(0).long()
    starts = [min(max(0, int(c) - n // 2), dim - n) for c, n, dim in zip(centre, size, mask.shape)]
    return mask[tuple(slice(s, s + n) for s, n in zip(starts, size))]


def levelled(mask: torch.Tensor, level: float) -> torch.Tensor:
    """Logits ``-2 * sdf`` levelled off at ``+-level``: ``(B, 1, *S)`` float32 from a ``(B, *S)`` mask."""
    exact = edt(mask, dtype=torch.float64) - edt(~mask, dtype=torch.float64)
    return (-2 * exact).clamp(-level, level)[:, None].float()


def exp_rate() -> float:
    """``exp`` evaluations per CPU-second on this machine (float32, all threads)."""
    x = torch.randn(1 << 24)
    torch.exp(x)
    start = time.process_time()
    for _ in range(5):
        torch.exp(x)
    return 5 * x.numel() / (time.process_time() - start)


def exp_terms(shape: tuple[int, ...], kernel: str, h: float, radius: float | None) -> int:
    """``exp`` terms of one map's forward (the backward recomputes as many)."""
    voxels = math.prod(shape)
    if kernel == "gauss":
        per_axis = []
        for n in shape:
            reach = n - 1 if radius is None else min(n - 1, math.floor(radius))
            per_axis.append(2 * reach + 1 if 4 * reach + 2 < n else n)
        return voxels * sum(per_axis)
    r = radius if radius is not None else math.dist(shape, [0] * len(shape))
    reach = [min(n - 1, math.floor(r)) for n in shape]
    grid = torch.stack(torch.meshgrid(*(torch.arange(-k, k + 1.0) for k in reach), indexing="ij"), -1)
    return voxels * int((grid.norm(dim=-1) <= r).sum())


@functools.lru_cache(maxsize=4)
def fft_bound(maps: int, shape: tuple[int, ...], device: torch.device, repeats: int) -> tuple[float, float]:
    """Wall and CPU seconds of the bare transforms: an rFFT and an inverse per map, forward and backward."""
    padded = tuple(fast_length(2 * n - 1) for n in shape)
    x = torch.rand(maps, *padded, dtype=torch.float64, device=device)
    dims = tuple(range(1, x.ndim))

    def transforms() -> None:
        for _ in range(2):
            torch.fft.irfftn(torch.fft.rfftn(x, dim=dims), s=padded, dim=dims)

    return timed_cpu(transforms, device, repeats)


def soft_sdf_rows(device: torch.device, repeats: int, record: Callable[..., None]) -> None:
    """Time, bound and errors of every variant, each as one ``record(what, size, seconds, **extra)`` row."""
    labels = la_labels(2)
    small = crop(labels[0], (20, 20, 12), step=3)[None].to(device)
    small_logits = levelled(small, 10.0).double()
    crops = torch.stack([crop(m, SIZE[1:]) for m in labels]).to(device)
    target = signed_distance(crops)
    rate = exp_rate() if device.type == "cpu" else float("nan")
    b, *shape = SIZE
    logits = (torch.randn(b, 1, *shape, device=device) * 4).requires_grad_()
    reference: dict[tuple[str, float], torch.Tensor] = {}
    for kernel, h, radius, method in VARIANTS:

        def step(kernel: str = kernel, h: float = h, radius: float | None = radius, method: str = method) -> None:
            out = soft_signed_distance(logits, h, kernel=kernel, radius=radius, normalize=True, method=method)
            out.square().mean().backward()

        wall, cpu = timed_cpu(step, device, repeats)
        if method == "fft":
            bound_wall, bound_cpu = fft_bound(b, tuple(shape), device, max(repeats, 7))
        else:
            bound_cpu = 2 * 2 * b * exp_terms(tuple(shape), kernel, h, radius) / rate
            bound_wall = bound_cpu / torch.get_num_threads()
        key = (kernel, h)
        if key not in reference:
            reference[key] = soft_signed_distance(small_logits, h, kernel=kernel, normalize=True, method="direct")
        err = (
            soft_signed_distance(small_logits, h, kernel=kernel, radius=radius, normalize=True, method=method)
            - reference[key]
        ).abs()
        mse = {
            f"mse_vs_target_level{level}": round(
                float(
                    (
                        soft_signed_distance(
                            levelled(crops, level), h, kernel=kernel, radius=radius, normalize=True, method=method
                        )[:, 0]
                        - target
                    )
                    .square()
                    .mean()
                ),
                4,
            )
            for level in (10, 20)
        }
        window = "patch" if radius is None else f"r={radius:g}"
        record(
            f"soft SDF fwd+bwd: {kernel} h={h:g} {window} {method}",
            "x".join(map(str, SIZE)),
            wall,
            cpu_s=round(cpu, 3),
            bound_cpu_s=round(bound_cpu, 3),
            cpu_over_bound=round(cpu / bound_cpu, 2),
            wall_over_bound=round(wall / bound_wall, 2),
            max_err_vs_exact=float(f"{err.max():.2e}"),
            mean_err_vs_exact=float(f"{err.mean():.2e}"),
            **mse,
        )
    record(
        "soft SDF: zeros (no prediction) vs target",
        "x".join(map(str, SIZE)),
        0.0,
        mse=round(float(target.square().mean()), 4),
    )


def h_sweep_rows(device: torch.device, record: Callable[..., None]) -> None:
    """MSE of the default seg->sdf (exp, whole patch, FFT) against the SDF target as h varies, on the
    first three LA training labels: the LA patch (112x112x80) and the same field of view at half
    the resolution (56x56x40), logits ``-2 sdf`` levelled off at +-10 and +-20."""
    labels = la_labels(3)
    for step, size in ((1, (112, 112, 80)), (2, (56, 56, 40))):
        masks = torch.stack([crop(m, size, step) for m in labels]).to(device)
        target = signed_distance(masks)
        for h in (2.0, 3.0, 4.0, 6.0, 8.0):
            mse = {}
            for level in (10, 20):
                soft = soft_signed_distance(levelled(masks, level), h, kernel="exp", normalize=True, method="fft")[:, 0]
                mse[f"mse_level{level}"] = round(float((soft - target).square().mean()), 4)
            record(f"seg->sdf MSE vs target: exp h={h:g} patch", "3x" + "x".join(map(str, size)), 0.0, **mse)
