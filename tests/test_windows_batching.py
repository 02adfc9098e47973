"""Windows, splits, spike-token batches and binned batches (mini_decoders.data.windows / batching)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mini_decoders.data.batching import (BinnedTrialDataset, SpikeWindowDataset, SpikeWindows, bucket_batches,
                                         collate_binned, collate_spike_tokens, packed_spike_tokens, spike_windows)
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.session import Session, TimeSeries, Trials
from mini_decoders.data.windows import Windows, make_windows, split_by_time
from mini_decoders.errors import DataError

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def random_session(seed: int = 0, n_units: int = 7, duration: float = 20.0, rate: float = 15.0, **kwargs) -> Session:
    rng = np.random.default_rng(seed)
    spikes = [np.sort(rng.uniform(0, duration, rng.poisson(rate * duration))) for _ in range(n_units)]
    return Session.from_spike_lists(f"rand{seed}", spikes, **kwargs)


def reference_spike_windows(session: Session, starts: np.ndarray, length: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Slow, obviously-correct reference: one boolean mask per window."""
    out = []
    for start in starts:
        inside = (session.spike_times >= start) & (session.spike_times < start + length)
        out.append((session.spike_times[inside] - start, session.spike_units[inside]))
    return out


# ------------------------------------------------------------------------------------ spike_windows

def test_spike_windows_equal_per_window_loop_with_overlap_and_edge_spikes():
    base = random_session(1)
    rng = np.random.default_rng(2)
    length = 0.75
    starts = np.concatenate([np.arange(0, 19, 0.3), rng.uniform(0, 19, 40)])  # tiled with overlap + random
    # Put spikes exactly on window edges: at some starts (inside) and some stops (outside).
    edge_times = np.concatenate([starts[::5], starts[2::7] + length])
    times = np.concatenate([base.spike_times, edge_times])
    units = np.concatenate([base.spike_units, rng.integers(0, base.n_units, len(edge_times))])
    order = np.argsort(times, kind="stable")
    session = Session("edges", times[order], units[order], base.units)

    result = spike_windows(session, starts, length)
    reference = reference_spike_windows(session, starts, length)
    assert isinstance(result, SpikeWindows) and len(result) == len(starts)
    np.testing.assert_array_equal(result.lengths, [len(t) for t, _ in reference])
    for i, (ref_times, ref_units) in enumerate(reference):
        got_times, got_units = result.sequence(i)
        assert got_times.dtype == np.float32 and got_units.dtype == np.int64
        np.testing.assert_array_equal(got_units, ref_units)
        np.testing.assert_allclose(got_times, ref_times, atol=1e-6)
    assert result.offsets[0] == 0 and result.offsets[-1] == len(result.times) == result.n_tokens


def test_spike_on_start_is_in_and_on_stop_is_out():
    session = Session.from_spike_lists("edge", [np.array([1.0, 1.5, 2.0]), np.array([0.3])])
    result = spike_windows(session, np.array([1.0, 0.1 * 3]), 1.0)  # 0.1*3 = 0.30000000000000004
    times, units = result.sequence(0)
    np.testing.assert_array_equal(times, [0.0, 0.5])  # 2.0 = start + length belongs to the next window
    np.testing.assert_array_equal(units, [0, 0])
    times, units = result.sequence(1)  # the spike at 0.3 counts as on the (float-rounded) start
    np.testing.assert_array_equal(units, [1, 0])  # 0.3 and 1.0; 1.5 is past 1.3
    assert times[0] == 0.0 and (times >= 0).all() and (times < 1.0).all()


def test_spike_windows_from_windows_table_matches_start_array():
    session = random_session(3, trials=Trials([1.0, 5.0], [4.2, 9.0], ["train", "test"]))
    windows = make_windows(session, length=1.0, step=0.5)
    a = spike_windows(session, windows)
    b = spike_windows(session, windows.starts, 1.0)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.times, b.times)
    with pytest.raises(DataError, match="length"):
        spike_windows(session, windows.starts)
    with pytest.raises(DataError, match="differs"):
        spike_windows(session, windows, 2.0)


# ------------------------------------------------------------------------------------ collate / packed

def make_sequences(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(np.sort(rng.uniform(0, 1, n)).astype(np.float32), rng.integers(1, 50, n)) for n in lengths]


def test_collate_pads_masks_and_keeps_tokens_in_order():
    sequences = make_sequences([5, 0, 17, 9])
    batch = collate_spike_tokens(sequences, pad_to_multiple=8)
    assert batch["times"].shape == (4, 24) and batch["times"].dtype == torch.float32
    assert batch["units"].dtype == torch.int64 and batch["mask"].dtype == torch.bool
    np.testing.assert_array_equal(batch["lengths"].numpy(), [5, 0, 17, 9])
    for b, (times, units) in enumerate(sequences):
        n = len(times)
        assert batch["mask"][b, :n].all() and not batch["mask"][b, n:].any()
        np.testing.assert_array_equal(batch["times"][b, :n].numpy(), times)
        np.testing.assert_array_equal(batch["units"][b, :n].numpy(), units)
    assert (batch["times"][~batch["mask"]] == 0).all() and (batch["units"][~batch["mask"]] == 0).all()
    # A batch of empty sequences still has one masked column block.
    empty = collate_spike_tokens(make_sequences([0, 0]), pad_to_multiple=4)
    assert empty["times"].shape == (2, 4) and not empty["mask"].any()
    assert collate_spike_tokens(sequences, pad_to_multiple=1)["times"].shape == (4, 17)


def test_collate_from_spike_windows_index_matches_list_form():
    session = random_session(4)
    windows = spike_windows(session, np.arange(0, 18, 0.5), 1.0)
    index = np.array([7, 2, 30, 2])
    direct = collate_spike_tokens(windows, index)
    via_list = collate_spike_tokens([windows.sequence(i) for i in index])
    for key in ("times", "units", "mask", "lengths"):
        assert torch.equal(direct[key], via_list[key]), key


def test_packed_is_the_padded_batch_without_padding():
    session = random_session(5)
    windows = spike_windows(session, np.arange(0, 18, 0.7), 1.3)
    index = np.array([3, 0, 11, 5, 20])
    padded = collate_spike_tokens(windows, index)
    packed = packed_spike_tokens(windows, index)
    assert packed["cu_seqlens"].dtype == torch.int32 and packed["cu_seqlens"][0] == 0
    np.testing.assert_array_equal(np.diff(packed["cu_seqlens"].numpy()), padded["lengths"].numpy())
    assert torch.equal(packed["times"], padded["times"][padded["mask"]])
    assert torch.equal(packed["units"], padded["units"][padded["mask"]])
    rows = torch.nonzero(padded["mask"])[:, 0]
    assert torch.equal(packed["batch_index"], rows)
    assert packed["max_seqlen"] == int(padded["lengths"].max())


def test_collate_rejects_mismatched_sequence():
    with pytest.raises(DataError, match="sequence 1 has times"):
        collate_spike_tokens([(np.zeros(3), np.zeros(3)), (np.zeros(3), np.zeros(2))])
    with pytest.raises(DataError, match="empty batch"):
        collate_spike_tokens([])


# ------------------------------------------------------------------------------------ binned

def test_collate_binned_pads_time_and_units_with_masks():
    rng = np.random.default_rng(0)
    items = [
        {"counts": rng.poisson(1.0, (4, 3)), "behavior": rng.normal(size=(4, 2)), "session_index": np.int64(0)},
        {"counts": rng.poisson(1.0, (6, 5)), "behavior": rng.normal(size=(6, 2)), "session_index": np.int64(1)},
    ]
    batch = collate_binned(items)
    assert batch["counts"].shape == (2, 6, 5) and batch["counts"].dtype == torch.float32
    np.testing.assert_array_equal(batch["counts"][0, :4, :3].numpy(), items[0]["counts"])
    np.testing.assert_array_equal(batch["counts"][1].numpy(), items[1]["counts"])
    assert (batch["counts"][0, 4:] == 0).all() and (batch["counts"][0, :, 3:] == 0).all()
    np.testing.assert_array_equal(batch["time_mask"].numpy(), [[1, 1, 1, 1, 0, 0], [1] * 6])
    np.testing.assert_array_equal(batch["unit_mask"].numpy(), [[1, 1, 1, 0, 0], [1] * 5])
    assert batch["behavior"].shape == (2, 6, 2)
    assert torch.isnan(batch["behavior"][0, 4:]).all() and not torch.isnan(batch["behavior"][1]).any()
    np.testing.assert_allclose(batch["behavior"][0, :4].numpy(), items[0]["behavior"], rtol=1e-6)
    np.testing.assert_array_equal(batch["session_index"].numpy(), [0, 1])
    with pytest.raises(DataError, match="item 1 'behavior' has shape"):
        collate_binned([items[0], {**items[1], "behavior": np.zeros((5, 2))}])


def test_binned_trial_dataset_over_two_sessions():
    trials = Trials([0.0, 2.0, 4.0], [1.5, 3.0, 6.0], ["train", "val", "train"])
    heldout = np.array([False, True, False, False, True, False, False])
    a = random_session(6, trials=trials, heldout=heldout,
                       behavior={"hand_vel": TimeSeries(np.arange(0, 20, 0.01), np.ones((2000, 2)))})
    b = random_session(7, n_units=4, trials=trials, heldout=[True, False, False, False],
                       behavior={"hand_vel": TimeSeries(np.arange(0, 20, 0.01), np.zeros((2000, 2)))})
    dataset = BinnedTrialDataset.from_sessions([a, b], split="train", behavior="hand_vel")
    assert len(dataset) == 4
    reference = bin_trials(b, 0.02, split="train")
    item = dataset[3]  # second train trial of session b
    assert item["session_index"] == 1 and item["trial_index"] == 2 and item["split"] == "train"
    np.testing.assert_array_equal(item["counts"], reference.counts[1, :100])
    np.testing.assert_array_equal(item["heldout"], reference.counts[1, :100, :1])
    np.testing.assert_array_equal(item["heldin"], reference.counts[1, :100, 1:])
    assert dataset[0]["heldin"].shape == (75, 5) and dataset[0]["heldout"].shape == (75, 2)
    batch = collate_binned([dataset[i] for i in range(4)])
    assert batch["counts"].shape == (4, 100, 7) and batch["heldout"].shape == (4, 100, 2)
    np.testing.assert_array_equal(batch["heldout_unit_mask"].numpy(), [[1, 1], [1, 1], [1, 0], [1, 0]])
    np.testing.assert_array_equal(batch["time_mask"].sum(1).numpy(), [75, 100, 75, 100])
    assert batch["split"] == ["train"] * 4
    assert float(batch["behavior"][0, 0, 0]) == 1.0 and torch.isnan(batch["behavior"][0, 75:]).all()


def test_spike_window_dataset_targets_at_output_times():
    t = np.arange(0, 20.001, 0.01)
    session = random_session(8, behavior={"hand_vel": TimeSeries(t, np.stack([t, 2 * t], 1))})
    windows = make_windows(session, 1.0, source="session")
    dataset = SpikeWindowDataset.from_sessions([session], [windows], behavior="hand_vel",
                                               output_times=np.array([0.1, 0.5, 0.9]))
    item = dataset[4]
    start = windows.starts[4]
    query = start + np.array([0.1, 0.5, 0.9])  # behaviour is (t, 2t), so targets are known in closed form
    np.testing.assert_allclose(item["targets"], np.stack([query, 2 * query], 1), rtol=1e-5)
    ref_times, ref_units = reference_spike_windows(session, [start], 1.0)[0]
    np.testing.assert_array_equal(item["units"], ref_units)
    batch = SpikeWindowDataset.collate([dataset[i] for i in range(5)])
    assert batch["targets"].shape == (5, 3, 2) and batch["output_times"].shape == (5, 3)
    assert torch.equal(batch["units"][4][batch["mask"][4]], torch.from_numpy(ref_units))


# ------------------------------------------------------------------------------------ windows

def test_windows_cover_trials_and_inherit_splits():
    trials = Trials([0.0, 3.0, 6.0], [2.5, 3.4, 10.0], ["train", "val", "test"])
    session = random_session(9, trials=trials)
    windows = make_windows(session, length=1.0)
    # trial 0 (2.5 s): grid 0, 1 then a tail window flush with its end at 1.5; trial 1 (0.4 s): one window;
    # trial 2 (4 s): exactly 4 windows, no tail.
    np.testing.assert_allclose(windows.starts, [0.0, 1.0, 1.5, 3.0, 6.0, 7.0, 8.0, 9.0])
    np.testing.assert_array_equal(windows.trial_index, [0, 0, 0, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(windows.split, ["train"] * 3 + ["val"] + ["test"] * 4)
    np.testing.assert_allclose(windows.valid_length, [1, 1, 1, 0.4, 1, 1, 1, 1])
    assert windows.length == 1.0 and windows.session_id == session.id
    # Every moment of every trial is inside a window of that trial.
    probe = np.linspace(0, 10, 2001)
    for k in range(3):
        inside = probe[(probe >= trials.start[k]) & (probe < trials.stop[k])]
        mine = windows.subset(windows.trial_index == k)
        covered = ((inside[:, None] >= mine.starts) & (inside[:, None] < mine.stops)).any(1)
        assert covered.all()
    overlapping = make_windows(session, length=1.0, step=0.5, split=("train", "test"))
    np.testing.assert_allclose(overlapping.starts, [0, 0.5, 1.0, 1.5, 6, 6.5, 7, 7.5, 8, 8.5, 9])
    assert set(overlapping.split) == {"train", "test"}
    np.testing.assert_array_equal(windows.index("val"), [3])


def test_session_windows_take_the_most_overlapping_trial():
    trials = Trials([1.0, 2.2, 6.0], [2.2, 3.0, 7.0], ["train", "val", "test"])
    span = {"x": TimeSeries([0.0, 9.0], [[0.0], [0.0]])}  # pins the session span to exactly 0..9 s
    session = random_session(10, duration=9.0, trials=trials, behavior=span)
    windows = make_windows(session, length=1.0, step=0.5, source="session")
    by_start = dict(zip(np.round(windows.starts, 6), zip(windows.split, windows.trial_index)))
    assert by_start[0.0] == ("none", -1)          # 0-1: touches trial 0 only at its start
    assert by_start[0.5] == ("train", 0)          # 0.5-1.5
    assert by_start[1.5] == ("train", 0)          # 1.5-2.5: 0.7 s of trial 0, 0.3 s of trial 1
    assert by_start[2.0] == ("val", 1)            # 2.0-3.0: 0.2 s vs 0.8 s
    assert by_start[4.0] == ("none", -1)
    assert by_start[6.0] == ("test", 2)
    test_only = make_windows(session, length=1.0, step=0.5, source="session", split="test")
    assert set(test_only.split) == {"test"} and len(test_only) == 3  # 5.5, 6.0, 6.5
    no_trials = make_windows(random_session(11, duration=5.0, behavior={"x": TimeSeries([0.0, 5.0], [[0.0], [0.0]])}),
                             length=2.0, source="session")
    assert (no_trials.split == "none").all() and (no_trials.trial_index == -1).all() and len(no_trials) == 2


def test_split_by_time_blocks_then_windows_stay_inside_blocks():
    session = random_session(12, duration=100.0)
    blocks = split_by_time(session, (0.7, 0.1, 0.2), n_blocks=2, gap=1.0)
    assert list(blocks.split) == ["train", "val", "test"] * 2
    assert np.all(blocks.stop[:-1] <= blocks.start[1:] + 1e-9)  # in time order, no overlap
    usable = (session.stop_time - session.start_time) / 2 - 2 * 1.0
    np.testing.assert_allclose(blocks.duration, np.tile([0.7, 0.1, 0.2], 2) * usable)
    np.testing.assert_allclose(blocks.start[1] - blocks.stop[0], 1.0)
    blocked = replace(session, trials=blocks)
    windows = make_windows(blocked, length=1.0, step=0.5)
    assert (windows.starts >= blocks.start[windows.trial_index] - 1e-9).all()
    assert (windows.stops <= blocks.stop[windows.trial_index] + 1e-9).all()
    assert np.array_equal(windows.split, blocks.split[windows.trial_index])
    two = split_by_time(session, (0.8, 0.0, 0.2))
    assert list(two.split) == ["train", "test"]


# ------------------------------------------------------------------------------------ bucketing

def test_bucket_batches_cover_once_deterministic_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = np.round(rng.lognormal(5, 1, 2000)).astype(int)  # skewed, like spikes per window
    batches = bucket_batches(lengths, 32, seed=3)
    everything = np.concatenate(batches)
    assert len(everything) == len(lengths) and np.array_equal(np.sort(everything), np.arange(len(lengths)))
    assert all(len(b) <= 32 for b in batches)
    again = bucket_batches(lengths, 32, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    assert not all(np.array_equal(x, y) for x, y in zip(batches, bucket_batches(lengths, 32, seed=4)))

    def padding(batch_list):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batch_list)

    random_batches = np.array_split(rng.permutation(len(lengths)), len(lengths) // 32)
    assert padding(batches) < 0.25 * padding(random_batches)
    ordered = bucket_batches(lengths, 32, shuffle=False, batches_per_chunk=1)
    np.testing.assert_array_equal(np.concatenate([np.sort(b) for b in ordered]), np.arange(len(lengths)))
    assert all(len(b) == 32 for b in bucket_batches(lengths, 32, seed=0, drop_last=True))


# ------------------------------------------------------------------------------------ bad input

def test_bad_input_messages():
    session = random_session(13, duration=3.0, trials=Trials([0.5], [2.5], ["train"]))
    with pytest.raises(DataError, match="length must be a positive number of seconds, got 0"):
        make_windows(session, length=0)
    with pytest.raises(DataError, match="step must be a positive number of seconds, got -1"):
        make_windows(session, length=1.0, step=-1)
    with pytest.raises(DataError, match=r"no window of 5.0 s fits in session 'rand13'.*span"):
        make_windows(session, length=5.0, source="session")
    with pytest.raises(DataError, match=r"no window .* with split 'test'"):
        make_windows(session, length=1.0, split="test")
    with pytest.raises(DataError, match="has no trials table; use source='session'"):
        make_windows(random_session(14), length=1.0)
    with pytest.raises(DataError, match="source must be 'trials' or 'session'"):
        make_windows(session, source="epochs")
    with pytest.raises(DataError, match="unknown split 'training'"):
        make_windows(session, split="training")
    with pytest.raises(DataError, match=r"fractions must be three .* summing to 1, got \[0.5, 0.1, 0.1\]"):
        split_by_time(session, (0.5, 0.1, 0.1))
    with pytest.raises(DataError, match="not enough for 2 gap"):
        split_by_time(session, gap=2.0)
    with pytest.raises(DataError, match="batch_size"):
        bucket_batches(np.ones(4), 0)
    with pytest.raises(DataError, match="must all be"):
        Windows(np.zeros(3), 1.0, np.array(["train"] * 2), np.zeros(3))


# ------------------------------------------------------------------------------------ real data

def test_real_pmd_rasters_windows_recover_counts():
    """Yu et al. 2009 PMd: 1 ms rasters of trials 1018-1526 ms long, laid end to end with 100 ms gaps."""
    path = REALDATA / "datahigh_yu2009_pmd" / "ex2_rawspiketrains.mat"
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    from scipy.io import loadmat

    records = loadmat(path, squeeze_me=True, struct_as_record=False)["D"][:40]
    rasters = [np.asarray(r.data, dtype=np.int64).T for r in records]  # (T_i ms, 61)
    gap = np.zeros((100, rasters[0].shape[1]), dtype=np.int64)
    counts = np.concatenate([block for r in rasters for block in (r, gap)])
    lengths_ms = np.array([len(r) for r in rasters])
    starts = (np.cumsum(lengths_ms + 100) - lengths_ms - 100) / 1000.0
    trials = Trials(starts, starts + lengths_ms / 1000.0, np.where(np.arange(40) % 5 == 0, "test", "train"))
    session = Session.from_binned(counts, 0.001, id="yu2009_ex2", trials=trials)
    windows = make_windows(session, length=0.5, step=0.5)
    tokens = spike_windows(session, windows)
    for k in (0, 17, 39):  # windows of three trials: per-unit counts equal the raster's
        for w in np.flatnonzero(windows.trial_index == k):
            first_ms = int(round((windows.starts[w] - starts[k]) * 1000))
            expected = rasters[k][first_ms:first_ms + 500].sum(0)
            np.testing.assert_array_equal(np.bincount(tokens.sequence(w)[1], minlength=61), expected)
    # Every spike of every trial lies in at least one window of that trial (grid + tail window).
    for k in range(40):
        spikes = session.spike_times[(session.spike_times >= starts[k]) & (session.spike_times < trials.stop[k])]
        mine = windows.subset(windows.trial_index == k)
        assert ((spikes[:, None] >= mine.starts) & (spikes[:, None] < mine.stops)).any(1).all()
        assert len(spikes) == rasters[k].sum()
