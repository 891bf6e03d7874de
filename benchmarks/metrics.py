"""HD95 and ASD from mtssl.metrics (EDT on the device) against medpy, on LA test labels.

    python benchmarks/metrics.py [--device cuda] [--data ../shared/data]

Each of the 20 LA test labels (shard 0, restored into a temporary folder) is compared with a copy
eroded twice; the values must agree to 1e-4 and the times are summed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import torch
from common import write_result
from scipy import ndimage

from mtssl import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    import medpy.metric.binary as medpy

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, f"{args.data}/la/restore.py", tmp, "--shards", "0"], check=True, capture_output=True
        )
        ids = (Path(tmp) / "test.list").read_text().split()
        labels = [h5py.File(Path(tmp) / c / "mri_norm2.h5")["label"][:].astype(bool) for c in ids]
    ours_s = ref_s = 0.0
    worst = 0.0
    for label in labels:
        pred = ndimage.binary_erosion(label, iterations=2)
        p, t = torch.from_numpy(pred)[None].to(device), torch.from_numpy(label)[None].to(device)
        start = time.perf_counter()
        values = metrics.compute(p, t, ("hd95", "asd"))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        ref = (medpy.hd95(pred, label), medpy.asd(pred, label))
        ref_s += time.perf_counter() - start
        worst = max(worst, abs(float(values["hd95"][0]) - ref[0]), abs(float(values["asd"][0]) - ref[1]))
    rows = [
        {"method": f"mtssl.metrics hd95+asd ({device.type})", "cases": len(labels), "s": ours_s},
        {"method": "medpy hd95 + asd (CPU)", "cases": len(labels), "s": ref_s, "max_abs_diff": worst},
    ]
    write_result("metrics", device, rows)


if __name__ == "__main__":
    main()
