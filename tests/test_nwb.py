"""NWB reading and writing: lossless round trips, NLB-tools compatibility, other writers' files, clear errors."""

import datetime
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile, ProcessingModule
from pynwb import TimeSeries as NWBTimeSeries
from pynwb.behavior import Position

from mini_decoders.data.nwb import describe_nwb, read_nwb, write_nwb
from mini_decoders.data.session import Session, TimeSeries, Trials
from mini_decoders.errors import DataError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
PYNAPPLE_FILE = REALDATA / "pynapple_nwb" / "A8604-211122.nwb"
START = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)


def handmade_session(n_units: int = 6, duration: float = 8.0, seed: int = 0) -> Session:
    """Two regions, some held-out units, trials with splits/conditions/extras, 1 kHz hand_vel with a NaN gap."""
    rng = np.random.default_rng(seed)
    spike_lists = [rng.uniform(0, duration, rng.poisson(20 * duration)) for _ in range(n_units)]
    starts = np.arange(0.25, duration - 1.0, 0.9)
    n_trials = len(starts)
    trials = Trials(starts, starts + 0.6, split=np.resize(["train", "train", "val", "test"], n_trials),
                    condition=np.resize(["left", "right", "up"], n_trials),
                    extra={"move_onset_time": starts + rng.uniform(0.1, 0.3, n_trials),
                           "success": np.arange(n_trials) % 3 != 0, "target_id": np.arange(n_trials) * 7,
                           "label": np.array([f"t{i}" for i in range(n_trials)])})
    t = np.arange(int(duration * 1000)) / 1000  # 1 kHz on whole milliseconds, as NLB files are
    velocity = np.stack([np.sin(2 * t), np.cos(3 * t)], axis=1) * 100
    velocity[1000:1010] = np.nan  # NLB behaviour has gaps: NaN must survive
    return Session.from_spike_lists(
        "sessA", spike_lists, unit_names=[f"elec{i}-{i % 2}" for i in range(n_units)],
        region=["M1"] * (n_units // 2) + ["PMd"] * (n_units - n_units // 2), heldout=np.arange(n_units) % 3 == 2,
        behavior={"hand_vel": TimeSeries(t, velocity, unit="mm/s")}, trials=trials, subject="monkey J", task="maze reach")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Session, Path]:
    session = handmade_session()
    path = write_nwb(session, tmp_path_factory.mktemp("nwb") / "sessA.nwb")
    return session, path


def write_other_nwb(path: Path, spike_lists, *, identifier="other", heldout=None, locations=None,
                    behavior_values=None, with_position=True, with_trials=True, with_units=True) -> Path:
    """An NLB-layout file written with pynwb directly, as other software (NLB's own converter) would."""
    nwbfile = NWBFile(session_description="other writer", identifier=identifier, session_start_time=START)
    if with_units:
        device = nwbfile.create_device(name="array")
        group = nwbfile.create_electrode_group(name="shank", description="d", location="", device=device)
        for location in locations or ["unknown" for _ in spike_lists]:
            nwbfile.add_electrode(group=group, location=location)
        nwbfile.add_unit_column(name="heldout", description="held out")
        for i, times in enumerate(spike_lists):
            nwbfile.add_unit(spike_times=times, obs_intervals=[[0.0, 5.0]], electrodes=[i],
                             heldout=bool(heldout[i]) if heldout is not None else False)
    if with_trials:
        nwbfile.add_trial_column(name="split", description="split")
        for k, split in enumerate(["train", "val", "test", "none"]):
            nwbfile.add_trial(start_time=k + 0.1, stop_time=k + 0.9, split=split)
    if behavior_values is not None:
        module = ProcessingModule(name="behavior", description="behaviour")
        t = np.arange(len(behavior_values)) / 1000
        module.add(NWBTimeSeries(name="hand_vel", data=behavior_values, timestamps=t, unit="mm/s"))
        if with_position:
            position = Position(name="Position")
            position.create_spatial_series(name="hand_pos", data=np.cumsum(behavior_values, 0), timestamps=t,
                                           reference_frame="screen centre", unit="mm")
            module.add(position)
        nwbfile.add_processing_module(module)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


# ------------------------------------------------------------------------------------ round trip
def test_round_trip_is_lossless(written):
    original, path = written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file must load without a "missing" warning
        loaded = read_nwb(path)
    assert loaded.id == original.id and loaded.subject == "monkey J" and loaded.task == "maze reach"
    assert loaded.spike_times.dtype == np.float64
    np.testing.assert_array_equal(loaded.spike_times, original.spike_times)
    np.testing.assert_array_equal(loaded.spike_units, original.spike_units)
    np.testing.assert_array_equal(loaded.units.ids, original.units.ids)
    np.testing.assert_array_equal(loaded.units.region, original.units.region)
    np.testing.assert_array_equal(loaded.units.heldout, original.units.heldout)
    # No obs_intervals given: one interval per unit covering the session on whole ms, end 1 ms past the last event.
    expected_interval = np.array([[0.0, (np.floor(original.stop_time * 1000) + 1) / 1000]])
    for intervals in loaded.units.obs_intervals:
        np.testing.assert_array_equal(intervals, expected_interval)
    a, b = original.trials, loaded.trials
    np.testing.assert_array_equal(b.start, a.start)
    np.testing.assert_array_equal(b.stop, a.stop)
    np.testing.assert_array_equal(b.split, a.split)
    np.testing.assert_array_equal(b.condition, a.condition)
    assert list(b.extra) == list(a.extra)
    for name in a.extra:
        np.testing.assert_array_equal(b.extra[name], a.extra[name])
        assert b.extra[name].dtype.kind == a.extra[name].dtype.kind, name
    assert list(loaded.behavior) == ["hand_vel"]
    ours, theirs = original.behavior["hand_vel"], loaded.behavior["hand_vel"]
    np.testing.assert_array_equal(theirs.timestamps, ours.timestamps)
    np.testing.assert_array_equal(theirs.values, ours.values)  # NaN == NaN for this comparison
    assert np.isnan(theirs.values[1000:1010]).all() and theirs.unit == "mm/s"
    assert loaded.source == str(path)


def test_round_trip_keeps_explicit_obs_intervals_and_ragged_columns(tmp_path):
    session = handmade_session(n_units=3, duration=4.0, seed=1)
    intervals = [np.array([[0.0, 2.0], [2.5, 4.0]]), np.array([[0.0, 4.0]]), np.array([[0.5, 3.5]])]
    # A unit's spikes lie in its observation intervals (reading refuses a file where they do not).
    observed = np.array([any(a <= t <= b for a, b in intervals[u])
                         for t, u in zip(session.spike_times, session.spike_units)])
    session.spike_times, session.spike_units = session.spike_times[observed], session.spike_units[observed]
    session.units.obs_intervals = intervals
    ragged = np.empty(len(session.trials), dtype=object)
    ragged[:] = [np.arange(i % 3, dtype=np.float64) for i in range(len(session.trials))]
    session.trials.extra["barrier_pos"] = ragged
    loaded = read_nwb(write_nwb(session, tmp_path / "x.nwb"))
    for got, want in zip(loaded.units.obs_intervals, session.units.obs_intervals):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(loaded.trials.extra["barrier_pos"], ragged):
        np.testing.assert_array_equal(got, want)


def test_round_trip_of_a_bare_session(tmp_path):
    """No trials, subject, task or unit labels: empty fields stay empty, and the reader says what is missing."""
    session = Session.from_spike_lists("bare", [np.array([0.1, 0.2]), np.array([0.15])],
                                       behavior={"lfp_power": TimeSeries(np.arange(5) / 1000, np.arange(5.0))})
    with pytest.warns(UserWarning, match="no trials table"):
        loaded = read_nwb(write_nwb(session, tmp_path / "bare.nwb"))
    assert (loaded.subject, loaded.task, loaded.behavior["lfp_power"].unit) == ("", "", "")
    np.testing.assert_array_equal(loaded.units.ids, ["bare/0", "bare/1"])
    np.testing.assert_array_equal(loaded.units.region, ["", ""])
    np.testing.assert_array_equal(loaded.behavior["lfp_power"].values, np.arange(5.0)[:, None])
    np.testing.assert_array_equal(loaded.spike_units, [0, 1, 0])


def test_write_is_atomic_and_overwrites(tmp_path):
    session = handmade_session(n_units=2, duration=3.0)
    target = tmp_path / "out.nwb"
    write_nwb(session, target)
    write_nwb(session.select_units(np.array([1])), target)  # replacing an existing file works
    assert read_nwb(target).n_units == 1
    session.trials.extra["split"] = session.trials.split  # clashes with a reserved column: fails before writing
    with pytest.raises(DataError, match="reserved"):
        write_nwb(session, tmp_path / "bad.nwb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nwb"]  # no temp or partial files left behind


def test_crash_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    import pynwb

    session = handmade_session(n_units=2, duration=3.0)
    target = write_nwb(session, tmp_path / "out.nwb")
    before = target.read_bytes()

    def crash(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_nwb(session.select_units(np.array([0])), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nwb"]


# ------------------------------------------------------------------------------------ nlb_tools
def test_nlb_tools_opens_our_file(written):
    from nlb_tools.nwb_interface import NWBDataset

    session, path = written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = NWBDataset(str(path))
    signals = set(dataset.data.columns.get_level_values(0))
    assert {"spikes", "heldout_spikes", "hand_vel"} <= signals
    counts = np.bincount(session.spike_units, minlength=session.n_units)
    heldin_counts = np.nansum(dataset.data["spikes"].to_numpy(np.float64), axis=0)
    heldout_counts = np.nansum(dataset.data["heldout_spikes"].to_numpy(np.float64), axis=0)
    np.testing.assert_array_equal(heldin_counts, counts[session.units.heldin_index])
    np.testing.assert_array_equal(heldout_counts, counts[session.units.heldout_index])
    np.testing.assert_array_equal(dataset.trial_info["split"].to_numpy().astype(str), session.trials.split)
    hand_vel = dataset.data["hand_vel"].to_numpy(np.float64)
    np.testing.assert_allclose(hand_vel[:len(session.behavior["hand_vel"].values)],
                               session.behavior["hand_vel"].values, equal_nan=True)


# ------------------------------------------------------------------------------------ other writers
def test_reads_nlb_layout_written_by_other_code(tmp_path):
    spike_lists = [np.array([0.1, 0.5, 2.0]), np.array([0.2, 0.3]), np.array([1.5, 4.0, 4.5, 4.9])]
    velocity = np.stack([np.linspace(0, 1, 5000), np.linspace(1, 0, 5000)], 1)
    path = write_other_nwb(tmp_path / "nlb.nwb", spike_lists, identifier="jenkins", heldout=[False, True, False],
                           locations=["M1", "PMd", "M1"], behavior_values=velocity)
    session = read_nwb(path)
    np.testing.assert_array_equal(session.units.ids, ["jenkins/0", "jenkins/1", "jenkins/2"])
    np.testing.assert_array_equal(session.units.region, ["M1", "PMd", "M1"])  # from the electrodes table
    np.testing.assert_array_equal(session.units.heldout, [False, True, False])
    np.testing.assert_array_equal(session.trials.split, ["train", "val", "test", "none"])
    all_spikes = np.concatenate(spike_lists)
    np.testing.assert_array_equal(session.spike_times, np.sort(all_spikes))
    for unit, times in enumerate(spike_lists):
        np.testing.assert_array_equal(session.spikes_of(unit), times)
    np.testing.assert_array_equal(session.behavior["hand_vel"].values, velocity)
    np.testing.assert_allclose(session.behavior["hand_pos"].values, np.cumsum(velocity, 0))  # inside Position
    np.testing.assert_array_equal(session.units.obs_intervals[1], [[0.0, 5.0]])


def test_pynapple_file_loads_with_warning():
    with pytest.warns(UserWarning, match="no trials") as record:
        session = read_nwb(PYNAPPLE_FILE)
    message = " ".join(str(w.message) for w in record)
    assert str(PYNAPPLE_FILE) in message and "no behaviour" in message
    assert session.n_units == 3 and session.id == "A8604-211122"
    np.testing.assert_array_equal(np.bincount(session.spike_units), [11020, 4690, 5644])
    assert np.all(np.diff(session.spike_times) >= 0)
    assert len(session.trials) == 0 and session.behavior == {}


# ------------------------------------------------------------------------------------ bad input
def test_missing_and_truncated_files(tmp_path, written):
    with pytest.raises(DataError, match="file not found") as error:
        read_nwb(tmp_path / "nope.nwb")
    assert "nope.nwb" in str(error.value)
    truncated = tmp_path / "truncated.nwb"
    truncated.write_bytes(written[1].read_bytes()[:1000])
    for reader in (read_nwb, describe_nwb):
        with pytest.raises(DataError, match="not a readable NWB/HDF5 file") as error:
            reader(truncated)
        assert "truncated.nwb" in str(error.value) and "truncated" in str(error.value).split("truncated.nwb")[1]


def test_file_without_units_is_an_error(tmp_path):
    path = write_other_nwb(tmp_path / "empty.nwb", [], with_units=False)
    with pytest.raises(DataError, match="no units table") as error:
        read_nwb(path)
    assert "empty.nwb" in str(error.value)


@pytest.mark.parametrize("spike_lists, problem", [
    ([np.array([0.1, 0.2]), np.array([-0.5, 0.3])], "negative spike time"),
    ([np.array([0.1, 0.2]), np.array([0.3, 0.9, 0.4])], "unsorted spike_times"),
])
def test_bad_spike_times_name_file_unit_and_problem(tmp_path, spike_lists, problem):
    path = write_other_nwb(tmp_path / "bad_spikes.nwb", spike_lists)
    with pytest.raises(DataError, match=problem) as error:
        read_nwb(path)
    assert "bad_spikes.nwb" in str(error.value) and "unit '1'" in str(error.value)


def test_inf_in_behaviour_is_an_error_but_nan_is_not(tmp_path):
    velocity = np.zeros((100, 2))
    velocity[5, 0] = np.nan
    assert np.isnan(read_nwb(write_other_nwb(tmp_path / "nan.nwb", [np.array([0.1])],
                                              behavior_values=velocity)).behavior["hand_vel"].values[5, 0])
    velocity[7, 1] = np.inf
    path = write_other_nwb(tmp_path / "inf.nwb", [np.array([0.1])], behavior_values=velocity, with_position=False)
    with pytest.raises(DataError, match="inf") as error:
        read_nwb(path)
    assert "inf.nwb" in str(error.value) and "hand_vel" in str(error.value)


# ------------------------------------------------------------------------------------ describe
def test_describe_our_file(written):
    session, path = written
    text = describe_nwb(path)
    n_heldout = int(session.units.heldout.sum())
    assert "identifier: sessA" in text and "monkey J" in text and "maze reach" in text
    assert f"units:      {session.n_units} ({session.n_units - n_heldout} held-in, {n_heldout} heldout)" in text
    assert "M1 3" in text and "PMd 3" in text
    assert f"spikes:     {session.n_spikes}" in text
    n_train = int((session.trials.split == "train").sum())
    assert f"trials:     {len(session.trials)} (train {n_train}" in text
    assert "hand_vel (8000, 2) at 1000 Hz" in text and "missing:    nothing" in text


def test_describe_pynapple_file_says_what_is_missing(tmp_path):
    copy = shutil.copy(PYNAPPLE_FILE, tmp_path / "pynapple.nwb")  # describing must not write into the read-only folder
    text = describe_nwb(copy)
    assert "no trials" in text and "no behaviour" in text and "units:      3" in text
    assert "spikes:     21354" in text and "epochs" in text


def test_file_with_spikes_or_trials_outside_the_observation_intervals_is_refused(written, tmp_path):
    import h5py

    _, path = written
    for dataset, message in (("units/obs_intervals", r"unit 'sessA/elec\d-\d' has a spike at .* outside its "
                                                      r"observation intervals \(0-2 s\)"),):
        broken = tmp_path / "shrunk.nwb"
        shutil.copy(path, broken)
        with h5py.File(broken, "r+") as file:
            file[dataset][:, 1] = 2.0  # every unit now "observed" only until 2 s
        with pytest.raises(DataError, match=f"shrunk.nwb.*{message}"):
            read_nwb(broken)


def test_read_nwb_of_nothing_is_a_data_error():
    with pytest.raises(DataError, match="read_nwb: expected the path of an .nwb file, got None"):
        read_nwb(None)
