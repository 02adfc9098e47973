"""Recipes: the paper's method, this book's small-data method, and every step between them.

A *profile* says how big a run is (``tiny`` / ``quick`` / ``full``: width, depth, steps). A
*recipe* says which method is trained, at that size:

- ``"default"``: what works best on ~200 trials: the model's ``CONFIGS[profile]`` as they are;
- ``"paper"``: the method as its paper describes it (tokens, objective, masking, architecture,
  optimiser), scaled only in size by the profile: ``CONFIGS[profile]`` with the model's
  ``PAPER`` values written over it;
- ``"paper+kernel"``: the paper's recipe plus one of our changes (a :class:`Departure`, by its
  ``key``): what that change buys on its own. Several: ``"paper+kernel+factors"``;
- ``"default-kernel"``: the default recipe without one change (that part as the paper has it).

Every config key in a model's ``PAPER`` belongs to exactly one of its ``DEPARTURES``, so the
paper's recipe plus every departure is the default recipe, key for key: nothing that differs from
the paper hides outside a named, measured change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mini_decoders.errors import RunError

DEFAULT, PAPER = "default", "paper"


@dataclass(frozen=True)
class Departure:
    """One way the default recipe differs from the paper's.

    Attributes:
        key: short name used in recipe strings (``"paper+kernel"``).
        title: what it is, for tables (``"learned temporal kernel"``).
        config_keys: the config entries it changes (their paper values are in the model's ``PAPER``).
        paper: what the paper does, in words.
        ours: what the default recipe does instead.
        why: why we changed it (what it is expected to buy on small data).
    """

    key: str
    title: str
    config_keys: tuple[str, ...]
    paper: str
    ours: str
    why: str


def parse_recipe(recipe: str | None, departures: tuple[Departure, ...]) -> tuple[str, list[str]]:
    """``"paper+kernel+factors"`` -> ``("paper", ["kernel", "factors"])``; None -> ``("default", [])``.

    Raises:
        RunError: not ``default`` / ``paper`` (optionally ``paper+KEY...`` / ``default-KEY...``), or
            a departure key the model does not have (the message lists them).
    """
    text = DEFAULT if recipe is None else str(recipe).strip().lower()
    keys = [d.key for d in departures]
    for base, sign in ((PAPER, "+"), (DEFAULT, "-")):
        if text == base or text.startswith(base + sign):
            named = [part for part in text[len(base):].split(sign) if part]
            unknown = [name for name in named if name not in keys]
            if unknown:
                raise RunError(f"recipe {recipe!r}: unknown change(s) {unknown}; this model's changes from its paper "
                               f"are: {', '.join(keys) or 'none'}")
            return base, list(dict.fromkeys(named))
    raise RunError(f"unknown recipe {recipe!r}; expected 'default', 'paper', 'paper+CHANGE' or 'default-CHANGE' "
                   f"(changes: {', '.join(keys) or 'none'})")


def apply_recipe(default_config: dict, paper_values: dict[str, Any], departures: tuple[Departure, ...],
                 recipe: str | None) -> dict:
    """The config of ``recipe``, built from the default recipe's config of one profile.

    Args:
        default_config: ``CONFIGS[profile]`` (not modified).
        paper_values: the model's ``PAPER``: config key -> the paper's value.
        departures: the model's ``DEPARTURES``.

    Returns:
        a new config dict with ``"recipe"`` set to the canonical recipe name.
    """
    base, named = parse_recipe(recipe, departures)
    by_key = {d.key: d for d in departures}
    config = dict(default_config)
    if base == PAPER:
        config.update(paper_values)
        for name in named:  # take our change back in: the default recipe's values of its keys
            config.update({k: default_config[k] for k in by_key[name].config_keys if k in default_config})
    else:
        for name in named:  # leave our change out: the paper's values of its keys
            config.update({k: paper_values[k] for k in by_key[name].config_keys})
    sign = "+" if base == PAPER else "-"
    config["recipe"] = base + "".join(sign + name for name in named)
    return config


def check_departures(name: str, paper_values: dict[str, Any], departures: tuple[Departure, ...]) -> None:
    """Every ``PAPER`` key belongs to exactly one departure and every departure key to ``PAPER``.

    Raises:
        RunError: a key is unaccounted for, claimed twice, or a departure names a key the paper
            recipe does not set (a model author's mistake, caught by the tests).
    """
    claimed: dict[str, str] = {}
    for departure in departures:
        for key in departure.config_keys:
            if key in claimed:
                raise RunError(f"{name}: config key {key!r} is in departures {claimed[key]!r} and {departure.key!r}")
            claimed[key] = departure.key
    unclaimed = sorted(set(paper_values) - set(claimed))
    extra = sorted(set(claimed) - set(paper_values))
    if unclaimed or extra:
        raise RunError(f"{name}: PAPER keys without a departure {unclaimed}; departure keys missing from PAPER {extra}")
    if len({d.key for d in departures}) != len(departures):
        raise RunError(f"{name}: two departures share a key")


def ladder(departures: tuple[Departure, ...]) -> list[str]:
    """The recipes that measure every departure: the paper's, the paper's plus each change alone, the default."""
    return [PAPER] + [f"{PAPER}+{d.key}" for d in departures] + [DEFAULT]
