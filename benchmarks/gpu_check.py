"""One command for a CUDA machine: every CUDA path the CPU CI cannot exercise, then the timings.

    python benchmarks/gpu_check.py --la ~/LA                 # on a GPU: checks, train_step, two LA runs
    python benchmarks/gpu_check.py --tiny --out /tmp/g.json  # the same code paths on the CPU, in seconds

Checks (each recorded with its value, its tolerance and pass/fail; a failing check does not stop
the others): bf16 autocast with channels-last and cudnn autotune against fp32, the exact EDT and
the SDF targets on the device against the scipy result, the soft SDF (FFT and log-domain) on the
device against the CPU, the batched sliding window against a per-window loop, the metrics on the
device against the CPU, and a 1-rank NCCL process group (gloo on the CPU). Then ``train_step`` of
every recipe at the LA setting (batch 2+2, 112x112x80, 16 filters, bf16) as a ratio to the
supervised step, and one full LA run each of supervised and DBiSL at 16 labels (6000 iterations,
the full test protocol). Everything goes into one JSON (default
``benchmarks/results/gpu_check-<device>.json``). Budget on one H100-class GPU: under 9 minutes.
``--tiny`` shrinks every size and replaces LA by the phantom so the test suite runs it on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_step import step_rows  # noqa: E402

from mtssl.config import load_config  # noqa: E402
from mtssl.engine.run import train_run  # noqa: E402
from mtssl.engine.sliding_window import sliding_window, window_starts  # noqa: E402
from mtssl.metrics import compute  # noqa: E402
from mtssl.ops import edt, signed_distance, soft_signed_distance  # noqa: E402


def blobs(batch: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Smooth random masks, ``(B, *S)`` bool."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, *(max(2, n // 8) for n in shape), generator=g)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return (torch.nn.functional.interpolate(x, size=shape, mode=mode)[:, 0] > 0.55).to(device)


class Report:
    """The checks and timings, written as one JSON file after every entry (a killed run keeps its part)."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.data = out, {"meta": meta, "checks": [], "train_step": [], "la_runs": []}

    def check(self, name: str, fn: Callable[[], tuple[float, float]]) -> None:
        """Run ``fn`` -> (value, tolerance); passes when ``value <= tolerance``."""
        start = time.perf_counter()
        try:
            value, tol = fn()
            row = {"check": name, "value": value, "tolerance": tol, "passed": bool(value <= tol)}
        except Exception as exc:  # a failing path is a result here, not the end of the run
            row = {"check": name, "passed": False, "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(row))
        self.data["checks"].append(row)
        self.write()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.out)


def check_amp(device: torch.device, shape: tuple[int, ...]) -> tuple[float, float]:
    """A V-Net step under bf16 autocast with channels-last and cudnn autotune, against fp32."""
    from mtssl.nets.vnet import VNet

    torch.backends.cudnn.benchmark = device.type == "cuda"
    net = VNet(in_channels=1, n_filters=8, has_dropout=False).to(device).eval()
    x = torch.randn(2, 1, *shape, device=device)
    with torch.no_grad():
        ref = net(x).float()
        fmt = torch.channels_last_3d if device.type == "cuda" else torch.contiguous_format
        net_cl = net.to(memory_format=fmt)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net_cl(x.to(memory_format=fmt))
    if device.type == "cuda" and out.dtype != torch.bfloat16:
        raise AssertionError(f"autocast gave {out.dtype}, not bfloat16")
    return float((out.float() - ref).abs().max() / ref.abs().max()), 0.05


def check_edt(device: torch.device, shape: tuple[int, ...]) -> tuple[float, float]:
    masks = blobs(2, shape, device)
    on_device = edt(masks, backend="torch")
    host = edt(masks.cpu(), backend="scipy")
    sdf = (signed_distance(masks, backend="torch").cpu() - signed_distance(masks.cpu(), backend="scipy")).abs().max()
    return float(max((on_device.cpu() - host).abs().max(), sdf)), 1e-4


def check_soft_sdf(device: torch.device, shape: tuple[int, ...], method: str) -> tuple[float, float]:
    logits = torch.randn(2, 1, *shape) * 4
    radius = None if method == "fft" else 3.0
    cpu = soft_signed_distance(logits, 2.0, kernel="exp", radius=radius, normalize=True, method=method)
    x = logits.to(device).requires_grad_()
    out = soft_signed_distance(x, 2.0, kernel="exp", radius=radius, normalize=True, method=method)
    out.square().mean().backward()
    if not torch.isfinite(x.grad).all():
        raise AssertionError("non-finite gradient")
    return float((out.detach().cpu() - cpu).abs().max()), 1e-4


def check_sliding_window(device: torch.device, shape: tuple[int, ...]) -> tuple[float, float]:
    conv = torch.nn.Conv3d(1, 2, 3, padding=1).to(device)
    image = torch.randn(1, *(n + n // 2 for n in shape), device=device)

    def predict(w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return conv(w).softmax(1)

    patch, stride = list(shape), [max(1, n // 2) for n in shape]
    batched = sliding_window(predict, image, patch, stride, batch_size=4)
    total = torch.zeros_like(batched)
    count = torch.zeros_like(batched[:1])
    for z in window_starts(image.shape[1], patch[0], stride[0]):
        for y in window_starts(image.shape[2], patch[1], stride[1]):
            for x in window_starts(image.shape[3], patch[2], stride[2]):
                index = (slice(None), slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                total[index] += predict(image[None][(slice(None), *index)])[0]
                count[index] += 1
    return float((batched - total / count).abs().max()), 1e-5


def check_metrics(device: torch.device, shape: tuple[int, ...]) -> tuple[float, float]:
    pred, label = blobs(2, shape, device), blobs(2, shape, device).roll(2, dims=1)
    on_device = compute(pred, label)
    host = compute(pred.cpu(), label.cpu())
    return max(float((on_device[k].cpu() - host[k]).abs().max()) for k in host), 1e-4


def check_process_group(device: torch.device) -> tuple[float, float]:
    """A 1-rank group on this machine: NCCL on CUDA, gloo on the CPU; all_reduce of a known tensor."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=0,
        world_size=1,
    )
    try:
        x = torch.arange(4.0, device=device)
        dist.all_reduce(x)
        return float((x.cpu() - torch.arange(4.0)).abs().max()), 0.0
    finally:
        dist.destroy_process_group()


def la_run(recipe: str, la: Path | None, out: Path, tiny: bool) -> dict[str, Any]:
    """One run through ``mtssl train``'s code path; the LA protocol, or the phantom for ``--tiny``."""
    if tiny:
        config = load_config(
            HERE.parent / "examples" / "configs" / f"phantom_{recipe}.yaml",
            [
                "train.iterations=4",
                "train.progress=false",
                "data.num_train=4",
                "data.num_test=1",
                "data.size=[24,24,24]",
                "data.patch=[16,16,16]",
                "eval.patch=[16,16,16]",
                "eval.stride=[16,16,16]",
                "model.backbone.n_filters=4",
                "train.checkpoint_every=4",
            ],
        )
    else:
        config = load_config(
            HERE.parent / "examples" / "configs" / f"la_{recipe}_16.yaml",
            [f"data.root={la}", "train.progress=false", "train.log_every=500"],
        )
    start = time.perf_counter()
    summary = train_run(config, out / time.strftime("%Y%m%d-%H%M%S") / recipe) or {}
    wall = time.perf_counter() - start
    keys = ("mean", "std", "cases", "empty_predictions")
    return {"recipe": recipe, "wall_s": round(wall, 1), **{k: summary.get(k) for k in keys}}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--la", type=Path, help="the restored LA folder (train.list, test.list, <ID>/mri_norm2.h5)")
    parser.add_argument("--out", type=Path, help="the JSON file (default: results/gpu_check-<device>.json)")
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu_check"), help="where the LA runs write")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and the phantom: a CPU smoke run")
    parser.add_argument("--skip-la-runs", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if not args.tiny and device.type != "cuda":
        parser.error("no CUDA device: run with --tiny for the CPU smoke run")
    if not args.tiny and not args.skip_la_runs and (args.la is None or not (args.la / "train.list").exists()):
        parser.error("--la DIR must hold the restored LA set (python ../shared/data/la/restore.py DIR)")
    out = args.out or HERE / "results" / f"gpu_check-{device.type}.json"
    meta = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    report = Report(out, meta)
    shape = (16, 16, 12) if args.tiny else (112, 112, 80)
    report.check(
        "bf16 autocast + channels_last_3d + cudnn.benchmark vs fp32 (relative max error)",
        lambda: check_amp(device, (16, 16, 16) if args.tiny else (112, 112, 80)),
    )
    report.check("exact EDT and SDF targets, torch on the device vs scipy", lambda: check_edt(device, shape))
    for method in ("fft", "direct"):
        report.check(
            f"soft SDF ({method}) fwd+bwd on the device vs the CPU", lambda m=method: check_soft_sdf(device, shape, m)
        )
    report.check(
        "batched sliding window vs a per-window loop",
        lambda: check_sliding_window(device, (8, 8, 8) if args.tiny else (64, 64, 48)),
    )
    report.check("metrics on the device vs the CPU", lambda: check_metrics(device, shape))
    report.check("1-rank process group all_reduce", lambda: check_process_group(device))
    report.data["train_step"] = step_rows(device, "tiny" if args.tiny else "la", None, 1 if args.tiny else args.repeats)
    report.write()
    if not args.skip_la_runs:
        for recipe in ("supervised", "dbisl"):
            report.data["la_runs"].append(la_run(recipe, args.la, args.runs, args.tiny))
            print(json.dumps(report.data["la_runs"][-1]))
            report.write()
    failed = [c["check"] for c in report.data["checks"] if not c["passed"]]
    print(f"wrote {out}; {len(report.data['checks']) - len(failed)} checks passed, {len(failed)} failed")
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
