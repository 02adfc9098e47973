"""Loaders of the small real recordings, checked against the MAT/NWB files they read.

The cache is pointed at ``shared/realdata`` (pre-filled, read-only in CI); nothing is downloaded.
"""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from mini_decoders.data.binning import bin_intervals, bin_session
from mini_decoders.data.realdata import (GOLUB_BIN_S, load, load_golub2018, load_pynapple, load_yu2009,
                                         load_zhang_desimone, stratified_splits)
from mini_decoders.errors import DataError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"{REALDATA} not present")


def _mat(relative: str) -> dict:
    return scipy.io.loadmat(REALDATA / relative, squeeze_me=True, struct_as_record=False)


def _counts_per_trial(session) -> np.ndarray:
    """(N, U) spikes of each unit inside each trial's [start, stop)."""
    trial = np.searchsorted(session.trials.start, session.spike_times, side="right") - 1
    inside = (trial >= 0) & (session.spike_times < session.trials.stop[np.clip(trial, 0, None)])
    flat = trial[inside] * session.n_units + session.spike_units[inside]
    return np.bincount(flat, minlength=len(session.trials) * session.n_units).reshape(len(session.trials), -1)


@pytest.fixture(scope="module")
def yu_ex1():
    return load_yu2009("ex1", REALDATA)


@pytest.fixture(scope="module")
def zhang():
    return load_zhang_desimone(REALDATA)


# ----------------------------------------------------------------------------- Yu et al. 2009
def test_yu_ex1_shape_and_conditions(yu_ex1):
    assert yu_ex1.n_units == 61 and len(yu_ex1.trials) == 210
    assert collections.Counter(yu_ex1.trials.condition.tolist()) == {f"reach{k}": 30 for k in range(1, 8)}
    assert np.array_equal(yu_ex1.trials.extra["reach_target"],
                          [int(c.removeprefix("reach")) for c in yu_ex1.trials.condition])
    assert yu_ex1.units.ids[0] == "yu2009_ex1/0" and set(yu_ex1.units.region) == {"PMd"}
    assert yu_ex1.behavior == {} and yu_ex1.task == "center_out_delay"
    assert np.allclose(yu_ex1.trials.duration, 0.4)
    assert np.all(yu_ex1.trials.start[1:] - yu_ex1.trials.stop[:-1] > 0.05)  # trials separated by a gap


def test_yu_ex1_rebinned_at_1ms_equals_mat_rasters(yu_ex1):
    rasters = np.stack([trial.data for trial in _mat("datahigh_yu2009_pmd/ex1_spikecounts.mat")["D"]])  # (N, U, T)
    counts = bin_intervals(yu_ex1.spike_times, yu_ex1.spike_units, yu_ex1.n_units, yu_ex1.trials.start, 400, 0.001)
    assert np.array_equal(counts, rasters.transpose(0, 2, 1))


def test_yu_ex2_counts_per_trial_equal_mat_sums():
    session = load_yu2009("ex2", REALDATA)
    trials = _mat("datahigh_yu2009_pmd/ex2_rawspiketrains.mat")["D"]
    assert len(session.trials) == 112 and session.n_units == 61
    assert collections.Counter(session.trials.condition.tolist()) == {"reach1": 56, "reach2": 56}
    assert np.allclose(session.trials.duration, [t.data.shape[1] / 1000 for t in trials])
    assert np.array_equal(_counts_per_trial(session), np.stack([t.data.sum(1) for t in trials]))


def test_yu_splits_are_stratified_and_seeded(yu_ex1):
    table = collections.Counter(zip(yu_ex1.trials.condition.tolist(), yu_ex1.trials.split.tolist()))
    for k in range(1, 8):
        assert (table[(f"reach{k}", "train")], table[(f"reach{k}", "val")], table[(f"reach{k}", "test")]) == (21, 3, 6)
    again = load_yu2009("ex1", REALDATA)
    assert np.array_equal(again.trials.split, yu_ex1.trials.split)
    assert not np.array_equal(load_yu2009("ex1", REALDATA, seed=1).trials.split, yu_ex1.trials.split)


def test_yu_rejects_unknown_file():
    with pytest.raises(DataError, match="'ex1' or 'ex2'.*'ex3'"):
        load_yu2009("ex3", REALDATA)


def test_stratified_splits_proportions():
    condition = np.repeat(["a", "b", "c"], [10, 20, 40])
    split = stratified_splits(condition, seed=3)
    for label, n in (("a", 10), ("b", 20), ("c", 40)):
        members = split[condition == label]
        assert [(members == s).sum() for s in ("train", "val", "test")] == [round(0.7 * n), round(0.1 * n),
                                                                            n - round(0.7 * n) - round(0.1 * n)]


# ----------------------------------------------------------------------------- Golub et al. 2018
@pytest.mark.parametrize("period", ["beforeLearning", "afterLearning"])
def test_golub_rebinned_at_45ms_equals_mat_counts(period):
    session = load_golub2018(REALDATA, period)
    clouds = _mat("golub2018_bci/exampleData.mat")[period].clouds
    expected = np.concatenate(list(clouds.spikes), axis=1).T  # (552, 86)
    assert session.n_units == 86 and expected.shape == (552, 86)
    counts, edges = bin_session(session, GOLUB_BIN_S, start=0.0, stop=len(expected) * GOLUB_BIN_S)
    assert np.array_equal(counts, expected)
    velocity = np.concatenate(list(clouds.vraw_intuitive), axis=1).T
    assert np.allclose(session.behavior["cursor_vel"].at((edges[:-1] + edges[1:]) / 2), velocity)
    assert session.trials.condition.tolist() == [str(a) for a in clouds.angles]
    assert np.allclose(session.trials.duration, 69 * GOLUB_BIN_S)


def test_golub_rejects_unknown_period():
    with pytest.raises(DataError, match="beforeLearning.*'during'"):
        load_golub2018(REALDATA, "during")


# ----------------------------------------------------------------------------- Zhang, Desimone et al. 2011
def test_zhang_desimone_sessions_and_units(zhang):
    assert len(zhang) == 21 and sum(s.n_units for s in zhang) == 132
    assert [s.id for s in zhang] == [f"zhang_desimone_{n}" for n in range(1001, 1022)]
    assert len({uid for s in zhang for uid in s.units.ids}) == 132
    assert sorted({len(s.trials) for s in zhang}) == [419, 420]
    assert set(zhang[0].trials.condition) == {"car", "couch", "face", "flower", "guitar", "hand", "kiwi"}
    trials = zhang[0].trials
    assert np.allclose(trials.extra["stimulus_onset_time"] - trials.start, 0.5)
    assert np.allclose(trials.duration, 1.0)


def test_zhang_desimone_rasters_round_trip(zhang):
    session = zhang[0]  # 1001: units 01A..04A
    assert [uid.split("/")[1] for uid in session.units.ids] == ["01A", "02A", "03A", "04A"]
    counts = bin_intervals(session.spike_times, session.spike_units, session.n_units, session.trials.start,
                           1000, 0.001)  # (N, T, U)
    for k, name in enumerate(["01A", "02A", "03A", "04A"]):
        content = _mat(f"zhang_desimone_it/bp1001spk_{name}_raster_data.mat")
        assert np.array_equal(counts[:, :, k], content["raster_data"])
        assert np.array_equal(session.trials.condition, content["raster_labels"].stimulus_ID)
        assert np.array_equal(session.trials.extra["stimulus_position"], content["raster_labels"].stimulus_position)


def test_zhang_desimone_spike_totals(zhang):
    by_session = {s.id: s for s in zhang}
    for path in sorted((REALDATA / "zhang_desimone_it").glob("*.mat"))[::11]:  # a spread of 12 unit files
        content = _mat(f"zhang_desimone_it/{path.name}")
        session = by_session[f"zhang_desimone_{content['raster_site_info'].session_ID}"]
        unit = list(session.units.ids).index(f"{session.id}/{path.name[10:13]}")
        assert np.array_equal(_counts_per_trial(session)[:, unit], content["raster_data"].sum(1))


# ----------------------------------------------------------------------------- NWB and dispatch
def _nwb_reader_available() -> bool:
    try:
        from mini_decoders.data.nwb import read_nwb  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _nwb_reader_available(), reason="nwb reader not available")
def test_pynapple_nwb_loads_with_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = load_pynapple(REALDATA)
    assert session.n_units == 3
    assert np.bincount(session.spike_units).tolist() == [11020, 4690, 5644]
    assert len(session.trials) == 0 and session.behavior == {}
    assert any("trials" in str(w.message) for w in caught)


def test_load_dispatches_by_name():
    sessions = load("yu2009_pmd", REALDATA)
    assert [s.id for s in sessions] == ["yu2009_ex1", "yu2009_ex2"]
    assert [s.id for s in load("golub2018_bci", REALDATA)] == ["golub2018_beforeLearning", "golub2018_afterLearning"]
    with pytest.raises(DataError, match="unknown dataset 'mc_nope'"):
        load("mc_nope", REALDATA)


def test_load_dandi_set_not_downloaded_says_how(tmp_path):
    with pytest.raises(DataError, match=r"no NWB files.*`mini-decoders data fetch mc_maze_small`.*DANDI:000140/"):
        load("mc_maze_small", tmp_path)
