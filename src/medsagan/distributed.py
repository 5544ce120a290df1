"""Training on several processes started by torchrun (torch.distributed): one model, one global batch.

Every rank draws the same global batch from the same seeded streams (sampler, pseudo-anomalies, penalty
mixing) and computes its own slice of it; gradients are averaged across ranks after each backward pass, so
N ranks take exactly the step one process would take with the whole batch. Rank 0 alone validates and
writes the run. The generator's random mask draws from torch's global stream, which is seeded per rank.

Gradients are reduced by hand (one flat all-reduce per step) rather than by DistributedDataParallel: the
critic's gradient penalty differentiates through a gradient (create_graph), which DDP's hooks do not
support, and the generator and critic step in turns with the other network frozen (StyleGAN2-ADA reduces
its gradients the same way for the same reasons).
"""

import datetime
import logging
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, RunError

TIMEOUT_ENV = "MEDSAGAN_DIST_TIMEOUT"  # seconds a collective waits for the other ranks (default 1800)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; one process is World(0, 1, 0)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, logs and writes the run."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (dimension 0)."""
        if not self.distributed:
            return tensor
        share = tensor.shape[0] // self.size
        return tensor[self.rank * share : (self.rank + 1) * share]

    def average_gradients(self, module: nn.Module) -> None:
        """Replace each gradient by its mean over the ranks, in one flat all-reduce."""
        if not self.distributed:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each logged value over the ranks (the losses of the whole global batch)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(packed)
        return {k: float(v) / self.size for k, v in zip(keys, packed.tolist(), strict=True)}

    def broadcast(self, value):
        """Rank 0's `value` on every rank (a small picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = World()


def world_from_env() -> World:
    """The World torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK; one process when they are absent."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def start(world: World, device: torch.device) -> None:
    """Join the process group: NCCL for CUDA, gloo for the CPU, with a timeout on every collective."""
    if not world.distributed or torch.distributed.is_initialized():
        return
    seconds = float(os.environ.get(TIMEOUT_ENV, "1800"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as err:
        raise RunError(
            f"rank {world.rank}: could not join the other {world.size - 1} training processes ({err}); start "
            "every process with the same torchrun --rdzv-endpoint and check the network between the machines"
        ) from None


def stop(world: World) -> None:
    """Leave the process group."""
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_batch(world: World, batch_size: int) -> None:
    """The global batch must split evenly over the ranks."""
    if world.distributed and batch_size % world.size:
        raise ConfigError(
            f"train.batch_size {batch_size} does not divide among {world.size} processes; make it a multiple "
            f"of {world.size} (it is the global batch, split across the processes)"
        )


def local_device(device: torch.device, world: World) -> torch.device:
    """A CUDA device per local rank; the CPU as it is."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def launch(processes: int, args: list[str]) -> None:
    """Run `medsagan ARGS` as `processes` ranks on this machine, as `torchrun --standalone` would.

    Rank 0 writes to the terminal; the other ranks' stderr goes to log files, so a refusal that every rank
    reports is shown once, and a failure becomes one line here instead of torchrun's ChildFailedError
    traceback. A rank's own error that rank 0 did not report is repeated from its log.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher's loggers set their own levels (from LOGLEVEL) when created, so a parent's is not enough.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="medsagan-ranks-") as logs:
        quiet = dict.fromkeys(range(1, processes), Std.ERR)
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=processes,
            logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=quiet),
            run_id=str(uuid.uuid4()),
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            max_restarts=0,
        )
        try:
            elastic_launch(config, sys.executable)("-m", "medsagan", *args)
        except ChildFailedError as err:
            own = err.failures.get(0)
            if own is not None and own.exitcode > 0:
                raise SystemExit(own.exitcode) from None  # rank 0 said what went wrong on the terminal
            # Rank 0 ran on, or the launcher stopped it: the failed rank's own error, from its log.
            failed = sorted(rank for rank, failure in err.failures.items() if failure.exitcode > 0)
            logged = sorted(Path(logs).rglob("stderr.log"))
            lines = [line for path in logged for line in path.read_text(errors="replace").splitlines()]
            said = next((line for line in reversed(lines) if line.startswith("error:")), "")
            what = said.removeprefix("error: ") or "it printed no error"
            rank = failed[0] if failed else min(err.failures)
            raise RunError(f"training process rank {rank} failed: {what}") from None
