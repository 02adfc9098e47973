"""Baselines: closed forms against sklearn, scores against independent reference pipelines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import PoissonRegressor, Ridge, RidgeCV
from sklearn.metrics import r2_score as sklearn_r2

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import DataError
from mini_decoders.metrics import bits_per_spike, r2_score, smooth_spikes
from mini_decoders.models.baselines import (GRUDecoder, RidgeDecoder, SmoothingModel, causal_history,
                                            fit_poisson_glm, ridge_path)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def dataset():
    return simulate(n_sessions=2, n_trials=120, n_units=60, seed=3)


def independent_history(counts: np.ndarray, history_bins: int) -> np.ndarray:
    """The 160 ms causal design built a second, naive way: shifted copies, lag-major columns."""
    n_trials, n_bins, n_units = counts.shape
    columns = []
    for lag in range(history_bins):
        shifted = np.zeros_like(counts)
        shifted[:, lag:] = counts[:, :n_bins - lag]
        columns.append(shifted)
    return np.concatenate(columns, axis=-1)  # (N, T, H*U)


# ------------------------------------------------------------------ ridge

def test_causal_history_holds_past_counts_and_zeros_before_the_trial():
    counts = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    features = causal_history(counts, 3)  # (2, 5, 9), feature u*3 + k = count of u at t-k
    assert features.shape == (2, 5, 9)
    for unit in range(3):
        for lag in range(3):
            column = features[:, :, unit * 3 + lag]
            np.testing.assert_array_equal(column[:, lag:], counts[:, :5 - lag, unit])
            np.testing.assert_array_equal(column[:, :lag], 0.0)


def test_ridge_path_equals_sklearn_ridge_coefficients():
    rng = np.random.default_rng(0)
    features = rng.poisson(2.0, size=(300, 12)).astype(float)
    targets = features @ rng.normal(size=(12, 2)) + rng.normal(size=(300, 2)) + 5.0
    for (weights, intercept), alpha in zip(ridge_path(features, targets, [0.1, 10.0, 1000.0]), [0.1, 10.0, 1000.0]):
        reference = Ridge(alpha=alpha).fit(features, targets)
        np.testing.assert_allclose(weights, reference.coef_.T, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-8, atol=1e-10)


def test_ridge_test_r2_within_5_percent_of_independent_wiener_filter(dataset):
    session = dataset.sessions[0]
    model = RidgeDecoder.build([session], RidgeDecoder.CONFIGS["quick"])
    model.fit([session], model.config, progress=False)
    binned = bin_trials(session, 0.02, behavior=("hand_vel",))
    velocity = binned.behavior["hand_vel"]
    test = binned.split == "test"
    ours = r2_score(model.predict_trials(session, binned.subset(np.flatnonzero(test)))["hand_vel"], velocity[test])

    # Reference: naive design, sklearn RidgeCV (its own alpha choice, by leave-one-out) on train+val.
    design = independent_history(binned.counts.astype(float), 8)
    rows = binned.mask & np.isfinite(velocity).all(-1)
    fit = np.isin(binned.split, ["train", "val"])[:, None] & rows
    reference = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(design[fit], velocity[fit])
    scored = test[:, None] & rows
    reference_r2 = sklearn_r2(velocity[scored], reference.predict(design[scored]))
    assert reference_r2 > 0.2, "the simulated velocity should be decodable at all"
    assert abs(ours - reference_r2) <= 0.05 * abs(reference_r2), (ours, reference_r2)


def test_ridge_prediction_is_causal(dataset):
    session = dataset.sessions[0]
    model = RidgeDecoder.build([session], RidgeDecoder.CONFIGS["tiny"])
    model.fit([session], model.config, progress=False)
    binned = bin_trials(session, 0.02, split="test", behavior=())
    before = model.predict_trials(session, binned)["hand_vel"]
    binned.counts[:, 20:] = np.random.default_rng(0).poisson(3.0, size=binned.counts[:, 20:].shape)
    after = model.predict_trials(session, binned)["hand_vel"]
    np.testing.assert_array_equal(after[:, :20], before[:, :20])  # the past does not see the future
    assert not np.allclose(after[:, 20:], before[:, 20:])


def test_ridge_refuses_sessions_without_hand_velocity(dataset):
    session = dataset.sessions[0]
    bare = type(session)(session.id, session.spike_times, session.spike_units, session.units, {}, session.trials)
    with pytest.raises(DataError, match="hand_vel"):
        RidgeDecoder.build([bare], RidgeDecoder.CONFIGS["tiny"])


# ------------------------------------------------------------------ smoothing + Poisson GLM

def test_poisson_glm_matches_sklearn_poisson_regressor():
    rng = np.random.default_rng(1)
    features = rng.gamma(2.0, 0.3, size=(800, 6))
    true_weights = rng.normal(scale=0.5, size=(6, 3))
    targets = rng.poisson(np.exp(features @ true_weights - 1.0)).astype(float)
    weights, intercept = fit_poisson_glm(features, targets, alpha=0.01)
    for k in range(3):  # a loop per neuron is fine in the reference
        reference = PoissonRegressor(alpha=0.01, max_iter=5000, tol=1e-12).fit(features, targets[:, k])
        np.testing.assert_allclose(weights[:, k], reference.coef_, atol=1e-4)
        np.testing.assert_allclose(intercept[k], reference.intercept_, atol=1e-4)


def test_poisson_glm_prior_is_the_centre_of_the_penalty():
    """With a prior w0 the fit minimises mean(exp(eta) - y eta) + alpha/2 ||w - w0||^2: checked against a
    general-purpose optimiser, and a strong penalty lands on w0 itself, not on zero."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(2)
    features = rng.gamma(2.0, 0.3, size=(600, 5))
    targets = rng.poisson(np.exp(features @ rng.normal(scale=0.5, size=(5, 2)) - 1.0)).astype(float)
    prior = rng.normal(scale=0.4, size=(5, 2))
    weights, intercept = fit_poisson_glm(features, targets, alpha=0.05, prior=prior)
    for k in range(2):
        def objective(theta, k=k):
            eta = features @ theta[:-1] + theta[-1]
            return np.mean(np.exp(eta) - targets[:, k] * eta) + 0.025 * np.sum((theta[:-1] - prior[:, k]) ** 2)
        reference = minimize(objective, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(weights[:, k], reference[:-1], atol=1e-4)
        np.testing.assert_allclose(intercept[k], reference[-1], atol=1e-4)
    strong, _ = fit_poisson_glm(features, targets, alpha=1e4, prior=prior)
    np.testing.assert_allclose(strong, prior, atol=1e-3)
    plain, _ = fit_poisson_glm(features, targets, alpha=0.05)
    assert np.abs(weights - plain).max() > 1e-3  # the centre matters


def test_smoothing_co_bps_within_5_percent_of_sklearn_reference(dataset):
    config = dict(SmoothingModel.CONFIGS["tiny"])
    model = SmoothingModel.build(dataset.sessions, config)
    history = model.fit(dataset.sessions, config, progress=False)
    for session, record in zip(dataset.sessions, history["records"]):
        heldin, heldout = session.units.heldin_index, session.units.heldout_index
        binned = bin_trials(session, 0.02, behavior=())
        counts = np.where(binned.mask[:, :, None], binned.counts, np.nan)
        test = np.flatnonzero(binned.split == "test")
        ours = bits_per_spike(model.predict_trials(session, binned.subset(test))["rates_heldout"],
                              counts[test][..., heldout])

        # Reference: the same smoothed inputs, one sklearn PoissonRegressor per held-out neuron,
        # with the kernel and penalty the model chose, fitted on train + val bins.
        smoothed = smooth_spikes(counts[..., heldin], 0.02, record["kern_sd"])
        fit = np.isin(binned.split, ["train", "val"])[:, None] & binned.mask
        rates = np.stack([PoissonRegressor(alpha=record["alpha"], max_iter=1000)
                          .fit(smoothed[fit], binned.counts[..., unit][fit]).predict(np.nan_to_num(smoothed[test]).reshape(-1, len(heldin)))
                          for unit in heldout], axis=-1).reshape(len(test), -1, len(heldout))
        reference = bits_per_spike(rates, counts[test][..., heldout])
        assert reference > 0
        assert ours > 0
        assert abs(ours - reference) <= 0.05 * reference, (ours, reference)


def test_smoothing_needs_held_out_units(dataset):
    session = dataset.sessions[0]
    session = type(session)(session.id, session.spike_times, session.spike_units,
                            type(session.units)(session.units.ids, session.units.region, None), session.behavior,
                            session.trials)
    with pytest.raises(DataError, match="held-out"):
        SmoothingModel.build([session], SmoothingModel.CONFIGS["tiny"])


# ------------------------------------------------------------------ GRU

def test_gru_loss_goes_down_and_beats_predicting_the_mean(dataset, tmp_path):
    config = dict(GRUDecoder.CONFIGS["tiny"], max_steps=80, device="cpu", val_every=40)
    torch.manual_seed(0)
    model = GRUDecoder.build(dataset.sessions, config)
    history = model.fit(dataset.sessions, config, out_dir=tmp_path, progress=False)
    losses = [record["loss"] for record in history["records"] if "loss" in record]
    assert losses[-1] < 0.7 * losses[0]
    assert (tmp_path / "checkpoint.pt").is_file()
    model.eval()
    for session in dataset.sessions:
        binned = bin_trials(session, 0.02, split="test", behavior=("hand_vel",))
        # Predicting the (train) mean scores R² <= ~0 on test trials; a decoder must do better.
        assert r2_score(model.predict_trials(session, binned)["hand_vel"], binned.behavior["hand_vel"]) > 0.2


def test_gru_prediction_is_causal(dataset):
    session = dataset.sessions[0]
    model = GRUDecoder.build([session], dict(GRUDecoder.CONFIGS["tiny"], device="cpu")).eval()
    binned = bin_trials(session, 0.02, split="test", behavior=())
    before = model.predict_trials(session, binned)["hand_vel"]
    binned.counts[:, 25:] += 3
    after = model.predict_trials(session, binned)["hand_vel"]
    np.testing.assert_allclose(after[:, :25], before[:, :25], atol=1e-6)
    assert not np.allclose(after[:, 25:], before[:, 25:])
