"""Shared helpers of the benchmark scripts: timing, and writing a result file with its metadata."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one warm-up run unless ``warmup=False``."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(
    name: str, device: torch.device, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None
) -> Path:
    """``results/<name>-<device>.json`` with the date, machine, torch version and command."""
    meta = {
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "command": "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        **(extra or {}),
    }
    out = HERE / "results" / f"{name}-{device.type}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"{meta['date']}  {meta['device']}  torch {meta['torch']}  threads {meta['cpu_threads']}")
    for row in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {out}")
    return out


def timed_cpu(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (all threads of this process) of ``fn``, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def write_dataset_json(
    out: Path, name: str, description: str, channel: str, labels: dict[str, int], trains: int, ending: str
) -> None:
    """``out/dataset.json`` of an nnU-Net v2 raw dataset with one input channel."""
    meta = {
        "name": name,
        "description": description,
        "channel_names": {"0": channel},
        "labels": labels,
        "numTraining": trains,
        "file_ending": ending,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))


def convert_dataset(out: Path, given: Path | None, shards: Path, build: Callable[[Path], None]) -> int:
    """Write the new folder ``out`` by ``build(source)``: ``source`` is ``given`` (a data set restored
    already), else the shards in ``shards`` restored by their ``restore.py`` into a temporary folder.
    Returns the exit code (2, with a message, when ``out`` exists: nothing is written over)."""
    import subprocess
    import tempfile

    if out.exists():
        print(f"{out} exists; give a new folder", file=sys.stderr)
        return 2
    if given is not None:
        build(given)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "restored"
        subprocess.run([sys.executable, str(shards / "restore.py"), str(source), "--src", str(shards)], check=True)
        build(source)
    return 0
