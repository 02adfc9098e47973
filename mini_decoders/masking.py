"""Masked modelling of binned spike counts: choose entries to hide, hide them, score only them.

A masked model sees spike counts with some entries hidden and must predict what was hidden. Two
decisions make a scheme:

1. **which entries** of the ``(B, T, U)`` count tensor are hidden: a boolean *selection*.
   - ``temporal`` (NDT1, MtM's baseline): whole time bins, every neuron of a chosen bin;
     optionally in spans of up to ``max_span`` consecutive bins (harder: no copying from a
     neighbour).
   - ``neuron`` (MtM): whole neurons, every bin of a chosen neuron (co-smoothing-like).
   - ``random``: single (bin, neuron) entries.
   - ``causal`` (MtM): the same selection as ``temporal``; what makes it causal is the model's
     attention (a bin sees only itself and earlier bins), which this module does not touch.
   - ``inter_region`` (MtM): one region per sample, *all* of its neurons in every bin: predict a
     whole brain area from the others.
   - ``intra_region`` (MtM): one target region per sample; every *other* region is hidden
     completely and a fraction ``ratio`` of the target region's neurons too. Only the hidden
     neurons of the target region are scored: predict part of an area from the rest of it.
   Region schemes need a per-unit region index (``regions``, -1 = no region, i.e. padding).
2. **what the model sees instead** (BERT's recipe): a fraction ``zero_ratio`` of the hidden entries
   become 0 (NDT1/MtM default: all of them); a fraction ``random_ratio`` of the rest become a random
   count; whatever is left keeps its true value. Keeping true values (``zero_ratio +
   (1 - zero_ratio) * random_ratio < 1``) is the one case where a hidden value reaches the input,
   and only when asked for. Random counts are drawn up to the largest *visible* count, so
   not even their range depends on a hidden value.

:func:`mask_counts` does both and returns ``(masked_inputs, loss_mask)``: the loss is computed on
``loss_mask`` entries only, because predicting a value the model can see teaches it to copy.
Everything draws from an optional ``torch.Generator``, so a mask is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from mini_decoders.errors import DataError

SCHEMES = ("temporal", "neuron", "random", "causal", "inter_region", "intra_region")
REGION_SCHEMES = ("inter_region", "intra_region")


@dataclass
class MaskConfig:
    """One masking recipe.

    Attributes:
        scheme: one of ``SCHEMES`` (see the module docstring).
        ratio: expected fraction of bins / neurons / entries selected (NDT1: 0.2-0.25; MtM 0.3);
            ``intra_region``: of the target region's neurons; unused by ``inter_region``.
        zero_ratio: fraction of the selected entries set to 0.
        random_ratio: fraction of the *remaining* selected entries set to a random count.
        max_span: temporal and causal: spans of 1..``max_span`` consecutive bins (1 = single bins).
    """

    scheme: str = "temporal"
    ratio: float = 0.25
    zero_ratio: float = 1.0
    random_ratio: float = 1.0
    max_span: int = 1

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"mask scheme must be one of {SCHEMES}, got {self.scheme!r}")
        for name in ("ratio", "zero_ratio", "random_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"mask `{name}` must be in [0, 1], got {value}")
        if self.max_span < 1:
            raise ValueError(f"mask `max_span` must be >= 1, got {self.max_span}")


def _uniform(shape: tuple[int, ...], device: torch.device, generator: Optional[torch.Generator]) -> Tensor:
    return torch.rand(shape, device=device, generator=generator)


def temporal_selection(batch: int, n_bins: int, ratio: float, max_span: int = 1, *,
                       device: torch.device | str = "cpu", generator: Optional[torch.Generator] = None) -> Tensor:
    """Which time bins to hide, per sample.

    With ``max_span > 1`` each span start is drawn with probability ``ratio / mean_span`` and
    covers 1..``max_span`` bins (uniform), so about ``ratio`` of the bins are hidden (a little
    less where spans overlap). The spans are laid down without a loop: a bin is hidden when the
    running maximum of "end of the span that started at or before me" lies after it.

    Returns:
        (B, T) bool, True = hidden.
    """
    device = torch.device(device)
    if max_span == 1:
        return _uniform((batch, n_bins), device, generator) < ratio
    mean_span = (1 + max_span) / 2
    starts = _uniform((batch, n_bins), device, generator) < ratio / mean_span  # (B, T)
    lengths = torch.randint(1, max_span + 1, (batch, n_bins), device=device, generator=generator)
    bins = torch.arange(n_bins, device=device).expand(batch, n_bins)
    span_end = torch.where(starts, bins + lengths, torch.zeros_like(bins))  # exclusive end; 0 = no span
    return span_end.cummax(dim=1).values > bins


def neuron_selection(batch: int, n_units: int, ratio: float, *, device: torch.device | str = "cpu",
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Which neurons to hide in every bin, per sample: (B, U) bool, True = hidden."""
    return _uniform((batch, n_units), torch.device(device), generator) < ratio


def region_targets(regions: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """One region per sample, drawn uniformly among the regions that sample has units in.

    Args:
        regions: (B, U) int64 region index of each unit; -1 = no region (padding), never drawn.

    Returns:
        (B,) int64 region index; -1 for a sample with no unit in any region.
    """
    batch = regions.shape[0]
    n_regions = int(regions.max()) + 1 if regions.numel() else 0
    if n_regions <= 0:
        return torch.full((batch,), -1, dtype=torch.int64, device=regions.device)
    present = torch.zeros(batch, n_regions + 1, dtype=torch.bool, device=regions.device)
    present.scatter_(1, (regions + 1).clamp_min(0), True)  # column 0 collects the -1s
    present = present[:, 1:]  # (B, R)
    score = torch.where(present, _uniform((batch, n_regions), regions.device, generator), torch.full_like(
        present, -1.0, dtype=torch.float32))
    target = score.argmax(dim=1)
    return torch.where(present.any(dim=1), target, torch.full_like(target, -1))


def inter_region_selection(regions: Tensor, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """Hide every neuron of one region per sample: (B, U) int64 regions -> (B, U) bool, True = hidden."""
    target = region_targets(regions, generator=generator)
    return (regions == target[:, None]) & (regions >= 0)


def intra_region_selection(regions: Tensor, ratio: float, *,
                           generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Hide all other regions and ``ratio`` of one target region per sample.

    Returns:
        hidden: (B, U) bool, what the input hides (other regions entirely + the drawn target units).
        scored: (B, U) bool, the target region's hidden units, the only ones the loss scores.
    """
    target = region_targets(regions, generator=generator)
    real = regions >= 0
    in_target = (regions == target[:, None]) & real
    scored = in_target & (_uniform(tuple(regions.shape), regions.device, generator) < ratio)
    return (real & ~in_target) | scored, scored


def _region_index(regions: Optional[Tensor], batch: int, n_units: int, scheme: str) -> Tensor:
    if regions is None:
        raise DataError(f"mask scheme {scheme!r} needs `regions`: the region index of every unit "
                        "((U,) or (B, U) int64, -1 = padding)")
    regions = torch.as_tensor(regions)
    if regions.ndim == 1:
        regions = regions.expand(batch, -1)
    if tuple(regions.shape) != (batch, n_units):
        raise DataError(f"`regions` must have shape ({n_units},) or ({batch}, {n_units}) for counts of "
                        f"{n_units} units, got {tuple(regions.shape)}")
    return regions.long()


def select_masks(shape: tuple[int, int, int], config: MaskConfig, *, regions: Optional[Tensor] = None,
                 device: torch.device | str = "cpu",
                 generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """What ``config.scheme`` hides and what it scores.

    Args:
        shape: (B, T, U) of the counts.
        regions: region schemes only: (U,) or (B, U) int64 region index per unit, -1 = padding.

    Returns:
        hidden: (B, T, U) bool, True = hidden from the input.
        scored: (B, T, U) bool, True = in the loss; equal to ``hidden`` except for
        ``intra_region`` (other regions are hidden but not scored).
    """
    batch, n_bins, n_units = shape
    if config.scheme in ("temporal", "causal"):
        chosen = temporal_selection(batch, n_bins, config.ratio, config.max_span, device=device, generator=generator)
        hidden = chosen[:, :, None].expand(shape)
        return hidden, hidden
    if config.scheme == "neuron":
        chosen = neuron_selection(batch, n_units, config.ratio, device=device, generator=generator)
        hidden = chosen[:, None, :].expand(shape)
        return hidden, hidden
    if config.scheme in REGION_SCHEMES:
        index = _region_index(regions, batch, n_units, config.scheme).to(device)
        if config.scheme == "inter_region":
            hidden = inter_region_selection(index, generator=generator)
            scored = hidden
        else:
            hidden, scored = intra_region_selection(index, config.ratio, generator=generator)
        return hidden[:, None, :].expand(shape), scored[:, None, :].expand(shape)
    hidden = _uniform(shape, torch.device(device), generator) < config.ratio
    return hidden, hidden


def select_entries(shape: tuple[int, int, int], config: MaskConfig, *, device: torch.device | str = "cpu",
                   generator: Optional[torch.Generator] = None, regions: Optional[Tensor] = None) -> Tensor:
    """The (B, T, U) bool selection of ``config.scheme`` (True = hidden); see :func:`select_masks`."""
    return select_masks(shape, config, regions=regions, device=device, generator=generator)[0]


def hide(inputs: Tensor, selected: Tensor, zero_ratio: float = 1.0, random_ratio: float = 1.0, *,
         generator: Optional[torch.Generator] = None) -> Tensor:
    """Replace the selected entries of ``inputs`` (zero / random count / kept, BERT-style).

    Args:
        inputs: (B, T, U) counts (or any non-negative values).
        selected: (B, T, U) bool, True = hidden.
        zero_ratio, random_ratio: see :class:`MaskConfig`.

    Returns:
        (B, T, U) a new tensor; ``inputs`` is not modified.
    """
    if selected.shape != inputs.shape:
        raise ValueError(f"`selected` must have the shape of `inputs` {tuple(inputs.shape)}, "
                         f"got {tuple(selected.shape)}")
    draw = _uniform(inputs.shape, inputs.device, generator)
    to_zero = selected & (draw < zero_ratio)
    # A second draw, so that random_ratio is a fraction of what zeroing left over.
    to_random = selected & ~to_zero & (_uniform(inputs.shape, inputs.device, generator) < random_ratio)
    visible_max = torch.where(selected, torch.zeros_like(inputs), inputs).amax() if inputs.numel() else inputs.new_zeros(())
    random_counts = torch.floor(_uniform(inputs.shape, inputs.device, generator) * (visible_max + 1))
    masked = torch.where(to_zero, torch.zeros_like(inputs), inputs)
    return torch.where(to_random, random_counts.to(inputs.dtype), masked)


def mask_counts(inputs: Tensor, config: MaskConfig, valid: Optional[Tensor] = None, *,
                generator: Optional[torch.Generator] = None,
                regions: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Hide entries of a batch of binned counts.

    Args:
        inputs: (B, T, U) spike counts.
        config: the recipe.
        valid: optional (B, T, U) (or broadcastable, e.g. (B, T, 1)) bool, False on padding
            (padded bins or units): never selected, never scored.
        generator: the random source (None = torch's global one).
        regions: region schemes only: (U,) or (B, U) int64 region index of each unit (-1 =
            padding, never hidden).

    Returns:
        masked_inputs: (B, T, U) what the model sees.
        loss_mask: (B, T, U) bool, the hidden entries the loss is computed on (for
        ``intra_region`` only the target region's, though other regions are hidden too).
    """
    selected, scored = select_masks(tuple(inputs.shape), config, regions=regions, device=inputs.device,
                                    generator=generator)
    if valid is not None:
        selected, scored = selected & valid, scored & valid
    masked = hide(inputs, selected, config.zero_ratio, config.random_ratio, generator=generator)
    return masked, scored
