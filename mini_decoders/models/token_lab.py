"""The token lab's backbone: one transformer and one read-out, and the tokenizer is the only change.

Issue 24's controlled experiment. Each paper pairs its token with its own architecture, objective
and budget, so "which token is best" was never measured. Here every tokenizer feeds the *same*
network, trained by the *same* objective:

    batch -> tokenizer -> (B, L, h) tokens -> [adapter h -> D] -> (B, L, D)   the tokenizer's own parameters
      -> pre-norm transformer over the real tokens (rotary time in seconds)  shared
      -> one query per output bin (a learned vector, rotated by the bin's time) cross-attends
         into the tokens, + feed-forward                                     shared
      -> per-session log-rates of every neuron (held-in and held-out) + velocity, per bin

Times: every tokenizer's tokens are put on one clock, seconds from the trial start
(:meth:`~mini_decoders.tokenizers.base.Tokenizer.token_seconds`: spikes at their time, bins at
their centres, windows of bins at their centres), so tokens on any grid map onto the same bins.

Objective (the same for every tokenizer, supervised, no masking): Poisson NLL of the held-in and
held-out counts of every real bin, plus the MSE of the velocity (standardised), on the train
trials; a VQ tokenizer adds its commitment + codebook loss (its codebook learns jointly, by
gradient, straight-through). The inputs are held-in activity only: held-out neurons are targets.

Parameter matching: the backbone and read-out are identical; each tokenizer's own parameters
(:meth:`~mini_decoders.tokenizers.base.Tokenizer.token_parameters`: read-ins, embeddings, position
tables, codebook, plus the adapter) are set by one width ``h`` that :func:`match_width` picks so
that its count is as close as possible to the bin tokenizer's at ``h = D``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mini_decoders.data.batching import collate_binned, spike_windows
from mini_decoders.data.session import Session
from mini_decoders.nn.attention import CrossAttention, TransformerBlock
from mini_decoders.nn.feedforward import FeedForward
from mini_decoders.nn.losses import poisson_nll_terms
from mini_decoders.nn.rotary import RotaryTimeEmbedding
from mini_decoders.tokenizers.base import Tokenizer
from mini_decoders.tokenizers.bins import BinTokenizer
from mini_decoders.tokenizers.conv import ConvTokenizer
from mini_decoders.tokenizers.patches import PatchTokenizer
from mini_decoders.tokenizers.spikes import SpikeTokenizer, add_start_end_tokens
from mini_decoders.tokenizers.vq import VQTokenizer

TOKEN_KINDS = ("spikes", "bins", "patches", "codes", "conv")
NEURONS_PER_PATCH = 4  # patch widths must be multiples of it
BINS_PER_CODE = 2  # one VQ code per 2 bins (40 ms)
CONV_STRIDE = 2  # one conv token per 2 bins, each seeing 4


@dataclass
class TokenLabConfig:
    """The shared backbone, identical for every tokenizer."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    ffn_mult: float = 2.0
    dropout: float = 0.1
    bin_size: float = 0.02
    behavior_dim: int = 2
    velocity_weight: float = 1.0


@dataclass
class LabUnits:
    """What the tokenizers are built for: the sessions' neurons and the longest trial."""

    heldin_per_session: list[int]
    heldout_per_session: list[int]
    heldin_ids: list[str]  # every session's held-in unit ids (the spike tokenizer's vocabulary)
    max_bins: int


class TokenLabModel(nn.Module):
    """Any :class:`~mini_decoders.tokenizers.base.Tokenizer` -> the shared transformer -> per-bin rates and velocity.

    Args:
        tokenizer: makes ``(B, L, token_dim)`` tokens of a batch (:func:`lab_batch`).
        token_dim: width of its tokens; a ``Linear(token_dim, D)`` adapter (the tokenizer's) when not ``D``.
        units: the sessions' held-in and held-out neurons.
        config: the shared backbone.
    """

    def __init__(self, tokenizer: Tokenizer, token_dim: int, units: LabUnits, config: TokenLabConfig):
        super().__init__()
        dim, self.config, self.units = config.dim, config, units
        self.tokenizer = tokenizer
        self.adapter = nn.Identity() if token_dim == dim else nn.Linear(token_dim, dim)
        self.max_heldin, self.max_heldout = max(units.heldin_per_session), max(units.heldout_per_session)
        # Periods from 5 ms (finer than a bin: spike timing) to 4 s (longer than a trial).
        self.rotary = RotaryTimeEmbedding(dim // config.heads, t_min=0.005, t_max=4.0)
        self.blocks = nn.ModuleList(TransformerBlock(dim, config.heads, config.ffn_mult, config.dropout)
                                    for _ in range(config.layers))
        self.norm = nn.LayerNorm(dim)
        self.bin_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.readout_attention = CrossAttention(dim, heads=config.heads, dim_head=dim // config.heads,
                                                dropout=config.dropout)
        self.readout_norm = nn.LayerNorm(dim)
        self.readout_feedforward = FeedForward(dim, config.ffn_mult, dropout=config.dropout)
        self.output_norm = nn.LayerNorm(dim)
        n_out = self.max_heldin + self.max_heldout
        # (S, D, U_in + U_out): sessions record different neurons, so each has its own read-out.
        self.rate_weight = nn.Parameter(torch.randn(len(units.heldin_per_session), dim, n_out) * 0.02 / math.sqrt(dim))
        self.rate_bias = nn.Parameter(torch.full((len(units.heldin_per_session), n_out), -2.0))
        self.velocity = nn.Linear(dim, config.behavior_dim)
        self.register_buffer("velocity_scale", torch.ones(config.behavior_dim))

    def own_parameters(self) -> Iterator[nn.Parameter]:
        """The tokenizer's own parameters: those its tokens depend on, and the adapter."""
        yield from self.tokenizer.token_parameters()
        yield from self.adapter.parameters()

    def shared_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of the backbone and read-out: the same for every tokenizer."""
        return ((name, p) for name, p in self.named_parameters() if not name.startswith(("tokenizer.", "adapter.")))

    def parameter_counts(self) -> dict[str, int]:
        """``tokenizer`` (its own), ``shared`` and ``total`` parameter counts."""
        own = sum(p.numel() for p in self.own_parameters())
        shared = sum(p.numel() for _, p in self.shared_parameters())
        return {"tokenizer": own, "shared": shared, "total": own + shared}

    @torch.no_grad()
    def set_targets(self, mean_counts: Tensor, velocity_std: Tensor) -> None:
        """Start the rate read-out at each neuron's mean count (S, U_in + U_out) and scale the velocity."""
        self.rate_bias.copy_(torch.log(mean_counts.clamp_min(1e-3)))
        self.velocity_scale.copy_(velocity_std.clamp_min(1e-6))

    def forward(self, batch: dict) -> tuple[Tensor, Tensor, Tensor | None]:
        """Log-rates (B, T, U_in_max + U_out_max) (held-in columns first), velocity (B, T, behavior_dim)
        and the tokenizer's own loss (None for fixed tokenizers), for the T bins of ``batch["time_mask"]``."""
        if self.training:
            tokens, token_loss = self.tokenizer.training_tokens(batch)
        else:
            tokens, token_loss = self.tokenizer.tokens(batch), None
        x = self.adapter(tokens.embeddings)  # (B, L, D)
        times = self.tokenizer.token_seconds(tokens, self.config.bin_size)  # (B, L) s
        rotary = self.rotary.cos_sin(times)
        for block in self.blocks:
            x = block(x, key_padding_mask=tokens.mask, rotary=rotary)
        x = self.norm(x)
        batch_size, n_bins = batch["time_mask"].shape
        bin_times = ((torch.arange(n_bins, device=x.device) + 0.5) * self.config.bin_size).expand(batch_size, n_bins)
        queries = self.bin_query.expand(batch_size, n_bins, -1)  # (B, T, D)
        h = queries + self.readout_attention(queries, x, context_mask=tokens.mask, query_time=bin_times,
                                             context_time=times, rotary=self.rotary)  # (B, T, D)
        h = self.output_norm(h + self.readout_feedforward(self.readout_norm(h)))
        session = batch["session_index"]
        log_rates = torch.einsum("btd,bdo->bto", h, self.rate_weight[session]) + self.rate_bias[session][:, None, :]
        return log_rates, self.velocity(h) * self.velocity_scale, token_loss

    def training_loss(self, batch: dict) -> Tensor:
        """Poisson NLL of held-in and held-out counts + velocity MSE (standardised) (+ the tokenizer's loss)."""
        log_rates, velocity, token_loss = self(batch)
        valid = batch["time_mask"]  # (B, T)
        counts = torch.cat([batch["heldin"], _pad_units(batch["heldout"], self.max_heldout)], dim=-1)
        units = torch.cat([batch["heldin_unit_mask"], _pad_units(batch["heldout_unit_mask"], self.max_heldout)], dim=-1)
        scored = (valid[:, :, None] & units[:, None, :]).float()  # (B, T, U)
        counts = _pad_units(counts, log_rates.shape[-1])
        loss = (poisson_nll_terms(log_rates, counts) * scored).sum() / scored.sum().clamp_min(1.0)
        if "behavior" in batch:
            target = batch["behavior"]  # (B, T, 2), NaN past a trial's end or where unknown
            known = valid & torch.isfinite(target).all(-1)
            error = ((velocity - torch.nan_to_num(target)) / self.velocity_scale).square().sum(-1)
            loss = loss + self.config.velocity_weight * (error * known).sum() / known.sum().clamp_min(1)
        return loss if token_loss is None else loss + token_loss


def _pad_units(values: Tensor, width: int) -> Tensor:
    """Zero-pad the last axis to ``width`` (a batch of sessions without its widest one)."""
    return nn.functional.pad(values, (0, width - values.shape[-1]))


# ================================================================================================
# Building the five tokenizers, at matched sizes

def build_tokenizer(kind: str, width: int, units: LabUnits, dim: int) -> tuple[Tokenizer, int]:
    """A ``kind`` tokenizer (see :data:`TOKEN_KINDS`) of width ``width``; returns it and its token size."""
    if kind == "spikes":
        tokenizer = SpikeTokenizer(width)
        tokenizer.add_units(units.heldin_ids)
        return tokenizer, width
    if kind == "bins":
        return BinTokenizer(units.heldin_per_session, width, units.max_bins), width
    if kind == "patches":
        n_patches = -(-max(units.heldin_per_session) // NEURONS_PER_PATCH)
        return PatchTokenizer(width, NEURONS_PER_PATCH, max_time_bins=units.max_bins, max_patches=n_patches), width
    if kind == "codes":
        # No own decoder (decoder_layers=0) and a codebook learned by gradient (ema_decay=None).
        return VQTokenizer(units.heldin_per_session, units.heldout_per_session, window=BINS_PER_CODE, dim=width,
                           code_dim=width, num_codes=64, decoder_layers=0, heads=1, max_bins=units.max_bins,
                           ema_decay=None), width
    if kind == "conv":
        return ConvTokenizer(units.heldin_per_session, dim, hidden=width, stride=CONV_STRIDE,
                             kernel_bins=2 * CONV_STRIDE), dim
    raise ValueError(f"unknown token kind {kind!r}; expected one of {', '.join(TOKEN_KINDS)}")


def tokens_per_window(kind: str, n_neurons: int, rate_hz: float, window_s: float, bin_size: float = 0.02, *,
                      neurons_per_patch: int = NEURONS_PER_PATCH, bins_per_code: int = BINS_PER_CODE,
                      conv_stride: int = CONV_STRIDE) -> float:
    """How many tokens the ``kind`` tokenizer makes of one window (the expected count for spikes).

    With ``N`` held-in neurons firing ``r`` Hz on average, a window of ``T`` s and bins of ``Δ`` s
    (``n = T / Δ`` bins, a whole number):

    - spikes: ``N r T`` spikes plus a start and an end token per neuron, ``N r T + 2 N``;
    - bins: ``n``; patches: ``n ⌈N / P⌉`` (``P`` neurons per patch);
    - codes: ``⌈n / W⌉`` (``W`` bins per code); conv: ``⌈n / s⌉`` (stride ``s``).

    The defaults are the lab's tokenizers (:func:`build_tokenizer`). Divide by ``window_s`` for
    tokens per second of data.
    """
    n_bins = round(window_s / bin_size)
    counts = {"spikes": n_neurons * rate_hz * window_s + 2 * n_neurons, "bins": n_bins,
              "patches": n_bins * -(-n_neurons // neurons_per_patch), "codes": -(-n_bins // bins_per_code),
              "conv": -(-n_bins // conv_stride)}
    if kind not in counts:
        raise ValueError(f"unknown token kind {kind!r}; expected one of {', '.join(TOKEN_KINDS)}")
    return float(counts[kind])


def own_count(kind: str, width: int, units: LabUnits, dim: int) -> int:
    """Parameters the ``kind`` tokenizer of ``width`` charges to itself (token path + adapter)."""
    tokenizer, token_dim = build_tokenizer(kind, width, units, dim)
    adapter = 0 if token_dim == dim else token_dim * dim + dim
    return sum(p.numel() for p in tokenizer.token_parameters()) + adapter


def match_width(kind: str, target: int, units: LabUnits, dim: int, widths: Sequence[int] | None = None) -> int:
    """The width whose own count is closest to ``target``.

    Widths are even (rotary pairs) and, for patches, multiples of the neurons per patch. Every width
    is tried: the count is not monotonic in it (at ``width == D`` the adapter disappears).
    """
    step = NEURONS_PER_PATCH if kind == "patches" else 2
    widths = widths or range(step, 257, step)
    return min(widths, key=lambda width: abs(own_count(kind, width, units, dim) - target))


def matched_models(units: LabUnits, config: TokenLabConfig, kinds: Sequence[str] = TOKEN_KINDS,
                   seed: int = 0) -> dict[str, TokenLabModel]:
    """One model per tokenizer, their own counts matched to the bin tokenizer's at width ``D``.

    Every model's shared part starts from the same weights (same seed), so only the tokenizer differs.
    """
    target = own_count("bins", config.dim, units, config.dim)
    models = {}
    for kind in kinds:
        width = config.dim if kind == "bins" else match_width(kind, target, units, config.dim)
        torch.manual_seed(seed)
        shared = TokenLabModel(nn.Identity(), config.dim, units, config).state_dict()  # the shared start
        torch.manual_seed(seed + 1)
        tokenizer, token_dim = build_tokenizer(kind, width, units, config.dim)
        model = TokenLabModel(tokenizer, token_dim, units, config)
        model.load_state_dict(shared, strict=False)
        model.width = width
        models[kind] = model
    return models


# ================================================================================================
# Batches: the same trials for every tokenizer

def lab_batch(items: list[dict], heldin_sessions: Sequence[Session], spike_tokenizer: SpikeTokenizer | None,
              bin_size: float) -> dict:
    """Binned trials (:class:`~mini_decoders.data.batching.BinnedTrialDataset` items) as one batch, plus
    their spike tokens when ``spike_tokenizer`` is given.

    Items are grouped by session (spike windows are cut per session). ``heldin_sessions`` hold the
    held-in units only, so spike tokens never carry a held-out neuron. A trial's window spans the
    longest trial of the batch; its tokens past its own end are padding.
    """
    items = sorted(items, key=lambda item: int(item["session_index"]))
    batch = collate_binned(items)
    if spike_tokenizer is None:
        return batch
    session_index = batch["session_index"].numpy()
    length = batch["time_mask"].shape[1] * bin_size
    parts = []
    for s in np.unique(session_index):  # one numpy pass per session, not per spike
        session = heldin_sessions[s]
        chosen = session_index == s
        starts = session.trials.start[batch["trial_index"].numpy()[chosen]]
        rows = spike_tokenizer.unit_rows(session.id, [str(u) for u in session.units.ids])
        parts.append(add_start_end_tokens(spike_windows(session, starts, length), rows))
    spikes = spike_tokenizer.collate(parts)
    trial_seconds = batch["time_mask"].sum(1, keepdim=True) * bin_size  # (B, 1)
    spikes["input_mask"] = spikes["input_mask"] & (spikes["input_times"] <= trial_seconds + 1e-6)
    return {**batch, **spikes}


def collate_for(model: TokenLabModel, heldin_sessions: Sequence[Session]) -> Callable[[list[dict]], dict]:
    """The collate function of ``model``'s tokenizer (:func:`lab_batch`)."""
    spikes = model.tokenizer if isinstance(model.tokenizer, SpikeTokenizer) else None
    return lambda items: lab_batch(items, heldin_sessions, spikes, model.config.bin_size)
