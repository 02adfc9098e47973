"""NLB metrics: parity with nlb_tools.evaluation (to 1e-6) and closed-form checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics
import torch
from nlb_tools import evaluation as nlb
from nlb_tools.nwb_interface import smooth_column
from scipy import signal
from scipy.special import gammaln

from mini_decoders.errors import DataError
from mini_decoders.metrics import (bits_per_spike, co_bps, condition_trials, fp_bps, poisson_nll,
                                   psth_r2, psth_r2_from_spikes, r2_score, smooth_spikes,
                                   velocity_r2_from_rates)

TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------------
# Data

def random_poisson(seed: int, shape=(12, 25, 9), nan_fraction=0.05, zero_rate_fraction=0.05):
    """Random positive rates, Poisson spikes drawn from *other* rates, NaN spikes and zero rates."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(2.0, 0.4, size=shape)
    spikes = rng.poisson(rng.gamma(2.0, 0.4, size=shape)).astype(np.float64)
    spikes[rng.random(shape) < nan_fraction] = np.nan
    rates[rng.random(shape) < zero_rate_fraction] = 0.0
    return rates, spikes


def simulated_like(seed: int = 0, n_trials=40, n_bins=30, n_units=24, n_conditions=4, bin_size=0.02):
    """Latent-driven reaching-like data: condition-dependent rotating latents -> rates, spikes, velocity.

    Returns a dict with rates (N, T, U) expected counts per bin, spikes (N, T, U), velocity (N, T, 2),
    conditions (N,).
    """
    rng = np.random.default_rng(seed)
    conditions = np.arange(n_trials) % n_conditions
    time = np.arange(n_bins) * bin_size  # (T,)
    angle = 2 * np.pi * conditions[:, None] / n_conditions  # (N, 1)
    envelope = np.sin(np.pi * time / time[-1])[None, :]  # (1, T) bell-shaped reach speed
    latents = np.stack([envelope * np.cos(angle), envelope * np.sin(angle),
                        np.cos(2 * np.pi * time / time[-1])[None, :].repeat(n_trials, 0)], axis=-1)  # (N, T, 3)
    latents += 0.05 * rng.standard_normal(latents.shape)
    loading = rng.standard_normal((3, n_units))
    baseline = rng.uniform(np.log(5.0), np.log(30.0), n_units)  # 5-30 Hz
    rates = np.exp(latents @ loading * 0.8 + baseline) * bin_size  # (N, T, U) expected counts per bin
    spikes = rng.poisson(rates).astype(np.float64)
    velocity = latents[..., :2] * 20.0 + 0.5 * rng.standard_normal((n_trials, n_bins, 2))
    return dict(rates=rates, spikes=spikes, velocity=velocity, conditions=conditions, bin_size=bin_size)


# ------------------------------------------------------------------------------------------------
# Poisson NLL and bits per spike: parity with nlb_tools

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_nll_matches_nlb_on_random_data_with_nans_and_zeros(seed):
    rates, spikes = random_poisson(seed)
    assert np.isnan(spikes).any() and (rates == 0).any()
    expected = nlb.neg_log_likelihood(rates.copy(), spikes.copy(), zero_warning=False)  # it edits rates in place
    assert poisson_nll(rates, spikes) == pytest.approx(expected, rel=TOLERANCE, abs=TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("flatten", [False, True])
def test_bits_per_spike_matches_nlb_on_random_data(seed, flatten):
    rates, spikes = random_poisson(seed)
    if flatten:  # (N*T, U)
        rates, spikes = rates.reshape(-1, rates.shape[-1]), spikes.reshape(-1, spikes.shape[-1])
    expected = nlb.bits_per_spike(rates.copy(), spikes.copy())
    assert bits_per_spike(rates, spikes) == pytest.approx(expected, abs=TOLERANCE)


def test_bits_per_spike_matches_nlb_on_simulated_like_data():
    data = simulated_like()
    rates, spikes = data["rates"], data["spikes"]
    noisy_rates = rates * np.exp(0.3 * np.random.default_rng(1).standard_normal(rates.shape))
    for candidate in (rates, noisy_rates):
        expected = nlb.bits_per_spike(candidate.copy(), spikes.copy())
        assert bits_per_spike(candidate, spikes) == pytest.approx(expected, abs=TOLERANCE)
    # held-out / forward-prediction aliases are the same number on their slice
    heldout = slice(18, None)
    expected_co = nlb.bits_per_spike(rates[..., heldout].copy(), spikes[..., heldout].copy())
    assert co_bps(rates[..., heldout], spikes[..., heldout]) == pytest.approx(expected_co, abs=TOLERANCE)
    expected_fp = nlb.bits_per_spike(rates[:, -10:].copy(), spikes[:, -10:].copy())
    assert fp_bps(rates[:, -10:], spikes[:, -10:]) == pytest.approx(expected_fp, abs=TOLERANCE)
    # the true rates carry real information, and more than corrupted rates
    assert bits_per_spike(rates, spikes) > bits_per_spike(noisy_rates, spikes) > -1


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # nlb_tools' nanmean of the all-NaN unit
def test_neuron_with_all_nan_or_no_spikes_matches_nlb():
    rates, spikes = random_poisson(3)
    spikes[..., 0] = np.nan  # unit never observed
    spikes[..., 1] = np.where(np.isnan(spikes[..., 1]), np.nan, 0.0)  # unit never fires: null rate 0 -> 1e-9
    expected = nlb.bits_per_spike(rates.copy(), spikes.copy())
    assert bits_per_spike(rates, spikes) == pytest.approx(expected, abs=TOLERANCE)


# ------------------------------------------------------------------------------------------------
# Closed forms

def test_poisson_nll_closed_form_includes_log_factorial():
    rates = np.array([[0.5, 2.0], [1.0, 4.0]])
    spikes = np.array([[0.0, 3.0], [1.0, 2.0]])
    expected = sum(r - y * math.log(r) + math.lgamma(y + 1) for r, y in zip(rates.ravel(), spikes.ravel()))
    assert poisson_nll(rates, spikes) == pytest.approx(expected, rel=1e-12)


def test_bits_per_spike_closed_form():
    # one neuron, two bins with 1 and 3 spikes: null rate 2; perfect rates 1 and 3.
    spikes = np.array([[1.0], [3.0]])
    rates = np.array([[1.0], [3.0]])
    # NLL_null - NLL_model = (2 + 2 - 4 ln 2) - (1 + 3 - 3 ln 3); the log-factorials cancel
    expected = (3 * math.log(3) - 4 * math.log(2)) / (4 * math.log(2))
    assert bits_per_spike(rates, spikes) == pytest.approx(expected, rel=1e-12)
    # a missing ln 2 or a pooled (not per-neuron) null would give a different number
    assert expected != pytest.approx(expected * math.log(2))


def test_null_is_per_neuron_mean_of_the_evaluated_data():
    rng = np.random.default_rng(5)
    spikes = rng.poisson(np.array([0.2, 1.0, 4.0]), size=(30, 20, 3)).astype(float)
    spikes[rng.random(spikes.shape) < 0.1] = np.nan
    per_neuron_mean = np.nanmean(spikes, axis=(0, 1))
    assert bits_per_spike(np.broadcast_to(per_neuron_mean, spikes.shape), spikes) == pytest.approx(0.0, abs=1e-12)
    # a population-wide mean is a worse model than the per-neuron null, so it scores below 0
    pooled = np.full(spikes.shape, np.nanmean(spikes))
    assert bits_per_spike(pooled, spikes) < -0.1
    # and the number itself, written out from the definition
    observed = ~np.isnan(spikes)
    y = spikes[observed]
    model = np.broadcast_to(np.nanmean(spikes), spikes.shape)[observed]
    null = np.broadcast_to(per_neuron_mean, spikes.shape)[observed]
    nll = lambda lam: np.sum(lam - y * np.log(lam) + gammaln(y + 1))
    assert bits_per_spike(pooled, spikes) == pytest.approx((nll(null) - nll(model)) / y.sum() / np.log(2), rel=1e-10)


def test_true_rates_on_large_counts_give_positive_bps():
    rng = np.random.default_rng(6)
    true_rates = rng.uniform(5.0, 80.0, size=(20, 50, 4))  # large counts: Poisson noise is small relative
    spikes = rng.poisson(true_rates).astype(float)
    assert bits_per_spike(true_rates, spikes) > 0.1
    assert bits_per_spike(true_rates, spikes) > bits_per_spike(true_rates[::-1], spikes)


def test_negative_or_nan_rates_raise_with_message():
    rates, spikes = random_poisson(0, nan_fraction=0.0)
    rates[0, 0, 0] = -0.5
    with pytest.raises(DataError, match="non-negative.*1 negative value.*-0.5"):
        poisson_nll(rates, spikes)
    with pytest.raises(ValueError, match="negative"):
        bits_per_spike(rates, spikes)
    rates[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        bits_per_spike(rates, spikes)
    # ...but a NaN rate where the spike count is NaN too is simply not scored
    spikes[0, 0, 0] = np.nan
    assert np.isfinite(bits_per_spike(rates, spikes))
    with pytest.raises(DataError, match=r"same shape.*\(12, 25, 9\).*\(12, 25, 8\)"):
        bits_per_spike(rates, spikes[..., :8])


def test_zero_rates_are_floored_not_rejected():
    spikes = np.array([[0.0, 1.0]])
    rates = np.array([[0.0, 0.0]])
    expected = 1e-9 + 1e-9 - math.log(1e-9)
    assert poisson_nll(rates, spikes) == pytest.approx(expected, rel=1e-12)
    assert rates[0, 0] == 0.0  # the caller's array is not modified (nlb_tools edits it in place)


def test_torch_tensors_are_accepted():
    rates, spikes = random_poisson(4)
    from_numpy = bits_per_spike(rates, spikes)
    from_torch = bits_per_spike(torch.tensor(rates, dtype=torch.float64, requires_grad=True), torch.tensor(spikes))
    assert from_torch == pytest.approx(from_numpy, abs=1e-12)
    assert r2_score(torch.tensor(rates[..., :2]), torch.tensor(rates[..., 1:3])) == pytest.approx(
        r2_score(rates[..., :2], rates[..., 1:3]), abs=1e-12)


def test_no_spikes_gives_nan():
    assert math.isnan(bits_per_spike(np.ones((3, 4, 2)), np.zeros((3, 4, 2))))


# ------------------------------------------------------------------------------------------------
# R²

@pytest.mark.parametrize("shape", [(50,), (50, 3), (8, 10, 2)])
def test_r2_score_matches_sklearn(shape):
    rng = np.random.default_rng(7)
    true = rng.standard_normal(shape)
    pred = true + 0.7 * rng.standard_normal(shape) + 0.2
    flat = lambda x: x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x
    expected = sklearn.metrics.r2_score(flat(true), flat(pred), multioutput="uniform_average")
    assert r2_score(pred, true) == pytest.approx(expected, abs=1e-12)
    # argument order matters: R² is not symmetric
    assert r2_score(true, pred) != pytest.approx(expected, abs=1e-3)


def test_r2_score_drops_nan_target_rows_and_handles_constant_outputs():
    rng = np.random.default_rng(8)
    true = rng.standard_normal((60, 3))
    pred = true + 0.5 * rng.standard_normal((60, 3))
    true[::7, 0] = np.nan
    pred[::7] = np.nan  # predictions on unscored rows do not matter
    kept = ~np.isnan(true).any(axis=1)
    expected = sklearn.metrics.r2_score(true[kept], pred[kept])
    assert r2_score(pred, true) == pytest.approx(expected, abs=1e-12)
    constant = np.ones((10, 2))
    assert r2_score(constant, constant) == 1.0
    assert r2_score(constant + 0.1, constant) == sklearn.metrics.r2_score(constant, constant + 0.1) == 0.0


# ------------------------------------------------------------------------------------------------
# Velocity R²

def test_velocity_r2_matches_nlb_on_simulated_like_data_with_nan_rows():
    # one population, split into train and evaluation trials
    data = simulated_like(seed=10, n_trials=60)
    train = {key: data[key][:40] for key in ("rates", "spikes", "velocity")}
    evaluation = {key: data[key][40:].copy() for key in ("rates", "spikes", "velocity")}
    train["velocity"][3, :5] = np.nan  # behaviour missing at the start of some trials
    evaluation["velocity"][0, -4:] = np.nan
    for rates_key in ("rates", "spikes"):
        expected = nlb.velocity_decoding(
            train[rates_key], train["velocity"], np.ones((40, 1), bool),
            evaluation[rates_key], evaluation["velocity"], np.ones((20, 1), bool))
        ours = velocity_r2_from_rates(train[rates_key], train["velocity"],
                                      evaluation[rates_key], evaluation["velocity"])
        assert ours == pytest.approx(expected, abs=TOLERANCE)
    # log-rates are close to linear in the latents, so true rates decode velocity well
    assert velocity_r2_from_rates(train["rates"], train["velocity"], evaluation["rates"], evaluation["velocity"]) > 0.8


def test_velocity_r2_matches_nlb_fit_and_eval_on_flat_random_rows():
    rng = np.random.default_rng(12)
    weights = rng.standard_normal((15, 2))
    train_rates, eval_rates = rng.gamma(2.0, 1.0, (300, 15)), rng.gamma(2.0, 1.0, (120, 15))
    train_vel = train_rates @ weights + rng.standard_normal((300, 2))
    eval_vel = eval_rates @ weights + rng.standard_normal((120, 2))
    expected = nlb.fit_and_eval_decoder(train_rates, train_vel, eval_rates, eval_vel)
    assert velocity_r2_from_rates(train_rates, train_vel, eval_rates, eval_vel) == pytest.approx(expected, abs=TOLERANCE)


def test_velocity_r2_rejects_mismatched_rows():
    with pytest.raises(DataError, match="train_rates.*train_vel.*100 and 90"):
        velocity_r2_from_rates(np.ones((100, 3)), np.ones((90, 2)), np.ones((10, 3)), np.ones((10, 2)))


# ------------------------------------------------------------------------------------------------
# Smoothing and PSTH R²

@pytest.mark.parametrize("bin_size, kern_sd", [(0.02, 0.07), (0.005, 0.04), (0.02, 0.05)])
def test_smooth_spikes_matches_nlb_smooth_column(bin_size, kern_sd):
    rng = np.random.default_rng(13)
    counts = rng.poisson(1.5, size=(3, 60, 4)).astype(float)
    counts[1, 45:] = np.nan  # a shorter trial padded with NaN at the end
    counts[2, :7] = np.nan  # ...and one padded at the front
    smoothed = smooth_spikes(counts, bin_size, kern_sd)
    # nlb_tools' kernel: std in bins = kern_sd / bin_size (its ms / ms ratio is the same)
    sd_in_bins = kern_sd / bin_size
    window = signal.windows.gaussian(int(6 * sd_in_bins), sd_in_bins, sym=True)
    window /= window.sum()
    for trial in range(3):
        for unit in range(4):
            expected = smooth_column((counts[trial, :, unit].copy(), window, True, "float64"))
            np.testing.assert_allclose(smoothed[trial, :, unit], expected, atol=1e-10, equal_nan=True)
    # smoothing preserves spike counts away from the edges (the kernel sums to 1)
    continuous = smooth_spikes(np.pad(counts[0], ((40, 40), (0, 0))), bin_size, kern_sd)
    np.testing.assert_allclose(continuous.sum(axis=0), counts[0].sum(axis=0), rtol=1e-9)


def test_psth_r2_matches_nlb_eval_psth():
    data = simulated_like(seed=14)
    rates, conditions = data["rates"], data["conditions"]
    labels, trial_indices = condition_trials(conditions)
    true_psth = np.stack([rates[trials].mean(axis=0) for trials in trial_indices])  # (C, T, U)
    true_psth[1, 25:] = np.nan  # a condition shorter than the others
    predicted = rates * np.exp(0.2 * np.random.default_rng(15).standard_normal(rates.shape))
    nlb_cond_idx = np.array(trial_indices, dtype=object)
    expected = nlb.eval_psth(true_psth, predicted, nlb_cond_idx)
    assert psth_r2(predicted, true_psth, trial_indices) == pytest.approx(expected, abs=TOLERANCE)
    assert 0.0 < expected < 1.0
    # exact rates reproduce the PSTH exactly
    assert psth_r2(rates, true_psth, trial_indices) == pytest.approx(1.0, abs=1e-12)
    # a condition without evaluation trials is skipped, as in nlb_tools
    with_empty = [trial_indices[0], np.array([], dtype=int)] + list(trial_indices[2:])
    assert psth_r2(predicted, true_psth, with_empty) == pytest.approx(
        nlb.eval_psth(true_psth, predicted, np.array(with_empty, dtype=object)), abs=TOLERANCE)


def test_psth_r2_from_spikes_is_smoothed_condition_average():
    data = simulated_like(seed=16)
    spikes, conditions = data["spikes"], data["conditions"]
    smoothed = smooth_spikes(spikes, data["bin_size"], 0.07)
    true_psth = np.stack([smoothed[conditions == c].mean(axis=0) for c in range(4)])
    trial_indices = [np.flatnonzero(conditions == c) for c in range(4)]
    expected = nlb.eval_psth(true_psth, data["rates"], np.array(trial_indices, dtype=object))
    ours = psth_r2_from_spikes(data["rates"], spikes, conditions, data["bin_size"], 0.07)
    assert ours == pytest.approx(expected, abs=TOLERANCE)
    assert ours > 0.3  # the true rates explain much of the smoothed PSTH


def test_condition_trials_groups_indices_by_sorted_label():
    labels, trial_indices = condition_trials(np.array(["b", "a", "b", "c", "a"]))
    assert labels.tolist() == ["a", "b", "c"]
    assert [t.tolist() for t in trial_indices] == [[1, 4], [0, 2], [3]]


def test_psth_r2_rejects_wrong_shapes():
    with pytest.raises(DataError, match="must agree in T and U"):
        psth_r2(np.ones((4, 10, 3)), np.ones((2, 12, 3)), [np.array([0, 1]), np.array([2, 3])])
    with pytest.raises(DataError, match="one index array per condition"):
        psth_r2(np.ones((4, 10, 3)), np.ones((2, 10, 3)), [np.array([0, 1])])
