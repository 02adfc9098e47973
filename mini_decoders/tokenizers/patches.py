"""Patch tokens (NDT2): one token per time bin × group of neurons.

A patch is the spike counts of ``neurons_per_token`` neurons in one bin. A population of U
neurons over T bins becomes T × ceil(U / neurons_per_token) tokens. The last group is padded
with zero-count "neurons" that are masked out of every loss (they do not exist).

- :func:`group_into_patches`: the grouping alone (numpy or torch), for pictures and exercises.
- :class:`PatchTokenizer`: the learned part: counts of a patch -> one vector, plus learned time
  and space positions; the batch is flattened over space x time into one token sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mini_decoders.errors import DataError
from mini_decoders.nn.positions import LearnedPositions
from mini_decoders.tokenizers.base import Tokenizer, Tokens


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


# ================================================================================================
# The patch tokenizer: counts -> flat space-time tokens -> vectors

@dataclass
class PatchTokens:
    """A batch of patch tokens, flattened over time x space (time-major: token ``t * P + p``).

    Attributes:
        counts: (B, L, neurons_per_token) int64 spike counts, clamped to ``[0, max_count]``;
            padded neurons hold 0.
        channel_mask: (B, L, neurons_per_token) bool, True for real neurons of real tokens.
        time: (B, L) int64 time-bin index of each token.
        space: (B, L) int64 patch index of each token (its place in the neuron axis).
        real: (B, L) bool, True for tokens inside the trial and with at least one real neuron.
    """

    counts: torch.Tensor
    channel_mask: torch.Tensor
    time: torch.Tensor
    space: torch.Tensor
    real: torch.Tensor

    def cat(self, other: "PatchTokens") -> "PatchTokens":
        """Both token sets in one sequence: ``self``'s tokens first."""
        return PatchTokens(*(torch.cat([a, b], dim=1) for a, b in zip(
            (self.counts, self.channel_mask, self.time, self.space, self.real),
            (other.counts, other.channel_mask, other.time, other.space, other.real))))


class PatchTokenizer(Tokenizer):
    """NDT2's tokenizer: each (time bin, group of ``neurons_per_token`` neurons) is one token.

    A token's vector is the concatenation of one small embedding per neuron of its patch (so
    ``dim = neurons_per_token * per-neuron size``), plus a learned time embedding (bin index) and a
    learned space embedding (patch index). Padded neurons contribute exactly zero, whatever count
    they carry, so a session with 90 neurons behaves as if the 6 padding "neurons" did not exist.

    Args:
        dim: token size ``D``; must be a multiple of ``neurons_per_token``.
        neurons_per_token: neurons per patch (NDT2: 32; 8 and 128 also studied).
        max_count: counts are clamped to ``[0, max_count]`` (NDT2: 20) before the lookup.
        max_time_bins: longest sequence in bins (NDT2: 250 = 5 s at 20 ms).
        max_patches: space positions the table holds (all patches of any session, held-out
            patches included when a model gives them their own positions).
        style: ``"token"``: each count is a symbol, ``nn.Embedding(max_count + 1, D / n)``;
            ``"project"``: each count is a number, ``Linear(1, D / n)`` (shared by all neurons).
    """

    READS, TIME_UNIT = "binned", "bin"

    def __init__(self, dim: int, neurons_per_token: int = 32, max_count: int = 20, max_time_bins: int = 250,
                 max_patches: int = 16, style: str = "token"):
        super().__init__()
        if dim % neurons_per_token != 0:
            raise ValueError(f"`dim` ({dim}) must be a multiple of `neurons_per_token` ({neurons_per_token}): "
                             "each neuron of a patch gets dim / neurons_per_token numbers")
        if style not in ("token", "project"):
            raise ValueError(f"`style` must be 'token' or 'project', got {style!r}")
        self.dim, self.neurons_per_token, self.max_count, self.style = dim, neurons_per_token, max_count, style
        per_neuron = dim // neurons_per_token
        if style == "token":
            self.count_embedding = nn.Embedding(max_count + 1, per_neuron)
        else:
            self.count_embedding = nn.Linear(1, per_neuron)
        self.time_positions = LearnedPositions(max_time_bins, dim)
        self.space_positions = LearnedPositions(max_patches, dim)

    def tokenize(self, counts: torch.Tensor, unit_mask: torch.Tensor, time_mask: torch.Tensor,
                 space_offset: int = 0) -> PatchTokens:
        """Cut binned counts into flat patch tokens.

        Args:
            counts: (B, T, U) spike counts (U padded across sessions).
            unit_mask: (B, U) bool, True for the session's real units.
            time_mask: (B, T) bool, True for real bins.
            space_offset: added to the patch index (e.g. to give held-out patches positions of
                their own, after the held-in ones).
        Returns:
            :class:`PatchTokens` with L = T * ceil(U / neurons_per_token).
        """
        batch, n_bins, _ = counts.shape
        patches, _ = group_into_patches(counts, self.neurons_per_token)  # (B, T, P, n)
        neuron_mask, _ = group_into_patches(unit_mask, self.neurons_per_token)  # (B, P, n)
        n_patches = patches.shape[2]
        channel_mask = neuron_mask[:, None] & time_mask[:, :, None, None]  # (B, T, P, n)
        tokens = patches.round().clamp(0, self.max_count).long() * channel_mask
        time = torch.arange(n_bins, device=counts.device)[:, None].expand(n_bins, n_patches)
        space = torch.arange(n_patches, device=counts.device)[None, :].expand(n_bins, n_patches) + space_offset
        flat = batch, n_bins * n_patches
        n = self.neurons_per_token  # explicit, not -1: a session with no units (e.g. none held out) has 0 tokens
        return PatchTokens(tokens.reshape(*flat, n), channel_mask.reshape(*flat, n),
                           time.reshape(1, -1).expand(flat).contiguous(), space.reshape(1, -1).expand(flat).contiguous(),
                           channel_mask.any(-1).reshape(flat))

    def embed_counts(self, counts: torch.Tensor, channel_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, n) counts and real-neuron mask -> (B, L, D); padded neurons give zeros."""
        if self.style == "token":
            per_neuron = self.count_embedding(counts.clamp(0, self.max_count))  # (B, L, n, D/n)
        else:
            per_neuron = self.count_embedding(counts.float().unsqueeze(-1))
        per_neuron = per_neuron * channel_mask.unsqueeze(-1).to(per_neuron.dtype)
        return per_neuron.flatten(-2)  # (B, L, D): the patch's neurons side by side

    def forward(self, counts: torch.Tensor, channel_mask: torch.Tensor, time: torch.Tensor,
                space: torch.Tensor) -> torch.Tensor:
        """Token vectors: count embedding + time position + space position, ``(B, L, D)``."""
        return self.embed_counts(counts, channel_mask) + self.time_positions(time) + self.space_positions(space)

    def tokens(self, batch) -> Tokens:
        """One token per (bin, patch of held-in neurons): (B, T * P, D), at their bins, real where a
        patch has a real neuron in a real bin. (NDT2 itself hides some patches before embedding:
        it calls :meth:`tokenize` and the module directly.)"""
        patches = self.tokenize(batch["heldin"], batch["heldin_unit_mask"], batch["time_mask"])
        return Tokens(self(patches.counts, patches.channel_mask, patches.time, patches.space), patches.time,
                      patches.real)
