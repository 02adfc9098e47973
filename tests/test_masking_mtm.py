"""MtM's masking schemes hide exactly what they claim: one whole region, other regions + part of one, causal bins."""

import pytest
import torch

from mini_decoders.errors import DataError
from mini_decoders.masking import (MaskConfig, inter_region_selection, intra_region_selection, mask_counts,
                                   region_targets, select_masks, temporal_selection)


def _counts(seed: int = 0, shape=(16, 30, 12)) -> torch.Tensor:
    return torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(seed))


def _regions(batch: int = 16) -> torch.Tensor:
    """Units 0-4 region 0, 5-8 region 1, 9-10 region 2, 11 padding; odd samples lack region 2."""
    regions = torch.tensor([0] * 5 + [1] * 4 + [2] * 2 + [-1]).expand(batch, -1).clone()
    regions[1::2, 9:11] = -1  # these samples' sessions have no unit in region 2
    return regions


def test_region_targets_are_uniform_over_present_regions_only():
    regions = _regions(4000)
    targets = region_targets(regions, generator=torch.Generator().manual_seed(0))
    even, odd = targets[0::2], targets[1::2]
    assert set(odd.tolist()) == {0, 1}  # region 2 is absent there and never drawn
    for region, share in ((0, 1 / 3), (1, 1 / 3), (2, 1 / 3)):
        assert abs((even == region).float().mean().item() - share) < 0.04
    assert abs((odd == 0).float().mean().item() - 0.5) < 0.04
    assert region_targets(torch.full((3, 5), -1)).tolist() == [-1, -1, -1]


def test_inter_region_hides_all_of_one_region_and_only_it():
    regions = _regions()
    counts = _counts()
    masked, loss_mask = mask_counts(counts, MaskConfig("inter_region"), generator=torch.Generator().manual_seed(1),
                                    regions=regions)
    for b in range(len(regions)):
        hidden_units = loss_mask[b].any(0)
        assert torch.equal(loss_mask[b], hidden_units.expand_as(loss_mask[b]))  # every bin alike
        hidden_regions = set(regions[b][hidden_units].tolist())
        assert len(hidden_regions) == 1 and -1 not in hidden_regions
        region = hidden_regions.pop()
        assert torch.equal(hidden_units, regions[b] == region)  # all of it, nothing else
        assert (masked[b][:, hidden_units] == 0).all()
        assert torch.equal(masked[b][:, ~hidden_units], counts[b][:, ~hidden_units])


def test_intra_region_hides_other_regions_and_scores_only_part_of_the_target():
    regions = _regions(2000)
    hidden, scored = intra_region_selection(regions, 0.3, generator=torch.Generator().manual_seed(2))
    real = regions >= 0
    assert not (hidden & ~real).any() and not (scored & ~hidden).any()
    fractions = []
    for b in range(0, len(regions), 7):
        visible_regions = set(regions[b][real[b] & ~hidden[b]].tolist())
        scored_regions = set(regions[b][scored[b]].tolist())
        assert len(visible_regions | scored_regions) <= 1  # one target region; the rest hidden
        target = (visible_regions | scored_regions or {None}).pop()
        if target is None:
            continue
        others = real[b] & (regions[b] != target)
        assert hidden[b][others].all() and not scored[b][others].any()  # others hidden, never scored
        in_target = regions[b] == target
        assert torch.equal(hidden[b][in_target], scored[b][in_target])
        fractions.append(scored[b][in_target].float().mean().item())
    assert abs(sum(fractions) / len(fractions) - 0.3) < 0.05
    # Through mask_counts: the loss mask is the scored part, the input hides the rest too.
    counts = _counts(3, (4, 10, 12))
    masked, loss_mask = mask_counts(counts, MaskConfig("intra_region", 0.3), generator=torch.Generator().manual_seed(5),
                                    regions=regions[:4])
    again_hidden, again_scored = select_masks((4, 10, 12), MaskConfig("intra_region", 0.3), regions=regions[:4],
                                              generator=torch.Generator().manual_seed(5))
    assert torch.equal(loss_mask, again_scored)
    assert (masked[again_hidden] == 0).all() and torch.equal(masked[~again_hidden], counts[~again_hidden])


def test_causal_selects_bins_like_temporal():
    hidden, scored = select_masks((6, 40, 5), MaskConfig("causal", 0.3, max_span=3),
                                  generator=torch.Generator().manual_seed(4))
    bins = temporal_selection(6, 40, 0.3, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(hidden, bins[:, :, None].expand(6, 40, 5)) and torch.equal(hidden, scored)


@pytest.mark.parametrize("scheme", ["inter_region", "intra_region"])
def test_region_schemes_never_leak_hidden_values_and_skip_padding(scheme):
    regions = _regions()
    counts = _counts()
    valid = torch.ones(16, 30, 12, dtype=torch.bool)
    valid[:, 25:] = False  # padded bins
    config = MaskConfig(scheme, 0.3, zero_ratio=0.5, random_ratio=1.0)
    masked, loss_mask = mask_counts(counts, config, valid, generator=torch.Generator().manual_seed(6), regions=regions)
    hidden, _ = select_masks(tuple(counts.shape), config, regions=regions, generator=torch.Generator().manual_seed(6))
    hidden = hidden & valid
    changed = torch.where(hidden, counts + 1000.0, counts)
    masked_changed, _ = mask_counts(changed, config, valid, generator=torch.Generator().manual_seed(6), regions=regions)
    assert torch.equal(masked, masked_changed)
    assert not loss_mask[:, 25:].any() and not loss_mask[:, :, 11].any()


def test_region_schemes_need_a_region_index():
    with pytest.raises(DataError, match="regions"):
        mask_counts(_counts(), MaskConfig("inter_region"))
    with pytest.raises(DataError, match="regions"):
        mask_counts(_counts(), MaskConfig("intra_region"), regions=torch.zeros(5, dtype=torch.int64))
    # A (U,) index is shared by the whole batch.
    _, loss_mask = mask_counts(_counts(), MaskConfig("inter_region"), regions=_regions()[0],
                               generator=torch.Generator().manual_seed(0))
    assert loss_mask.any()
    assert inter_region_selection(torch.full((2, 3), -1)).sum() == 0
