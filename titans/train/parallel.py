"""Distributed training under ``torchrun``: process-group setup and model wrapping (DDP, or FSDP2 as an option).

The model code never changes: ``wrap`` takes an unmodified ``TitansLM`` and returns what the loop calls.
Single process (no ``WORLD_SIZE`` in the environment): nothing is initialized and the model is returned as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); a no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device, fsdp: bool = False) -> torch.nn.Module:
    """DDP (or FSDP2 with ``fsdp``) around the model when several processes run; the model itself otherwise."""
    if info.world <= 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_mean(x: float, info: DistInfo) -> float:
    if info.world <= 1:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / info.world)


def cleanup(info: DistInfo):
    """Leave the process group once every rank is done: rank 0 still writes its last checkpoint and plot when the
    others finish, and a rank that tears gloo down while a peer is still connected can abort at exit ("terminate
    called without an active exception", seen in the two-process test)."""
    if info.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
