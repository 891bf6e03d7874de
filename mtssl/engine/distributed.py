"""PyTorch's own distributed engine, as ``torchrun`` starts it: one process per GPU (or CPU rank).

``torchrun --nproc_per_node N -m mtssl train CONFIG`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`session` then joins the process group (NCCL on CUDA, gloo on CPU). Without
those variables everything here is a no-op and a run is a plain one-process run.

On SLURM, ``srun mtssl train CONFIG`` in a job of several tasks (``--nodes 2 --ntasks-per-node 4``)
starts one rank per task with no torchrun: :func:`adopt_slurm_step` reads the step's environment
(``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_STEP_NUM_TASKS``, the first node of
``SLURM_STEP_NODELIST`` as the rendezvous host, a port from the job id) into torchrun's variables,
as Lightning's SLURM environment does. Variables already set (a torchrun inside the step) win.

Host-side agreements (a signal arrived, a loss is not finite) go over a separate gloo group, so
agreeing on a flag never waits for the GPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "adopt_slurm_step", "current", "launched", "pick_device", "session"]


def pick_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; any other name is taken as is."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclasses.dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, the number of ranks and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    flags: Any = None  # the gloo group for host-side flags

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs, checkpoints and metrics."""
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (every rank must call this at the same point)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.flags)
        return bool(value.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.flags)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm's running statistics), in place.

        DDP broadcasts them at the start of each forward, so after the last step every rank but 0 keeps
        statistics updated by its own last batch; rank 0's are the ones saved in the checkpoint, and a
        test sharded over the ranks must use them to score what ``mtssl evaluate`` of that checkpoint scores.
        """
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.flags)

    def pick_device(self, name: str) -> torch.device:
        """This rank's device under DDP, else the device ``name`` picks (see :func:`pick_device`)."""
        return self.device if self.enabled else pick_device(name)

    def wrap(
        self, model: torch.nn.Module, seed: int, sync_batchnorm: bool = False, find_unused_parameters: bool = False
    ) -> tuple[torch.nn.Module, torch.nn.Module]:
        """``(model, net)``: the model (with SyncBatchNorm when asked) and what the step calls, its DDP
        wrapper under DDP (then each rank's RNG is seeded ``seed + rank`` for its own dropout masks;
        the weights come from rank 0). One rank: the model twice."""
        if not self.enabled:
            return model, model
        torch.manual_seed(seed + self.rank)
        if sync_batchnorm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=find_unused_parameters
        )
        return model, net


_current = Dist()


def current() -> Dist:
    """The process's :class:`Dist` (one rank on CPU unless :func:`session` joined a group)."""
    return _current


def adopt_slurm_step(environ: dict[str, str] | None = None) -> bool:
    """Inside a SLURM job step of several tasks (``srun``) with no torchrun variables, set ``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the step; returns whether it did.

    Only a step counts (``SLURM_STEP_NUM_TASKS``): the batch script itself is one process even in a job of
    many tasks, and taking its ``SLURM_NTASKS`` would wait for ranks that never start.
    """
    env = os.environ if environ is None else environ
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if "WORLD_SIZE" in env or tasks <= 1 or "SLURM_PROCID" not in env:
        return False
    env["WORLD_SIZE"] = str(tasks)
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", _first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")))
    env.setdefault("MASTER_PORT", str(15000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000))
    return True


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04],gpu7`` -> ``node01``), as ``scontrol show hostnames``
    expands it; a plain list is read without it."""
    import re
    import subprocess

    if not nodelist:
        return "127.0.0.1"
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    try:
        shown = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        if shown.returncode == 0 and shown.stdout.split():
            return shown.stdout.split()[0]
    except OSError:
        pass
    match = re.match(r"([^\[,]*)\[([^\],-]+)", nodelist)  # prefix[01-04,...] without scontrol
    return match.group(1) + match.group(2) if match else nodelist


def launched() -> bool:
    """Whether this process is one of several ranks: started by ``torchrun`` (or another launcher), or a
    task of a multi-task SLURM step (:func:`adopt_slurm_step` sets torchrun's variables from it)."""
    adopt_slurm_step()
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def session(device: str = "auto", timeout_minutes: float = 30.0) -> Iterator[Dist]:
    """Join the process group that ``torchrun`` describes for the block's duration.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``; each CUDA rank takes
            ``cuda:LOCAL_RANK``.
        timeout_minutes: how long a collective waits for a missing rank before failing.
    """
    global _current
    if not launched() or dist.is_initialized():
        yield _current
        return
    from mtssl.config import ConfigError

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = pick_device(device).type == "cuda"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} visible GPUs: "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        where = torch.device("cuda", local_rank)
    else:
        where = torch.device("cpu")
    timeout = datetime.timedelta(minutes=timeout_minutes)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    flags = dist.new_group(backend="gloo", timeout=timeout) if cuda else dist.group.WORLD
    _current = Dist(rank, world, local_rank, where, flags)
    try:
        yield _current
    finally:
        _current = Dist()
        # The Trainer sits in a reference cycle, so its DDP reducer can keep the group alive past this
        # point; a gloo group left for interpreter shutdown to destroy aborts the process ("terminate
        # called without an active exception") after a finished run: 3 of 28 two-rank CPU runs did.
        gc.collect()
        dist.destroy_process_group()
