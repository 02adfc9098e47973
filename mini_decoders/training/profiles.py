"""Profiles: how big a run is, chosen once for every model.

- ``tiny``: seconds per model; only proves that every cell and command runs (CI).
- ``quick``: a CPU-sized recipe that really learns (minutes on a laptop); the default on every
  device, so a reader on a GPU (Colab) gets the published book's recipe and numbers, only faster.
- ``full``: the paper-scale recipe for a GPU; only when asked (``MINI_DECODERS_PROFILE=full``,
  ``--profile full`` or ``profile="full"``), never chosen by ``auto``.

Each model module declares ``CONFIGS = {"tiny": {...}, "quick": {...}, "full": {...}}`` and picks
its own with ``config_for(CONFIGS, profile)``.

Gradient models in the ``quick`` and ``full`` profiles write a checkpoint every
``CHECKPOINT_SECONDS[profile]`` seconds of training as well as every ``checkpoint_every`` steps,
so a killed process loses at most that much; ``tiny`` runs last seconds and write none mid-run.
"""

from __future__ import annotations

import copy
import os

from mini_decoders.errors import RunError

PROFILES = ("tiny", "quick", "full")
PROFILE_ENV_VAR = "MINI_DECODERS_PROFILE"
CHECKPOINT_SECONDS = {"tiny": None, "quick": 60.0, "full": 120.0}


def resolve_profile(profile: str | None = None) -> str:
    """Name of the profile to use: one of ``PROFILES``.

    Precedence: the explicit ``profile`` argument, else the ``MINI_DECODERS_PROFILE`` environment
    variable, else ``"auto"``. ``"auto"`` means ``"quick"`` on every device, CUDA included: the
    book's chapters then run the recipe whose numbers the published book shows; ``full`` (hours of
    paper-scale training) is only ever chosen by name.

    Raises:
        RunError: the name is not ``auto`` or one of ``PROFILES`` (the message says where it came from).
    """
    if profile is not None:
        name, source = profile, "the profile argument"
    elif os.environ.get(PROFILE_ENV_VAR, "").strip():
        name, source = os.environ[PROFILE_ENV_VAR], f"the environment variable {PROFILE_ENV_VAR}"
    else:
        name, source = "auto", "the default"
    name = name.strip().lower()
    if name == "auto":
        return "quick"
    if name not in PROFILES:
        raise RunError(f"unknown profile {name!r} (from {source}); expected one of: auto, {', '.join(PROFILES)}")
    return name


def config_for(configs: dict[str, dict], profile: str | None = None) -> dict:
    """A copy of ``configs[resolve_profile(profile)]`` (a copy, so callers may edit it freely).

    Raises:
        RunError: the profile is unknown or the model declares no config for it.
    """
    name = resolve_profile(profile)
    if name not in configs:
        raise RunError(f"no config for profile {name!r}; this model declares: {', '.join(configs) or 'none'}")
    return copy.deepcopy(configs[name])
