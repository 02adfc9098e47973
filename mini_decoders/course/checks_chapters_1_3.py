"""Checks of chapters 1-3's exercises (data and tokens, classic decoders, NDT1): each re-derives one
piece of the package.

Every check takes the student's function, runs it on fresh random inputs plus fixed edge cases,
and compares it with the package's implementation (see :mod:`mini_decoders.course.checking`).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed, student_name, tuple_of
from mini_decoders.course.registry import exercise
from mini_decoders.data.binning import bin_intervals
from mini_decoders.masking import MaskConfig, mask_counts, temporal_selection
from mini_decoders.metrics import bits_per_spike, r2_score, smooth_spikes
from mini_decoders.models.baselines import causal_history
from mini_decoders.models.ndt1 import poisson_nll_terms


CH1, CH2, CH3 = "01_neural_data_and_tokens", "02_classic_decoders", "03_ndt1_masked_modelling"

# ================================================================================================
# Chapter 1: neural data and tokens

@exercise(function="my_bits_per_spike", source=CH1, reference="mini_decoders.metrics.bits_per_spike")
def check_bits_per_spike(student_fn) -> None:
    """Bits per spike against a per-neuron mean-rate null."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n, t, u in ((20, 30, 8), (1, 50, 5), (7, 12, 30)):
        rates = rng.gamma(2.0, 0.4, size=(n, t, u))
        cases.append((f"random rates, shape {(n, t, u)}, seed {seed}", rates, rng.poisson(rates).astype(float)))
    rates = rng.gamma(2.0, 0.4, size=(10, 20, 6))
    spikes = rng.poisson(rates).astype(float)
    spikes[:, :, 2] = 0.0  # a neuron that never fires: its null rate is 0
    cases.append((f"neuron 2 never spikes, seed {seed}", rates, spikes))
    null = np.broadcast_to(spikes.mean((0, 1), keepdims=True), spikes.shape).copy()
    cases.append(("rates equal to the null model (the answer is 0)", np.maximum(null, 1e-9), spikes))
    for case, rates, spikes in cases:
        got = call_student(student_fn, (rates, spikes), case=case)
        expected = bits_per_spike(rates, spikes)
        hint = ("the null predicts each neuron's mean count over all trials and bins; "
                "bps = (NLL_null - NLL_model) / (ln 2 · total spikes)")
        try:
            value = float(got)
        except (TypeError, ValueError):
            value = None
        if value is not None and expected != 0 and np.isfinite(value):
            if np.isclose(value, -expected, rtol=1e-6):
                hint = "the sign is flipped: it is NLL(null) minus NLL(model), so better models score higher"
            elif np.isclose(value, expected * np.log(2), rtol=1e-6) or np.isclose(value, expected / np.log(2), rtol=1e-6):
                hint = "off by a factor ln 2: divide the nats by ln 2 exactly once to get bits"
        compare(got, expected, what="bits per spike", case=case, hint=hint, atol=1e-8, rtol=1e-6)
    passed(student_name(student_fn), "mini_decoders.metrics.bits_per_spike", len(cases))


@exercise(function="my_bin_spikes", source=CH1, reference="mini_decoders.data.binning.bin_intervals")
def check_bin_spikes(student_fn) -> None:
    """Count one interval's spikes in bins: (T, U) counts."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n_units, n_bins, bin_size, start in ((6, 25, 0.02, 1.3), (3, 40, 0.01, 0.0), (12, 8, 0.05, 10.0)):
        n_spikes = int(rng.integers(50, 300))
        # Spike positions in bins, kept away from bin edges (an edge is a floating-point coin toss);
        # some spikes fall before the start or after the end and must not be counted.
        position = rng.integers(-3, n_bins + 3, n_spikes) + rng.uniform(0.01, 0.99, n_spikes)
        times = np.sort(start + position * bin_size)
        units = rng.integers(0, n_units - 1, n_spikes)  # the last unit never fires
        cases.append((f"{n_units} units, {n_bins} bins of {bin_size * 1000:g} ms from t={start} s, seed {seed}",
                      (times, units, n_units, start, n_bins, bin_size)))
    cases.append(("a spike exactly at the start goes to bin 0", (np.array([2.0, 2.05]), np.array([1, 0]), 2, 2.0, 5, 0.02)))
    cases.append(("no spikes at all", (np.zeros(0), np.zeros(0, dtype=np.int64), 4, 0.0, 10, 0.02)))
    for case, args in cases:
        times, units, n_units, start, n_bins, bin_size = args
        got = call_student(student_fn, args, case=case)
        expected = bin_intervals(times, units, n_units, np.array([start]), n_bins, bin_size)[0]
        compare(got, expected, what="the counts", case=case, exact=True, kind="array",
                hint="bin t covers [start + t·bin_size, start + (t+1)·bin_size); spikes outside the interval are "
                     "dropped; the result is (n_bins, n_units) with every unit a column, even silent ones")
    passed(student_name(student_fn), "the package's binning (bin_intervals)", len(cases))


# ================================================================================================
# Chapter 2: classic decoders

@exercise(function="my_causal_history", source=CH2, reference="mini_decoders.models.baselines.causal_history")
def check_causal_history(student_fn) -> None:
    """Lagged spike counts for the Wiener filter: (N, T, U·H)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"shape {shape}, {lags} lags, seed {seed}", rng.poisson(1.0, size=shape).astype(float), lags)
             for shape, lags in (((3, 10, 4), 3), ((2, 15, 7), 8), ((4, 6, 3), 1))]
    cases.append(("more lags than bins", rng.poisson(1.0, size=(2, 3, 2)).astype(float), 5))
    for case, counts, lags in cases:
        got = call_student(student_fn, (counts, lags), case=case)
        compare(got, causal_history(counts, lags), what="the lagged features", case=case, kind="array",
                hint="feature u*H + k of bin t is unit u's count in bin t - k (k = 0 is the current bin), and 0 "
                     "before the trial starts; reshape (N, T, U, H) -> (N, T, U*H)")
    passed(student_name(student_fn), "mini_decoders.models.baselines.causal_history", len(cases))


@exercise(function="my_smooth", source=CH2, reference="mini_decoders.metrics.smooth_spikes")
def check_smooth(student_fn) -> None:
    """Gaussian smoothing of counts along time, NLB's kernel."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for kern_sd in (0.03, 0.05, 0.07, float(np.round(rng.uniform(0.02, 0.12), 3))):
        cases.append((f"kern_sd {kern_sd} s, 20 ms bins, seed {seed}", rng.poisson(0.8, size=(4, 40, 5)).astype(float),
                      0.02, kern_sd))
    cases.append(("10 ms bins, an odd number of taps", rng.poisson(0.5, size=(2, 60, 3)).astype(float), 0.01, 0.055))
    for case, counts, bin_size, kern_sd in cases:
        got = call_student(student_fn, (counts, bin_size, kern_sd), case=case)
        compare(got, smooth_spikes(counts, bin_size, kern_sd), what="the smoothed counts", case=case, atol=1e-9,
                kind="array", hint="sd = kern_sd / bin_size bins, int(6·sd) taps centred on the bin, weights summing "
                                   "to 1, a 'same' convolution along time only (axis 1)")
    passed(student_name(student_fn), "mini_decoders.metrics.smooth_spikes", len(cases))


@exercise(function="my_r2", source=CH2, reference="mini_decoders.metrics.r2_score")
def check_r2(student_fn) -> None:
    """Velocity R², per output dimension, then averaged."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for m, d, noise in ((200, 2, 0.5), (50, 3, 2.0), (80, 1, 0.1)):
        true = rng.normal(size=(m, d)) * rng.uniform(0.5, 20.0, size=d) + rng.normal(size=d) * 5
        pred = true + noise * rng.normal(size=(m, d)) * true.std(0)
        cases.append((f"{m} bins, {d} outputs, noise {noise}, seed {seed}", pred, true))
    true = rng.normal(size=(100, 2)) * np.array([1.0, 50.0])
    cases.append(("outputs on very different scales", true + rng.normal(size=(100, 2)) * 0.8 * true.std(0), true))
    cases.append(("predicting the mean scores 0", np.broadcast_to(true.mean(0), true.shape).copy(), true))
    for case, pred, true in cases:
        got = call_student(student_fn, (pred, true), case=case)
        expected = r2_score(pred, true)
        hint = "R²_d = 1 - Σ(v - v̂)² / Σ(v - mean v)² for each output column d, then the mean over columns"
        try:
            value = float(got)
            pooled = 1 - np.sum((true - pred) ** 2) / np.sum((true - true.mean(0)) ** 2)
            if true.shape[1] > 1 and not np.isclose(pooled, expected) and np.isclose(value, pooled):
                hint = "you pooled the columns: compute one R² per output column, then average them"
            swapped = r2_score(true, pred)
            if not np.isclose(swapped, expected) and np.isclose(value, swapped):
                hint = "the arguments are swapped: the denominator uses the variance of the *true* values"
        except (TypeError, ValueError):
            pass
        compare(got, expected, what="R²", case=case, hint=hint, atol=1e-9, rtol=1e-7)
    passed(student_name(student_fn), "mini_decoders.metrics.r2_score", len(cases))


# ================================================================================================
# Chapter 3: NDT1

@exercise(function="my_temporal_mask", source=CH3, reference="mini_decoders.masking.mask_counts")
def check_temporal_mask(student_fn) -> None:
    """Temporal masking: hide whole bins, score only them."""
    seed = fresh_seed()
    cases = []
    for offset, (shape, ratio) in enumerate((((4, 30, 10), 0.3), ((2, 50, 7), 0.2), ((1, 5, 3), 0.9))):
        cases.append((f"shape {shape}, ratio {ratio}, seed {seed + offset}", shape, ratio, seed + offset))
    for case, shape, ratio, case_seed in cases:
        counts = torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(case_seed))
        expected = mask_counts(counts, MaskConfig(scheme="temporal", ratio=ratio),
                               generator=torch.Generator().manual_seed(case_seed + 1))
        hidden = temporal_selection(shape[0], shape[1], ratio, generator=torch.Generator().manual_seed(case_seed + 1))
        got = tuple_of(call_student(student_fn, (counts, hidden), case=case), 2,
                        "the masked input and the loss mask", student_name(student_fn))
        compare(got[1], expected[1], what="the loss mask", case=case,
                hint="True for every neuron of a hidden bin: expand the (B, T) `hidden` over the neurons")
        compare(got[0], expected[0], what="the masked input", case=case,
                hint="hidden bins are 0 for every neuron; every other count is unchanged")
    passed(student_name(student_fn), "mini_decoders.masking.mask_counts (scheme='temporal')", len(cases))


@exercise(function="my_masked_poisson_loss", source=CH3, reference="mini_decoders.models.ndt1.poisson_nll_terms")
def check_masked_poisson_loss(student_fn) -> None:
    """Mean Poisson NLL over the scored entries only."""
    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, ratio in (((4, 30, 10), 0.3), ((2, 7, 3), 0.5), ((3, 20, 5), 0.05)):
        scored = torch.rand(shape, generator=generator) < ratio
        scored[0, 0, 0] = True  # at least one scored entry
        cases.append((f"shape {shape}, {int(scored.sum())} scored entries, seed {seed}",
                      torch.randn(shape, generator=generator) * 0.5,
                      torch.poisson(torch.full(shape, 1.2), generator=generator), scored))
    for case, log_rates, targets, scored in cases:
        reference = (poisson_nll_terms(log_rates, targets) * scored).sum() / scored.sum()
        leaf = log_rates.clone().requires_grad_(True)
        got = call_student(student_fn, (leaf, targets, scored), case=case)
        compare(got, reference, what="the loss", case=case, atol=1e-5, kind="number",
                hint="the mean of exp(log λ) - y·log λ over the scored entries only (divide by their number, not "
                     "by all entries)")
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise CheckFailed(f"the loss ({case}) must be a torch scalar that carries gradients back to `log_rates`; "
                              f"got {type(got).__name__}. Stay in torch (no .item(), no numpy) so training can call "
                              f".backward() on it")
        got.backward()
        reference_leaf = log_rates.clone().requires_grad_(True)
        ((poisson_nll_terms(reference_leaf, targets) * scored).sum() / scored.sum()).backward()
        compare(leaf.grad, reference_leaf.grad, what="the gradient of the loss w.r.t. log_rates", case=case, atol=1e-6,
                hint="entries that are not scored must get exactly zero gradient")
        changed = torch.where(scored, targets, targets + 7)
        again = call_student(student_fn, (log_rates, changed, scored), case=case)
        compare(again, reference, what="the loss after changing only *unscored* targets", case=case, atol=1e-5,
                kind="number", hint="targets outside `scored` must not affect the loss")
    passed(student_name(student_fn), "the masked mean of mini_decoders.models.ndt1.poisson_nll_terms", len(cases),
           " (value and gradient)")
