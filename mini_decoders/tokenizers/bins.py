"""Bin tokens (NDT1, MtM): one token per time bin, made from the population's count vector.

A trial of T bins and U neurons is T tokens. Token ``t`` is a linear read-in of the (compressed)
counts of bin ``t``, plus a learned vector for position ``t``:

    token[t] = scale * (W_s · f(counts[t]) + b_s) + P[t]

``W_s`` belongs to the session ``s`` the trial came from: sessions record different neurons, so
each gets its own read-in into a shared D-dimensional space and one transformer serves them all
("stitching", as in MtM). NDT1 itself used the identity (D = U); a read-in lets D be chosen
freely and many sessions share the model. ``f`` is ``log1p`` or ``sqrt`` (a burst of 8 spikes
should not shout 8 times louder than one) or the identity.

Optionally (``kernel_bins > 1``) the read-in is followed by a learned temporal kernel: each token
channel is convolved over time with its own ``kernel_bins``-wide filter, initialised as a Gaussian.
At initialisation the tokens are then exactly smoothed spike counts, projected: the chapter 2
baseline (smoothing, then a GLM) is what the model computes before it has learned anything, and
the transformer only has to learn what smoothing misses. This is our small-data choice, not
part of NDT1: with ~200 trials a transformer otherwise spends most of its budget learning to
average neighbouring bins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mini_decoders.nn.positions import LearnedPositions
from mini_decoders.nn.temporal_kernel import TemporalKernel
from mini_decoders.tokenizers.base import Tokenizer, Tokens

TRANSFORMS = ("none", "log1p", "sqrt")


def compress_counts(counts: Tensor, transform: str) -> Tensor:
    """``f(counts)`` of the read-in: ``"none"``, ``"log1p"`` or ``"sqrt"``."""
    if transform == "log1p":
        return torch.log1p(counts)
    if transform == "sqrt":
        return torch.sqrt(counts)
    if transform == "none":
        return counts
    raise ValueError(f"count transform must be one of {TRANSFORMS}, got {transform!r}")


class BinTokenizer(Tokenizer):
    """Held-in counts ``(B, T, U)`` -> bin tokens ``(B, T, D)``, with a read-in per session.

    Args:
        units_per_session: number of input neurons of each session; inputs are zero-padded to
            the largest (padded neurons have zero counts, so they add nothing).
        dim: token size ``D``.
        max_bins: longest sequence the position table covers.
        transform: count compression before the read-in (see :func:`compress_counts`).
        scale: multiplies the read-in before positions are added (NDT1: sqrt(D) with identity
            embedding; 1 is right for a learned read-in initialised at unit variance).
        dropout: embedding dropout on the tokens (NDT1/MtM: 0.2; the main regulariser of
            small-data runs).
        kernel_bins: width of the learned temporal kernel after the read-in (odd; 0 or 1 = none).
        kernel_sd_bins: standard deviation of the Gaussian the kernel starts as (bins).
    """

    READS, TIME_UNIT = "binned", "bin"

    def __init__(self, units_per_session: list[int], dim: int, max_bins: int, transform: str = "log1p",
                 scale: float = 1.0, dropout: float = 0.0, kernel_bins: int = 0, kernel_sd_bins: float = 2.0):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"count transform must be one of {TRANSFORMS}, got {transform!r}")
        self.units_per_session = [int(u) for u in units_per_session]
        self.max_units = max(self.units_per_session)
        self.transform, self.scale = transform, float(scale)
        # (S, U_max, D): one Linear per session, stacked so a batch can mix sessions in one einsum.
        self.read_in_weight = nn.Parameter(torch.randn(len(units_per_session), self.max_units, dim)
                                           / math.sqrt(self.max_units))
        self.read_in_bias = nn.Parameter(torch.zeros(len(units_per_session), dim))
        self.positions = LearnedPositions(max_bins, dim)
        self.dropout = nn.Dropout(dropout)
        # (optional) learned temporal kernel, starting as Gaussian smoothing
        self.kernel = TemporalKernel(dim, kernel_bins, kernel_sd_bins) if kernel_bins > 1 else None

    def forward(self, counts: Tensor, session: Tensor, valid: Tensor | None = None, causal: bool = False) -> Tensor:
        """Tokens of a batch.

        Args:
            counts: (B, T, U_max) held-in spike counts (possibly masked), zero-padded in U.
            session: (B,) int64 session index of each sample.
            valid: (B, T) bool, False on padded bins; with a temporal kernel, padded bins are
                zeroed before it so nothing leaks in from past a trial's end. None = all real.
            causal: with a temporal kernel, use only its past half (and the bin itself), so token
                ``t`` depends on bins ``<= t`` only (for causal attention / forward prediction).

        Returns:
            (B, T, D).
        """
        features = compress_counts(counts.float(), self.transform)
        read_in = torch.einsum("btu,bud->btd", features, self.read_in_weight[session])
        read_in = read_in + self.read_in_bias[session][:, None, :]  # (B, T, D)
        if self.kernel is not None:
            read_in = self.kernel(read_in, valid, causal)
        tokens = self.scale * read_in + self.positions(counts.shape[1])
        return self.dropout(tokens)

    def tokens(self, batch) -> Tokens:
        """One token per bin of the held-in counts: (B, T, D), at bin positions 0..T-1, real where ``time_mask``."""
        valid = batch["time_mask"]
        positions = torch.arange(valid.shape[1], device=valid.device).expand(valid.shape)  # (B, T)
        return Tokens(self(batch["heldin"], batch["session_index"], valid), positions, valid)
