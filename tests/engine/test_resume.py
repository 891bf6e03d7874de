"""A killed run resumes to exactly the weights of an uninterrupted one (deterministic mode, CPU)."""

import os
import signal
import subprocess
import sys
import time

import torch
import yaml

from mtssl.engine.checkpoint import load_checkpoint
from tests.engine.test_train import tiny_config

ITERATIONS = 150


def run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread each: no oversubscription, same sums
    return subprocess.Popen([sys.executable, "-m", "mtssl", "train", *args], env=env, **kwargs)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    cfg = tiny_config(iterations=ITERATIONS, checkpoint_every=10, log_every=10, deterministic=True)
    cfg["recipe"]["ema_teacher"] = True  # the teacher must survive the kill too
    cfg["eval"]["max_cases"] = 0
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))

    straight = run([str(path), "--out", str(tmp_path / "straight")])
    assert straight.wait(timeout=300) == 0
    killed = run([str(path), "--out", str(tmp_path / "killed")])
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    interrupted_at = load_checkpoint(last)["iteration"]
    assert 10 <= interrupted_at < ITERATIONS

    resumed = run([str(path), "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.wait(timeout=300) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert a["iteration"] == b["iteration"] == ITERATIONS
    for part in ("model", "teacher"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert not any(p.name.endswith(".tmp") for p in last.parent.iterdir())  # no half-written files left
