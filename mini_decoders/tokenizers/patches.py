"""Patch tokens (NDT2): one token per time bin × group of neurons.

A patch is the spike counts of ``neurons_per_token`` neurons in one bin. A population of U
neurons over T bins becomes T × ceil(U / neurons_per_token) tokens. The last group is padded
with zero-count "neurons" that are masked out of every loss (they do not exist).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.errors import DataError


def group_into_patches(counts: np.ndarray | torch.Tensor, neurons_per_token: int = 32):
    """Split the neuron axis of binned counts into fixed-size groups.

    Args:
        counts: (..., T, U) spike counts.
        neurons_per_token: neurons per patch (NDT2 default 32).

    Returns:
        patches: (..., T, P, neurons_per_token) with P = ceil(U / neurons_per_token); padded
            neurons hold 0.
        channel_mask: (P, neurons_per_token) bool, True for real neurons.
    """
    if neurons_per_token < 1:
        raise DataError(f"neurons_per_token must be >= 1, got {neurons_per_token}")
    is_tensor = isinstance(counts, torch.Tensor)
    n_units = counts.shape[-1]
    n_patches = -(-n_units // neurons_per_token)
    pad = n_patches * neurons_per_token - n_units
    if is_tensor:
        padded = torch.nn.functional.pad(counts, (0, pad))
        channel_mask = torch.arange(n_patches * neurons_per_token, device=counts.device) < n_units
    else:
        padded = np.pad(counts, [(0, 0)] * (counts.ndim - 1) + [(0, pad)])
        channel_mask = np.arange(n_patches * neurons_per_token) < n_units
    patches = padded.reshape(*counts.shape[:-1], n_patches, neurons_per_token)
    return patches, channel_mask.reshape(n_patches, neurons_per_token)
