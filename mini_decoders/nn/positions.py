"""Position embeddings for bin and patch tokens (NDT1, NDT2, MtM).

Bin tokens sit on a regular grid, so their index *is* their time. NDT1 adds either a fixed
sinusoidal code or a learned vector per index; NDT2 learns one table for time (bin index) and one
for space (patch index). POYO's spike tokens use rotary time instead (``rotary.py``).
"""

import math
from typing import Union

import torch
from torch import Tensor, nn

from mini_decoders.errors import DataError


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """The fixed code of "Attention is all you need".

    ``P[t, 2i] = sin(t / 10000^(2i/dim))`` and ``P[t, 2i+1] = cos(t / 10000^(2i/dim))``: each pair
    of columns is a clock of its own period, from 2 pi to 10000 * 2 pi positions.

    Args:
        n: number of positions.
        dim: embedding size (odd is allowed: the last cosine column is dropped).
    Returns:
        ``(n, dim)`` float32.
    """
    positions = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    inverse_periods = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64)
                                * (-math.log(10000.0) / dim))  # (ceil(dim/2),)
    angles = positions * inverse_periods  # (n, ceil(dim/2))
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # interleave sin, cos
    return table[:, :dim].float()


class LearnedPositions(nn.Module):
    """A learned vector per position index, N(0, init_scale) at the start.

    Args:
        max_len: number of positions the table holds (NDT2: 250 time bins; must cover the longest
            window the model will ever see, in bins or patches).
        dim: embedding size ``D``.
        init_scale: standard deviation of the initial vectors.
    """

    def __init__(self, max_len: int, dim: int, init_scale: float = 0.02):
        super().__init__()
        if max_len <= 0:
            raise ValueError(f"`max_len` must be positive, got {max_len}")
        self.max_len = max_len
        self.table = nn.Parameter(torch.randn(max_len, dim) * init_scale)  # (max_len, D)

    def forward(self, positions: Union[int, Tensor]) -> Tensor:
        """Look up positions.

        Args:
            positions: a sequence length ``T`` (-> positions ``0 .. T-1``) or an int64 tensor
                ``(...)`` of position indices (e.g. the time bin of each shuffled NDT2 token).
        Returns:
            ``(T, D)`` or ``(..., D)``.
        Raises:
            DataError: a position is negative or ``>= max_len`` (the data's windows are longer
                than the model was built for).
        """
        if isinstance(positions, int):
            if positions > self.max_len:
                raise DataError(f"sequence of {positions} tokens is longer than max_len="
                                 f"{self.max_len}: use shorter windows or a model built with a "
                                 f"larger max_len")
            return self.table[:positions]
        if positions.numel() > 0:
            # One device sync per call; cheaper than a CUDA device-side assert that kills the run.
            low, high = int(positions.min()), int(positions.max())
            if low < 0 or high >= self.max_len:
                raise DataError(f"position index {high if high >= self.max_len else low} is "
                                 f"outside [0, max_len={self.max_len}): use shorter windows or a "
                                 f"model built with a larger max_len")
        return self.table[positions]
