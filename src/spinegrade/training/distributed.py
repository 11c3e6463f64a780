"""torch.distributed set-up for `torchrun` (DDP): one process per GPU, or several CPU processes
(gloo).

Launch with e.g. `torchrun --nproc-per-node 4 -m spinegrade train ...` (one machine) or with
`--nnodes N --node-rank R --rdzv-endpoint HOST:PORT` on each of N machines. Outside torchrun
everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that torchrun describes in the environment (no-op when not launched by
    it).

    The backend is NCCL when CUDA is available, else gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current()


def current() -> DistInfo:
    """The current process's rank and world size (rank 0 of 1 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    """Wait for all processes (no-op when not distributed)."""
    if current().enabled:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from rank `src` to every process."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's picklable `obj`, in rank order (`[obj]` when not distributed)."""
    if not current().enabled:
        return [obj]
    out: list[Any] = [None] * current().world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
