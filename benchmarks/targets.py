"""Exact SDF targets and the differentiable soft SDF: time, memory and error.

    python benchmarks/targets.py                 # CPU: 2 x 112x112x80 targets, 2 x 64x64x48 soft SDF
    python benchmarks/targets.py --device cuda   # GPU: the soft SDF at the LA size too

Every soft-SDF variant (kernel, window, evaluation) is timed forward + backward (wall and CPU
seconds), set against its arithmetic bound, and scored against the exact log-domain result of the
same kernel over the whole patch and against the exact SDF target on real LA labels (from
``$MTSSL_DATA/la`` or ``../shared/data/la``, restored into a temporary folder).

Prints a table and writes JSON beside this file (``results/targets-<device>.json``). Times are
medians of ``--repeats`` runs; on the shared 2-core CPU machines compare the ratios, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from common import timed
from scipy.ndimage import distance_transform_edt
from skimage.segmentation import find_boundaries
from soft_sdf import h_sweep_rows, soft_sdf_rows

from mtssl.ops import signed_distance

HERE = Path(__file__).resolve().parent


def dtc_compute_sdf(labels: np.ndarray) -> np.ndarray:
    """DTC's ``compute_sdf`` (scipy + skimage on the host), the reference implementation."""
    out = np.zeros(labels.shape, dtype=np.float32)
    for b in range(labels.shape[0]):
        pos = labels[b].astype(bool)
        if pos.any():
            posdis, negdis = distance_transform_edt(pos), distance_transform_edt(~pos)
            sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
                posdis.max() - posdis.min()
            )
            sdf[find_boundaries(pos, mode="inner")] = 0
            out[b] = sdf
    return out


def blob_masks(batch: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """Deterministic smooth blobs, about a fifth of the volume, like an LA crop."""
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in shape), indexing="ij")
    masks = []
    for _ in range(batch):
        centre = (torch.rand(3, generator=g) - 0.5) * 0.4
        radii = 0.35 + 0.2 * torch.rand(3, generator=g)
        r = sum(((x - c) / a) ** 2 for x, c, a in zip(grids, centre, radii))
        wobble = 0.15 * torch.sin(4 * grids[0] + 3 * grids[1]) * torch.cos(5 * grids[2])
        masks.append(r + wobble < 1)
    return torch.stack(masks)


def timed_with_peak(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """:func:`common.timed` and the peak CUDA memory in GiB (NaN on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(fn, device, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows: list[dict[str, object]] = []

    def record(what: str, size: str, seconds: float, peak: float = float("nan"), **extra: object) -> None:
        rows.append({"what": what, "size": size, "ms": round(seconds * 1e3, 2), "peak_gib": round(peak, 3), **extra})

    # Exact targets at the LA training size.
    la = (112, 112, 80)
    masks = blob_masks(2, la).to(device)
    host = masks.cpu().numpy()
    ref_s, _ = timed_with_peak(lambda: dtc_compute_sdf(host), torch.device("cpu"), args.repeats)
    record("DTC compute_sdf (scipy + skimage, host)", "2x112x112x80", ref_s)
    torch_s, peak = timed_with_peak(lambda: signed_distance(masks, backend="torch"), device, args.repeats)
    record(f"signed_distance, torch backend ({device.type})", "2x112x112x80", torch_s, peak, ratio=ref_s / torch_s)
    scipy_s, _ = timed_with_peak(
        lambda: signed_distance(masks.cpu(), backend="scipy"), torch.device("cpu"), args.repeats
    )
    record("signed_distance, scipy backend (host)", "2x112x112x80", scipy_s, ratio=ref_s / scipy_s)
    agree = (signed_distance(masks, backend="torch").cpu() - torch.from_numpy(dtc_compute_sdf(host))).abs().max()
    record("max abs difference, torch backend vs DTC", "2x112x112x80", 0.0, max_abs_diff=float(agree))

    soft_sdf_rows(device, args.repeats, record)
    h_sweep_rows(device, record)

    meta = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": f"python benchmarks/targets.py --device {args.device} --repeats {args.repeats}",
    }
    out = HERE / "results" / f"targets-{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    tmp.replace(out)
    print(f"{meta['date']}  {meta['device']}  torch {meta['torch']}  threads {meta['cpu_threads']}")
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("what", "size", "ms", "peak_gib")}
        ms = "" if row["ms"] == 0 else f"{row['ms']:>9.1f} ms"
        peak = "" if row["peak_gib"] != row["peak_gib"] else f"  {row['peak_gib']} GiB"
        print(f"{row['what']:<48} {row['size']:<14} {ms}{peak}  {extra or ''}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
