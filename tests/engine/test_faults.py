"""Faults: signals, corrupt and foreign checkpoints, a full disk, NaN steps."""

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from mtssl import files as files_module
from mtssl.cli import main
from mtssl.engine import checkpoint as ckpt_module
from mtssl.engine.checkpoint import CheckpointError, load_checkpoint, load_state_checked, save_checkpoint
from mtssl.engine.progress import TrainingInterrupted
from mtssl.engine.run import train_run
from mtssl.engine.trainer import Trainer
from mtssl.recipes.base import Recipe, Term
from tests.engine.test_train import tiny_config


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, signum):
    cfg = tiny_config(iterations=100000, checkpoint_every=100000, log_every=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtssl", "train", str(path), "--out", str(tmp_path / "run")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "run" / "log.jsonl"
    deadline = time.monotonic() + 120
    while (not log.exists() or not log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert f"stopped by signal {int(signum)} at iteration" in err and "--resume" in err and "Traceback" not in err
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 1 <= state["iteration"] < 100000


def test_corrupt_checkpoint_fails_its_checksum(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(3)}})
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt \\(checksum mismatch\\)"):
        load_checkpoint(path)
    (tmp_path / "b.pt").write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CheckpointError, match="is not an mtssl checkpoint"):
        load_checkpoint(tmp_path / "b.pt")


class _FullDisk:
    """A file that takes half of what is written, then fails with ENOSPC (the disk filled mid-file)."""

    def __init__(self, path, mode):
        self.file = open(path, mode)

    def write(self, data):
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.mark.parametrize("where", ["mid-file", "fsync"])
def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    path = save_checkpoint(tmp_path / "last.pt", {"iteration": 1, "w": torch.randn(1000)})
    if where == "mid-file":
        monkeypatch.setattr(files_module, "open", _FullDisk, raising=False)
    else:

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ckpt_module.os, "fsync", full)
    with pytest.raises(CheckpointError, match=r"No space left on device.*the previous checkpoint is intact"):
        save_checkpoint(path, {"iteration": 2, "w": torch.randn(1000)})
    assert load_checkpoint(path)["iteration"] == 1  # and its checksum verified
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_checkpoint_of_another_model_lists_the_keys(tmp_path):
    dtc = tiny_config(iterations=2)
    dtc["recipe"] = {"name": "dtc"}
    train_run(dtc, tmp_path / "dtc")
    trainer = Trainer.from_config(tiny_config(), tmp_path / "sup")
    state = load_checkpoint(tmp_path / "dtc" / "checkpoints" / "last.pt")["model"]
    with pytest.raises(CheckpointError, match=r"does not fit this model.*unexpected \(2\): heads\.0\.sdf\.0\.weight"):
        load_state_checked(trainer.model, state, "dtc checkpoint")
    wide = tiny_config()
    wide["model"]["backbone"]["n_filters"] = 8
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state_checked(Trainer.from_config(wide, tmp_path / "w").model, trainer.model.state_dict(), "narrow")


def test_nan_steps_can_be_skipped_and_are_counted(tmp_path):
    trainer = Trainer.from_config(
        tiny_config(iterations=8, nan_policy="skip", log_every=4, nan_check_every=1), tmp_path
    )

    def poisoned(ctx):
        return {"seg_term": ctx.outputs["seg"].mean() * (math.nan if ctx.iteration in (2, 5) else 1.0)}

    trainer.recipe = Recipe(tasks=trainer.recipe.tasks, terms=(Term.of(poisoned),))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.iteration == 8 and trainer.skipped == 2
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert '"skipped_steps": 2' in lines[-1]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_interrupted_run_resumes_without_losing_or_repeating_an_iteration(tmp_path, how):
    cfg = tiny_config(iterations=12, checkpoint_every=5, log_every=1, nan_check_every=1, deterministic=True)
    cfg["recipe"]["ema_teacher"] = True
    straight = Trainer.from_config(cfg, tmp_path / "straight")
    straight.fit()

    broken = Trainer.from_config(cfg, tmp_path / "broken")
    terms = broken.recipe.terms

    def interrupt(ctx):
        if ctx.iteration == 7:
            if how == "signal":
                broken._signals.signum = signal.SIGTERM  # what the SIGTERM handler does
            else:
                raise _Crash("a bug in a loss term")
        return {}

    broken.recipe = Recipe(tasks=broken.recipe.tasks, terms=(*terms, Term.of(interrupt)))
    expected = TrainingInterrupted if how == "signal" else _Crash
    with pytest.raises(expected):
        broken.fit()
    saved = load_checkpoint(tmp_path / "broken" / "checkpoints" / "last.pt")["iteration"]
    assert saved == (8 if how == "signal" else 5)  # the signal's step finishes; a crash keeps the last good one

    resumed = Trainer.from_config(cfg, tmp_path / "broken", resume=True)
    assert resumed.iteration == saved
    resumed.fit()
    for a, b in [(straight.model, resumed.model), (straight.teacher.model, resumed.teacher.model)]:
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), key
    logged = [json.loads(line)["iteration"] for line in (tmp_path / "broken" / "log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))  # each iteration logged once: none lost, none repeated


class _Payload:
    """Unpickling this would run code: it writes a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_checkpoints_load_weights_only(tmp_path):
    import hashlib
    import io

    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": ckpt_module.FORMAT, "model": {}, "evil": _Payload(marker)}, buffer)
    payload = buffer.getvalue()
    path = tmp_path / "evil.pt"
    path.write_bytes(ckpt_module.MAGIC + hashlib.sha256(payload).hexdigest().encode() + payload)  # a valid checksum
    with pytest.raises(CheckpointError, match=r"evil\.pt is refused: it holds a pickled object") as refused:
        load_checkpoint(path)
    assert not marker.exists()  # nothing ran
    message = str(refused.value)
    assert "weights_only" not in message and "False" not in message  # PyTorch's hint is not passed on
    assert "open" in message  # the reason: the global it would have called
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


# --- Issue 23: faults that surfaced only after a whole run, or as raw tracebacks ---

COMPOSED = "recipe={name: composed, tasks: {seg: {task: seg}}, terms: [{term: supervised, output: seg}]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.stride=[0,0,0]"], r"eval\.stride must hold positive sizes, got \[0, 0, 0\]"),
        (["eval.batch_size=0"], r"eval\.batch_size must be a positive integer, got 0"),
        ([COMPOSED + ", evaluate: seg/1}"], r"recipe\.evaluate names the output 'seg/1', which the model does not"),
        ([COMPOSED.replace("{task: seg}", "{task: seg, sharpness: 3}") + "}"], r"unknown option .*sharpness"),
        (["model.tasks.seg.num_classes=3"], r"model\.tasks\.seg\.num_classes is 3 but the data set has 1"),
        (["recipe={name: dtc, consistency: .nan}"], r"weight c must be a finite number >= 0, got nan"),
        (["recipe={name: dtc, consistency: -1.0}"], r"weight c must be a finite number >= 0, got -1\.0"),
        (["recipe={name: mean_teacher, ema_decay: -0.5}"], r"teacher decay must lie in \[0, 1\]"),
        (["recipe={name: mean_teacher, ramp_divisor: 0}"], r"weight divisor must be a positive integer"),
    ],
    ids=[
        "stride-0",
        "eval-batch-0",
        "no-branch",
        "task-option",
        "head-classes",
        "nan-weight",
        "negative-weight",
        "negative-decay",
        "divisor-0",
    ],
)
def test_dry_run_catches_what_used_to_fail_after_training(tmp_path, capsys, overrides, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run", *overrides]) == 2
    assert re.search(message, capsys.readouterr().err)
    # and a real run fails the same way before its first step, writing nothing
    assert main(["train", str(path), "--out", str(tmp_path / "run"), *overrides]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_zero_size_test_volume_fails_the_dry_run(tmp_path, capsys):
    from tests.data.test_bad_input import make_la

    def empty(i, image, label, path):
        return (np.zeros((20, 0, 12), np.float32), np.zeros((20, 0, 12), np.uint8)) if i == 3 else None

    root = make_la(tmp_path / "la", corrupt=empty)
    cfg = tiny_config(iterations=2)
    cfg["data"] = {"name": "la", "root": str(root), "labeled": 2, "patch": [16, 16, 8]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    assert "case C3: the image is empty" in capsys.readouterr().err


def test_every_step_skipped_writes_no_metrics(tmp_path):
    from mtssl.engine.meters import NonFiniteLossError

    trainer = Trainer.from_config(tiny_config(iterations=4, nan_policy="skip", log_every=2), tmp_path)
    trainer.recipe = Recipe(
        tasks=trainer.recipe.tasks, terms=(Term.of(lambda ctx: {"x": ctx.outputs["seg"].mean() * math.nan}),)
    )
    with pytest.raises(NonFiniteLossError, match=r"all 4 steps were skipped as not finite .* not tested"):
        trainer.fit()
    assert not (tmp_path / "metrics.json").exists()


def test_the_nan_stop_is_one_line_and_the_log_is_strict_json(tmp_path, capsys, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=4, log_every=1, nan_check_every=1)))
    real = Trainer.from_config.__func__

    def poisoned(cls, *args, **kwargs):
        trainer = real(cls, *args, **kwargs)
        trainer.recipe = Recipe(tasks=trainer.recipe.tasks, terms=(Term.of(_nan_at_3),))
        return trainer

    monkeypatch.setattr(Trainer, "from_config", classmethod(poisoned))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    # the progress lines (a plain line per log record, train.progress: false) and then the stop, in one line
    stop = [line for line in err.splitlines() if not line.startswith("train ")]
    assert len(stop) == 1 and "loss term 'x' is nan at iteration 3" in stop[0] and "--resume" in stop[0]
    for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"bare {token} in log.jsonl"))


def _nan_at_3(ctx):
    return {"x": ctx.outputs["seg"].mean() * (math.nan if ctx.iteration == 2 else 1.0)}


def test_log_records_with_nan_values_are_written_as_null(tmp_path):
    from mtssl.engine.records import RunLog

    with RunLog(tmp_path / "log.jsonl") as log:
        log.write({"iteration": 1, "loss/x": math.nan, "it_per_s": math.inf})
    line = (tmp_path / "log.jsonl").read_text()
    assert json.loads(line, parse_constant=lambda t: pytest.fail(t)) == {
        "iteration": 1,
        "loss/x": None,
        "it_per_s": None,
    }


def test_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    locked = tmp_path / "locked"

    def refuse(self, *args, **kwargs):  # what a read-only folder does (CI runs as root, which may write anywhere)
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["train", str(path), "--out", str(locked / "run")]) == 1
    err = capsys.readouterr().err
    assert err == f"mtssl train: {locked / 'run'}: Permission denied\n"


def test_an_over_long_name_is_one_line(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    assert main(["train", str(path), "--out", str(tmp_path / ("x" * 300))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mtssl train: ") and "File name too long" in err and err.count("\n") == 1


def test_a_checkpoint_asking_for_a_huge_model_is_refused_before_building(tmp_path):
    """A few-KB checkpoint with a valid checksum whose config asks for n_filters 256: the shapes are
    compared on the meta device first, so the load fails at once in a process limited to 2 GiB of data."""
    train_run(tiny_config(iterations=1), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    state["config"]["model"]["backbone"]["n_filters"] = 256
    del state["optimizer"]
    save_checkpoint(tmp_path / "bomb.pt", {k: v for k, v in state.items() if k != "format"})
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (2 * 2**30, 2 * 2**30))\n"
        "import mtssl\n"
        "from mtssl.engine.checkpoint import CheckpointError\n"
        "from mtssl.engine.evaluator import evaluate_run\n"
        "for load in (mtssl.load, evaluate_run):\n"
        "    try:\n"
        "        load(sys.argv[1])\n"
        "    except CheckpointError as exc:\n"
        "        print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "bomb.pt")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("does not fit this model") == 2 and "(4, 1, 3, 3, 3) != (256, 1, 3, 3, 3)" in done.stdout


def test_ctrl_c_outside_the_loop_is_130_and_one_line(tmp_path, capsys, monkeypatch):
    import mtssl.engine.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mtssl.engine.run, "train_run", interrupted)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "mtssl train: interrupted\n"
