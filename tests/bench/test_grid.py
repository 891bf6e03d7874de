"""A 2 x 2 micro-grid: its files, its table against the run folders, and an idempotent re-run."""

import csv
import json

import pytest
import torch
import yaml

from mtssl.bench.run import run_grid
from mtssl.cli import main
from mtssl.config import ConfigError
from tests.engine.test_train import tiny_config


@pytest.fixture
def grid_file(tmp_path):
    base = tiny_config(iterations=4)
    base["data"]["num_train"] = 6
    base["eval"]["max_cases"] = 2
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {
        "base": "base.yaml",
        "recipes": {"supervised": {}, "dtc": {}},
        "labels": [2, 3],
        "seeds": [0],
        "baseline": "supervised",
        "overrides": ["train.log_every=2"],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


OUTPUTS = (
    "results.csv",
    "results.json",
    "results.md",
    "stats.json",
    "dice_vs_labels.png",
    "per_case_dice.png",
    "loss_curves.png",
)


def test_micro_grid(grid_file, tmp_path):
    out = tmp_path / "out"
    published = tmp_path / "published.yaml"
    published.write_text(yaml.safe_dump([{"recipe": "DTC", "labels": 2, "dice": 50.0, "source": "a paper"}]))
    ran = run_grid(grid_file, out, published=published)
    assert ran == ["supervised/labels2/seed0", "supervised/labels3/seed0", "dtc/labels2/seed0", "dtc/labels3/seed0"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 4
    for row in rows:  # the table's numbers come from the run folders
        metrics = json.loads((out / row["run"] / "metrics.json").read_text())
        assert row["dice"] == metrics["mean"]["dice"] and row["hd95"] == metrics["mean"]["hd95"]
        assert row["git_revision"] is None or len(row["git_revision"]) == 40
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    table = (out / "results.md").read_text()
    dtc2 = next(r for r in rows if r["recipe"] == "dtc" and r["labels"] == 2)
    assert f"{100 * dtc2['dice']:.2f} ± 0.00" in table
    assert "| DTC (published: a paper) | 2 | 50.00 |" in table
    assert "## Paired against supervised" in table
    stats = json.loads((out / "stats.json").read_text())
    assert {(s["recipe"], s["labels"]) for s in stats} == {("dtc", 2), ("dtc", 3)}
    assert all(s["cases"] == 2 and s["seeds"] == [0] for s in stats)
    assert all(s["ci95"][0] <= s["mean_dice_difference"] <= s["ci95"][1] and "1 seed" in s["warning"] for s in stats)
    assert "| dtc | supervised | 2 | 1 ⚠ | 2 |" in table

    before = {name: (out / name).read_bytes() for name in ("results.csv", "results.json", "results.md", "stats.json")}
    assert run_grid(grid_file, out, published=published) == []  # nothing new runs
    for name, content in before.items():
        assert (out / name).read_bytes() == content, name


def test_dry_run_and_only(grid_file, tmp_path, capsys):
    assert main(["bench", str(grid_file), "--out", str(tmp_path / "o"), "--dry-run", "--only", "dtc/*"]) == 0
    assert "2 cells to run" in capsys.readouterr().out
    assert not (tmp_path / "o" / "runs").exists()


def test_bad_baseline(tmp_path, grid_file):
    grid = yaml.safe_load(grid_file.read_text())
    grid["baseline"] = "supervisd"
    grid_file.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=r"grid\.baseline 'supervisd' is not one of the recipes"):
        run_grid(grid_file, tmp_path / "o", dry_run=True)


def test_example_grids_expand():
    from pathlib import Path

    from mtssl.bench.grid import load_grid

    grids = Path(__file__).resolve().parents[2] / "examples" / "grids"
    main_grid, cells = load_grid(grids / "la_main.yaml")
    assert len(cells) == 6 * 3 * 3 and main_grid.baseline == "supervised"
    mcnet = next(c for c in cells if c.recipe == "mcnet")
    assert mcnet.config["train"]["iterations"] == 15000 and mcnet.config["recipe"] == {"name": "mcnet"}
    assert {c.config["data"]["labeled"] for c in cells} == {4, 8, 16}
    _, ablation = load_grid(grids / "la_dbisl_ablation.yaml")
    assert {c.recipe for c in ablation} == {
        "dbisl",
        "dbisl_no_transformed",
        "dbisl_no_consistency",
        "dbisl_no_pseudo",
        "dbisl_no_uncertainty",
    }
    assert next(c for c in ablation if c.recipe == "dbisl_no_pseudo").config["recipe"] == {
        "name": "dbisl",
        "pseudo": False,
    }
    _, quick = load_grid(grids / "phantom_quick.yaml", only="dbisl/*")
    assert [c.id for c in quick] == [
        "dbisl/labels2/seed0",
        "dbisl/labels2/seed1",
        "dbisl/labels4/seed0",
        "dbisl/labels4/seed1",
    ]


def test_workers_run_cells_at_once_in_their_own_processes(grid_file, tmp_path):
    import os

    par, seq = tmp_path / "par", tmp_path / "seq"
    longer = "train.iterations=30"  # each cell outlasts a worker's start-up, so both workers get one
    assert main(["bench", str(grid_file), "--out", str(par), "--only", "supervised/*", "--workers", "2", longer]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as each of the two workers: the sums then match
    try:
        run_grid(grid_file, seq, only="supervised/*", overrides=[longer])
    finally:
        torch.set_num_threads(threads)
    timings = [json.loads((par / "runs" / f"supervised/labels{n}/seed0/timing.json").read_text()) for n in (2, 3)]
    a, b = timings
    assert a["process"] != b["process"] and os.getpid() not in (a["process"], b["process"])
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # they overlapped
    rows_par, rows_seq = (json.loads((d / "results.json").read_text()) for d in (par, seq))
    assert [r["run"] for r in rows_par] == [r["run"] for r in rows_seq]
    for p, s in zip(rows_par, rows_seq):  # the same cells, the same numbers
        assert (p["dice"], p["hd95"]) == (s["dice"], s["hd95"])


def test_an_unfinished_cell_continues_from_its_checkpoint(grid_file, tmp_path):
    out = tmp_path / "o"
    run_grid(grid_file, out, only="supervised/labels2/*")
    folder = out / "runs" / "supervised/labels2/seed0"
    log_before = (folder / "log.jsonl").read_text()
    (folder / "metrics.json").unlink()  # as if stopped before testing
    (folder / "timing.json").unlink()
    assert run_grid(grid_file, out, only="supervised/labels2/*") == ["supervised/labels2/seed0"]
    assert (folder / "log.jsonl").read_text() == log_before  # resumed at the end: no step ran again
    assert (folder / "metrics.json").is_file()


def test_bad_workers(grid_file, tmp_path):
    with pytest.raises(ConfigError, match="--workers must be at least 1, got 0"):
        run_grid(grid_file, tmp_path / "o", workers=0)


def test_overrides_apply_to_every_cell(grid_file, tmp_path, capsys):
    from mtssl.bench.grid import load_grid

    _, cells = load_grid(grid_file, overrides=["train.iterations=7", "eval.max_cases=1"])
    assert {c.config["train"]["iterations"] for c in cells} == {7}
    assert {c.config["train"]["log_every"] for c in cells} == {2}  # the grid's own overrides still apply
    args = ["bench", str(grid_file), "--out", str(tmp_path / "o"), "--dry-run", "train.iteratons=3"]
    assert main(args) == 2
    assert "did you mean 'iterations'" in capsys.readouterr().err


def test_the_report_after_only_covers_every_finished_cell(grid_file, tmp_path):
    out = tmp_path / "o"
    run_grid(grid_file, out, only="supervised/labels2/*")
    run_grid(grid_file, out, only="supervised/labels3/*")  # a grid run cell by cell, as a CPU grid is
    rows = json.loads((out / "results.json").read_text())
    assert [(r["recipe"], r["labels"]) for r in rows] == [("supervised", 2), ("supervised", 3)]
    table = (out / "results.md").read_text()
    (out / "results.md").unlink()
    assert main(["bench", str(grid_file), "--out", str(out), "--report"]) == 0  # the tables on demand, unchanged
    assert (out / "results.md").read_text() == table


def test_a_report_with_no_finished_cell_says_so(grid_file, tmp_path, capsys):
    assert main(["bench", str(grid_file), "--out", str(tmp_path / "empty"), "--report"]) == 2
    assert "no cell of" in capsys.readouterr().err and not (tmp_path / "empty").exists()


def test_bold_only_where_the_gap_exceeds_the_seed_spread():
    from mtssl.bench.report import _clear_best, _fmt

    a, b = _fmt([0.80, 0.82, 0.81], 100), _fmt([0.70, 0.71, 0.72], 100)
    assert _clear_best([a, b], higher=True) == 0  # 10 points apart, spread 1
    noisy = _fmt([0.60, 0.90, 0.75], 100)
    assert _clear_best([a, noisy], higher=True) is None  # 6 points apart, spread 15
    assert _clear_best([_fmt([0.9], 100), _fmt([0.1], 100)], higher=True) is None  # one seed: no spread known
    assert _clear_best([_fmt([3.0, 3.1], 1), _fmt([9.0, 9.2], 1)], higher=False) == 0  # 95HD: lower is better


# --- Issue 23: cells written atomically, torn cells rerun, bad cells reported together, clean stops ---


def test_a_torn_or_corrupt_cell_reruns_with_a_warning_naming_it(grid_file, tmp_path, caplog):
    out, only = tmp_path / "out", "supervised/labels2/seed0"
    assert run_grid(grid_file, out, only=only) == [only]
    cell = out / "runs" / only
    assert not list(cell.glob(".*.tmp"))  # timing.json went through a temp file that is gone
    timing = (cell / "timing.json").read_bytes()
    (cell / "timing.json").write_bytes(timing[: len(timing) // 2])  # a full disk cut the write
    assert run_grid(grid_file, out, only=only) == [only]
    assert f"{cell / 'timing.json'} is damaged" in caplog.text and "its cell runs again" in caplog.text
    assert json.loads((cell / "timing.json").read_text())["seconds"] > 0
    (cell / "metrics.json").write_text('{"mean": {"dice": 0.5')  # damaged later
    caplog.clear()
    assert run_grid(grid_file, out, only=only) == [only]
    assert f"{cell / 'metrics.json'} is damaged" in caplog.text
    assert json.loads((cell / "metrics.json").read_text())["cases"] == 2


def test_every_cell_is_checked_before_the_first_runs(grid_file, tmp_path):
    grid = yaml.safe_load(grid_file.read_text())
    grid["recipes"]["dtc"] = {"recipe": {"name": "dtc", "consistency": -1.0}}  # a negative weight
    grid_file.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=r"2 of 4 grid cells have a bad config, nothing ran: dtc/labels2/seed0: "):
        run_grid(grid_file, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


def test_a_failing_cell_does_not_stop_the_others(grid_file, tmp_path, capsys):
    grid = yaml.safe_load(grid_file.read_text())
    grid["labels"] = [2, 40]  # 40 labeled cases of 6: fails when the cell loads its data
    grid_file.write_text(yaml.safe_dump(grid))
    assert main(["bench", str(grid_file), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "2 of 4 cells failed (the other cells ran" in err
    assert "supervised/labels40/seed0: DataError: labeled=40 but the training set has only 6 cases" in err
    assert "Traceback" not in err
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted((r["recipe"], r["labels"]) for r in rows) == [("dtc", 2), ("supervised", 2)]


def test_published_rows_go_through_the_guarded_loader(grid_file, tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
    (tmp_path / "bomb.yaml").write_text(bomb)
    with pytest.raises(ConfigError, match="expands to more than 100,000 values through YAML aliases"):
        run_grid(grid_file, tmp_path / "out", only="supervised/labels2/seed0", published=tmp_path / "bomb.yaml")


def test_sigterm_during_bench_exits_143_with_one_line(grid_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = yaml.safe_load(grid_file.read_text())
    grid["overrides"] = ["train.iterations=100000", "train.log_every=1"]
    grid_file.write_text(yaml.safe_dump(grid))
    cmd = [sys.executable, "-m", "mtssl", "bench", str(grid_file), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.read_text() for p in (tmp_path / "out").glob("runs/*/*/*/log.jsonl")):
        assert time.monotonic() < deadline, "the first cell never logged"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "mtssl bench: stopped by signal 15 at iteration" in err and "run the same command again" in err
    assert "Traceback" not in err


def test_a_cell_whose_config_changed_is_named_not_reused(grid_file, tmp_path, capsys):
    out = tmp_path / "out"
    run_grid(grid_file, out, only="supervised/labels2/*")
    cell = out / "runs" / "supervised/labels2/seed0"
    first = (cell / "metrics.json").read_bytes()
    # Where the data lives and how often the run logs do not change what a cell computes.
    assert run_grid(grid_file, out, only="supervised/labels2/*", overrides=["train.log_every=1"]) == []
    with pytest.raises(ConfigError, match=r"(?s)supervised/labels2/seed0: train\.iterations: 4 -> 5.*--rerun-changed"):
        run_grid(grid_file, out, only="supervised/labels2/*", overrides=["train.iterations=5"])
    assert (cell / "metrics.json").read_bytes() == first  # nothing ran, nothing moved
    assert (
        main(["bench", str(grid_file), "--out", str(out), "--only", "supervised/*", "--dry-run", "train.iterations=5"])
        == 0
    )
    assert "2 cells to run" in capsys.readouterr().out  # the changed cell and the one never run
    ran = run_grid(grid_file, out, only="supervised/labels2/*", overrides=["train.iterations=5"], rerun_changed=True)
    assert ran == ["supervised/labels2/seed0"]
    (moved,) = (out / "stale" / "supervised/labels2/seed0").iterdir()
    assert (moved / "metrics.json").read_bytes() == first
    assert yaml.safe_load((cell / "config.yaml").read_text())["train"]["iterations"] == 5


def test_bench_prints_its_table(grid_file, tmp_path, capsys):
    assert main(["bench", str(grid_file), "--out", str(tmp_path / "o"), "--only", "supervised/labels2/*"]) == 0
    printed = capsys.readouterr().out
    assert "| recipe | labels | Dice % | Dice % median |" in printed and "| supervised | 2 |" in printed
