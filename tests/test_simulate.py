"""Behaviour of the simulator and its oracle: calibration, ground truth, determinism, files."""

from __future__ import annotations

import numpy as np
import pytest

from mini_decoders.data.binning import bin_session, bin_trials
from mini_decoders.data.simulate import TrueRates, oracle_bits_per_spike, oracle_velocity_r2, simulate
from mini_decoders.errors import DataError
from mini_decoders.metrics import bits_per_spike as _bits_per_spike


@pytest.fixture(scope="module")
def small():
    """Two small sessions with different unit counts (fast)."""
    return simulate(n_sessions=2, n_trials=96, n_units=(40, 52), seed=3)


@pytest.fixture(scope="module")
def default_session():
    """Session 0 of the default configuration (identical to session 0 of simulate())."""
    return simulate(n_sessions=1)


# ------------------------------------------------------------------------------------ calibration
def test_default_calibration_matches_nlb_scale(default_session):
    session = default_session.sessions[0]
    mean_rate = session.mean_rates().mean()
    co_bps = oracle_bits_per_spike(default_session, session.id, split="test", heldout=True)
    velocity_r2 = oracle_velocity_r2(default_session, session.id)
    assert 12.0 <= mean_rate <= 20.0
    assert 0.30 <= co_bps <= 0.45
    assert 0.8 < velocity_r2 < 1.0
    assert 100 <= session.n_units <= 140 and len(session.trials) == 300


def test_oracle_beats_condition_average(default_session):
    # The truth has single-trial structure, so it must beat the best trial-averaged (PSTH) model.
    session = default_session.sessions[0]
    binned = bin_trials(session, split=("train", "test"))
    heldout = session.units.heldout_index
    test = binned.split == "test"
    train = binned.split == "train"
    psth = np.stack([binned.counts[train & (binned.condition == c)].mean(0) for c in binned.condition[test]])
    psth_bps = _bits_per_spike(psth[..., heldout].reshape(-1, len(heldout)),
                               binned.counts[test][..., heldout].reshape(-1, len(heldout)))
    assert oracle_bits_per_spike(default_session, session.id) > psth_bps + 0.03


def test_bits_per_spike_matches_nlb_tools():
    nlb_evaluation = pytest.importorskip("nlb_tools.evaluation")
    rng = np.random.default_rng(0)
    rates = rng.gamma(2.0, 0.3, size=(20, 30, 7))
    counts = rng.poisson(rates).astype(float)
    ours = _bits_per_spike(rates.reshape(-1, 7), counts.reshape(-1, 7))
    assert ours == pytest.approx(nlb_evaluation.bits_per_spike(rates, counts), rel=1e-9)


# ------------------------------------------------------------------------------------ ground truth
def test_expected_counts_is_the_exact_integral():
    rng = np.random.default_rng(1)
    truth = TrueRates("toy", rng.uniform(0, 50, size=(40, 3)).astype(np.float32), t0=0.3, dt=0.01,
                      unit_ids=np.array(["toy/0", "toy/1", "toy/2"]))
    starts = np.array([0.3, 0.3137, 0.5002])
    n_bins, bin_size = np.array([4, 3, 2]), 0.027
    fast = truth.expected_counts(starts, n_bins, bin_size)

    def slow_integral(a: float, b: float) -> np.ndarray:
        total = np.zeros(3)
        for k in range(len(truth.rates)):  # overlap of [a, b) with each fine bin
            left, right = truth.t0 + k * truth.dt, truth.t0 + (k + 1) * truth.dt
            total += max(0.0, min(b, right) - max(a, left)) * truth.rates[k].astype(np.float64)
        return total

    for n, start in enumerate(starts):
        for i in range(n_bins[n]):
            np.testing.assert_allclose(fast[n, i], slow_integral(start + i * bin_size, start + (i + 1) * bin_size),
                                       rtol=1e-9, atol=1e-9)
    assert np.isnan(fast[1, 3]).all() and np.isnan(fast[2, 2:]).all()  # padding past each interval
    with pytest.raises(DataError, match="cover"):
        truth.expected_counts(np.array([0.65]), 5, 0.02)  # the truth stops at 0.7 s


def test_spike_counts_are_poisson_around_expected_counts(small):
    for session in small.sessions:
        truth = small.truth[session.id]
        binned = bin_trials(session)
        expected = truth.expected_counts(binned.starts, binned.lengths, 0.02)
        observed_total = binned.counts.sum((0, 1))  # (U,)
        expected_total = expected.sum((0, 1))
        z = (observed_total - expected_total) / np.sqrt(expected_total)
        assert np.abs(z).max() < 5.0
        assert 0.4 < np.mean(z ** 2) < 2.0  # chi-square / U is ~1 when counts are Poisson(expected)
        # the time course too: trial-averaged counts per bin follow the trial-averaged truth
        per_bin_observed = binned.counts.sum((0, 2))
        per_bin_expected = expected.sum((0, 2))
        assert np.corrcoef(per_bin_observed, per_bin_expected)[0, 1] > 0.9


def test_spikes_continue_between_trials_and_hand_rests(small):
    session = small.sessions[0]
    trials = session.trials
    gap_starts, gap_stops = trials.stop[:-1], trials.start[1:]
    in_gap = (np.searchsorted(gap_starts, session.spike_times, side="right") - 1)
    in_gap = (in_gap >= 0) & (session.spike_times < gap_stops[np.clip(in_gap, 0, len(gap_stops) - 1)])
    assert in_gap.sum() > 0.1 * session.n_spikes  # spontaneous activity
    speed = np.linalg.norm(session.behavior["hand_vel"].values, axis=1)
    times = session.behavior["hand_vel"].timestamps
    assert session.behavior["hand_vel"].sampling_interval == pytest.approx(0.001)
    resting = np.zeros(len(times), dtype=bool)
    for a, b in zip(gap_starts + 0.1, gap_stops):  # loop over trials, not samples
        resting[np.searchsorted(times, a):np.searchsorted(times, b)] = True
    assert np.percentile(speed[resting], 95) < 0.25 * np.percentile(speed[~resting], 99)


# ------------------------------------------------------------------------------------ sessions, regions
def test_sessions_have_own_units_but_share_dynamics(small):
    first, second = small.sessions
    assert (first.n_units, second.n_units) == (40, 52)
    assert not set(first.units.ids) & set(second.units.ids)
    assert first.units.ids[0] == "sim_s0/0" and second.id == "sim_s1"
    assert first.subject != second.subject and first.task == second.task == "center_out"

    def condition_average_velocity(session):
        binned = bin_trials(session, align="move_onset_time", window=(0.25, 0.45), behavior=("hand_vel",))
        return np.stack([binned.behavior["hand_vel"][binned.condition == str(c)].mean(0) for c in range(8)])

    velocity_first, velocity_second = condition_average_velocity(first), condition_average_velocity(second)
    assert np.corrcoef(velocity_first.ravel(), velocity_second.ravel())[0, 1] > 0.95
    # ...while the neurons' condition tuning is unrelated across sessions (different loadings)
    mean_rate_first = small.truth[first.id].rates.mean(0)
    assert small.truth[second.id].rates.shape[1] == 52 and not np.allclose(mean_rate_first[:40],
                                                                          small.truth[second.id].rates.mean(0)[:40])


def test_heldout_units_and_splits(small):
    for session in small.sessions:
        units = session.units
        assert units.heldout.mean() == pytest.approx(0.25, abs=0.03)
        for region in ("M1", "PMd"):
            assert units.heldout[units.region == region].any() and (~units.heldout[units.region == region]).any()
        split, n = session.trials.split, len(session.trials)
        assert (split == "train").sum() == round(0.7 * n) and (split == "val").sum() == round(0.1 * n)
        assert (split == "test").sum() == n - round(0.7 * n) - round(0.1 * n)
        assert sorted(set(session.trials.condition)) == [str(c) for c in range(8)]
        onset = session.trials.extra["move_onset_time"]
        assert np.all((onset > session.trials.start) & (onset < session.trials.stop))


def test_regions_are_related_but_not_redundant(small):
    session = small.sessions[1]
    rates = small.truth[session.id].rates
    m1 = rates[:, session.units.region == "M1"].mean(1)
    pmd = rates[:, session.units.region == "PMd"].mean(1)
    assert session.units.regions == ["M1", "PMd"]
    assert 0.1 < np.corrcoef(m1, pmd)[0, 1] < 0.95
    # each region also carries a private latent that the other region does not read
    latents = small.truth[session.id].latents
    names = small.truth[session.id].latent_names
    assert "private_M1_re" in names and latents.shape[1] == len(names)


def test_unequal_trial_lengths():
    data = simulate(n_sessions=1, n_trials=40, n_units=20, trial_length=(0.8, 1.2))
    session, truth = data.sessions[0], data.truth["sim_s0"]
    duration = session.trials.duration
    assert len(np.unique(np.round(duration, 6))) > 3 and duration.min() >= 0.8 - 1e-9 and duration.max() <= 1.2 + 1e-9
    np.testing.assert_allclose(duration / 0.02, np.round(duration / 0.02), atol=1e-6)
    binned = bin_trials(session)
    expected = truth.expected_counts(binned.starts, binned.lengths, 0.02)
    np.testing.assert_array_equal(np.isnan(expected[..., 0]), ~binned.mask)
    assert np.isfinite(oracle_bits_per_spike(data, "sim_s0", split=None, heldout=None))


# ------------------------------------------------------------------------------------ determinism, files
def test_same_seed_same_data_and_sessions_independent_of_count(small):
    again = simulate(n_sessions=2, n_trials=96, n_units=(40, 52), seed=3)
    for a, b in zip(small.sessions, again.sessions):
        np.testing.assert_array_equal(a.spike_times, b.spike_times)
        np.testing.assert_array_equal(a.spike_units, b.spike_units)
        np.testing.assert_array_equal(a.behavior["hand_vel"].values, b.behavior["hand_vel"].values)
    only_second = simulate(n_sessions=3, n_trials=96, n_units=(40, 52, 30), seed=3)
    np.testing.assert_array_equal(only_second.sessions[1].spike_times, small.sessions[1].spike_times)
    np.testing.assert_array_equal(only_second.truth["sim_s1"].rates, small.truth["sim_s1"].rates)
    other_seed = simulate(n_sessions=1, n_trials=96, n_units=40, seed=4)
    assert other_seed.sessions[0].n_spikes != small.sessions[0].n_spikes


def _loadings(dataset, session_id):
    """(U, D) each unit's loading on the latents, read back from the truth: log rate = baseline + latents @ loading."""
    truth = dataset.truth[session_id]
    below_cap = (truth.rates < 0.999 * dataset.config.rate_cap).all(1)  # the cap breaks the log-linear law
    design = np.column_stack([np.ones(len(truth.latents)), truth.latents]).astype(np.float64)[below_cap]
    coef, *_ = np.linalg.lstsq(design, np.log(truth.rates[below_cap].astype(np.float64)), rcond=None)
    return coef[1:].T


def test_array_drift_keeps_a_subjects_units_and_drifts_their_tuning():
    def cosine(a, b):
        return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))

    drifted = simulate(n_sessions=3, n_trials=24, n_units=30, seed=5, array_drift=0.5)
    first, other_subject, first_again = drifted.sessions
    assert first.subject == first_again.subject != other_subject.subject
    np.testing.assert_array_equal(first.units.heldout, first_again.units.heldout)  # the same array, the same roles
    np.testing.assert_array_equal(first.units.region, first_again.units.region)
    assert not np.array_equal(first.units.heldout, other_subject.units.heldout)
    same_subject = cosine(_loadings(drifted, "sim_s0"), _loadings(drifted, "sim_s2"))
    assert same_subject == pytest.approx(1 - 0.5 ** 2, abs=0.08)  # two days, each drifted by d: 1 - d^2
    assert abs(cosine(_loadings(drifted, "sim_s0"), _loadings(drifted, "sim_s1"))) < 0.2  # another subject's array
    frozen = simulate(n_sessions=3, n_trials=24, n_units=30, seed=5, array_drift=0.0)
    np.testing.assert_allclose(_loadings(frozen, "sim_s0"), _loadings(frozen, "sim_s2"), atol=1e-3)
    assert first.n_spikes != first_again.n_spikes  # other days, other trials and spikes
    with pytest.raises(DataError, match="array_drift"):
        simulate(n_sessions=1, n_trials=16, array_drift=1.5)
    with pytest.raises(DataError, match="share one array"):
        simulate(n_sessions=2, n_trials=16, n_units=(10, 12), array_drift=0.2)


def test_truth_save_load_round_trip(small, tmp_path):
    truth = small.truth["sim_s0"]
    path = truth.save(tmp_path / "truth.h5")
    loaded = TrueRates.load(path)
    assert loaded.session_id == "sim_s0" and loaded.t0 == truth.t0 and loaded.dt == truth.dt
    np.testing.assert_array_equal(loaded.rates, truth.rates)
    np.testing.assert_array_equal(loaded.latents, truth.latents)
    np.testing.assert_array_equal(loaded.velocity, truth.velocity)
    np.testing.assert_array_equal(loaded.unit_ids, truth.unit_ids)
    assert loaded.latent_names == truth.latent_names
    starts = small.sessions[0].trials.start[:5]
    np.testing.assert_array_equal(loaded.expected_counts(starts, 50, 0.02), truth.expected_counts(starts, 50, 0.02))
    assert [p.name for p in small.save_truth(tmp_path / "all")] == ["sim_s0_truth.h5", "sim_s1_truth.h5"]
    assert not list(tmp_path.glob("*.tmp")) and not list((tmp_path / "all").glob("*.tmp"))


def test_truth_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        TrueRates.load(tmp_path / "missing.h5")
    broken = tmp_path / "broken.h5"
    broken.write_text("not hdf5")
    with pytest.raises(DataError, match="broken.h5"):
        TrueRates.load(broken)


def test_bad_parameters_raise_data_error():
    with pytest.raises(DataError, match="divide 20 ms"):
        simulate(n_sessions=1, n_trials=16, dt=0.015)
    with pytest.raises(DataError, match="unknown parameter"):
        simulate(n_sessions=1, n_trials=16, n_neurons=3)
    with pytest.raises(DataError, match="n_units has 1 counts"):
        simulate(n_sessions=2, n_trials=16, n_units=(10,))


def test_true_rates_match_spikes_on_whole_session(small):
    # the truth covers the whole session, not only the trials
    session = small.sessions[0]
    truth = small.truth[session.id]
    counts, edges = bin_session(session, 1.0, start=0.0, stop=truth.stop_time)
    expected = truth.expected_counts(np.array([0.0]), len(counts), 1.0)[0]
    assert counts.sum() == pytest.approx(expected.sum(), rel=0.01)
