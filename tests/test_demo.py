"""``examples/demo.py`` (what ``make demo`` runs): overrides reach both recipes, each run's output goes to
its log, and a log the demo did not write is never overwritten."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_refuses_to_overwrite_a_log_it_did_not_write(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    mine = out / "supervised_seed0.log"
    mine.write_text("my notes, not the demo's\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    argv = [sys.executable, str(REPO / "examples" / "demo.py"), "--quick", "--out", str(out), "--workers", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert f"{mine} exists and was not written by the demo" in done.stderr and "--out" in done.stderr
    assert mine.read_text() == "my notes, not the demo's\n"
    assert not (out / "supervised_seed0").exists() and not (out / "dbisl_seed0").exists()  # refused before training


def test_demo_rewrites_its_own_logs(tmp_path):
    demo = _demo_module()
    (tmp_path / "dbisl_seed3.log").write_text(demo.log_marker("dbisl", 3) + "train 20/20\n")
    demo.check_logs(tmp_path, [("dbisl", 3), ("supervised", 3)])  # its own log and a missing one: no error
    (tmp_path / "supervised_seed3.log").write_text(demo.log_marker("dbisl", 3))  # another run's marker
    with pytest.raises(SystemExit, match=r"supervised_seed3\.log exists and was not written by the demo"):
        demo.check_logs(tmp_path, [("supervised", 3)])


def test_the_demo_calls_a_difference_beyond_the_seed_spread_only_when_it_is():
    demo = _demo_module()
    assert demo.beyond_spread(6.52, 1.83) == "more" and demo.beyond_spread(-5.06, 1.0) == "more"
    assert demo.beyond_spread(8.65, 12.09) == "not more" and demo.beyond_spread(1.0, 1.0) == "not more"
