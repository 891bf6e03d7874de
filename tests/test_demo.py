"""``examples/demo.py`` (what ``make demo`` runs): overrides reach both recipes, each run's output goes to its log."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_passes_overrides_to_both_runs_and_logs_each_run(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    argv = [sys.executable, str(REPO / "examples" / "demo.py"), "--quick", "--out", str(out), "--workers", "1"]
    done = subprocess.run(
        [*argv, "--set", "data.num_test=3", "data.labeled=3"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # both runs tested the same 3 cases (a mismatch would fail the pairing), and the title follows the override
    assert "Paired over the 3 test cases" in done.stdout
    assert "3 of 24 labeled, 20 steps" in done.stdout
    assert "with 3 labeled cases" in done.stdout and "the 21 unlabeled ones" in done.stdout
    for recipe in ("supervised", "dbisl"):
        log = (out / f"{recipe}_seed0.log").read_text()
        assert "train 20/20" in log and "test case 3/3" in log  # the worker's lines, not the terminal's
        assert f"{recipe}, seed 0: " in done.stdout
        assert (out / f"{recipe}_seed0" / "metrics.json").is_file()
    assert "train 20/20" not in done.stdout
