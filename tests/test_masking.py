"""Masking: what is hidden never reaches the input, schemes hide what they say, draws are reproducible."""

import pytest
import torch

from mini_decoders.masking import MaskConfig, hide, mask_counts, temporal_selection


def _counts(seed: int = 0, shape=(8, 40, 12)) -> torch.Tensor:
    return torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scheme", ["temporal", "neuron", "random"])
@pytest.mark.parametrize("zero_ratio,random_ratio", [(1.0, 1.0), (0.5, 1.0), (0.0, 1.0)])
def test_hidden_values_never_reach_the_input(scheme, zero_ratio, random_ratio):
    counts = _counts()
    config = MaskConfig(scheme=scheme, ratio=0.3, zero_ratio=zero_ratio, random_ratio=random_ratio, max_span=3)
    masked, loss_mask = mask_counts(counts, config, generator=torch.Generator().manual_seed(1))
    assert loss_mask.any() and not loss_mask.all()
    # Change every hidden value (to something far outside the data): the input must not move.
    changed = torch.where(loss_mask, counts + 1000.0, counts)
    masked_changed, loss_mask_changed = mask_counts(changed, config, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loss_mask, loss_mask_changed)
    assert torch.equal(masked, masked_changed)
    # Visible entries are untouched.
    assert torch.equal(masked[~loss_mask], counts[~loss_mask])
    if zero_ratio == 1.0:
        assert (masked[loss_mask] == 0).all()


def test_keep_fraction_is_the_only_leak_and_is_explicit():
    counts = _counts() + 1.0  # no zeros, so "kept" is detectable
    selected = torch.ones_like(counts, dtype=torch.bool)
    kept = hide(counts, selected, zero_ratio=0.0, random_ratio=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kept, counts)


def test_temporal_hides_whole_bins_neuron_hides_whole_neurons():
    counts = _counts()
    _, temporal = mask_counts(counts, MaskConfig("temporal", 0.3), generator=torch.Generator().manual_seed(2))
    assert ((temporal.all(-1)) | (~temporal.any(-1))).all()  # a bin is all hidden or all visible
    _, neuron = mask_counts(counts, MaskConfig("neuron", 0.3), generator=torch.Generator().manual_seed(2))
    assert ((neuron.all(1)) | (~neuron.any(1))).all()  # a neuron is hidden in every bin or none


@pytest.mark.parametrize("max_span", [1, 2, 5])
def test_temporal_ratio_and_spans(max_span):
    generator = torch.Generator().manual_seed(3)
    selection = temporal_selection(2000, 100, 0.25, max_span, generator=generator)
    fraction = selection.float().mean().item()
    # Overlapping spans make the realised fraction a little lower than asked for.
    assert 0.25 * 0.75 < fraction < 0.25 * 1.05
    runs = torch.diff(selection.int(), dim=1)
    n_runs = (runs == 1).sum() + selection[:, 0].sum()
    mean_run = selection.sum() / n_runs
    assert mean_run >= (1 + max_span) / 2 * 0.9  # hidden stretches are as long as the spans


def test_padding_is_never_selected_and_draws_are_reproducible():
    counts = _counts()
    valid = torch.ones(8, 40, 1, dtype=torch.bool)
    valid[:, 30:] = False
    config = MaskConfig("random", 0.5)
    first = mask_counts(counts, config, valid, generator=torch.Generator().manual_seed(4))
    second = mask_counts(counts, config, valid, generator=torch.Generator().manual_seed(4))
    assert not first[1][:, 30:].any()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    third = mask_counts(counts, config, valid, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(first[1], third[1])


def test_random_replacement_stays_within_visible_range():
    counts = _counts()
    masked, loss_mask = mask_counts(counts, MaskConfig("random", 0.5, zero_ratio=0.0, random_ratio=1.0),
                                    generator=torch.Generator().manual_seed(6))
    visible_max = counts[~loss_mask].max()
    assert masked[loss_mask].max() <= visible_max
    assert (masked[loss_mask] == masked[loss_mask].round()).all()  # counts stay integers
    assert masked[loss_mask].float().std() > 0  # really random, not a constant


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        MaskConfig(scheme="diagonal")
    with pytest.raises(ValueError, match="ratio"):
        MaskConfig(ratio=1.5)
    with pytest.raises(ValueError, match="max_span"):
        MaskConfig(max_span=0)
