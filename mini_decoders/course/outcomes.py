"""Grading the assignments' outcome parts: targets, partial credit, measuring once (``coursework/``).

Two kinds of item:

- **re-derivations**, as in the chapters: fresh inputs on every call, comparison with the
  package, messages that locate the error without showing the answer;
- **outcomes** (``outcome=True``): the student makes a design choice (a bin size under a context
  budget, what to adapt in a pretrained model, a masking scheme) and the check *measures* what it
  achieves on held-out test trials, within a budget, against the targets in :data:`TARGETS`:
  full points at the first target, half at the second, with the measured numbers and the
  reasons in the message (:class:`PartialCredit`). The setting is fixed (seeds, data, budget)
  so the notebook shows the same numbers the grader finds. It has two sizes: ``tiny`` (seconds,
  for CI) and ``quick`` (a few minutes on a CPU, for real grading; on a GPU, where the profile
  is ``full``, the quick setting and targets are used too).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
from torch.optim.optimizer import register_optimizer_step_post_hook

from mini_decoders import __version__
from mini_decoders.course.checking import CheckFailed
from mini_decoders.training.profiles import resolve_profile


# ================================================================================================
# Outcome-graded parts: what a design choice achieves, measured, with partial credit

class PartialCredit(CheckFailed):
    """The answer works but reaches only part of its targets: ``fraction`` of the points, and why."""

    def __init__(self, fraction: float, message: str) -> None:
        super().__init__(message)
        self.fraction = float(fraction)


OUTCOME_SETTINGS = {"tiny": "tiny", "quick": "quick", "full": "quick"}  # profile -> the outcome setting used


def outcome_setting(profile: str | None = None) -> str:
    """``tiny`` (CI) or ``quick`` (real grading; also on a GPU): the size of an outcome check's run."""
    return OUTCOME_SETTINGS[resolve_profile(profile)]


@dataclass(frozen=True)
class Target:
    """One measured question of an outcome item: full credit at ``full``, half at ``half``.

    ``share`` is the fraction of the item's points the question carries.
    """

    question: str
    full: float
    half: float
    share: float = 1.0


# item key -> setting -> targets. The tiny targets are met by the reference solution and missed by
# the stub and by the obvious non-answers (tests/test_course.py); the quick ones are the targets the
# assignments state and real grading uses. Measured with the reference answers, 1 CPU thread.
TARGETS: dict[str, dict[str, tuple[Target, ...]]] = {
    # The best bin size measured on val reaches the first; chapter 1's 20 ms bins neither.
    "choose_bin_size": {
        "tiny": (Target("velocity R² (test trials)", 0.64, 0.55),),
        "quick": (Target("velocity R² (test trials)", 0.85, 0.75),),
    },
    # Unit identification with the whole budget reaches the first.
    "adapt_to_session": {
        "tiny": (Target("velocity R² (test trials)", 0.62, 0.45),),
        "quick": (Target("velocity R² (test trials)", 0.80, 0.70),),
    },
    # Hiding a quarter of the neurons or a whole region, half the batches each, reaches both first
    # targets; chapter 3's single bins reach co-smoothing only, and hiding everything neither.
    "my_masking_scheme": {
        "tiny": (Target("co-smoothing bits/spike (test trials)", 0.09, 0.05, 0.5),
                 Target("inter-region bits/spike (test trials)", 0.015, 0.0, 0.5)),
        "quick": (Target("co-smoothing bits/spike (test trials)", 0.20, 0.10, 0.5),
                  Target("inter-region bits/spike (test trials)", 0.06, 0.03, 0.5)),
    },
}


def targets_text(key: str, setting: str | None = None) -> str:
    """The targets of outcome item ``key`` in ``setting`` (default: this run's), as one markdown line."""
    setting = setting or outcome_setting()
    parts = [f"{target.question} ≥ {target.full:g} for full points, ≥ {target.half:g} for half"
             + (f" ({target.share:.0%} of the part)" if target.share < 1 else "")
             for target in TARGETS[key][setting]]
    return f"Targets in the `{setting}` setting: " + "; ".join(parts) + "."


def grade_outcome(name: str, key: str, measured: dict[str, float | None], setting: str, *, summary: str = "",
                  hint: str = "") -> None:
    """Score ``measured`` against ``TARGETS[key][setting]``: print a pass, or raise with the reasons.

    Raises:
        PartialCredit: some questions reach only their lower target (or only some reach any).
        CheckFailed: no question reaches even its lower target.
    """
    fraction, lines = 0.0, []
    for target in TARGETS[key][setting]:
        value = measured.get(target.question)
        if value is None or not np.isfinite(value):
            credit, shown = 0.0, "no score"
        else:
            credit = 1.0 if value >= target.full else 0.5 if value >= target.half else 0.0
            shown = f"{value:.3f}"
        verdict = {1.0: "full points", 0.5: "half points", 0.0: "no points"}[credit]
        lines.append(f"{target.question}: {shown} (full points at ≥ {target.full:g}, half at ≥ {target.half:g}): "
                     f"{verdict}")
        fraction += target.share * credit
    head = f" ({summary})" if summary else ""
    if fraction >= 1.0:
        print(f"✓ {name} matches the targets of the {setting} setting{head}: " + "; ".join(lines))
        return
    message = f"`{name}`{head} in the {setting} setting:\n  " + "\n  ".join(lines)
    if hint:
        message += f"\n  hint: {hint}"
    if fraction > 0:
        raise PartialCredit(fraction, f"{fraction:.0%} of the points. " + message)
    raise CheckFailed(message)


@contextmanager
def count_optimizer_steps():
    """Count every optimiser step taken inside the block (any optimiser): ``with ... as counter: counter.steps``."""
    counter = SimpleNamespace(steps=0)

    def hook(optimizer, args, kwargs) -> None:
        counter.steps += 1

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


_MEASURED: dict = {}


def measure_once(key: str, setting: str, student_fn: Callable, measure: Callable[[], dict]) -> dict:
    """``measure()`` once per function object and setting in this process.

    The notebook's own check cell and the grader's cell run in the same kernel: the second finds the
    first one's measurement instead of training again. A measurement that raised is not kept.
    """
    cached = _MEASURED.get((key, setting, id(student_fn)))
    if cached is not None and cached[0] is student_fn:
        return cached[1]
    result = measure()
    _MEASURED[(key, setting, id(student_fn))] = (student_fn, result)  # holding the function keeps its id unique
    return result


def outcome_cache_dir() -> Path:
    """Where outcome checks keep what they train once (a pretrained model): shared by processes."""
    return Path(os.environ.get("MINI_DECODERS_COURSE_CACHE", Path(tempfile.gettempdir()) / "mini_decoders_course"))


def settings_digest(settings: dict) -> str:
    """A short hash of an outcome setting and the package version: the key of what is cached for it."""
    text = json.dumps({"version": __version__, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
