"""The run folder under faults: one writer, no debris, a log that survives a full disk, checkpoint history,
and resumes that refuse a changed config."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtssl.cli import main
from mtssl.config import ConfigError
from mtssl.engine.checkpoint import load_checkpoint
from mtssl.engine.records import RunFolderError, RunLock, RunLog, remove_stale_temp_files
from mtssl.engine.run import train_run
from mtssl.engine.trainer import Trainer
from mtssl.recipes.base import Recipe, Term
from tests.engine.test_train import tiny_config


class _Crash(RuntimeError):
    pass


def crash_in_step(trainer, iteration):
    """Make ``trainer`` raise :class:`_Crash` in step ``iteration`` (1-based), as a bug in a loss term would."""

    def crash(ctx):
        if ctx.iteration == iteration - 1:
            raise _Crash("a bug in a loss term")
        return {}

    trainer.recipe = Recipe(tasks=trainer.recipe.tasks, terms=(*trainer.recipe.terms, Term.of(crash)))
    return trainer


def logged(folder):
    return [json.loads(line)["iteration"] for line in (folder / "log.jsonl").read_text().splitlines()]


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_second_train_into_the_same_folder_is_refused(tmp_path, capsys):
    first_cfg = tiny_config(iterations=40, log_every=1, checkpoint_every=20)
    path = tmp_path / "first.yaml"
    path.write_text(yaml.safe_dump(first_cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mtssl", "train", str(path), "--out", str(run)]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "log.jsonl").is_file() and (run / "log.jsonl").read_text(), "the first run's log")
        second = tiny_config(iterations=3, seed=7)
        second_path = tmp_path / "second.yaml"
        second_path.write_text(yaml.safe_dump(second))
        assert main(["train", str(second_path), "--out", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another mtssl process (pid {first.pid})" in err and "another --out" in err
        assert first.poll() is None  # the first run goes on
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    # The first run's folder is its own: its config, every iteration logged once, its metrics.
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 1337
    assert logged(run) == list(range(1, 41))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 40
    assert (run / "metrics.json").is_file()


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from mtssl.engine.records import RunLock\nheld = RunLock({str(tmp_path)!r}).__enter__()\n"
            "import time; time.sleep(60)",
        ],
    )
    wait_for(lambda: (tmp_path / ".lock").is_file() and (tmp_path / ".lock").read_text().strip(), "the lock")
    with pytest.raises(RunFolderError, match=f"pid {holder.pid}"), RunLock(tmp_path):
        pass
    holder.kill()  # kill -9: no clean-up code runs
    holder.wait()
    with RunLock(tmp_path):  # the kernel dropped the lock with the process
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


SLOW_SECOND_FSYNC = """
import os, sys, time
from pathlib import Path
import mtssl.files
from mtssl.cli import main

calls = []
real = os.fsync

def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and "/.last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
        calls.append(fd)
    if len(calls) == 2:  # the second checkpoint: stop with its temp file written, and wait for the kill
        Path(sys.argv[2]).write_text("writing")
        time.sleep(600)
    real(fd)

mtssl.files.os.fsync = fsync
sys.exit(main(["train", sys.argv[1], "--out", sys.argv[3]]))
"""


def test_sigkill_during_a_checkpoint_write_leaves_debris_the_next_start_removes(tmp_path):
    cfg = tiny_config(iterations=12, checkpoint_every=4, log_every=1)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run, marker = tmp_path / "run", tmp_path / "writing"
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent(SLOW_SECOND_FSYNC))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(marker), str(run)], env=env)
    wait_for(marker.exists, "the second checkpoint write")
    temp = list((run / "checkpoints").glob(".last.pt.*.tmp"))
    assert len(temp) == 1 and temp[0].stat().st_size > 0  # the write is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert temp[0].exists()  # a kill -9 leaves it: nothing of the process runs
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 4

    summary = train_run(cfg, run, resume=True)
    assert not list((run / "checkpoints").glob("*.tmp")) and not list(run.glob("*.tmp"))
    assert summary is not None and load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 12
    assert logged(run) == list(range(1, 13))


def test_remove_stale_temp_files_takes_only_mtssls_own(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    debris = [
        tmp_path / "checkpoints" / ".last.pt.123.tmp",
        tmp_path / ".metrics.json.77.tmp",
        tmp_path / ".log.jsonl.9.tmp",
    ]
    # A user's temp files, some named much like ours: none is the temp file of a file mtssl writes.
    foreign = [
        tmp_path / "draft.tmp",
        tmp_path / "dataset.tar.gz.tmp",
        tmp_path / "metrics.json.tmp",
        tmp_path / ".notes.txt.12.tmp",
        tmp_path / "checkpoints" / ".my_model.pth.5.tmp",
    ]
    keep = [tmp_path / "checkpoints" / "last.pt", tmp_path / "log.jsonl", *foreign]
    for p in debris + keep:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(debris)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in debris)


class _HalfThenFull:
    """A log file whose disk fills up in the middle of a line."""

    def __init__(self, file):
        self.file = file

    def write(self, text):
        self.file.write(text[: len(text) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_on_the_log_fails_clearly_and_resumes_cleanly(tmp_path, monkeypatch):
    cfg = tiny_config(iterations=12, checkpoint_every=4, log_every=1)
    enter = RunLog.__enter__
    writes = []

    def full_after_six(self):
        enter(self)
        real_write = self.write

        def write(record):
            writes.append(record["iteration"])
            if record["iteration"] == 6:
                self._file = _HalfThenFull(self._file)
            real_write(record)

        self.write = write
        return self

    monkeypatch.setattr(RunLog, "__enter__", full_after_six)
    with pytest.raises(
        RunFolderError, match=r"could not write .*log\.jsonl \(No space left on device\) at iteration 6"
    ):
        train_run(cfg, tmp_path)
    monkeypatch.undo()
    assert logged(tmp_path) == [1, 2, 3, 4, 5]  # the half line was taken back
    train_run(cfg, tmp_path, resume=True)
    assert logged(tmp_path) == list(range(1, 13))


def test_resume_drops_a_torn_last_line(tmp_path, caplog):
    cfg = tiny_config(iterations=6, checkpoint_every=3, log_every=1)
    trainer = crash_in_step(Trainer.from_config(cfg, tmp_path), 5)
    with pytest.raises(_Crash):
        trainer.fit()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"iteration": 5, "lr": 0.0')  # a write cut by a kill or a full disk
    train_run(cfg, tmp_path, resume=True)
    assert "dropped line 5, a torn or foreign record" in caplog.text
    assert logged(tmp_path) == list(range(1, 7))


def test_a_damaged_last_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    cfg = tiny_config(iterations=9, checkpoint_every=3, log_every=1, deterministic=True)
    straight = tmp_path / "straight"
    train_run(cfg, straight)
    kept = sorted(p.name for p in (straight / "checkpoints").glob("*.pt"))
    assert kept == ["iter-0000006.pt", "last.pt"]  # keep_checkpoints = 2: last.pt and the one before

    trainer = crash_in_step(Trainer.from_config(cfg, tmp_path / "broken"), 8)
    with pytest.raises(_Crash):
        trainer.fit()
    last = tmp_path / "broken" / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[-100] ^= 0xFF  # a bit flip on disk
    last.write_bytes(bytes(data))

    resumed = Trainer.from_config(cfg, tmp_path / "broken", resume=True)
    assert resumed.iteration == 3
    assert "checksum mismatch" in caplog.text and "iter-0000003.pt, the newest checkpoint that loads" in caplog.text
    resumed.fit()
    assert logged(tmp_path / "broken") == list(range(1, 10))
    a, b = load_checkpoint(straight / "checkpoints" / "last.pt"), load_checkpoint(last)
    assert all((a["model"][k] == b["model"][k]).all() for k in a["model"])  # the same run as without the fault


def test_keep_checkpoints_keeps_the_last_n(tmp_path):
    train_run(tiny_config(iterations=10, checkpoint_every=2, keep_checkpoints=3), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == [
        "iter-0000006.pt",
        "iter-0000008.pt",
        "last.pt",
    ]
    with pytest.raises(ConfigError, match="keep_checkpoints must be at least 1"):
        Trainer.from_config(tiny_config(keep_checkpoints=0), tmp_path / "none")


def test_resume_with_a_changed_config_is_refused_unless_allowed(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2, checkpoint_every=2)))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    before = (run / "config.yaml").read_text()
    code = main(["train", str(path), "--out", str(run), "--resume", "train.iterations=4", "train.optimizer.lr=0.001"])
    assert code == 2
    err = capsys.readouterr().err
    assert "differs from the checkpoint's in 2 key(s)" in err
    assert "train.iterations: 2 -> 4" in err and "train.optimizer.lr: 0.01 -> 0.001" in err
    assert "--allow-config-change" in err
    assert (run / "config.yaml").read_text() == before  # nothing overwritten
    # Watching a run differently is no change; the same config resumes silently.
    Trainer.from_config({**tiny_config(iterations=2, checkpoint_every=2, progress=True)}, run, resume=True)
    args = ["train", str(path), "--out", str(run), "--resume", "--allow-config-change", "train.iterations=4"]
    assert main(args) == 0
    changes = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert changes == [{"iteration": 2, "changed": {"train.iterations": [2, 4]}}]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 4


def test_the_first_record_after_a_resume_says_what_it_averages(tmp_path):
    cfg = tiny_config(iterations=10, checkpoint_every=3, log_every=5)
    trainer = crash_in_step(Trainer.from_config(cfg, tmp_path), 5)
    with pytest.raises(_Crash):
        trainer.fit()
    Trainer.from_config(cfg, tmp_path, resume=True).fit()  # resumed at 3
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["window"]) for r in records] == [(5, [4, 5]), (10, [6, 10])]


def test_a_run_is_never_overwritten_silently(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2, checkpoint_every=2, log_every=1)))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine")  # not a run file: --overwrite leaves it
    before = (run / "log.jsonl").read_text()
    assert main(["train", str(path), "--out", str(run), "train.seed=5"]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds a run already; --resume to continue it, --overwrite to replace it" in err
    assert (run / "log.jsonl").read_text() == before  # untouched
    assert main(["train", str(path), "--out", str(run), "--resume", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert main(["train", str(path), "--out", str(run), "--overwrite", "train.seed=5"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 5
    assert logged(run) == [1, 2] and (run / "notes.txt").read_text() == "mine"


# --- Issue 23: mtssl deletes or overwrites only files it wrote itself --------------------------------------

# A user's files that look like a run's: same folders, similar names. None of them is mtssl's.
LOOK_ALIKES = {
    "draft.tmp": "a draft",
    "dataset.tar.gz.tmp": "half a download",
    "metrics.json.tmp": "not ours",
    "config.yaml.bak": "# my old config",
    "metrics.json~": "an editor's backup",
    "Log.jsonl": "capitalised",
    "notes.md": "notes",
    "checkpoints/my_model.pth": "foreign weights",
    "checkpoints/last.pt.orig": "a copy",
    "checkpoints/iter-12.pt": "not seven digits",
    "checkpoints/best.pth": "another suffix",
    "checkpoints/.my_model.pth.5.tmp": "a foreign temp file",
    "checkpoints/sub/last.pt": "one level deeper",
    "tensorboard/notes.txt": "not an event file",
    "evaluations/mine/notes.md": "beside an evaluation",
}


def plant(folder, files):
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def unchanged(folder, files):
    return {name: (folder / name).read_text() if (folder / name).exists() else None for name in files} == files


def test_remove_own_is_the_only_deletion_and_refuses_every_look_alike(tmp_path):
    from mtssl.files import is_own, remove_own

    plant(tmp_path, LOOK_ALIKES)
    for name in LOOK_ALIKES:
        assert not is_own(name), name
        with pytest.raises(ValueError, match=r"refusing to remove .*mtssl did not write a file of that name"):
            remove_own(tmp_path, [name])
    assert unchanged(tmp_path, LOOK_ALIKES)
    # The rule is grep-able: no other module of the package removes files.
    package = Path(__file__).resolve().parents[2] / "mtssl"
    removers = re.compile(r"\.unlink\(|\.rmdir\(|rmtree|os\.remove\(|os\.unlink\(")
    hits = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if removers.search(p.read_text()))
    assert hits == ["files.py"]


def test_train_into_a_folder_of_look_alikes_leaves_them_and_overwrite_removes_only_its_own(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2, checkpoint_every=1, log_every=1)))
    run = tmp_path / "p"
    plant(run, LOOK_ALIKES)
    assert main(["train", str(path), "--out", str(run)]) == 0
    assert unchanged(run, LOOK_ALIKES)  # no "*.tmp" removed as debris, nothing in checkpoints/ touched
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2
    assert main(["train", str(path), "--out", str(run), "--overwrite", "train.seed=5"]) == 0
    assert unchanged(run, LOOK_ALIKES)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 5  # the run itself was replaced


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]], ids=["plain", "overwrite", "resume"])
def test_a_users_config_yaml_is_not_a_run_and_is_never_replaced(tmp_path, capsys, flag):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    folder = tmp_path / "project"
    mine = {"config.yaml": "# my experiment, with comments\nlr: 0.1\n", "checkpoints/model.pth": "w"}
    plant(folder, mine)
    assert main(["train", str(path), "--out", str(folder), *flag]) == 2
    err = capsys.readouterr().err
    assert "is not an mtssl run folder (no .mtssl-run marker) but holds files a run would write: config.yaml" in err
    assert "another --out" in err
    assert unchanged(folder, mine)
    assert not (folder / "log.jsonl").exists()


def test_evaluate_with_overrides_never_replaces_the_training_metrics(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2)))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    trained = {name: (run / name).read_bytes() for name in ("metrics.json", "metrics.csv")}
    assert main(["evaluate", str(run), "eval.stride=[8,8,8]"]) == 0
    assert {name: (run / name).read_bytes() for name in trained} == trained
    record = json.loads((run / "evaluations" / "eval.stride=-8,8,8" / "evaluation.json").read_text())
    assert record["overrides"] == ["eval.stride=[8,8,8]"] and record["iteration"] == 2
    capsys.readouterr()
    # --out may not name a folder whose metrics.json an evaluation did not write (here: the run itself).
    assert main(["evaluate", str(run), "eval.lcc=false", "--out", str(run)]) == 2
    assert "was not written by mtssl evaluate" in capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in trained} == trained
    # The bench tables read the training-time metrics, still there.
    assert json.loads((run / "metrics.json").read_text())["selection"] == "last iteration"


def test_a_runs_own_config_trains_as_it_is_and_harmless_changes_resume(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(iterations=2, checkpoint_every=2)))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run)]) == 0
    saved = run / "config.yaml"
    assert "run" in yaml.safe_load(saved.read_text())  # the provenance record is in it
    # The file the resume refusal points to is runnable as it is.
    assert main(["train", str(saved), "--out", str(tmp_path / "again")]) == 0
    a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "again" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run
    # Keys that do not change what is computed resume without --allow-config-change.
    harmless = ["train.log_every=1", "train.checkpoint_every=1", "train.keep_checkpoints=3", "train.nan_check_every=1"]
    assert main(["train", str(saved), "--out", str(run), "--resume", *harmless]) == 0
    assert main(["train", str(saved), "--out", str(run), "--resume", "train.optimizer.lr=0.5"]) == 2
    assert "train.optimizer.lr: 0.01 -> 0.5" in capsys.readouterr().err


def test_a_run_written_before_the_marker_is_known_by_its_checkpoint_header(tmp_path):
    from mtssl.engine.checkpoint import save_checkpoint
    from mtssl.engine.records import holds_run

    legacy, foreign = tmp_path / "legacy", tmp_path / "foreign"
    save_checkpoint(legacy / "checkpoints" / "last.pt", {"iteration": 3})  # an mtssl run of an earlier version
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 someone else's weights")
    assert holds_run(legacy) and not holds_run(foreign)
    assert not (legacy / ".mtssl-run").exists()
