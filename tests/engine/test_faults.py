"""Faults: signals, corrupt and foreign checkpoints, a full disk, NaN steps."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from mtssl import files as files_module
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
