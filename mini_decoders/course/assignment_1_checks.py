"""Checks of assignment 1 (tokenizers side by side); each item carries its rubric points.

Outcome items measure what the student's choice achieves, graded by :mod:`mini_decoders.course.outcomes`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, pair_of, passed, student_name
from mini_decoders.course.outcomes import grade_outcome, outcome_setting
from mini_decoders.course.registry import exercise
from mini_decoders.data.batching import SpikeWindows
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.metrics import r2_score
from mini_decoders.models.baselines import fit_and_tune_positions, ridge_path
from mini_decoders.tokenizers.bins import BinTokenizer
from mini_decoders.tokenizers.patches import group_into_patches
from mini_decoders.tokenizers.spikes import add_start_end_tokens, decode_token_codes
from mini_decoders.viz import token_counts


A1 = "assignment_1_tokenizers"

# ================================================================================================
# Assignment 1: tokenizers side by side

@exercise(function="bin_tokens", source=A1, reference="mini_decoders.tokenizers.bins.BinTokenizer", assignment=1,
          points=25, title="bin tokens: log(1 + counts) · read-in + bias + position (NDT1)")
def check_bin_tokens(student_fn) -> None:
    """Bin tokens of one trial, as NDT1's tokenizer makes them."""
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
    passed(student_name(student_fn), "BinTokenizer", len(cases))


@exercise(function="patch_grid", source=A1, reference="mini_decoders.tokenizers.patches.group_into_patches",
          assignment=1, points=15, title="patch grid: (T, U) -> (T, P, n) patches and a real-neuron mask (NDT2)")
def check_patch_grid(student_fn) -> None:
    """Cut the neuron axis into patches of n neurons, padding the last one."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"{t} bins x {u} neurons, {n} per patch, seed {seed}", rng.poisson(1.0, size=(t, u)), n)
             for t, u, n in ((10, 70, 32), (4, 64, 32), (3, 5, 8), (6, 7, 1))]
    for case, counts, per_patch in cases:
        expected_patches, expected_mask = group_into_patches(counts, per_patch)
        got = pair_of(call_student(student_fn, (counts, per_patch), case=case), "patches and the channel mask",
                      student_name(student_fn))
        compare(got[0], expected_patches, what="the patches", case=case, exact=True, kind="array",
                hint="P = ceil(U / n); pad the neurons with zero counts to P·n, then reshape (T, P·n) -> (T, P, n)")
        compare(got[1], expected_mask, what="the channel mask", case=case, kind="array",
                hint="(P, n) booleans, True for real neurons and False for the padding")
    passed(student_name(student_fn), "mini_decoders.tokenizers.patches.group_into_patches", len(cases))


@exercise(function="spike_tokens", source=A1, reference="mini_decoders.tokenizers.spikes.add_start_end_tokens",
          assignment=1, points=20, title="spike tokens with a start and an end token per unit (POYO)")
def check_spike_tokens(student_fn) -> None:
    """POYO's tokens of one window: spikes in time order, then start tokens, then end tokens."""
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
            raise CheckFailed(f"`{student_name(student_fn)}` should return three arrays (times, units, types), got "
                              f"{type(got).__name__}")
        hint = ("the spikes first (in time order, type 0), then one start token per unit at time 0 (type 1, units "
                "0..U-1), then one end token per unit at the window's end (type 2)")
        compare(np.asarray(got[2]), types, what="the token types", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[1]), rows, what="the token units", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[0], dtype=np.float64), tokens.times.astype(np.float64), what="the token times",
                case=case, atol=1e-6, kind="array", hint=hint)
    passed(student_name(student_fn), "mini_decoders.tokenizers.spikes.add_start_end_tokens", len(cases))


@exercise(function="tokens_per_second", source=A1, reference="mini_decoders.viz.token_counts", assignment=1,
          points=10, title="tokens per second of recording under each view")
def check_tokens_per_second(student_fn) -> None:
    """Sequence length per second: spike, bin and patch tokens."""
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
            raise CheckFailed(f"`{student_name(student_fn)}` should return a dict with the keys 'spike', 'bin' and 'patch', "
                              f"got {got if not isinstance(got, dict) else sorted(got)}")
        for key in ("spike", "bin", "patch"):
            compare(got[key], expected[f"{key} tokens / s"], what=f"{key} tokens per second", case=case, rtol=1e-9,
                    hint="spikes: one token per spike; bins: one per bin; patches: one per bin and group of "
                         "neurons (round the number of groups up)")
    passed(student_name(student_fn), "mini_decoders.viz.token_counts", len(cases))


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


@exercise(function="choose_bin_size", source=A1, reference="mini_decoders.course.assignment_1_checks.bin_token_decoder_r2",
          assignment=1, points=30, outcome=True,
          title="choose the bin size of a 4-token context: measured velocity R² on test trials")
def check_choose_bin_size(student_fn) -> None:
    """Outcome: the bin size the student's procedure picks, scored on test trials it never saw."""
    setting = outcome_setting()
    visible, session = bin_size_problem(setting), _bin_size_session(setting)
    name = student_name(student_fn)
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
