"""Checkpoints that survive crashes: written atomically, read safely.

A checkpoint is a plain ``dict`` saved with ``torch.save``. It is read back with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects (loading a file can
then never run code), so a payload may only hold tensors and plain Python values: dict, list,
tuple, str, int, float, bool, None. ``rng_state()`` / ``set_rng_state()`` convert the random
generators' states to and from such values.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mini_decoders.errors import RunError
from mini_decoders.files import replacing

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically.

    The bytes go to a temporary file in the same folder, are flushed to disk, and only then
    replace ``path`` with ``os.replace`` (atomic on POSIX and Windows). A crash, a full disk or a
    Ctrl-C mid-write therefore leaves the previous checkpoint untouched. The file gets the
    permissions of any new file (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is a rename within one file system, never a copy.
    with replacing(path) as temp, open(temp, "wb") as file:
        torch.save(payload, file)
        file.flush()
        os.fsync(file.fileno())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        RunError: the file is missing, truncated, corrupt, or not a checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist; train first, or drop --resume to start afresh")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... by damage kind
        text = str(error).strip()
        # torch's own message suggests loading with weights_only=False, which can run any code the
        # file holds: never repeat that advice about a file that failed the safe load.
        if "weights_only" in text or "weights only" in text.lower():
            text = "it holds something other than tensors and plain values"
        detail = f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__
        raise RunError(f"checkpoint {path} is truncated or corrupt, or not a checkpoint written by mini-decoders "
                       f"(which holds only tensors and plain values) ({detail}); delete it to start afresh") from None
    if not isinstance(payload, dict):
        raise RunError(f"checkpoint {path} holds a {type(payload).__name__}, expected a dict")
    return payload


def capture_rng() -> tuple:
    """The generators' states as the libraries return them: cheap enough to take every step."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def rng_state(captured: tuple | None = None) -> dict[str, Any]:
    """States of the python, numpy and torch (CPU and every CUDA device) generators, as plain values.

    Args:
        captured: a ``capture_rng()`` result to convert; None converts the current states.
    """
    python_state, numpy_state, torch_state, cuda_states = captured if captured is not None else capture_rng()
    python_version, python_internal, python_gauss = python_state
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_cached_gauss = numpy_state
    return {
        "python": [python_version, list(python_internal), python_gauss],
        "numpy": [numpy_kind, torch.from_numpy(numpy_keys.astype(np.int64)), int(numpy_pos),
                  int(numpy_has_gauss), float(numpy_cached_gauss)],
        "torch": torch_state,
        "cuda": list(cuda_states),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states saved by ``rng_state`` (CUDA only when the device count matches)."""
    python_version, python_internal, python_gauss = state["python"]
    random.setstate((python_version, tuple(python_internal), python_gauss))
    numpy_kind, numpy_keys, numpy_pos, numpy_has_gauss, numpy_cached_gauss = state["numpy"]
    np.random.set_state((numpy_kind, numpy_keys.numpy().astype(np.uint32), numpy_pos,
                         numpy_has_gauss, numpy_cached_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
