"""``benchmarks/gpu_check.py --tiny`` runs on the CPU, so the GPU check command cannot rot."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_runs_every_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.chdir(tmp_path)
    import gpu_check

    out = gpu_check.main(["--tiny", "--out", str(tmp_path / "check.json"), "--runs", str(tmp_path / "runs")])
    report = json.loads(out.read_text())
    assert report["meta"]["tiny"] is True
    names = " | ".join(c["check"] for c in report["checks"])
    for path in (
        "bf16 autocast",
        "exact EDT",
        "soft SDF (fft)",
        "soft SDF (direct)",
        "sliding window",
        "metrics",
        "process group",
    ):
        assert path in names, names
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, failed
    steps = {row["recipe"]: row for row in report["train_step"] if ":" not in row["recipe"]}  # not the breakdown
    assert set(steps) == {"supervised", "mean_teacher", "ua_mt", "dtc", "mcnet", "dbisl"}
    assert steps["supervised"]["ratio_to_supervised"] == 1.0 and all(r["ms"] > 0 for r in steps.values())
    runs = {row["recipe"]: row for row in report["la_runs"]}
    assert set(runs) == {"supervised", "dbisl"}
    assert all(r["cases"] == 1 and 0 <= r["mean"]["dice"] <= 1 for r in runs.values()), runs
    sys.modules.pop("gpu_check", None)
