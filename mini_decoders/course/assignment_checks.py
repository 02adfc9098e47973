"""Checks of the graded assignments (``coursework/``); each item carries its rubric points.

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

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed
from mini_decoders.course.registry import exercise

A1, A2, A3 = "assignment_1_tokenizers", "assignment_2_adaptation", "assignment_3_masking"


def _name(function) -> str:
    return getattr(function, "__name__", "your function")


def _pair(result, what: str, name: str):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"`{name}` should return two values ({what}), got {type(result).__name__}")
    return result


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
    from mini_decoders.training.profiles import resolve_profile

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

    from torch.optim.optimizer import register_optimizer_step_post_hook

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


def _cache_dir() -> Path:
    """Where outcome checks keep what they train once (a pretrained model): shared by processes."""
    return Path(os.environ.get("MINI_DECODERS_COURSE_CACHE", Path(tempfile.gettempdir()) / "mini_decoders_course"))


def _digest(settings: dict) -> str:
    from mini_decoders import __version__

    text = json.dumps({"version": __version__, **settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ================================================================================================
# Assignment 1: tokenizers side by side

@exercise(function="bin_tokens", source=A1, reference="mini_decoders.tokenizers.bins.BinTokenizer", assignment=1,
          points=25, title="bin tokens: log(1 + counts) · read-in + bias + position (NDT1)")
def check_bin_tokens(student_fn) -> None:
    """Bin tokens of one trial, as NDT1's tokenizer makes them."""
    from mini_decoders.tokenizers.bins import BinTokenizer

    seed = fresh_seed()
    torch.manual_seed(seed)
    cases = [(f"{t} bins x {u} neurons -> dim {d}, seed {seed}", t, u, d)
             for t, u, d in ((30, 12, 16), (1, 5, 4), (50, 40, 8))]
    for case, n_bins, n_units, dim in cases:
        tokenizer = BinTokenizer([n_units], dim, max_bins=64).eval()
        with torch.no_grad():
            tokenizer.read_in_bias.normal_()  # zero at initialisation: make it matter
        counts = torch.poisson(torch.full((n_bins, n_units), 1.3))
        weight = tokenizer.read_in_weight[0].detach().clone()  # (U, D)
        bias = tokenizer.read_in_bias[0].detach().clone()  # (D,)
        positions = tokenizer.positions.table.detach().clone()  # (max_bins, D)
        with torch.no_grad():
            expected = tokenizer(counts[None], torch.zeros(1, dtype=torch.long))[0]
        got = call_student(student_fn, (counts, weight, bias, positions), case=case)
        compare(got, expected, what="the bin tokens", case=case, atol=1e-5,
                hint="compress the counts with log(1 + y) first, then (T, U) @ (U, D) + bias, then add the first T "
                     "rows of the position table")
    passed(_name(student_fn), "BinTokenizer", len(cases))


@exercise(function="patch_grid", source=A1, reference="mini_decoders.tokenizers.patches.group_into_patches",
          assignment=1, points=15, title="patch grid: (T, U) -> (T, P, n) patches and a real-neuron mask (NDT2)")
def check_patch_grid(student_fn) -> None:
    """Cut the neuron axis into patches of n neurons, padding the last one."""
    from mini_decoders.tokenizers.patches import group_into_patches

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"{t} bins x {u} neurons, {n} per patch, seed {seed}", rng.poisson(1.0, size=(t, u)), n)
             for t, u, n in ((10, 70, 32), (4, 64, 32), (3, 5, 8), (6, 7, 1))]
    for case, counts, per_patch in cases:
        expected_patches, expected_mask = group_into_patches(counts, per_patch)
        got = _pair(call_student(student_fn, (counts, per_patch), case=case), "patches and the channel mask",
                    _name(student_fn))
        compare(got[0], expected_patches, what="the patches", case=case, exact=True, kind="array",
                hint="P = ceil(U / n); pad the neurons with zero counts to P·n, then reshape (T, P·n) -> (T, P, n)")
        compare(got[1], expected_mask, what="the channel mask", case=case, kind="array",
                hint="(P, n) booleans, True for real neurons and False for the padding")
    passed(_name(student_fn), "mini_decoders.tokenizers.patches.group_into_patches", len(cases))


@exercise(function="spike_tokens", source=A1, reference="mini_decoders.tokenizers.spikes.add_start_end_tokens",
          assignment=1, points=20, title="spike tokens with a start and an end token per unit (POYO)")
def check_spike_tokens(student_fn) -> None:
    """POYO's tokens of one window: spikes in time order, then start tokens, then end tokens."""
    from mini_decoders.data.batching import SpikeWindows
    from mini_decoders.tokenizers.spikes import add_start_end_tokens, decode_token_codes

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n_units, n_spikes, length in ((5, 40, 1.0), (12, 200, 0.5), (3, 0, 1.0)):
        times = np.sort(rng.uniform(0, length, n_spikes))
        units = rng.integers(0, max(n_units - 1, 1), n_spikes)  # the last unit is silent: it still gets markers
        cases.append((f"{n_units} units, {n_spikes} spikes, {length} s window, seed {seed}", times, units, n_units, length))
    for case, times, units, n_units, length in cases:
        windows = SpikeWindows(times.astype(np.float32), units.astype(np.int64), np.array([0, len(times)]),
                               np.array([0.0]), length)
        tokens = add_start_end_tokens(windows, unit_rows=np.arange(n_units))
        rows, types = (t.numpy() for t in decode_token_codes(torch.from_numpy(tokens.units)))
        got = call_student(student_fn, (times, units, n_units, length), case=case)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailed(f"`{_name(student_fn)}` should return three arrays (times, units, types), got "
                              f"{type(got).__name__}")
        hint = ("the spikes first (in time order, type 0), then one start token per unit at time 0 (type 1, units "
                "0..U-1), then one end token per unit at the window's end (type 2)")
        compare(np.asarray(got[2]), types, what="the token types", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[1]), rows, what="the token units", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[0], dtype=np.float64), tokens.times.astype(np.float64), what="the token times",
                case=case, atol=1e-6, kind="array", hint=hint)
    passed(_name(student_fn), "mini_decoders.tokenizers.spikes.add_start_end_tokens", len(cases))


@exercise(function="tokens_per_second", source=A1, reference="mini_decoders.viz.token_counts", assignment=1,
          points=10, title="tokens per second of recording under each view")
def check_tokens_per_second(student_fn) -> None:
    """Sequence length per second: spike, bin and patch tokens."""
    from mini_decoders.viz import token_counts

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"seed {seed}", int(rng.integers(1000, 100000)), float(rng.uniform(5, 600)), int(rng.integers(1, 300)),
              bin_size, per_patch) for bin_size, per_patch in ((0.02, 32), (0.01, 8), (0.05, 64))]
    cases.append(("units an exact multiple of the patch size", 5000, 10.0, 64, 0.02, 32))
    for case, n_spikes, duration, n_units, bin_size, per_patch in cases:
        recording = SimpleNamespace(n_spikes=n_spikes, start_time=0.0, stop_time=duration, n_units=n_units)
        expected = token_counts(recording, bin_size, per_patch)
        got = call_student(student_fn, (n_spikes, duration, n_units, bin_size, per_patch), case=case)
        if not isinstance(got, dict) or set(got) != {"spike", "bin", "patch"}:
            raise CheckFailed(f"`{_name(student_fn)}` should return a dict with the keys 'spike', 'bin' and 'patch', "
                              f"got {got if not isinstance(got, dict) else sorted(got)}")
        for key in ("spike", "bin", "patch"):
            compare(got[key], expected[f"{key} tokens / s"], what=f"{key} tokens per second", case=case, rtol=1e-9,
                    hint="spikes: one token per spike; bins: one per bin; patches: one per bin and group of "
                         "neurons (round the number of groups up)")
    passed(_name(student_fn), "mini_decoders.viz.token_counts", len(cases))


FINE_BIN = 0.02  # s: the velocity is decoded at every 20 ms step, whatever the token's bin size
CONTEXT_TOKENS = 4  # the decoder of part 5 reads the last 4 bin tokens: its context budget
BIN_SIZE_SETUP = {"tiny": dict(n_trials=60, n_units=30, seed=7), "quick": dict(n_trials=200, n_units=None, seed=7)}
_DECODER_ALPHAS = [float(a) for a in np.logspace(-1, 5, 13)]
_SESSIONS: dict = {}


def _context_features(counts: np.ndarray, per_token: int, context_tokens: int) -> np.ndarray:
    """(N, T, U) 20 ms counts -> (N, T, U * context) the last ``context`` completed tokens at every 20 ms step.

    A token sums ``per_token`` consecutive 20 ms bins; at step t the decoder sees the tokens that
    ended by the end of t (newest first, zeros before the trial's first token).
    """
    n_trials, n_bins, n_units = counts.shape
    n_tokens = n_bins // per_token
    tokens = counts[:, :n_tokens * per_token].reshape(n_trials, n_tokens, per_token, n_units).sum(2)
    padded = np.concatenate([np.zeros((n_trials, context_tokens, n_units)), tokens], axis=1)
    last = (np.arange(n_bins) + 1) // per_token - 1  # (T,) last completed token, -1 = none yet
    return np.concatenate([padded[:, context_tokens + last - k] for k in range(context_tokens)], axis=-1)


def bin_token_decoder_r2(session, bin_size: float, context_tokens: int = CONTEXT_TOKENS, split: str = "val") -> float:
    """Velocity R² of a linear decoder that reads the last ``context_tokens`` bin tokens of ``bin_size`` s.

    The hand velocity is decoded at every 20 ms step from the tokens completed so far (causal), by
    ridge regression (the Wiener filter of chapter 2, on tokens instead of 20 ms bins).

    Args:
        session: a session with hand velocity.
        bin_size: the token's bin size (s), a multiple of 20 ms.
        context_tokens: how many tokens the decoder reads.
        split: ``"val"``: fit on the train trials (penalty chosen on their last fifth), score the
            val trials (what a student can measure); ``"test"``: fit on train (penalty chosen on
            val), refit on train + val, score the test trials (what the grader measures).
    """
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.metrics import r2_score
    from mini_decoders.models.baselines import fit_and_tune_positions, ridge_path

    per_token = int(round(bin_size / FINE_BIN))
    if per_token < 1 or abs(per_token * FINE_BIN - bin_size) > 1e-9:
        raise ValueError(f"bin_size must be a multiple of {FINE_BIN} s, got {bin_size}")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    binned = bin_trials(session, FINE_BIN, behavior=("hand_vel",))
    features = _context_features(binned.counts.astype(np.float64), per_token, int(context_tokens))
    velocity = binned.behavior["hand_vel"].astype(np.float64)
    scored = binned.mask & np.isfinite(velocity).all(-1)  # (N, T)
    learn = np.flatnonzero(binned.split == "train") if split == "val" else np.flatnonzero(
        np.isin(binned.split, ("train", "val")))
    evaluated = np.flatnonzero(binned.split == split)
    if len(evaluated) == 0:
        raise ValueError(f"session {session.id!r} has no {split!r} trials to score")
    fit, tune = (learn[p] for p in fit_and_tune_positions(binned.split[learn]))

    def rows(trials):
        return features[trials][scored[trials]], velocity[trials][scored[trials]]

    path = ridge_path(*rows(fit), _DECODER_ALPHAS)
    tune_x, tune_y = rows(tune)
    best = int(np.argmax([r2_score(tune_x @ w + b, tune_y) for w, b in path]))
    (weights, intercept), = ridge_path(*rows(learn), [_DECODER_ALPHAS[best]])
    test_x, test_y = rows(evaluated)
    return float(r2_score(test_x @ weights + intercept, test_y))


def _bin_size_session(setting: str):
    from mini_decoders.data.simulate import simulate

    key = ("bin_size", setting)
    if key not in _SESSIONS:
        setup = BIN_SIZE_SETUP[setting]
        _SESSIONS[key] = simulate(n_sessions=1, n_trials=setup["n_trials"], n_units=setup["n_units"],
                                  seed=setup["seed"]).sessions[0]
    return _SESSIONS[key]


def bin_size_problem(setting: str | None = None):
    """The session of assignment 1 part 5 (fixed per setting), with its train and val trials only."""
    session = _bin_size_session(setting or outcome_setting())
    return session.select_trials(np.flatnonzero(session.trials.split != "test"))


@exercise(function="choose_bin_size", source=A1, reference="mini_decoders.course.assignment_checks.bin_token_decoder_r2",
          assignment=1, points=30, outcome=True,
          title="choose the bin size of a 4-token context: measured velocity R² on test trials")
def check_choose_bin_size(student_fn) -> None:
    """Outcome: the bin size the student's procedure picks, scored on test trials it never saw."""
    setting = outcome_setting()
    visible, session = bin_size_problem(setting), _bin_size_session(setting)
    name = _name(student_fn)
    got = call_student(student_fn, (visible, CONTEXT_TOKENS),
                       case=f"{setting} setting: {visible.n_units} units, train and val trials only")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        raise CheckFailed(f"`{name}` should return one number, the bin size in seconds (e.g. 0.06), got "
                          f"{type(got).__name__}")
    bin_size = float(got)
    per_token = bin_size / FINE_BIN
    if not np.isfinite(per_token) or abs(per_token - round(per_token)) > 1e-6 or not 1 <= round(per_token) <= 20:
        raise CheckFailed(f"`{name}` returned {got!r}: the bin size should be a multiple of 20 ms between 20 ms and "
                          f"400 ms, in seconds (e.g. 0.06)")
    bin_size = round(per_token) * FINE_BIN
    r2 = bin_token_decoder_r2(session, bin_size, CONTEXT_TOKENS, split="test")
    grade_outcome(name, "choose_bin_size", {"velocity R² (test trials)": r2}, setting,
                  summary=f"{bin_size * 1000:.0f} ms bins: {1 / bin_size:.1f} tokens/s, a {CONTEXT_TOKENS}-token "
                          f"context of {CONTEXT_TOKENS * bin_size * 1000:.0f} ms",
                  hint="measure bin_token_decoder_r2 on the val trials for every allowed bin size and keep the best; "
                       "small bins see too little of the past in 4 tokens, large ones blur when things happened")


# ================================================================================================
# Assignment 2: adapt a pretrained model to a new session

@exercise(function="layer_lr_multipliers", source=A2, reference="mini_decoders.models.ndt2.NDT2.lr_multipliers",
          assignment=2, points=30, title="layer-wise learning-rate decay for fine-tuning (NDT2, MAE recipe)")
def check_layer_lr_multipliers(student_fn) -> None:
    """Learning-rate multiplier per layer: the deeper, the closer to 1."""
    from mini_decoders.models.ndt2 import NDT2

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    random_decay = float(np.round(rng.uniform(0.3, 0.95), 3))
    cases = [(f"{n} layers, decay {d}", n, d) for n, d in ((4, 0.75), (1, 0.5), (6, random_decay))]
    for case, n_layers, decay in cases:
        stand_in = SimpleNamespace(config={"layer_decay": decay, "new_param_lr_mult": 10.0, "finetune_lr_scale": 0.5,
                                           "finetune_pooled_lr_mult": 0.1},
                                   encoder=[None] * n_layers)
        rules = NDT2.lr_multipliers(stand_in)
        expected = {key: value for key, value in rules.items() if key == "tokenizer." or key.startswith("encoder.")}
        got = call_student(student_fn, (n_layers, decay), case=case)
        if not isinstance(got, dict) or set(got) != set(expected):
            shown = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) should return a dict with the keys "
                              f"{sorted(expected)}, got {shown}")
        for key in expected:
            compare(got[key], expected[key], what=f"the multiplier of {key!r}", case=case, rtol=1e-9,
                    hint="encoder layer i of L gets decay ** (L - i): the last layer decay ** 1, the first decay ** L; "
                         "the tokenizer sits below layer 0 and gets decay ** (L + 1)")
    passed(_name(student_fn), "NDT2.lr_multipliers", len(cases))


def _tiny_poyo(seed: int):
    """A small POYO built on one simulated session, plus a second session it has never seen."""
    from mini_decoders.data.simulate import simulate
    from mini_decoders.models.poyo import POYO

    data = simulate(n_sessions=2, n_trials=16, n_units=10, seed=seed % 1000)
    torch.manual_seed(seed)
    model = POYO.build(data.sessions[:1], POYO.CONFIGS["tiny"])
    return model, data.sessions


@exercise(function="unit_id_parameter_count", source=A2, reference="mini_decoders.models.poyo.POYO.finetune",
          assignment=2, points=30, title="how many numbers unit identification learns")
def check_unit_id_parameter_count(student_fn) -> None:
    """The number of values unit identification trains: one embedding per new unit and new session."""
    from mini_decoders.models.base import SessionSpec

    seed = fresh_seed()
    model, sessions = _tiny_poyo(seed)
    dim = int(model.config["dim"])
    cases = []
    for case, session in (("the session the model was trained on", sessions[0]), ("a new session", sessions[1])):
        known_units = set(model.tokenizer.unit_vocab.ids)
        new_units = [u for u in SessionSpec.of(session).unit_ids if u not in known_units]
        new_sessions = int(session.id not in model.session_vocab.ids)
        cases.append((case, session, (len(new_units) + new_sessions) * dim))
    for case, session, expected in cases:
        sizes = (len(model.tokenizer.unit_vocab), len(model.session_vocab))
        got = call_student(student_fn, (model, session), case=case)
        if (len(model.tokenizer.unit_vocab), len(model.session_vocab)) != sizes:
            raise CheckFailed(f"`{_name(student_fn)}` changed the model (its vocabularies grew): only count, "
                              f"do not adapt")
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, (int, np.integer)) and not (isinstance(got, float) and got.is_integer()):
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) should return a whole number, got {got!r}")
        if int(got) != expected:
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) returned {int(got)}, expected {expected}\n  hint: a unit "
                              f"the model already knows needs nothing; each unknown unit and an unknown session get one "
                              f"embedding row of model.config['dim'] numbers; nothing else learns")
    passed(_name(student_fn), "the rows POYO.finetune(mode='units') adds", len(cases))


ADAPTATION_SETUP = {
    "tiny": dict(n_trials=60, n_units=30, seed=1, pretrain_steps=1200, few_trials=10, max_steps=100),
    "quick": dict(n_trials=150, n_units=60, seed=1, pretrain_steps=3000, few_trials=20, max_steps=200),
}
_PRETRAINED: dict = {}


def _pretrained_poyo(setting: str, sessions) -> "POYO":
    """POYO (tiny architecture) pretrained on ``sessions``: trained once, kept on disk for every later call."""
    from mini_decoders.run import load_run, train

    setup = ADAPTATION_SETUP[setting]
    if setting in _PRETRAINED:
        return _PRETRAINED[setting]
    folder = _cache_dir() / f"assignment2-poyo-{setting}-{_digest(setup)}"
    run = None
    if (folder / "checkpoint.pt").is_file():
        try:
            run = load_run(folder)
        except Exception:  # a damaged cache: train again
            shutil.rmtree(folder, ignore_errors=True)
    if run is None:
        scratch = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            run = train("poyo", sessions, profile="tiny", out=scratch, max_steps=setup["pretrain_steps"], seed=0,
                        progress=False)
        try:
            scratch.rename(folder)
        except OSError:  # another process got there first: theirs is the same model
            shutil.rmtree(scratch, ignore_errors=True)
    run.model.eval()
    _PRETRAINED[setting] = run.model
    return run.model


def adaptation_problem(setting: str | None = None) -> SimpleNamespace:
    """Assignment 2 part 3: a POYO pretrained on two sessions and a third session with few train trials.

    Returns:
        ``pretrained`` (the model; adapt a copy), ``session`` (the new session with its first
        ``few_trials`` train trials and its val trials, no test trials), ``max_steps`` (the
        optimiser-step budget), ``new_session`` (all its trials; the grader scores the test ones),
        ``dataset`` (the simulation, for the oracle) and ``setting``.
    """
    from mini_decoders.data.simulate import simulate

    setting = setting or outcome_setting()
    setup = ADAPTATION_SETUP[setting]
    key = ("adaptation", setting)
    if key not in _SESSIONS:
        _SESSIONS[key] = simulate(n_sessions=3, n_trials=setup["n_trials"], n_units=setup["n_units"],
                                  seed=setup["seed"])
    dataset = _SESSIONS[key]
    sessions = dataset.sessions
    new = sessions[2]
    train_trials = np.flatnonzero(new.trials.split == "train")[:setup["few_trials"]]
    few = new.select_trials(np.sort(np.concatenate([train_trials, np.flatnonzero(new.trials.split == "val")])))
    return SimpleNamespace(pretrained=_pretrained_poyo(setting, sessions[:2]), session=few,
                           max_steps=setup["max_steps"], new_session=new, dataset=dataset, setting=setting)


def velocity_r2(model, session, split: str = "val") -> float:
    """Velocity R² of a POYO (or any velocity decoder) on the ``split`` trials of ``session``."""
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.metrics import r2_score

    binned = bin_trials(session, model.bin_size, split=split, behavior=("hand_vel",), lag=float(model.config.get("lag", 0.0)))
    predicted = model.predict_trials(session, binned)["hand_vel"]
    return float(r2_score(predicted[binned.mask], binned.behavior["hand_vel"][binned.mask]))


@exercise(function="adapt_to_session", source=A2, reference="mini_decoders.models.poyo.POYO.finetune", assignment=2,
          points=40, outcome=True,
          title="adapt a pretrained POYO to a new session on a budget: measured velocity R² on its test trials")
def check_adapt_to_session(student_fn) -> None:
    """Outcome: the student's adaptation (what to train, what to freeze) scored on the new session's test trials."""
    from mini_decoders.models.poyo import POYO

    problem = adaptation_problem()
    name = _name(student_fn)

    def measure() -> dict:
        model = copy.deepcopy(problem.pretrained)
        case = (f"{problem.setting} setting: a POYO pretrained on 2 sessions, a new session with "
                f"{int((problem.session.trials.split == 'train').sum())} train trials, {problem.max_steps} steps")
        torch.manual_seed(0)
        started = time.perf_counter()
        with count_optimizer_steps() as counter:
            result = call_student(student_fn, (model, problem.session, problem.max_steps), case=case)
        seconds = time.perf_counter() - started
        if not isinstance(result, POYO):
            raise CheckFailed(f"`{name}` should return the adapted POYO model, got {type(result).__name__}")
        if counter.steps > problem.max_steps:
            raise CheckFailed(f"`{name}` took {counter.steps} optimiser steps, the budget is {problem.max_steps}: a "
                              f"score bought with more steps does not count\n  hint: pass finetune_steps (and "
                              f"unfreeze_after) that add up to at most max_steps")
        try:
            result.spec_for(problem.new_session)
        except Exception as error:
            raise CheckFailed(f"the returned model still refuses the new session ({type(error).__name__}: "
                              f"{str(error)[:120]}...)\n  hint: the model must learn embeddings for the session's "
                              f"units; look at POYO.finetune") from None
        return {"r2": velocity_r2(result, problem.new_session, "test"), "steps": counter.steps, "seconds": seconds}

    measured = measure_once("adapt_to_session", problem.setting, student_fn, measure)
    grade_outcome(name, "adapt_to_session", {"velocity R² (test trials)": measured["r2"]}, problem.setting,
                  summary=f"{measured['steps']} of {problem.max_steps} optimiser steps, {measured['seconds']:.0f} s",
                  hint="compare what to train on the val trials (velocity_r2(model, session, 'val')): the new "
                       "embeddings only, everything, or embeddings first and then everything; a few trials fit few "
                       "numbers")


# ================================================================================================
# Assignment 3: design a masking scheme

@exercise(function="neuron_mask", source=A3, reference="mini_decoders.masking.mask_counts", assignment=3, points=20,
          title="neuron masking: hide whole neurons (MtM's co-smoothing-like scheme)")
def check_neuron_mask(student_fn) -> None:
    """Hide whole neurons in every bin."""
    from mini_decoders.masking import MaskConfig, mask_counts

    seed = fresh_seed()
    cases = [(f"shape {shape}, ratio {ratio}, seed {seed + i}", shape, ratio, seed + i)
             for i, (shape, ratio) in enumerate((((4, 20, 10), 0.3), ((2, 5, 40), 0.5), ((3, 8, 2), 0.9)))]
    for case, shape, ratio, case_seed in cases:
        counts = torch.poisson(torch.full(shape, 2.0), generator=torch.Generator().manual_seed(case_seed + 1000))
        expected = mask_counts(counts, MaskConfig(scheme="neuron", ratio=ratio),
                               generator=torch.Generator().manual_seed(case_seed))
        got = _pair(call_student(student_fn, (counts, ratio, torch.Generator().manual_seed(case_seed)), case=case),
                    "the masked counts and the loss mask", _name(student_fn))
        hint = ("draw torch.rand((B, U), generator=generator) once and hide neuron u of sample b when its number is < "
                "ratio; a hidden neuron is hidden in every bin and its counts become 0")
        compare(got[1], expected[1], what="the loss mask", case=case, hint=hint)
        compare(got[0], expected[0], what="the masked counts", case=case, hint=hint)
    passed(_name(student_fn), "mini_decoders.masking.mask_counts (scheme='neuron')", len(cases))


@exercise(function="span_selection", source=A3, reference="mini_decoders.masking.temporal_selection", assignment=3,
          points=25, title="span masking without a loop over bins")
def check_span_selection(student_fn) -> None:
    """Hide spans of 1..max_span consecutive bins."""
    from mini_decoders.masking import temporal_selection

    seed = fresh_seed()
    cases = [(f"{b} x {t} bins, ratio {r}, spans up to {s}, seed {seed + i}", b, t, r, s, seed + i)
             for i, (b, t, r, s) in enumerate(((4, 50, 0.25, 3), (2, 30, 0.4, 6), (3, 20, 0.2, 1), (1, 5, 0.9, 4)))]
    for case, batch, n_bins, ratio, max_span, case_seed in cases:
        expected = temporal_selection(batch, n_bins, ratio, max_span, generator=torch.Generator().manual_seed(case_seed))
        got = call_student(student_fn, (batch, n_bins, ratio, max_span, torch.Generator().manual_seed(case_seed)),
                           case=case)
        compare(got, expected, what="the hidden bins", case=case,
                hint="max_span 1: one draw, hidden where < ratio. Otherwise: span starts where a first draw < ratio / "
                     "mean span, lengths from torch.randint(1, max_span + 1, ...) (second draw); a bin is hidden when "
                     "the running maximum (cummax) of the span ends up to it lies beyond it")
    passed(_name(student_fn), "mini_decoders.masking.temporal_selection", len(cases))


@exercise(function="region_mask", source=A3, reference="(MtM inter-region masking, re-derived in the assignment)",
          assignment=3, points=15, title="inter-region masking: hide every neuron of one brain region")
def check_region_mask(student_fn) -> None:
    """Hide all neurons of one region per sample (MtM's inter-region scheme)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for i, (batch, n_bins, names) in enumerate(((6, 10, ("M1", "PMd")), (8, 4, ("M1", "PMd", "S1")), (2, 3, ("V1",)))):
        regions = np.array(names)[rng.integers(0, len(names), 12)]
        regions[: len(names)] = names  # every region has at least one neuron
        cases.append((f"{batch} samples, regions {sorted(set(regions))}, seed {seed + i}", batch, n_bins, regions, seed + i))
    for case, batch, n_bins, regions, case_seed in cases:
        counts = torch.poisson(torch.full((batch, n_bins, len(regions)), 2.0)) + 1.0  # no zeros: hiding is visible
        got = _pair(call_student(student_fn, (counts, regions, torch.Generator().manual_seed(case_seed)), case=case),
                    "the masked counts and the loss mask", _name(student_fn))
        masked, loss_mask = got
        if not isinstance(loss_mask, torch.Tensor) or loss_mask.shape != counts.shape or loss_mask.dtype != torch.bool:
            raise CheckFailed(f"the loss mask ({case}) should be a bool tensor of shape {tuple(counts.shape)}, got "
                              f"{type(loss_mask).__name__} {getattr(loss_mask, 'shape', '')} "
                              f"{getattr(loss_mask, 'dtype', '')}")
        if not (loss_mask == loss_mask[:, :1]).all():
            raise CheckFailed(f"the loss mask ({case}) changes over time: a region is hidden in every bin")
        names = sorted(set(regions))
        for b in range(batch):
            hidden_units = set(np.flatnonzero(loss_mask[b, 0].numpy()))
            region_sets = [set(np.flatnonzero(regions == name)) for name in names]
            if hidden_units not in region_sets:
                raise CheckFailed(f"sample {b} ({case}) hides units {sorted(hidden_units)}, which is not exactly one "
                                  f"region\n  hint: hide every neuron whose region is the chosen one, and nothing else")
        chosen = torch.randint(len(names), (batch,), generator=torch.Generator().manual_seed(case_seed))
        expected_mask = torch.from_numpy(np.array(names)[chosen.numpy()][:, None] == regions[None, :])  # (B, U)
        expected_mask = expected_mask[:, None, :].expand(counts.shape)
        compare(loss_mask, expected_mask, what="the loss mask", case=case,
                hint="draw the region of each sample with torch.randint(len(names), (B,), generator=generator), "
                     "where names = sorted(set(regions))")
        compare(masked, torch.where(expected_mask, torch.zeros_like(counts), counts), what="the masked counts",
                case=case, hint="hidden entries become 0, the rest are unchanged")
    passed(_name(student_fn), "inter-region masking (one region hidden per sample)", len(cases))


MASKING_SETUP = {
    "tiny": dict(n_trials=100, n_units=40, seed=5, steps=200, model=dict()),
    "quick": dict(n_trials=200, n_units=80, seed=5, steps=500,
                  model=dict(dim=64, layers=2, heads=4, ffn_dim=128, factors=16, kernel_bins=9, batch_size=32)),
}
MASKING_QUESTIONS = {"co-smoothing bits/spike (test trials)": "heldin_co_smoothing",
                     "inter-region bits/spike (test trials)": "inter_region"}


def masking_problem(setting: str | None = None):
    """Assignment 3 part 4: one simulated session (M1 and PMd, no held-out units), fixed per setting."""
    from mini_decoders.data.simulate import simulate

    setting = setting or outcome_setting()
    key = ("masking", setting)
    if key not in _SESSIONS:
        setup = MASKING_SETUP[setting]
        _SESSIONS[key] = simulate(n_sessions=1, n_trials=setup["n_trials"], n_units=setup["n_units"],
                                  seed=setup["seed"], heldout_fraction=0.0).sessions[0]
    return _SESSIONS[key]


def _validate_mask(mask_fn: Callable, counts: torch.Tensor, regions: np.ndarray, case: str) -> None:
    """The scheme's output on one batch: shapes, a bool loss mask, hidden entries zero, the rest untouched."""
    name = _name(mask_fn)
    masked, loss_mask = _pair(call_student(mask_fn, (counts, regions, torch.Generator().manual_seed(0)), case=case),
                              "the masked counts and the loss mask", name)
    for what, value in (("the masked counts", masked), ("the loss mask", loss_mask)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(counts.shape):
            raise CheckFailed(f"{what} ({case}) should be a tensor of shape {tuple(counts.shape)}, got "
                              f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    if loss_mask.dtype != torch.bool:
        raise CheckFailed(f"the loss mask ({case}) should be boolean (True = hidden and scored), got {loss_mask.dtype}")
    leaked = loss_mask & (masked != 0)
    if leaked.any():
        first = tuple(int(i) for i in leaked.nonzero()[0])
        raise CheckFailed(f"the masked counts ({case}): entry {first} is hidden but not 0 ({int(leaked.sum())} hidden "
                          f"entries are visible): hidden entries should be 0 in the input, or the model learns to copy")
    changed = ~loss_mask & (masked != counts)
    if changed.any():
        first = tuple(int(i) for i in changed.nonzero()[0])
        raise CheckFailed(f"the masked counts ({case}): entry {first} is not hidden but changed "
                          f"({int(changed.sum())} entries): entries outside the loss mask should keep their counts")
    if not loss_mask.any():
        raise CheckFailed(f"`{name}` ({case}) hides nothing: the loss mask should select the entries to predict")


def masking_outcome(mask_fn: Callable, setting: str | None = None, *, seed: int = 0) -> dict[str, float]:
    """Train a small NDT1 with ``mask_fn`` for the setting's step budget and score it on the test trials.

    The training loop: batches of train + val trials, ``masked, loss_mask = mask_fn(counts (B, T, U),
    regions (U,) names, generator)``, the Poisson NLL of the ``loss_mask`` entries, AdamW. The
    questions, on the test trials (:mod:`mini_decoders.evaluation`): co-smoothing (each neuron in
    turn hidden in every bin and predicted from the others, the MtM paper's) and inter-region (each
    region hidden and predicted from the other), in bits per spike.

    Returns:
        question -> bits/spike (the keys of :data:`MASKING_QUESTIONS`), plus ``steps`` and ``seconds``.
    """
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.evaluation import evaluate_tasks
    from mini_decoders.models.ndt1 import NDT1, poisson_nll_terms

    setting = setting or outcome_setting()
    setup = MASKING_SETUP[setting]
    session = masking_problem(setting)
    regions = np.asarray(session.units.region).astype(str)
    learn = bin_trials(session, 0.02, split=("train", "val"), behavior=())
    test = bin_trials(session, 0.02, split="test", behavior=())
    counts = torch.from_numpy(learn.counts.astype(np.float32))
    valid = torch.from_numpy(learn.mask)
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = {**NDT1.CONFIGS["tiny"], **setup["model"]}
        model = NDT1.build([session], config)
        empty = np.zeros((counts.shape[1], 0), dtype=np.float32)
        model._init_read_out_bias([{"session": 0, "heldin": learn.counts[i], "heldout": empty}
                                   for i in range(len(counts))])
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                      weight_decay=float(config["weight_decay"]))
        generator = torch.Generator().manual_seed(seed)
        batch_size = min(int(config["batch_size"]), len(counts))
        model.train()
        for step in range(int(setup["steps"])):
            rows = torch.randperm(len(counts), generator=generator)[:batch_size]
            batch, real = counts[rows], valid[rows]
            masked, loss_mask = mask_fn(batch.clone(), regions, generator)
            scored = (loss_mask & real[:, :, None]).float()
            log_rates = model(masked.float(), torch.zeros(len(rows), dtype=torch.int64), real)
            loss = (poisson_nll_terms(log_rates, batch) * scored).sum() / scored.sum().clamp_min(1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_counts, test_valid = test.counts.astype(np.float32), torch.from_numpy(test.mask)

    def predict(hidden: np.ndarray, task: str) -> np.ndarray:
        inputs = torch.from_numpy(np.where(hidden, 0.0, test_counts).astype(np.float32))
        return model._predict_rates(0, inputs, test_valid)

    results = evaluate_tasks(predict, test, np.zeros(session.n_units, dtype=bool), regions,
                             tasks=tuple(MASKING_QUESTIONS.values()))
    scores = {question: results[task]["bps"] for question, task in MASKING_QUESTIONS.items()}
    return {**scores, "steps": int(setup["steps"]), "seconds": time.perf_counter() - started}


@exercise(function="my_masking_scheme", source=A3, reference="mini_decoders.course.assignment_checks.masking_outcome",
          assignment=3, points=40, outcome=True,
          title="your masking scheme: measured co-smoothing and inter-region bits/spike on test trials")
def check_my_masking_scheme(student_fn) -> None:
    """Outcome: a small NDT1 trained with the student's scheme, scored on two questions on test trials."""
    setting = outcome_setting()
    session = masking_problem(setting)
    regions = np.asarray(session.units.region).astype(str)
    from mini_decoders.data.binning import bin_trials

    sample = torch.from_numpy(bin_trials(session, 0.02, split="train", behavior=()).counts[:8].astype(np.float32))
    case = f"{setting} setting: a batch of {tuple(sample.shape)} counts, regions {sorted(set(regions.tolist()))}"
    _validate_mask(student_fn, sample, regions, case)
    name = _name(student_fn)

    def scheme(counts, regions, generator):
        return call_student(student_fn, (counts, regions, generator), case=case)

    scheme.__name__ = name
    measured = measure_once("my_masking_scheme", setting, student_fn, lambda: masking_outcome(scheme, setting))
    grade_outcome(name, "my_masking_scheme", measured, setting,
                  summary=f"{measured['steps']} training steps, {measured['seconds']:.0f} s",
                  hint="a scheme practises what it hides: the questions hide one neuron in every bin, and one whole "
                       "region; chapter 3's single bins practise neither (compare schemes with masking_outcome)")
