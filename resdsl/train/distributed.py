"""torchrun support: process group from the environment, DDP wrapping, cross-rank sums."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


class DeviceError(Exception):
    """A device was asked for that this machine does not have."""


@dataclass
class Context:
    """Where this process trains: its rank among `world_size` and its device."""

    rank: int
    world_size: int
    device: torch.device
    # resdsl's own collectives run in a group of their own that teardown frees, which joins its workers:
    # DDP keeps the default group alive past destroy_process_group, and a gloo worker still releasing one
    # of our Python-owned tensors as the interpreter exits aborts the process
    # ("terminate called without an active exception")
    group: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None) -> Context:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _device(device, local_rank)
    if world_size > 1:
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
        group = dist.new_group()
        assert isinstance(group, dist.ProcessGroup), "every rank is a member of the group of all ranks"
        return Context(dist.get_rank(), world_size, chosen, group)
    return Context(0, 1, chosen)


def teardown(context: Context) -> None:
    """Leave the process groups, freeing the one our collectives used (its worker threads are joined)."""
    context.group = None
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel (with SyncBatchNorm if asked) when there is more than one rank."""
    if not context.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(values: list[float], context: Context) -> list[float]:
    """`values` summed over all ranks (unchanged on one process)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, group=context.group)
    return tensor.tolist()


def all_gather(value: object, context: Context) -> list[object]:
    """`value` from every rank, in rank order (a list of one on one process)."""
    if not context.distributed:
        return [value]
    values: list[object] = [None] * context.world_size
    dist.all_gather_object(values, value, group=context.group)
    return values


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier(group=context.group)


def _device(requested: str | None, local_rank: int) -> torch.device:
    if requested is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"'{requested}' is not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {requested} was asked for, but this machine has no CUDA GPU")
        index = device.index if device.index is not None else local_rank
        count = torch.cuda.device_count()
        if index >= count:
            asked = (f"--device {requested} was asked for" if device.index is not None else
                     f"--device {requested} gives the process of LOCAL_RANK {local_rank} the GPU cuda:{index}")
            have = "1 GPU (cuda:0)" if count == 1 else f"{count} GPUs (cuda:0 to cuda:{count - 1})"
            raise DeviceError(f"{asked}, but this machine has {have}")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise DeviceError(f"device '{requested}' is not supported (use cpu, cuda or cuda:N)")
    return device
