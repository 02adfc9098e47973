"""Convolution tokens: a learned 1-D convolution over time of the binned counts, strided.

A bin token is one bin; a VQ token is a window of bins squeezed through a codebook. In between
sits the plain signal-processing answer: slide a learned filter bank over the population's counts
and keep every ``stride``-th output. Each token then sees ``kernel_bins`` bins (a little more than
its own ``stride`` bins, so neighbouring tokens overlap) and a trial of T bins is ``ceil(T / stride)``
tokens: fewer tokens than bins, with no quantisation.

    counts (B, T, U_in)
      -> f(counts), per-session read-in U_in -> H              (B, T, H)
      -> Conv1d(H, D, kernel_bins, stride), padded so that token n is centred on bins
         [n * stride, (n + 1) * stride)                        (B, N, D), N = ceil(T / stride)

Sessions record different neurons, so the read-in is per session (as for bin tokens); the
convolution is shared. Padded bins are zeroed before the convolution, so nothing leaks in from
past a trial's end.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mini_decoders.tokenizers.base import Tokenizer, Tokens
from mini_decoders.tokenizers.bins import TRANSFORMS, compress_counts
from mini_decoders.tokenizers.vq import window_mask


class ConvTokenizer(Tokenizer):
    """Held-in counts ``(B, T, U)`` -> one token per ``stride`` bins ``(B, ceil(T / stride), D)``.

    Args:
        units_per_session: input neurons of each session (inputs zero-padded to the largest).
        dim: token size ``D``.
        hidden: ``H``, width of the per-session read-in the convolution reads (the knob that sets
            the tokenizer's parameter count).
        stride: bins per token (> 1 makes fewer tokens than bins).
        kernel_bins: bins one token sees; at least ``stride``, and ``kernel_bins - stride`` even so
            that the overlap is the same on both sides.
        transform: count compression before the read-in (see :func:`~mini_decoders.tokenizers.bins.compress_counts`).
    """

    READS, TIME_UNIT = "binned", "window"

    def __init__(self, units_per_session: list[int], dim: int, hidden: int = 32, stride: int = 2,
                 kernel_bins: int = 4, transform: str = "log1p"):
        super().__init__()
        if stride < 1 or kernel_bins < stride or (kernel_bins - stride) % 2:
            raise ValueError(f"need 1 <= stride <= kernel_bins with kernel_bins - stride even, got "
                             f"stride={stride}, kernel_bins={kernel_bins}: e.g. stride=2, kernel_bins=4")
        if transform not in TRANSFORMS:
            raise ValueError(f"count transform must be one of {TRANSFORMS}, got {transform!r}")
        self.window, self.kernel_bins, self.transform = int(stride), int(kernel_bins), transform
        max_units = max(int(u) for u in units_per_session)
        # (S, U_max, H): one read-in per session, stacked so a batch can mix sessions in one einsum.
        self.read_in_weight = nn.Parameter(torch.randn(len(units_per_session), max_units, hidden) / math.sqrt(max_units))
        self.read_in_bias = nn.Parameter(torch.zeros(len(units_per_session), hidden))
        self.conv = nn.Conv1d(hidden, dim, kernel_bins, stride=stride)

    def forward(self, counts: Tensor, session: Tensor, valid: Tensor) -> Tensor:
        """(B, T, U_max) counts, (B,) session index, (B, T) real bins -> (B, ceil(T / stride), D)."""
        features = compress_counts(counts.float(), self.transform)
        read_in = torch.einsum("btu,buh->bth", features, self.read_in_weight[session])
        read_in = (read_in + self.read_in_bias[session][:, None, :]) * valid[..., None]  # (B, T, H)
        n_bins = counts.shape[1]
        n_tokens = -(-n_bins // self.window)
        overlap = (self.kernel_bins - self.window) // 2
        # Pad so that output n covers bins [n*stride - overlap, (n+1)*stride + overlap).
        padded = F.pad(read_in.transpose(1, 2), (overlap, n_tokens * self.window - n_bins + overlap))  # (B, H, T')
        return self.conv(padded).transpose(1, 2)  # (B, N, D)

    def tokens(self, batch) -> Tokens:
        """One token per ``stride`` bins of the held-in counts: (B, N, D), at window positions
        0..N-1, real where the window holds a real bin."""
        valid = batch["time_mask"]
        window_valid = window_mask(valid, self.window)  # (B, N)
        positions = torch.arange(window_valid.shape[1], device=valid.device).expand(window_valid.shape)
        return Tokens(self(batch["heldin"], batch["session_index"], valid), positions, window_valid)

