"""The Session record and its binned view: values against slow loop references, and clear errors."""

import numpy as np
import pytest

from mini_decoders.data.binning import bin_intervals, bin_session, bin_trials
from mini_decoders.data.session import Session, TimeSeries, Trials, Units
from mini_decoders.errors import DataError


def random_session(seed=0, n_units=7, duration=20.0, rate=15.0):
    rng = np.random.default_rng(seed)
    lists = [np.sort(rng.uniform(0, duration, rng.poisson(rate * duration))) for _ in range(n_units)]
    starts = np.arange(0.5, duration - 1.5, 1.3)
    trials = Trials(starts, starts + rng.uniform(0.5, 1.2, len(starts)).round(3),
                    split=rng.choice(["train", "val", "test"], len(starts)),
                    extra={"move_onset_time": starts + 0.3})
    t = np.arange(0, duration, 0.001)
    vel = TimeSeries(t, np.stack([np.sin(t), np.cos(t)], 1))
    return Session.from_spike_lists("s", lists, trials=trials, behavior={"hand_vel": vel},
                                    heldout=np.arange(n_units) % 3 == 0, region=["M1"] * 4 + ["PMd"] * 3)


def slow_counts(session, start, n_bins, bin_size):
    """Reference: one histogram per unit, edges computed one by one."""
    out = np.zeros((n_bins, session.n_units), dtype=np.int64)
    for u in range(session.n_units):
        spikes = session.spikes_of(u)
        for b in range(n_bins):
            lo, hi = start + b * bin_size, start + (b + 1) * bin_size
            out[b, u] = np.sum((spikes >= lo - 1e-9) & (spikes < hi - 1e-9))
    return out


def test_bin_trials_matches_slow_loop():
    s = random_session()
    binned = bin_trials(s, 0.02)
    assert len(binned.trial_index) == len(s.trials)
    for i, row in enumerate(binned.trial_index):
        n = int(binned.mask[i].sum())
        assert n == int(np.floor((s.trials.stop[row] - s.trials.start[row]) / 0.02 + 1e-6))
        ref = slow_counts(s, s.trials.start[row], n, 0.02)
        np.testing.assert_array_equal(binned.counts[i, :n], ref)
        assert binned.counts[i, n:].sum() == 0  # padding holds no spikes


def test_spikes_on_edges_go_to_later_bin():
    # spikes at exact multiples of 20 ms, as in 1 ms-resolution data
    s = Session.from_spike_lists("e", [np.array([0.0, 0.02, 0.04, 0.06, 0.1])])
    counts = bin_intervals(s.spike_times, s.spike_units, 1, np.array([0.0]), 5, 0.02)[0, :, 0]
    np.testing.assert_array_equal(counts, [1, 1, 1, 1, 0])


def test_bin_session_conserves_spikes_and_overlapping_intervals():
    s = random_session(1)
    counts, edges = bin_session(s, 0.05, 0.0, 20.0)
    assert counts.sum() == np.sum(s.spike_times < 20.0) and len(edges) == counts.shape[0] + 1
    both = bin_intervals(s.spike_times, s.spike_units, s.n_units, np.array([1.0, 1.5]), 20, 0.05)
    np.testing.assert_array_equal(both[0, 10:], both[1, :10])  # overlap counted in both


def test_behaviour_lag_and_alignment():
    s = random_session(2)
    b = bin_trials(s, 0.02, split="train", align="move_onset_time", window=(0.1, 0.3), lag=0.1)
    assert set(b.split) == {"train"} and b.counts.shape[1] == 20
    centres = s.trials.extra["move_onset_time"][b.trial_index][:, None] - 0.1 + (np.arange(20) + 0.5) * 0.02
    np.testing.assert_allclose(b.behavior["hand_vel"][..., 0], np.sin(centres + 0.1), atol=1e-5)


def test_from_binned_round_trip():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.8, (300, 12))
    s = Session.from_binned(counts, 0.045, id="b", behavior={"cursor_vel": rng.normal(size=(300, 2))})
    back, _ = bin_session(s, 0.045, 0.0, 300 * 0.045)
    np.testing.assert_array_equal(back, counts)
    assert s.units.ids[3] == "b/3"
    np.testing.assert_allclose(s.behavior["cursor_vel"].timestamps[:2], [0.0225, 0.0675])


def test_select_units_and_trials():
    s = random_session(3)
    sub = s.select_units(np.array([4, 1]))
    assert list(sub.units.ids) == [s.units.ids[4], s.units.ids[1]]
    np.testing.assert_array_equal(sub.spikes_of(0), s.spikes_of(4))
    assert len(s.select_trials(np.array([0, 2])).trials) == 2


@pytest.mark.parametrize("times,units,message", [
    ([0.2, 0.1], [0, 0], "sorted"),
    ([-0.1, 0.1], [0, 0], ">= 0"),
    ([0.1, 0.2], [0, 5], "index 5"),
    ([0.1, np.nan], [0, 0], "NaN"),
])
def test_bad_spikes_are_named(times, units, message):
    with pytest.raises(DataError, match=message):
        Session("bad", np.array(times), np.array(units), Units(["bad/0", "bad/1"]))


def test_bad_tables_are_named():
    with pytest.raises(DataError, match="stop_time"):
        Session("t", np.zeros(0), np.zeros(0), Units([]), trials=Trials([1.0], [0.5]))
    with pytest.raises(DataError, match="split"):
        Session("t", np.zeros(0), np.zeros(0), Units([]), trials=Trials([0.0], [1.0], split=["training"]))
    with pytest.raises(DataError, match="inf"):
        Session("t", np.zeros(0), np.zeros(0), Units([]),
                behavior={"hand_vel": TimeSeries([0.0, 1.0], [[0.0, np.inf], [0, 0]])})


def test_bins_and_windows_that_do_not_fit():
    s = random_session(4)
    with pytest.raises(DataError, match="bin_size"):
        bin_trials(s, 0.0)
    with pytest.raises(DataError, match="less than one bin"):
        bin_trials(s, 5.0)
    with pytest.raises(DataError, match="no column"):
        bin_trials(s, align="go_cue", window=(0.1, 0.1))
    with pytest.raises(DataError, match="no trials"):
        bin_trials(Session("n", np.zeros(0), np.zeros(0), Units([])))


# --------------------------------------------------------------------------- from_binned: refused, named

@pytest.mark.parametrize("kwargs, message", [
    (dict(heldout=[True, False]),
     r"from_binned: heldout has 2 entries, expected one per unit \(counts has 6 columns\)"),
    (dict(region=["M1"] * 5), r"from_binned: region has 5 entries, expected one per unit \(counts has 6 columns\)"),
    (dict(unit_names=["a", "b"]), r"from_binned: unit_names has 2 entries, expected one per unit"),
    (dict(trials=Trials([0.0, 10.0], [5.0, 500.0])),
     r"from_binned: trial 1 \(10-500 s\) ends after the binned data \(0-60 s: 3000 bins of 0.02 s\)"),
    (dict(trials=Trials([-1.0], [2.0])), r"from_binned: trial 0 \(-1-2 s\) starts before the binned data"),
    (dict(behavior={"hand_vel": TimeSeries([100.0, 101.0], [[0.0], [1.0]])}),
     r"from_binned: behavior 'hand_vel' \(100-101 s\) lies outside the binned data \(0-60 s"),
])
def test_from_binned_refuses_what_does_not_fit_the_counts(kwargs, message):
    with pytest.raises(DataError, match=message):
        Session.from_binned(np.ones((3000, 6)), 0.02, **kwargs)


@pytest.mark.parametrize("counts, message", [
    (np.array([["1", "2"]]), r"from_binned: counts must be numbers, got dtype <U1"),
    (np.array([[1.0, -1.0]]), r"from_binned: counts must be finite non-negative integers; counts\[0, 1\] is -1"),
    (np.array([[0.5, 1.0]]), r"counts\[0, 0\] is 0.5"),
    (np.array([[1, 10**9]]), r"from_binned: counts\[0, 1\] is 1000000000 spikes in one 0.02 s bin \(5e\+10 Hz\)"),
])
def test_from_binned_refuses_counts_that_are_not_spike_counts(counts, message):
    with pytest.raises(DataError, match=message):
        Session.from_binned(counts, 0.02)


def test_unit_table_columns_must_match_the_units():
    with pytest.raises(DataError, match=r"units.heldout has 2 entries but there are 3 unit ids"):
        Units(["a", "b", "c"], heldout=[True, False])
    with pytest.raises(DataError, match=r"units.obs_intervals has 1 entries but there are 3 unit ids"):
        Units(["a", "b", "c"], obs_intervals=[np.array([[0.0, 1.0]])])


def test_spikes_and_trials_outside_the_recorded_intervals_are_refused():
    intervals = [np.array([[0.0, 10.0]]), np.array([[0.0, 4.0], [6.0, 10.0]])]
    units = Units(["s/a", "s/b"], obs_intervals=intervals)
    Session("s", np.array([1.0, 3.0, 7.0, 10.0005]), np.array([0, 1, 1, 0]), units)  # within 1 ms of the end
    with pytest.raises(DataError, match=r"session 's': unit 's/b' has a spike at 5 s, outside its observation "
                                        r"intervals \(0-4 s, 6-10 s\)"):
        Session("s", np.array([1.0, 5.0]), np.array([0, 1]), units)
    with pytest.raises(DataError, match=r"session 's': trial 1 \(9-12 s\) ends after the recorded intervals "
                                        r"\(units observed 0-10 s\)"):
        Session("s", np.array([1.0]), np.array([0]), units, trials=Trials([1.0, 9.0], [2.0, 12.0]))
    with pytest.raises(DataError, match=r"behavior 'hand_vel' \(20-21 s\) lies outside the recorded intervals"):
        Session("s", np.array([1.0]), np.array([0]), units,
                behavior={"hand_vel": TimeSeries([20.0, 21.0], [[0.0], [1.0]])})
