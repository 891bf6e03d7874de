"""DDP under a real ``torchrun``: two gloo ranks on the CPU against one process over the union batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from mtssl.config import ConfigError
from mtssl.engine.checkpoint import load_checkpoint
from mtssl.engine.evaluator import evaluate_run
from mtssl.engine.run import train_run
from mtssl.engine.trainer import Trainer
from mtssl.registry import DATASETS
from tests.engine.test_train import tiny_config


def ddp_config(batch_size, labeled_bs):
    """A tiny recipe whose loss is a mean over samples (CE only), on a V-Net without BatchNorm or dropout."""
    cfg = tiny_config(iterations=1, batch_size=batch_size, labeled_bs=labeled_bs, deterministic=True)
    cfg["recipe"] = {"name": "supervised", "dice": 0.0, "ce": 1.0, "ema_teacher": True}
    cfg["data"].update(labeled=4, num_train=8)
    cfg["model"]["backbone"].update(normalization="none", has_dropout=False)
    cfg["train"].update(
        optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0},
        lr_schedule={"name": "constant"},
        log_every=1,
    )
    return cfg


def torchrun(config_path, out, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank: no oversubscription
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "mtssl", "train", str(config_path), "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    path = tmp / "ddp.yaml"
    path.write_text(yaml.safe_dump(ddp_config(batch_size=4, labeled_bs=2)))
    done = torchrun(path, tmp / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    union = train_run(ddp_config(batch_size=8, labeled_bs=4), tmp / "union")
    rank0_only = train_run(ddp_config(batch_size=4, labeled_bs=2), tmp / "single")
    return tmp, done, union, rank0_only


def test_two_rank_gradient_equals_the_union_batch_gradient(runs):
    tmp, _, _, _ = runs
    ddp = load_checkpoint(tmp / "ddp" / "checkpoints" / "last.pt")
    union = load_checkpoint(tmp / "union" / "checkpoints" / "last.pt")
    single = load_checkpoint(tmp / "single" / "checkpoints" / "last.pt")
    init = Trainer.from_config(
        ddp_config(4, 2), tmp / "init"
    ).model.state_dict()  # the same seed: the same initial weights
    # SGD with lr 1 and no momentum: w0 - w1 is the step's gradient.
    assert ddp["iteration"] == union["iteration"] == 1
    moved = 0
    for key, w0 in init.items():
        grad_ddp, grad_union = w0 - ddp["model"][key], w0 - union["model"][key]
        moved += bool(grad_union.abs().max() > 0)
        torch.testing.assert_close(grad_ddp, grad_union, rtol=1e-5, atol=1e-7, msg=key)
        # The EMA teacher is kept on every rank and saved from rank 0 (alpha = 0 at the first step).
        torch.testing.assert_close(ddp["teacher"][key], ddp["model"][key])
    assert moved > len(init) // 2  # (without normalization the deepest 1-voxel stages of a 16^3 patch can be dead)
    # The comparison can fail: one rank's batch alone gives another gradient.
    key = next(iter(init))
    assert not torch.allclose(init[key] - single["model"][key], init[key] - union["model"][key], atol=1e-6)


def test_ranks_draw_disjoint_samples_of_the_union_batch():

    cfg = ddp_config(4, 2)["data"]
    data = DATASETS.create(cfg.pop("name"), **cfg)
    shares = [next(iter(data.loader(4, 2, seed=1337, rank=r, world_size=2)))["case"] for r in range(2)]
    union = next(iter(data.loader(8, 4, seed=1337)))["case"]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(union)


def test_rank0_writes_and_the_checkpoint_loads_in_one_process(runs, tmp_path):
    tmp, done, _, _ = runs
    run = tmp / "ddp"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["run"]["world_size"] == 2 and config["train"]["batch_size"] == 4  # per rank
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1]  # one writer
    assert done.stdout.count("run folder:") == 1
    sharded = json.loads((run / "metrics.json").read_text())  # one test case per rank, gathered on rank 0
    alone = evaluate_run(run, out=tmp_path / "alone")
    assert [r["case"] for r in sharded["per_case"]] == [r["case"] for r in alone["per_case"]]
    assert sharded["per_case"] == alone["per_case"]
    # The checkpoint also resumes in one process (one iteration longer: a config change, allowed explicitly).
    longer = ddp_config(4, 2) | {"train": {**ddp_config(4, 2)["train"], "iterations": 2}}
    Trainer.from_config(longer, run, resume=True, allow_config_change=True).fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2


def test_sync_batchnorm_on_cpu_is_a_clear_error(tmp_path):
    cfg = tiny_config(iterations=1, sync_batchnorm=True, device="cpu")
    with pytest.raises(ConfigError, match=r"train\.sync_batchnorm needs CUDA: SyncBatchNorm has no CPU"):
        Trainer.from_config(cfg, tmp_path)


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step(tmp_path):
    import signal
    import time

    cfg = tiny_config(iterations=100000, checkpoint_every=100000, log_every=1)
    cfg["data"].update(labeled=4, num_train=6)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "mtssl", "train", str(path), "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while (not log.exists() or not log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = proc.communicate(timeout=120)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    last_logged = json.loads(log.read_text().splitlines()[-1])["iteration"]
    assert state["iteration"] == last_logged >= 1
    assert err.count(f"stopped by signal 15 at iteration {last_logged}") == 1  # rank 0 reports


def test_ddp_test_metrics_equal_evaluate_of_the_saved_model_with_batchnorm(tmp_path):
    """After the last step each rank's BatchNorm statistics are its own; the sharded test must score the
    saved model (rank 0's), so metrics.json equals a one-process evaluate of last.pt to the last digit."""
    cfg = tiny_config(iterations=3, log_every=1, deterministic=True)
    cfg["recipe"] = {"name": "mean_teacher"}
    cfg["data"].update(labeled=4, num_train=8, num_test=4)
    cfg["model"]["backbone"]["normalization"] = "batch"
    path = tmp_path / "bn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = torchrun(path, tmp_path / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    alone = evaluate_run(tmp_path / "ddp" / "checkpoints" / "last.pt", out=tmp_path / "alone")
    assert [r["case"] for r in sharded["per_case"]] == [f"phantom{i:03d}" for i in range(8, 12)]
    assert json.loads(json.dumps(alone["per_case"])) == sharded["per_case"]
    assert sharded["mean"] == json.loads(json.dumps(alone["mean"]))


def test_a_slurm_step_of_several_tasks_becomes_torchrun_ranks():
    """srun's variables map to torchrun's: rank = SLURM_PROCID, world = the step's tasks, the rendezvous
    host = the step's first node; the batch script (no step) and a torchrun inside the step are left alone."""
    from mtssl.engine.distributed import _first_host, adopt_slurm_step

    step = {
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-10],cpu3",
        "SLURM_JOB_ID": "123456",
    }
    env = dict(step)
    assert adopt_slurm_step(env)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("5", "1", "8")
    assert env["MASTER_ADDR"] == "gpu07"
    assert env["MASTER_PORT"] == str(15000 + 123456 % 20000)
    batch_script = {k: v for k, v in step.items() if k != "SLURM_STEP_NUM_TASKS"} | {"SLURM_NTASKS": "8"}
    assert not adopt_slurm_step(batch_script) and "RANK" not in batch_script
    torchrun = dict(step, WORLD_SIZE="4", RANK="2")
    assert not adopt_slurm_step(torchrun) and torchrun["RANK"] == "2"
    assert not adopt_slurm_step({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"})
    assert _first_host("node3,node4") == "node3" and _first_host("") == "127.0.0.1"
