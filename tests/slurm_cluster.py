"""A real single-node SLURM cluster for the tests: Debian's slurm-wlm and munge, started on this machine.

Everything lives in one temp folder: its own munge key and socket (``AuthInfo=socket=...``), its own
``slurm.conf`` (pointed to by ``SLURM_CONF``), its own ports, state and logs; nothing of a SLURM that
the machine may already run is touched. The node has this machine's CPUs, one partition, no accounting
(``squeue`` answers; ``sacct`` would need a database), process tracking without cgroups, and requeue on.
``make test`` installs the packages on a fresh machine (as root, as CI runs); elsewhere the tests that
need the cluster skip, naming what is missing, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun", "munged", "munge")


def _skip_or_fail(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the SLURM tests must run)")
    pytest.skip(message)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """A running test cluster: its folder, ``slurm.conf`` and the environment its clients need."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        root, host = self.root, socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log", "munge"):
            (root / sub).mkdir(mode=0o700)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge = root / "munge"
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={munge / 'socket'}",
                f"--key-file={key}",
                f"--log-file={root / 'log' / 'munged.log'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        ctld, slurmd = _free_ports(2)
        cpus = os.cpu_count() or 1
        self.conf.write_text(
            f"""ClusterName=mtssltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={munge / "socket"}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        subprocess.run(["slurmctld", "-i"], env=self.env, check=True, capture_output=True, timeout=30)
        subprocess.run(["slurmd"], env=self.env, check=True, capture_output=True, timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run("sinfo", "--noheader", "--format=%T", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.5)
        log = (root / "log" / "slurmd.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the test cluster's node did not come up (state {state!r}); slurmd.log:\n{log}")

    def stop(self) -> None:
        self.run("scontrol", "shutdown", check=False)
        for pid_file in (self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munge" / "munged.pid"):
            if pid_file.is_file():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 15)
                except (ProcessLookupError, ValueError):
                    pass

    def wait(self, done: callable, timeout: float, what: str) -> None:
        """Poll ``done()`` until it is true; fail with the queue and the logs after ``timeout`` seconds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if done():
                return
            time.sleep(0.2)
        queue = self.run("squeue", "--array", "--states=all", check=False)
        raise AssertionError(f"timed out waiting for {what}; squeue:\n{queue}")


def start_cluster(root: Path) -> Cluster:
    """A started cluster in ``root``, or a skip (a failure under CI=true) naming what is missing."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        _skip_or_fail(f"SLURM is not installed (no {', '.join(missing)}): `make test` installs slurm-wlm and munge")
    if os.geteuid() != 0:
        _skip_or_fail("the test SLURM cluster needs root: slurmd starts jobs as their user")
    cluster = Cluster(root)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    return cluster
