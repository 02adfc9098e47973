"""Same budget: how many optimiser steps of a model fit a wall-clock budget on this machine.

Comparing models "at the same compute" needs each model's price of a step. Two short probe fits
measure it: their difference is the time of the extra steps, the rest of a fit is its fixed cost
(data preparation, the final validation). :func:`steps_for_budget` runs the probes,
:func:`steps_from_probes` turns their timings into steps.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch

from mini_decoders.models.registry import get_model
from mini_decoders.training.profiles import config_for

PROBE_STEPS = (3, 23)  # two short runs: their difference is the time of 20 steps, the rest is fixed cost


def is_gradient_model(model: str, profile: str) -> bool:
    """Whether ``model`` trains by optimiser steps (its profile config has ``max_steps``)."""
    return "max_steps" in config_for(get_model(model).CONFIGS, profile)


def steps_for_budget(model: str, sessions, profile: str, seconds: float, *, seed: int = 0, device: str | None = None,
                     probe_steps: tuple[int, int] = PROBE_STEPS, recipe: str | None = None) -> dict:
    """How many optimiser steps of ``model`` fit in ``seconds`` of training on this machine.

    Two short fits (``probe_steps`` steps each, no checkpoints, validation only at the end) give
    the seconds per step (their difference) and the fixed cost of a fit (data preparation, the
    final validation). The answer is capped at the profile's ``max_steps``.

    Returns:
        ``{"steps", "recipe_steps", "seconds_per_step", "fixed_seconds", "probe_seconds"}``.
    """
    model_class = get_model(model)
    base = model_class.recipe_config(profile, recipe)
    recipe_steps = int(base["max_steps"])
    small, large = probe_steps
    timings, loop_seconds = [], None
    started = time.perf_counter()
    for steps in (1, small, large):  # the first, untimed fit pays the process's one-time costs
        config = {**base, "max_steps": steps, "val_every": None, "checkpoint_every": None, "seed": seed,
                  "warmup_steps": min(int(base.get("warmup_steps", 1) or 1), steps)}
        if device is not None:
            config["device"] = device
        torch.manual_seed(seed)
        net = model_class.build(sessions, config)
        tick = time.perf_counter()
        history = net.fit(sessions, config, out_dir=None, progress=False)
        timings.append(time.perf_counter() - tick)
        loop_seconds = history.get("seconds") if isinstance(history, dict) else None
    return {**steps_from_probes(timings[1:], probe_steps, seconds, recipe_steps, loop_seconds=loop_seconds),
            "probe_seconds": time.perf_counter() - started}


def steps_from_probes(timings: Sequence[float], probe_steps: tuple[int, int], seconds: float, recipe_steps: int,
                      loop_seconds: float | None = None) -> dict:
    """Steps that fit ``seconds``, from the wall-clock ``timings`` of two fits of ``probe_steps`` steps.

    Seconds per step = the difference of the two timings over the difference of steps; the rest
    of the short fit is the fixed cost. When noise (another job on the machine) makes the
    difference not positive, the long fit's own training loop is used instead: ``loop_seconds``
    (what the model's ``fit`` reports for its optimiser loop, final validation included) over its
    steps, the rest of its wall-clock being the fixed cost; without ``loop_seconds``, its whole
    wall-clock per step (an over-estimate, so the budget is still kept).

    Returns:
        ``{"steps", "recipe_steps", "seconds_per_step", "fixed_seconds"}``.
    """
    (short, long), (small, large) = timings, probe_steps
    per_step = (long - short) / (large - small)
    if per_step <= 0 and loop_seconds is not None and 0 < loop_seconds <= long:
        per_step, fixed = loop_seconds / large, long - loop_seconds
    elif per_step <= 0:
        per_step, fixed = long / large, 0.0
    else:
        fixed = max(short - small * per_step, 0.0)
    steps = int(max(1, min(recipe_steps, math.floor((seconds - fixed) / per_step))))
    return {"steps": steps, "recipe_steps": recipe_steps, "seconds_per_step": per_step, "fixed_seconds": fixed}
