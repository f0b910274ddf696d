"""Distributed training under ``torchrun``: process-group setup and model wrapping (DDP, or FSDP2 as an option).

The model code never changes: ``wrap`` takes an unmodified ``TitansLM`` and returns what the loop calls.
Single process (no ``WORLD_SIZE`` in the environment): nothing is initialized and the model is returned as is.
Checkpoints hold what one process training the whole model would hold (``full_states``): under FSDP2 the weights
and the AdamW state are gathered from the shards, the optimizer's keyed by integer ids as ``Optimizer.state_dict``
keys them, so that a run may resume with or without sharding, on any number of processes.
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


def is_sharded(info: DistInfo, fsdp: bool) -> bool:
    """Whether :func:`wrap` shards the model (FSDP2 over several processes): its parameters are then ``DTensor``
    shards, the optimizer must be built after the wrap, and full states are gathered collectively."""
    return fsdp and info.world > 1


def _ids_from_names(osd: dict) -> dict:
    """An optimizer state keyed by parameter names (``get_optimizer_state_dict``) -> keyed by the integer ids that
    ``Optimizer.state_dict`` gives (parameters numbered in group order), the format of every checkpoint."""
    ids: dict[str, int] = {}
    groups = [{**g, "params": [ids.setdefault(name, len(ids)) for name in g["params"]]} for g in osd["param_groups"]]
    return {"state": {ids[name]: s for name, s in osd["state"].items()}, "param_groups": groups}


def _names_from_ids(osd: dict, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The inverse of :func:`_ids_from_names` for ``opt``'s parameters (numbered in its group order)."""
    names = {p: n for n, p in model.named_parameters()}
    order = [names[p] for g in opt.param_groups for p in g["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in osd["param_groups"]]
    return {"state": {order[i]: s for i, s in osd["state"].items()}, "param_groups": groups}


def full_states(model: torch.nn.Module, opt: torch.optim.Optimizer, info: DistInfo, fsdp: bool):
    """``(model state dict, optimizer state dict)`` as one process training the whole model holds them, the format a
    checkpoint stores whatever the run's parallelism. Sharded (:func:`is_sharded`): gathered from every rank's shards
    (a collective: every rank must call it) onto rank 0's CPU. Only rank 0 writes checkpoints: other ranks get
    empty dicts."""
    if not is_sharded(info, fsdp):
        return (model.state_dict(), opt.state_dict()) if info.is_main else ({}, {})
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, osd = get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, opt, options=opts)
    return (weights, _ids_from_names(osd)) if info.is_main else ({}, {})


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, osd: dict, info: DistInfo,
                         fsdp: bool) -> None:
    """Load a checkpoint's optimizer state (the format of :func:`full_states`) into ``opt``, built after
    :func:`wrap`; sharded, every rank reads the full state and keeps its own shard of it."""
    if not is_sharded(info, fsdp):
        opt.load_state_dict(osd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, _names_from_ids(osd, model, opt),
                             options=StateDictOptions(full_state_dict=True))


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
