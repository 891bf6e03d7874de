"""Grids and DDP on a real local SLURM cluster (tests/slurm_cluster.py): the job array and its cap, the same
table as a local grid, requeue by signal and by the scheduler resuming to the same weights, a failed cell
shown with its error, and a two-task DDP job."""

import csv
import json
import os
import signal
import sys
import time

import pytest
import torch
import yaml

from mtssl.bench.run import grid_status, run_grid
from mtssl.cli import main
from mtssl.engine.checkpoint import load_checkpoint
from tests.engine.test_train import tiny_config
from tests.slurm_cluster import start_cluster

SAME = ("recipe", "labels", "seed", "dice", "jaccard", "hd95", "asd", "empty_predictions", "run")
ONE_CPU = {"cpus_per_task": 1, "time": 20}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for submitit's sbatch, squeue and scontrol
    try:
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def write_grid(tmp_path, iterations=4, recipes=("supervised", "dtc"), labels=(2, 3), patch=16, **train):
    base = tiny_config(iterations=iterations, deterministic=True, **train)
    base["data"].update(size=[2 * patch] * 3, patch=[patch] * 3)
    base["eval"]["stride"] = [patch] * 3
    base["data"]["num_train"] = 6
    base["eval"]["max_cases"] = 2
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    grid = {"base": "base.yaml", "recipes": {r: {} for r in recipes}, "labels": list(labels), "seeds": [0]}
    grid["baseline"] = recipes[0]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def finished(out, n):
    return lambda: len(list((out / "runs").glob("*/labels*/seed*/timing.json"))) == n


def test_a_grid_through_slurm_gives_the_local_table(slurm, tmp_path):
    grid = write_grid(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each SLURM task (one CPU): the sums then match
    try:
        run_grid(grid, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "slurm"
    ids = run_grid(grid, out, launcher="slurm", slurm={**ONE_CPU, "array_parallelism": 2})
    assert len(ids) == 4
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert len({job.split("_")[0] for job in jobs.values()}) == 1  # one array
    assert "ArrayTaskThrottle=2" in slurm.run("scontrol", "show", "job", jobs[ids[0]].split("_")[0])
    slurm.wait(finished(out, 4), 400, "the 4 cells")
    slurm.wait(lambda: (out / "results.csv").is_file(), 60, "the last cell's tables")
    rows = {}
    for name in ("local", "slurm"):
        with open(tmp_path / name / "results.csv") as f:
            rows[name] = [{k: r[k] for k in SAME} for r in csv.DictReader(f)]
    assert rows["slurm"] == rows["local"]
    spans = [json.loads(p.read_text()) for p in (out / "runs").glob("*/labels*/seed*/timing.json")]
    for t in spans:  # never more than 2 cells at once
        assert sum(s["started"] < t["finished"] and t["started"] < s["finished"] for s in spans) <= 2
    status = grid_status(grid, out)
    assert status.splitlines()[-1] == "4 finished"
    # Nothing is submitted twice.
    assert run_grid(grid, out, launcher="slurm", slurm=ONE_CPU) == []


def test_a_requeued_cell_resumes_to_the_weights_of_an_uninterrupted_run(slurm, tmp_path):
    """SIGUSR2 (SLURM's warning before a time limit) and a requeue by the scheduler: each time the trainer
    saves, the task goes back to the queue, resumes, and the cell ends where an uninterrupted run ends."""
    iterations = 300
    grid = write_grid(
        tmp_path, iterations, recipes=("supervised",), labels=(2,), patch=32, log_every=1, checkpoint_every=100
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(grid, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "slurm"
    (cell_id,) = run_grid(grid, out, launcher="slurm", slurm=ONE_CPU)
    job = json.loads((out / "slurm" / "jobs.json").read_text())[cell_id]
    log = out / "runs" / cell_id / "log.jsonl"

    def reached(n):
        def check():
            lines = log.read_text().splitlines() if log.is_file() else []
            return bool(lines) and json.loads(lines[-1]).get("iteration", 0) >= n

        return check

    def release():  # a requeued job waits ~2 minutes before it may start again; the test cluster skips that
        slurm.wait(
            lambda: slurm.run("squeue", "-h", "-j", job, "-o", "%T", check=False).strip() == "PENDING", 60, "pending"
        )
        slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")

    slurm.wait(reached(30), 180, "iteration 30")
    slurm.run("scancel", "--signal=USR2", job)  # the time-limit warning: submitit requeues the task itself
    release()
    slurm.wait(reached(150), 240, "iteration 150 after the first requeue")
    slurm.run("scontrol", "requeue", job)  # the scheduler takes the node back (a preemption)
    release()
    slurm.wait(finished(out, 1), 300, "the requeued cell")
    a = load_checkpoint(tmp_path / "local" / "runs" / cell_id / "checkpoints" / "last.pt")
    b = load_checkpoint(out / "runs" / cell_id / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == iterations
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    logs = "".join(p.read_text() for p in (out / "slurm").glob(f"{job}_*log.*"))
    assert f"stopped by signal {int(signal.SIGUSR2)}" in logs and f"stopped by signal {int(signal.SIGTERM)}" in logs


def test_a_failing_cell_is_shown_with_its_error_and_not_requeued(slurm, tmp_path, capsys):
    grid = write_grid(tmp_path, recipes=("supervised",), labels=(2,))
    out = tmp_path / "out"
    # The data set's options are checked at run time, on the node: a bad one fails there.
    (cell,) = run_grid(grid, out, launcher="slurm", slurm=ONE_CPU, overrides=["data.size=[8,8,8]"])
    slurm.wait(lambda: "failed" in grid_status(grid, out, ["data.size=[8,8,8]"]), 120, "the failure")
    time.sleep(3)
    assert main(["bench", str(grid), "--out", str(out), "--status", "data.size=[8,8,8]"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"failed         {cell}") and "patch" in shown and shown.endswith("1 failed\n")


def test_a_two_task_job_trains_one_run_with_ddp(slurm, tmp_path):
    """``srun mtssl train`` in a job of 2 tasks: 2 gloo ranks from SLURM's variables, one run folder."""
    cfg = tiny_config(iterations=4)
    cfg["eval"]["max_cases"] = 1
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    command = f"srun {sys.executable} -m mtssl train {path} --out {run}"
    job = slurm.run(
        "sbatch",
        "--parsable",
        "--ntasks=2",
        "--cpus-per-task=1",
        f"--output={tmp_path / 'job.out'}",
        f"--wrap={command}",
    ).strip()
    slurm.wait(
        lambda: slurm.run("squeue", "-h", "-j", job, "-o", "%T", check=False).strip() in ("", "COMPLETED"),
        240,
        "the DDP job",
    )
    log = (tmp_path / "job.out").read_text()
    assert (run / "metrics.json").is_file(), log
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["world_size"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run")] == ["run"]
