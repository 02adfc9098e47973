"""Learning rate over time and over parameters.

Two independent knobs multiply into the learning rate a parameter sees at a step:

    lr(param, step) = lr_at(step, config) * group["lr_mult"]

``lr_at`` is the schedule every model shares (linear warm-up, then cosine decay), and
``lr_mult`` is a per-group factor, 1.0 by default, that fine-tuning uses to give new parameters a
higher rate or deeper layers a lower one (layer-wise decay).
"""

from __future__ import annotations

import math
from typing import Protocol

from torch import nn

from mini_decoders.nn.positions import LearnedPositions
from mini_decoders.nn.vocab import GrowingVocabEmbedding

SCHEDULES = ("warmup_cosine", "flat_cosine")


class ScheduleConfig(Protocol):
    """The fields of a training config the schedule reads (``TrainConfig`` has them all)."""

    lr: float
    min_lr_ratio: float
    warmup_steps: int
    max_steps: int
    schedule: str


def lr_at(step: int, config: ScheduleConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based: the rate used to *take* step ``step``).

    ``schedule="warmup_cosine"`` (every model's default): warm-up ``lr * (step + 1) / warmup_steps``
    for ``step < warmup_steps``, so the first step already moves (a step at rate 0 would be
    wasted) and step ``warmup_steps - 1`` reaches ``lr``; then cosine from ``lr`` down to
    ``lr * min_lr_ratio``, reached at ``step == max_steps`` and held after it (resuming with a
    larger ``max_steps`` stretches the curve instead).

    ``schedule="flat_cosine"`` (POYO's paper): ``lr`` from the first step for the first half of
    training, then the same cosine down to ``lr * min_lr_ratio`` over the second half
    (``warmup_steps`` is not used).
    """
    peak = config.lr
    floor = config.lr * config.min_lr_ratio
    start = config.warmup_steps
    if config.schedule == "flat_cosine":
        start = config.max_steps // 2
        if step < start:
            return peak
    elif step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.max_steps - start)
    progress = min(1.0, (step - start) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def _takes_no_decay(module: nn.Module, param: nn.Parameter, decay_positions: bool) -> bool:
    # Decay pulls weights towards 0. That is a sensible prior for matrices that mix features,
    # but not for biases and norm gains (1-D: shifts and scales whose natural value is not 0),
    # nor for embeddings: a unit or session row is updated only when that unit or session is in
    # the batch, so decay would keep shrinking rarely seen rows towards nothing between visits.
    # Position tables are lookup tables too; whether they decay is the model's recipe.
    tables = (nn.Embedding, GrowingVocabEmbedding) if decay_positions else (nn.Embedding, GrowingVocabEmbedding,
                                                                             LearnedPositions)
    return param.ndim < 2 or isinstance(module, tables)


def _named_trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """(full name, owning module, parameter) for every trainable parameter, once.

    A parameter shared by two modules (tied weights) is listed once, under its first owner.
    """
    seen: set[int] = set()
    found = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            found.append((f"{module_name}.{param_name}" if module_name else param_name, module, param))
    return found


def lr_mult_groups(model: nn.Module, rules: dict[str, float], weight_decay: float = 0.01, *,
                   decay_positions: bool = True) -> list[dict]:
    """AdamW (or LAMB) parameter groups: a learning-rate multiplier by parameter-name prefix, and
    weight decay on the matrices that mix features only. Every model's optimiser groups come from here.

    Args:
        model: the model whose trainable parameters are grouped (frozen ones are left out).
        rules: ``{name_prefix: lr_mult}``; a parameter takes the multiplier of the *longest*
            prefix its full name (as in ``model.named_parameters()``) starts with, else 1.0.
            E.g. ``{"readout.": 10.0, "encoder.layers.0.": 0.5}``.
        weight_decay: applied to matrices; biases, norms and embedding tables (``nn.Embedding``,
            growing vocabularies) get 0.
        decay_positions: whether learned position tables decay like matrices (the default) or
            are spared like the other lookup tables (NDT2's and POYO's recipes).

    Returns:
        list of ``{"params": [...], "lr_mult": float, "weight_decay": float}``, one per distinct
        (multiplier, decay) pair, in order of first appearance.
    """
    prefixes = sorted(rules, key=len, reverse=True)
    groups: dict[tuple[float, float], dict] = {}
    for full_name, module, param in _named_trainable_parameters(model):
        lr_mult = next((float(rules[p]) for p in prefixes if full_name.startswith(p)), 1.0)
        decay = 0.0 if _takes_no_decay(module, param, decay_positions) else float(weight_decay)
        group = groups.setdefault((lr_mult, decay), {"params": [], "lr_mult": lr_mult, "weight_decay": decay})
        group["params"].append(param)
    return list(groups.values())


def default_param_groups(model: nn.Module, weight_decay: float = 0.01) -> list[dict]:
    """Two AdamW groups: decay on weight matrices, none on biases, norms and embeddings (see ``lr_mult_groups``).

    Returns:
        list of ``{"params": [...], "lr_mult": 1.0, "weight_decay": float}`` (empty groups dropped).
    """
    return lr_mult_groups(model, {}, weight_decay)
