"""torchrun support: process group from env vars, DDP over the trainable modules, sharding, rank 0 I/O.

The same commands run single-process or under ``torchrun --nproc-per-node N``; torchrun sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT and this module picks them up: gloo
on CPU, nccl on GPU. Only rank 0 writes files (log, checkpoints, weights, registry, cache index).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled and dist.is_initialized():
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's share of `indices` (round robin: rank r gets r, r + W, r + 2W, ...)."""
        return indices[self.rank :: self.world_size]


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda:LOCAL_RANK when CUDA is available, else cpu; otherwise torch.device(device)."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device=cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto") -> DistContext:
    """A DistContext from torchrun's env vars, initialising the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev)


@contextmanager
def distributed_session(device: str = "auto") -> Iterator[DistContext]:
    """init_distributed(); on a clean exit barrier, then (always) destroy the process group.

    On an exception the barrier is skipped (the other ranks may be blocked in a collective;
    torchrun stops them) but the group is still destroyed so the process exits promptly.
    """
    ctx = init_distributed(device)
    owns = ctx.enabled and dist.is_initialized()
    try:
        yield ctx
        if owns:
            ctx.barrier()
    finally:
        if owns and dist.is_initialized():
            dist.destroy_process_group()


def wrap_ddp(module: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel over `module` (only its trainable parameters are all-reduced).

    find_unused_parameters=True: a head's loss may leave some of its parameters unused in a step.
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index or 0] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """obj from rank `src` on every rank (pickled by torch.distributed between our own processes)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj, ctx: DistContext) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
