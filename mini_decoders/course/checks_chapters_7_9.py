"""Checks of chapters 7-9's exercises (VQ tokens, side by side, real data): each re-derives one
piece of the package.

Every check takes the student's function, runs it on fresh random inputs plus fixed edge cases,
and compares it with the package's implementation (see :mod:`mini_decoders.course.checking`).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed, student_name, tuple_of
from mini_decoders.course.registry import exercise
from mini_decoders.data.realdata import stratified_splits
from mini_decoders.data.session import Session
from mini_decoders.experiments.benchmark import judge_score
from mini_decoders.experiments.cost import scaling_exponent
from mini_decoders.nn.quantize import VectorQuantizer, squared_distances


# ================================================================================================
# Chapters 7-9 (VQ tokens, side by side, real data)

CH7, CH8, CH9 = "07_vq_tokens", "08_side_by_side", "09_real_data"


@exercise(function="my_quantise", source=CH7, reference="mini_decoders.nn.quantize.VectorQuantizer")
def check_vq_quantise(student_fn) -> None:
    """VQ: nearest codebook row, with a straight-through gradient."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(f"{n} vectors of size {c}, {k} codes, seed {seed}", n, c, k, False)
             for n, c, k in ((20, 4, 8), (7, 16, 32), (1, 2, 3))]
    cases.append((f"codes of very different lengths, seed {seed}", 40, 3, 6, True))
    for case, n, c, k, spread in cases:
        quantizer = VectorQuantizer(k, c, ema_decay=None).eval()
        codebook = torch.randn(k, c, generator=generator)
        if spread:  # lengths from 0.1 to 10: the largest dot product is rarely the nearest row
            codebook = codebook * torch.logspace(-1, 1, k)[:, None]
        with torch.no_grad():
            quantizer.codebook.copy_(codebook)
        z = torch.randn(n, c, generator=generator)
        expected = quantizer(z, update=False)
        leaf = z.clone().requires_grad_(True)
        got = tuple_of(call_student(student_fn, (leaf, codebook.clone()), case=case), 2,
                        "the quantised vectors and the codes", student_name(student_fn))
        if isinstance(got[0], torch.Tensor) and got[0].ndim == 1 and not got[0].is_floating_point():
            raise CheckFailed(f"`{student_name(student_fn)}` returned the codes first ({case}): return (z_q, codes), the "
                              f"quantised vectors (N, C) and then the (N,) code indices")
        if isinstance(got[1], torch.Tensor) and got[1].is_floating_point():
            raise CheckFailed(f"the codes ({case}) should be integer indices (torch.long, as argmin returns them), "
                              f"got dtype {str(got[1].dtype).replace('torch.', '')}")
        hint = "the code of z is the index of the codebook row with the smallest squared distance ||z - e_k||²"
        if isinstance(got[1], torch.Tensor) and got[1].shape == expected.codes.shape:
            by_dot = (z @ codebook.t()).argmax(1)
            if torch.equal(got[1], by_dot) and not torch.equal(by_dot, expected.codes):
                hint = ("you picked the largest dot product z·e_k; that is the nearest row only when every row has "
                        "the same length. ||z - e_k||² = ||z||² - 2 z·e_k + ||e_k||²: keep the ||e_k||² term")
        compare(got[1], expected.codes, what="the codes", case=case, exact=True, hint=hint)
        compare(got[0], expected.quantized.detach(), what="the quantised vectors", case=case, atol=1e-5,
                hint="each vector is replaced by its nearest codebook row, codebook[codes]")
        if not isinstance(got[0], torch.Tensor) or not got[0].requires_grad:
            raise CheckFailed(f"the quantised vectors ({case}) carry no gradient back to z: use the straight-through "
                              f"trick, z + (z_q - z).detach()")
        weights = torch.randn(n, c, generator=generator)
        (got[0] * weights).sum().backward()
        compare(leaf.grad, weights, what="the gradient reaching z", case=case, atol=1e-6,
                hint="straight-through: the backward pass treats quantisation as the identity, so dL/dz = dL/dz_q "
                     "(z + (z_q - z).detach(); without .detach() the gradient cancels to 0)")
    passed(student_name(student_fn), "VectorQuantizer's lookup and straight-through gradient", len(cases))


@exercise(function="my_ema_update", source=CH7, reference="mini_decoders.nn.quantize.VectorQuantizer")
def check_ema_update(student_fn) -> None:
    """The EMA codebook update: each code moves to the running mean of the vectors assigned to it."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, c, k, decay in ((64, 4, 8, 0.99), (10, 3, 16, 0.9), (30, 8, 5, 0.5)):
        cases.append((f"{n} vectors of size {c}, {k} codes, decay {decay}, seed {seed}", n, c, k, decay, False))
    cases.append((f"code 0 has almost no mass left and gets no vector, seed {seed}", 20, 2, 4, 0.99, True))
    for case, n, c, k, decay, starved in cases:
        codebook = torch.randn(k, c, generator=generator)
        ema_count = 5 * torch.rand(k, generator=generator) + 0.5
        # a history: the sums are the codes times their counts, plus some drift
        ema_sum = (codebook + 0.3 * torch.randn(k, c, generator=generator)) * ema_count[:, None]
        z = torch.randn(n, c, generator=generator)
        codes = squared_distances(z, codebook).argmin(1)
        if starved:  # its statistics decayed for ages: tiny, and their ratio drifted off its row
            ema_sum[0] = ema_sum[0] / ema_count[0] * 1e-7
            ema_count[0] = 1e-7
            codes = torch.where(codes == 0, torch.ones_like(codes), codes)
        quantizer = VectorQuantizer(k, c, ema_decay=decay)
        quantizer.codebook.copy_(codebook)
        quantizer.ema_count_stat.copy_(ema_count)
        quantizer.ema_sum_stat.copy_(ema_sum)
        quantizer._ema_update(z, codes, torch.bincount(codes, minlength=k).float())
        expected = (quantizer.codebook, quantizer.ema_count_stat, quantizer.ema_sum_stat)
        got = tuple_of(call_student(student_fn, (z, codes, codebook, ema_count, ema_sum, decay), case=case), 3,
                        "the new codebook, ema_count and ema_sum", student_name(student_fn))
        batch_count = torch.bincount(codes, minlength=k).float()
        hint = ("ema_count <- decay · ema_count + (1 - decay) · (how many vectors each code got in this batch, "
                "torch.bincount(codes, minlength=K))")
        if isinstance(got[1], torch.Tensor) and got[1].shape == ema_count.shape and torch.allclose(
                got[1].float(), (1 - decay) * ema_count + decay * batch_count, atol=1e-5):
            hint = "decay weighs the *old* statistics: decay · ema_count + (1 - decay) · batch count, not the reverse"
        compare(got[1], expected[1], what="the new ema_count", case=case, atol=1e-5, hint=hint)
        compare(got[2], expected[2], what="the new ema_sum", case=case, atol=1e-5,
                hint="ema_sum <- decay · ema_sum + (1 - decay) · (the sum of the vectors assigned to each code, "
                     "e.g. torch.zeros(K, C).index_add_(0, codes, z))")
        hint = ("every code becomes ema_sum / ema_count of the *new* statistics, also a code that got no vector in "
                "this batch (its sum and count decay alike)")
        if starved:
            hint = ("a code whose new ema_count is at most eps has (almost) no data behind it: it keeps its old row "
                    "(dividing by a clamped count would fling it far away)")
        compare(got[0], expected[0], what="the new codebook", case=case, atol=1e-5, rtol=1e-4, hint=hint)
    passed(student_name(student_fn), "VectorQuantizer's EMA codebook update", len(cases))


@exercise(function="my_scaling_exponent", source=CH8, reference="mini_decoders.experiments.cost.scaling_exponent")
def check_scaling_exponent(student_fn) -> None:
    """The exponent of a cost: the slope of log(seconds) against log(work)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    exponent = float(np.round(rng.uniform(0.3, 2.5), 2))
    work = [100.0, 200.0, 400.0, 800.0]
    lengths = [0.25, 0.5, 1.0, 2.0, 4.0]
    noisy = [float(2e-3 * x ** 1.1 * np.exp(rng.normal(0, 0.1))) for x in lengths]
    cases = [(f"an exact power law, seconds = c · work^{exponent}", work, [3e-5 * x ** exponent for x in work]),
             (f"noisy timings against window length, seed {seed}", lengths, noisy),
             ("a missing time (None: a length the model could not do)", lengths, [*noisy[:2], None, *noisy[3:]]),
             ("a time of 0 s (below the timer's resolution) is not a measurement", lengths, [0.0, *noisy[1:]]),
             ("only one measured point: no slope", work, [None, 0.01, None, None])]
    for case, x, seconds in cases:
        got = call_student(student_fn, (list(x), list(seconds)), case=case)
        expected = scaling_exponent(x, seconds)
        if expected is None:
            if got is not None:
                raise CheckFailed(f"the exponent ({case}) should be None: fewer than two points have a measured "
                                  f"time, so there is no slope; got {got!r}")
            continue
        if got is None:
            raise CheckFailed(f"`{student_name(student_fn)}` returned None ({case}), expected {expected:.6g}: there are "
                              f"at least two measured points")
        hint = ("fit a straight line to (log x, log seconds) over the points whose time is a positive number "
                "(np.polyfit(log_x, log_t, 1)[0]); skip None and times <= 0")
        try:
            kept = [(a, b) for a, b in zip(x, seconds) if b is not None and b > 0]
            log_x, log_t = np.log(np.array(kept)).T
            if np.isclose(float(got), np.polyfit(log_t, log_x, 1)[0]) and not np.isclose(float(got), expected):
                hint = "the axes are swapped: the slope of log(seconds) (y) against log(x) (x)"
        except (TypeError, ValueError):
            pass
        compare(got, expected, what="the exponent", case=case, kind="number", atol=1e-8, rtol=1e-6, hint=hint)
    passed(student_name(student_fn), "mini_decoders.experiments.cost.scaling_exponent", len(cases))


VERDICT_HINTS = {
    "beats_baseline": "score > baseline_score, strictly: a tie does not beat the baseline",
    "ratio_to_baseline": "score / baseline_score, and None when the baseline is at or below 0 (a ratio to a "
                         "negative R² means nothing)",
    "meets_model_bar": "with bar 1 it is beats_baseline; with another bar (VQ: 0.9) it is score >= bar · baseline_score",
    "fraction_of_oracle": "score / oracle_score, and None when there is no oracle or it is at or below 0",
}


@exercise(function="my_judge", source=CH8, reference="mini_decoders.experiments.benchmark.judge_score")
def check_judge(student_fn) -> None:
    """A table row's verdict: against the classic baseline, the model's own bar, and the oracle."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    base, oracle = float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.5, 0.8))
    cases = [(f"a random row, seed {seed}", float(rng.uniform(0.05, 0.5)), base, oracle, 1.0),
             ("VQ's bar 0.9: below the baseline, above 0.9 x it", 0.95 * base, base, oracle, 0.9),
             ("VQ's bar 0.9: below 0.9 x the baseline", 0.8 * base, base, oracle, 0.9),
             ("a tie with the baseline", base, base, oracle, 1.0),
             ("a negative baseline (an R² below 0)", 0.2, -0.1, oracle, 1.0),
             ("no baseline (a classic model is its own baseline)", 0.3, None, oracle, 1.0),
             ("no oracle (real data)", 0.3, base, None, 1.0),
             ("an oracle at 0", 0.3, base, 0.0, 1.0)]
    for case, score, baseline_score, oracle_score, bar in cases:
        got = call_student(student_fn, (score, baseline_score, oracle_score, bar), case=case)
        expected = judge_score(score, baseline_score, oracle_score, bar)
        if not isinstance(got, dict):
            raise CheckFailed(f"`{student_name(student_fn)}` should return a dict with the keys {list(expected)} ({case}), "
                              f"got {type(got).__name__}")
        for key, want in expected.items():
            if key not in got:
                raise CheckFailed(f"the verdict ({case}) should have the key {key!r}; it has {sorted(got)}")
            have, tail = got[key], f"\n  hint: {VERDICT_HINTS[key]}"
            if want is None:
                if have is not None:
                    raise CheckFailed(f"{key} ({case}) should be None, got {have!r}{tail}")
            elif isinstance(want, bool):
                if not isinstance(have, (bool, np.bool_)):
                    raise CheckFailed(f"{key} ({case}) should be True or False, got {have!r}{tail}")
                if bool(have) != want:
                    raise CheckFailed(f"{key} ({case}) is {bool(have)}, expected {want}{tail}")
            else:
                if have is None:
                    raise CheckFailed(f"{key} ({case}) is None, expected {want:.6g}{tail}")
                compare(have, want, what=key, case=case, kind="number", atol=1e-9, hint=VERDICT_HINTS[key])
    passed(student_name(student_fn), "mini_decoders.experiments.benchmark.judge_score", len(cases))


@exercise(function="my_spikes_from_counts", source=CH9, reference="mini_decoders.data.session.Session.from_binned")
def check_spikes_from_counts(student_fn) -> None:
    """Spike times from binned counts, evenly spaced inside each bin (Session.from_binned)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    start = float(np.round(rng.uniform(0, 100), 3))
    cases = [(f"69 steps of 45 ms x 10 units from t={start} s, seed {seed}", rng.poisson(1.5, size=(69, 10)), 0.045,
              start)]
    counts = rng.poisson(0.8, size=(30, 6))
    counts[3, 2], counts[:, 5] = 6, 0  # a busy bin, a silent unit
    cases.append((f"30 bins of 20 ms, one silent unit, seed {seed}", counts, 0.02, 0.0))
    cases.append(("one bin with 3 spikes", np.array([[3]]), 0.1, 2.0))
    cases.append(("no spikes at all", np.zeros((5, 3), dtype=np.int64), 0.02, 0.0))
    for case, counts, bin_size, t_start in cases:
        reference = Session.from_binned(counts, bin_size, t_start=t_start)
        got = tuple_of(call_student(student_fn, (counts, bin_size, t_start), case=case), 2,
                        "the spike times and the spike units", student_name(student_fn))
        times, units = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in got)
        if times.shape != reference.spike_times.shape or units.shape != reference.spike_units.shape:
            raise CheckFailed(f"the spike times and units ({case}) should both have shape "
                              f"{reference.spike_times.shape} (one entry per spike: counts.sum() = "
                              f"{int(counts.sum())}), got {times.shape} and {units.shape}")
        if len(times) and np.any(np.diff(times.astype(np.float64)) < 0):
            raise CheckFailed(f"the spike times ({case}) should be sorted in time, as a recording's are: reorder "
                              f"times and units together with np.argsort(times, kind='stable')")
        hint = ("spike k (k = 0 .. n-1) of the n spikes in bin t sits at t_start + (t + (k + 0.5) / n) · bin_size: "
                "evenly spaced inside its bin, never on an edge")
        bins = np.floor((times - t_start) / bin_size).astype(np.int64)
        if len(times) and np.allclose(times, t_start + (bins + 0.5) * bin_size) and counts.max() > 1:
            hint = "you put every spike at its bin's centre: spread the n spikes of a bin evenly, at (k + 0.5) / n"
        order, expected_order = np.lexsort((units, times)), np.lexsort((reference.spike_units, reference.spike_times))
        compare(units[order], reference.spike_units[expected_order], what="the spike units (in time order)",
                case=case, exact=True, kind="array", hint=hint)
        compare(times[order], reference.spike_times[expected_order], what="the spike times (in time order)",
                case=case, atol=1e-9, rtol=0, kind="array", hint=hint)
    passed(student_name(student_fn), "Session.from_binned", len(cases), " (spike times and units)")


SPLITS = ("train", "val", "test")


@exercise(function="my_stratified_splits", source=CH9, reference="mini_decoders.data.realdata.stratified_splits")
def check_stratified_splits(student_fn) -> None:
    """Train/val/test per trial, in the given proportions within every condition."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    # Condition sizes that never put round() on a tie (n·fraction = k + 0.5): the rounding rule is not the point.
    sizes = [n for n in range(1, 40) if n % 10 != 5]
    cases = [(f"7 targets x 30 trials in random order, seed {seed}", rng.permutation(np.repeat(np.arange(7), 30)),
              (0.7, 0.1, 0.2), seed),
             ("8 directions x 3 trials", np.repeat([f"dir{d}" for d in range(8)], 3), (0.7, 0.1, 0.2), seed + 1),
             (f"conditions of uneven sizes, seed {seed}",
              rng.permutation(np.concatenate([np.full(int(n), f"c{i}") for i, n in enumerate(rng.choice(sizes, 6))])),
              (0.7, 0.1, 0.2), seed + 2),
             ("fractions (0.6, 0.2, 0.2), one condition", np.full(23, "all"), (0.6, 0.2, 0.2), seed + 3)]
    for case, condition, fractions, case_seed in cases:
        got = np.asarray(call_student(student_fn, (condition, fractions, case_seed), case=case))
        expected = stratified_splits(condition, fractions, seed=case_seed)
        if got.shape != expected.shape:
            raise CheckFailed(f"the splits ({case}) should have shape {expected.shape} (one label per trial), "
                              f"got {got.shape}")
        labels = got.astype(str)
        unknown = np.flatnonzero(~np.isin(labels, SPLITS))
        if len(unknown):
            raise CheckFailed(f"the splits ({case}): entry {int(unknown[0])} is {str(labels[unknown[0]])!r}, it should be "
                              f"'train', 'val' or 'test'")
        label_of = np.asarray(condition).astype(str)
        overall_right = all((labels == s).sum() == (expected == s).sum() for s in SPLITS)
        for value in np.unique(label_of):
            mine = labels[label_of == value]
            want = [int((expected[label_of == value] == s).sum()) for s in SPLITS]
            have = [int((mine == s).sum()) for s in SPLITS]
            if have != want:
                hint = ("split the trials of every condition on their own, so that each target is in every split"
                        if overall_right else
                        "n_train = round(fractions[0] · n) and n_val = round(fractions[1] · n) trials of each "
                        "condition's n, the rest test")
                raise CheckFailed(f"the splits ({case}): condition {str(value)!r} ({len(mine)} trials) should have "
                                  f"{want[0]} train / {want[1]} val / {want[2]} test trials, like the package's; yours "
                                  f"has {have[0]} / {have[1]} / {have[2]}\n  hint: {hint}")
        again = np.asarray(call_student(student_fn, (condition, fractions, case_seed), case=case)).astype(str)
        if not np.array_equal(again, labels):
            raise CheckFailed(f"the splits ({case}) changed between two calls with the same seed: draw the shuffle "
                              f"from np.random.default_rng(seed), not from the global random state")
    condition, fractions, first_seed = cases[0][1:]
    first = np.asarray(call_student(student_fn, (condition, fractions, first_seed))).astype(str)
    other = np.asarray(call_student(student_fn, (condition, fractions, first_seed + 1))).astype(str)
    if np.array_equal(first, other):
        raise CheckFailed(f"the splits of {cases[0][0]} are the same for seeds {first_seed} and {first_seed + 1}: "
                          f"shuffle each condition's trials with np.random.default_rng(seed) before cutting them "
                          f"(recordings drift, so the first trials must not always be the training ones)")
    passed(student_name(student_fn), "mini_decoders.data.realdata.stratified_splits", len(cases) + 1,
           " (the size of every split in every condition)")
