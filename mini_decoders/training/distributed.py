"""Data parallel training through ``torchrun`` (DistributedDataParallel), and nothing home-made.

Launch any training script with ``torchrun --nproc_per_node G script.py`` (or on several nodes
with ``--nnodes``); ``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` and the Trainer
notices them. Each rank takes its contiguous slice of every global batch, computes the mean loss
over its slice, and DDP averages the gradients across ranks. A world of one launched by
``torchrun`` (``--nproc_per_node 1``, one GPU) runs the same DDP code (process group, wrapper), so
that one GPU checks what eight run.

Assumption: the model's loss is a *per-sample mean* over the batch. Then the average over ranks of
per-slice means equals the mean over the whole global batch, so G processes with global batch B
take exactly the step one process takes with batch B (up to float summation order). A loss that
is a sum, or a mean over tokens when slices hold different numbers of tokens, breaks this
equality: the optimisation still works but is not identical to single-process training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mini_decoders.errors import RunError


@dataclass(frozen=True)
class WorldInfo:
    """Where this process sits: ``rank`` among ``world_size`` processes, ``local_rank`` on its node."""

    rank: int
    local_rank: int
    world_size: int
    launched: bool = False  # by torchrun (or a process group exists): DDP even in a world of one

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1 or self.launched


def world_info() -> WorldInfo:
    """This process's rank, local rank and world size (from the process group, else the environment)."""
    initialized = dist.is_available() and dist.is_initialized()
    if initialized:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    launched = initialized or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun sets it in every process it starts
    return WorldInfo(rank=rank, local_rank=int(os.environ.get("LOCAL_RANK", rank)), world_size=world_size,
                     launched=launched)


def is_main_process() -> bool:
    """True on rank 0, the only process that writes checkpoints and logs and shows progress."""
    return world_info().rank == 0


def init_distributed(device_type: str) -> bool:
    """Join the process group when launched by ``torchrun`` (any ``WORLD_SIZE``, 1 included).

    The backend is NCCL for CUDA and gloo otherwise (CPU, and the tests). Returns True when this
    call created the group (so the caller should destroy it when done), False otherwise.
    """
    if not world_info().is_distributed or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def close_distributed() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still needs it)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_batch_slice(global_batch_size: int, world: WorldInfo) -> slice:
    """Positions of this rank's samples within a global batch: a contiguous slice.

    Raises:
        RunError: ``global_batch_size`` is not divisible by the world size.
    """
    if global_batch_size % world.world_size != 0:
        raise RunError(f"batch_size {global_batch_size} is the global batch and must be divisible by the "
                       f"number of processes ({world.world_size}); choose a multiple of {world.world_size}")
    local_size = global_batch_size // world.world_size
    return slice(world.rank * local_size, (world.rank + 1) * local_size)


def wrap_model(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel on ``device`` (rank 0's weights are broadcast)."""
    device_ids = [device.index] if device.type == "cuda" else None
    # Our models routinely leave parameters out of a step (per-session read-ins, the readout of a
    # task not in the batch, embedding tables); without this flag DDP would wait for their gradients.
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. validation metrics, so every rank takes the same decision)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
