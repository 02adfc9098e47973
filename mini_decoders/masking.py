"""Masked modelling of binned spike counts: choose entries to hide, hide them, score only them.

A masked model sees spike counts with some entries hidden and must predict what was hidden. Two
decisions make a scheme:

1. **which entries** of the ``(B, T, U)`` count tensor are hidden: a boolean *selection*.
   - ``temporal`` (NDT1, MtM's baseline): whole time bins, every neuron of a chosen bin;
     optionally in spans of up to ``max_span`` consecutive bins (harder: no copying from a
     neighbour).
   - ``neuron`` (MtM): whole neurons, every bin of a chosen neuron (co-smoothing-like).
   - ``random``: single (bin, neuron) entries.
2. **what the model sees instead** (BERT's recipe): a fraction ``zero_ratio`` of the hidden entries
   become 0 (NDT1/MtM default: all of them); a fraction ``random_ratio`` of the rest become a random
   count; whatever is left keeps its true value. Keeping true values (``zero_ratio +
   (1 - zero_ratio) * random_ratio < 1``) is the one case where a hidden value reaches the input,
   and only when asked for. Random counts are drawn up to the largest *visible* count, so
   not even their range depends on a hidden value.

:func:`mask_counts` does both and returns ``(masked_inputs, loss_mask)``: the loss is computed on
``loss_mask`` entries only, because predicting a value the model can see teaches it to copy.
Everything draws from an optional ``torch.Generator``, so a mask is reproducible.
MtM's region schemes can be added as further selection functions with the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

SCHEMES = ("temporal", "neuron", "random")


@dataclass
class MaskConfig:
    """One masking recipe.

    Attributes:
        scheme: ``"temporal"``, ``"neuron"`` or ``"random"`` (see the module docstring).
        ratio: expected fraction of bins / neurons / entries selected (NDT1: 0.2-0.25; MtM 0.3).
        zero_ratio: fraction of the selected entries set to 0.
        random_ratio: fraction of the *remaining* selected entries set to a random count.
        max_span: temporal only: spans of 1..``max_span`` consecutive bins (1 = single bins).
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


def select_entries(shape: tuple[int, int, int], config: MaskConfig, *, device: torch.device | str = "cpu",
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """The (B, T, U) bool selection of ``config.scheme`` (True = hidden)."""
    batch, n_bins, n_units = shape
    if config.scheme == "temporal":
        chosen = temporal_selection(batch, n_bins, config.ratio, config.max_span, device=device, generator=generator)
        return chosen[:, :, None].expand(shape)
    if config.scheme == "neuron":
        chosen = neuron_selection(batch, n_units, config.ratio, device=device, generator=generator)
        return chosen[:, None, :].expand(shape)
    return _uniform(shape, torch.device(device), generator) < config.ratio


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
                generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Hide entries of a batch of binned counts.

    Args:
        inputs: (B, T, U) spike counts.
        config: the recipe.
        valid: optional (B, T, U) (or broadcastable, e.g. (B, T, 1)) bool, False on padding
            (padded bins or units): never selected, never scored.
        generator: the random source (None = torch's global one).

    Returns:
        masked_inputs: (B, T, U) what the model sees.
        loss_mask: (B, T, U) bool, the hidden entries the loss is computed on.
    """
    selected = select_entries(tuple(inputs.shape), config, device=inputs.device, generator=generator)
    if valid is not None:
        selected = selected & valid
    masked = hide(inputs, selected, config.zero_ratio, config.random_ratio, generator=generator)
    return masked, selected
