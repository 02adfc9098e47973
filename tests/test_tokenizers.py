"""Swap the token, keep the rest: one backbone reads the tokens of every tokenizer.

The four tokenizers (spikes, bins, patches, VQ codes) read the same trials of one session and
emit :class:`~mini_decoders.tokenizers.base.Tokens`; one small backbone (a plain transformer and a
linear read-out of the mean real token) runs on each, and only the real tokens count.
"""

import importlib
import math

import numpy as np
import pytest
import torch
from torch import nn

from mini_decoders.data.batching import BinnedTrialDataset, collate_binned
from mini_decoders.data.binning import bin_trials
from mini_decoders.nn.attention import TransformerBlock
from mini_decoders.tokenizers.base import Tokenizer, Tokens
from mini_decoders.tokenizers.bins import BinTokenizer
from mini_decoders.tokenizers.patches import PatchTokenizer
from mini_decoders.tokenizers.spikes import SpikeTokenizer
from mini_decoders.tokenizers.vq import VQTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

DIM = 32  # every tokenizer here emits 32-d tokens, so one backbone reads them all


class MeanTokenBackbone(nn.Module):
    """A plain transformer over the real tokens, then a linear read-out of their mean."""

    def __init__(self, dim: int = DIM, outputs: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads=2, ffn_mult=2, dropout=0.0) for _ in range(2))
        self.readout = nn.Linear(dim, outputs)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        x = tokens.embeddings  # (B, L, D)
        for block in self.blocks:
            x = block(x, key_padding_mask=tokens.mask)
        real = tokens.mask[..., None].to(x.dtype)  # (B, L, 1)
        return self.readout((x * real).sum(1) / real.sum(1).clamp_min(1.0))  # (B, outputs)


@pytest.fixture(scope="module")
def trials():
    """The test trials of one simulated session: binned (one batch) and as spike windows."""
    simulate = importlib.import_module("mini_decoders.data.simulate").simulate
    session = simulate(n_sessions=1, n_trials=30, n_units=40, seed=0).sessions[0]
    binned = bin_trials(session, 0.02, split="test", behavior=())
    dataset = BinnedTrialDataset([binned], [session.units.heldout])
    binned_batch = collate_binned([dataset[i] for i in range(len(dataset))])
    return session, binned, binned_batch


@pytest.fixture(scope="module")
def tokenizers(trials):
    session, binned, _ = trials
    torch.manual_seed(0)
    n_heldin, n_heldout = len(session.units.heldin_index), len(session.units.heldout_index)
    spikes = SpikeTokenizer(DIM)
    spikes.add_units([str(u) for u in session.units.ids])
    return {"spikes": spikes,
            "bins": BinTokenizer([n_heldin], DIM, max_bins=64),
            "patches": PatchTokenizer(DIM, neurons_per_token=8, max_time_bins=64, max_patches=math.ceil(n_heldin / 8)),
            "codes": VQTokenizer([n_heldin], [n_heldout], window=2, dim=DIM, code_dim=DIM, num_codes=16,
                                 decoder_layers=1, heads=2, max_bins=64)}


def batch_for(tokenizer: Tokenizer, trials) -> dict:
    """What ``tokenizer`` reads, for the same trials: binned counts, or spike windows over each trial."""
    session, binned, binned_batch = trials
    if tokenizer.READS == "binned":
        return binned_batch
    assert tokenizer.READS == "spikes"
    length = float(binned.lengths.max() * binned.bin_size)
    return tokenizer.window_batch(session, binned.starts, length)


@pytest.mark.parametrize("kind", ["spikes", "bins", "patches", "codes"])
def test_one_backbone_reads_every_tokenizers_tokens(kind, trials, tokenizers):
    tokenizer = tokenizers[kind]
    assert isinstance(tokenizer, Tokenizer) and tokenizer.TIME_UNIT in ("s", "bin", "window")
    n_trials = len(trials[1].starts)
    tokens = tokenizer.tokens(batch_for(tokenizer, trials))
    batch_size, length, dim = tokens.embeddings.shape
    assert (batch_size, dim) == (n_trials, DIM)
    assert tokens.times.shape == tokens.mask.shape == (n_trials, length) and tokens.mask.dtype == torch.bool
    assert tokens.mask.any(1).all(), "every trial has real tokens"
    if tokenizer.TIME_UNIT == "s":
        real_times = tokens.times[tokens.mask]
        assert real_times.min() >= 0 and real_times.max() <= trials[1].lengths.max() * trials[1].bin_size

    torch.manual_seed(1)
    backbone = MeanTokenBackbone()  # the same architecture and weights for every tokenizer
    out = backbone(tokens)
    assert out.shape == (n_trials, 2) and torch.isfinite(out).all()

    # Only real tokens count: two trials with less padding read the same.
    keep = int(tokens.mask[:2].sum(1).max())
    fewer = Tokens(tokens.embeddings[:2, :keep], tokens.times[:2, :keep], tokens.mask[:2, :keep])
    torch.testing.assert_close(backbone(fewer), out[:2], rtol=1e-4, atol=1e-5)

    # The tokenizer learns through the backbone.
    out.square().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tokenizer.parameters())


def test_the_four_tokenizers_read_the_same_trials_as_different_sequences(trials, tokenizers):
    lengths = {kind: tokenizer.tokens(batch_for(tokenizer, trials)).mask.sum(1).float().mean().item()
               for kind, tokenizer in tokenizers.items()}
    n_bins = float(np.mean(trials[1].lengths))
    assert lengths["bins"] == n_bins
    assert lengths["codes"] == n_bins / 2  # one code per window of 2 bins
    assert lengths["patches"] == n_bins * math.ceil(len(trials[0].units.heldin_index) / 8)
    assert lengths["spikes"] > 2 * trials[0].n_units  # every spike, plus a start and an end per unit
