"""Where training runs: the device, the numeric precision, and the seeds.

``auto`` picks the best of what this machine has (a CUDA GPU, Apple's MPS, else the CPU) and the
precision that device does well (bf16 on a GPU that has it, fp16 with a gradient scaler on one
that does not, such as Colab's T4, fp32 elsewhere). An explicit choice the machine cannot run is
refused with a message that says what to use instead.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from mini_decoders.errors import RunError
from mini_decoders.training.distributed import world_info


# The variables that cap a process's BLAS / OpenMP threads; torch reads OMP_NUM_THREADS at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that give a child process (a worker, a Jupyter kernel) ``threads`` CPU threads."""
    return {name: str(int(threads)) for name in THREAD_VARIABLES}


def select_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for a device string: ``auto`` picks cuda, else mps, else cpu.

    Under data parallel on CUDA each process uses ``cuda:<local_rank>``.

    Raises:
        RunError: the device is unknown or not available on this machine.
    """
    name = device.strip().lower()
    mps_available = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu"
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise RunError(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
        if chosen.index is None or world_info().is_distributed:
            chosen = torch.device("cuda", local_rank)
        if chosen.index >= torch.cuda.device_count():
            raise RunError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    elif chosen.type == "mps" and not mps_available:
        raise RunError(f"device {device!r} requested but MPS is not available; use --device cpu or auto")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise RunError(f"unsupported device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    return chosen


def select_precision(precision: str, device_type: str, bf16_supported: bool | None = None) -> str:
    """Resolve ``precision`` to ``fp32``, ``bf16`` or ``fp16`` for a device type.

    ``auto``: bf16 on a CUDA GPU that supports it, fp16 (with a gradient scaler) on one that does
    not (Colab's T4), fp32 on CPU and MPS (CPU autocast is slower than fp32 for small models).

    Args:
        precision: auto | fp32 | bf16 | fp16.
        device_type: "cpu", "cuda" or "mps" (a full device string such as "cuda:1" also works).
        bf16_supported: whether the GPU does bf16; None asks ``torch.cuda.is_bf16_supported()``.

    Raises:
        RunError: an explicit precision the device cannot run.
    """
    device_type = device_type.split(":")[0]
    if device_type == "cuda" and precision in ("auto", "bf16") and bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if precision == "auto":
        if device_type == "cuda":
            return "bf16" if bf16_supported else "fp16"
        return "fp32"
    if precision == "fp16" and device_type != "cuda":
        raise RunError(f"precision fp16 needs a CUDA GPU, but the device is {device_type}; use fp32 or auto")
    if precision == "bf16" and (device_type == "mps" or (device_type == "cuda" and not bf16_supported)):
        raise RunError(f"precision bf16 is not supported on this {device_type} device; use fp16, fp32 or auto")
    if precision not in ("fp32", "bf16", "fp16"):
        raise RunError(f"unknown precision {precision!r}; expected auto, fp32, bf16 or fp16")
    return precision


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device``, through nested dicts, lists and tuples."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
