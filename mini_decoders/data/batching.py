"""From Sessions to batches: spike-token sequences, padded and packed, and binned trials.

Two views leave the data layer:

* **spike tokens** (POYO): every spike in a window is one token, ``(time, unit)``. Windows hold
  very different numbers of spikes, so the sequences are kept *packed* (CSR: one flat array of
  tokens plus ``offsets``) in :class:`SpikeWindows` and turned into a batch either padded with a
  mask (:func:`collate_spike_tokens`) or padding-free with ``cu_seqlens``
  (:func:`packed_spike_tokens`, the layout of variable-length attention kernels).
  :func:`bucket_batches` groups windows of similar length so padding stays small.
* **binned counts** (NDT1/2, MtM, VQ): :class:`BinnedTrialDataset` serves trials of one or many
  sessions; :func:`collate_binned` pads time *and* units, because sessions differ in neuron count.

Everything is vectorised: spikes are located with ``searchsorted`` on the sorted spike times and
ranges of spikes are gathered with the repeat/cumsum trick also used by
:func:`mini_decoders.data.binning.bin_intervals`; no Python loop touches single spikes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_trials
from mini_decoders.data.session import Session, TimeSeries
from mini_decoders.data.windows import Windows
from mini_decoders.errors import DataError

# A spike this close before a window edge counts as on the edge (windows at start + k*step carry
# float error); the convention is half-open: [start, start + length).
EDGE_TOLERANCE_S = 1e-9

SpikeSequence = tuple[np.ndarray, np.ndarray]  # (times (L,) float, units (L,) int)


def _ranges(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the integer ranges ``first[i] .. first[i] + counts[i]`` without a Python loop.

    Returns:
        values: (sum(counts),) int64, the ranges one after the other.
        owner: (sum(counts),) int64, which range ``i`` each value came from.
    """
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    run_start = np.cumsum(counts) - counts  # where range i begins in the output
    values = np.repeat(np.asarray(first, dtype=np.int64) - run_start, counts) + np.arange(int(counts.sum()))
    return values, owner


# ---------------------------------------------------------------------------------------------
# Spike tokens


@dataclass
class SpikeWindows:
    """Spike sequences of N windows, packed end to end (CSR layout).

    Window ``i`` holds tokens ``offsets[i]:offsets[i + 1]``, in time order.

    Attributes:
        times: (S,) float32 spike times relative to their window's start (s), in [0, length).
            Relative times keep float32 precise (~0.1 µs in a 1 s window); absolute times of a
            one-hour session would be rounded to ~0.2 ms.
        units: (S,) int64 unit index in the session's unit table.
        offsets: (N + 1,) int64, ``offsets[0] = 0``, ``offsets[-1] = S``.
        starts: (N,) float64 absolute start of each window (s).
        length: window length (s).
    """

    times: np.ndarray
    units: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    length: float

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) number of spikes in each window."""
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def sequence(self, i: int) -> SpikeSequence:
        """Tokens of window ``i``: times (L,) float32 relative to its start, units (L,) int64."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.times[lo:hi], self.units[lo:hi]

    def gather(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token positions of the windows in ``index``, concatenated in that order.

        Returns:
            token_index: (S_b,) int64 positions into ``times``/``units``.
            lengths: (B,) int64 tokens per selected window.
        """
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        token_index, _ = _ranges(self.offsets[index], lengths)
        return token_index, lengths


def spike_windows(session: Session, windows_or_starts: Windows | np.ndarray, length: float | None = None) -> SpikeWindows:
    """Cut the spikes of many (possibly overlapping) windows at once.

    A spike at ``t`` belongs to window ``[start, start + length)``: a spike exactly at ``start``
    is in, one exactly at ``start + length`` is out (it belongs to the next window of a tiling).

    Args:
        session: the session.
        windows_or_starts: a :class:`Windows` table, or (N,) window start times (s).
        length: window length (s); required with start times, must match a :class:`Windows`'s.

    Returns:
        :class:`SpikeWindows` with the windows in the given order.
    """
    if isinstance(windows_or_starts, Windows):
        if length is not None and not np.isclose(length, windows_or_starts.length):
            raise DataError(f"spike_windows: length {length} s differs from the Windows' length "
                            f"{windows_or_starts.length} s; pass one or the other")
        starts, length = windows_or_starts.starts, windows_or_starts.length
    else:
        if length is None:
            raise DataError("spike_windows: give `length` (s) with an array of window start times")
        starts = np.asarray(windows_or_starts, dtype=np.float64)
    if starts.ndim != 1 or not np.all(np.isfinite(starts)):
        raise DataError(f"spike_windows: window starts of session {session.id!r} must be a finite 1-D array, "
                        f"got shape {starts.shape}")
    if not np.isfinite(length) or length <= 0:
        raise DataError(f"spike_windows: length must be a positive number of seconds, got {length}")
    spike_times = session.spike_times
    lo = np.searchsorted(spike_times, starts - EDGE_TOLERANCE_S, side="left")
    hi = np.searchsorted(spike_times, starts + length - EDGE_TOLERANCE_S, side="left")
    counts = hi - lo
    spike_index, window = _ranges(lo, counts)
    # A spike inside the tolerance just before `start` would be a hair negative: clamp to the edge.
    times = np.maximum(spike_times[spike_index] - starts[window], 0.0).astype(np.float32)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return SpikeWindows(times, session.spike_units[spike_index], offsets, starts, float(length))


def _flatten_sequences(sequences: SpikeWindows | Sequence[SpikeSequence], index: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of a batch, concatenated: times (S_b,), units (S_b,), lengths (B,)."""
    if isinstance(sequences, SpikeWindows):
        index = np.arange(len(sequences)) if index is None else np.asarray(index)
        token_index, lengths = sequences.gather(index)
        return sequences.times[token_index], sequences.units[token_index], lengths
    if index is not None:
        sequences = [sequences[i] for i in np.asarray(index)]
    if len(sequences) == 0:
        raise DataError("collate: got an empty batch (no sequences)")
    for i, (times, units) in enumerate(sequences):
        if np.shape(times) != np.shape(units) or np.ndim(times) != 1:
            raise DataError(f"collate: sequence {i} has times {np.shape(times)} and units {np.shape(units)}; "
                            "expected two 1-D arrays of equal length")
    lengths = np.array([len(times) for times, _ in sequences], dtype=np.int64)
    times = np.concatenate([np.asarray(t, dtype=np.float32) for t, _ in sequences])
    units = np.concatenate([np.asarray(u, dtype=np.int64) for _, u in sequences])
    return times, units, lengths


def collate_spike_tokens(sequences: SpikeWindows | Sequence[SpikeSequence], index: np.ndarray | None = None,
                         pad_to_multiple: int = 8) -> dict[str, torch.Tensor]:
    """Pad spike sequences into a rectangular batch with a mask.

    Args:
        sequences: a list of ``(times, units)`` pairs, or a :class:`SpikeWindows`.
        index: which sequences form the batch (default: all), in batch order.
        pad_to_multiple: round the padded length L up to a multiple of this (tensor-core and
            kernel friendly shapes; fewer distinct shapes for compilers). L is at least this, so a
            batch of empty windows still has one (masked) column.

    Returns:
        ``times`` (B, L) float32, ``units`` (B, L) int64, ``mask`` (B, L) bool (True = real
        token), ``lengths`` (B,) int64. Padding has time 0 and unit 0 and is masked out.
    """
    if pad_to_multiple < 1:
        raise DataError(f"collate_spike_tokens: pad_to_multiple must be >= 1, got {pad_to_multiple}")
    times, units, lengths = _flatten_sequences(sequences, index)
    batch_size = len(lengths)
    longest = int(lengths.max()) if batch_size else 0
    padded_length = max(-(-longest // pad_to_multiple), 1) * pad_to_multiple
    row = np.repeat(np.arange(batch_size), lengths)
    column = np.arange(len(times)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = row * padded_length + column  # (S_b,) position of each token in the flattened (B, L)
    padded_times = np.zeros(batch_size * padded_length, dtype=np.float32)
    padded_units = np.zeros(batch_size * padded_length, dtype=np.int64)
    padded_times[flat] = times
    padded_units[flat] = units
    mask = np.arange(padded_length)[None, :] < lengths[:, None]
    return {
        "times": torch.from_numpy(padded_times.reshape(batch_size, padded_length)),
        "units": torch.from_numpy(padded_units.reshape(batch_size, padded_length)),
        "mask": torch.from_numpy(mask),
        "lengths": torch.from_numpy(lengths),
    }


def packed_spike_tokens(sequences: SpikeWindows | Sequence[SpikeSequence], index: np.ndarray | None = None
                        ) -> dict[str, torch.Tensor | int]:
    """The padding-free form of a batch: all tokens end to end.

    Sequence ``b`` is ``times[cu_seqlens[b]:cu_seqlens[b + 1]]``; this is the layout that
    variable-length attention kernels take, and it costs no memory or compute on padding.

    Returns:
        ``times`` (S_b,) float32, ``units`` (S_b,) int64, ``cu_seqlens`` (B + 1,) int32
        cumulative lengths starting at 0, ``batch_index`` (S_b,) int64 sequence of each token,
        ``lengths`` (B,) int64, ``max_seqlen`` int.
    """
    times, units, lengths = _flatten_sequences(sequences, index)
    cu_seqlens = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return {
        "times": torch.from_numpy(np.ascontiguousarray(times, dtype=np.float32)),
        "units": torch.from_numpy(np.ascontiguousarray(units, dtype=np.int64)),
        "cu_seqlens": torch.from_numpy(cu_seqlens),
        "batch_index": torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths)),
        "lengths": torch.from_numpy(lengths),
        "max_seqlen": int(lengths.max()) if len(lengths) else 0,
    }


def bucket_batches(lengths: np.ndarray, batch_size: int, seed: int = 0, shuffle: bool = True,
                   batches_per_chunk: int = 32, drop_last: bool = False) -> list[np.ndarray]:
    """Batches of indices whose sequences have similar lengths, to cut padding.

    The indices are shuffled, cut into "mega-chunks" of ``batch_size * batches_per_chunk``,
    sorted by length *within* each chunk, cut into batches, and the batches shuffled. Sorting
    only within chunks keeps batches random across epochs (a global sort would always pair the
    same windows) while most of the padding is gone.

    Args:
        lengths: (N,) length of each sequence.
        batch_size: indices per batch (the last batch of a chunk may be smaller).
        seed: the same seed gives the same batches.
        shuffle: False keeps the data order for chunks and batches (evaluation).
        batches_per_chunk: chunk size in batches; 1 is random batching, N / batch_size a global sort.
        drop_last: drop batches smaller than ``batch_size``.

    Returns:
        list of int64 index arrays; together they hold every index exactly once
        (unless ``drop_last``).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise DataError(f"bucket_batches: lengths must be 1-D, got shape {lengths.shape}")
    if batch_size < 1 or batches_per_chunk < 1:
        raise DataError(f"bucket_batches: batch_size ({batch_size}) and batches_per_chunk ({batches_per_chunk}) "
                        "must be >= 1")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    chunk_size = batch_size * batches_per_chunk
    chunk = np.arange(len(order)) // chunk_size
    order = order[np.lexsort((lengths[order], chunk))]  # by chunk, then length within the chunk
    # Batch boundaries restart at each chunk so a batch never mixes two chunks' length ranges.
    position_in_chunk = np.arange(len(order)) % chunk_size
    batch_id = chunk * batches_per_chunk + position_in_chunk // batch_size
    cuts = np.flatnonzero(np.diff(batch_id)) + 1
    batches = np.split(order.astype(np.int64), cuts) if len(order) else []
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ---------------------------------------------------------------------------------------------
# Binned trials


def collate_binned(items: Sequence[dict]) -> dict:
    """Stack binned items of unequal length and unit count into padded tensors.

    Each item has ``counts`` (T_i, U_i), and optionally ``heldin`` (T_i, U_in_i) and
    ``heldout`` (T_i, U_out_i) counts, other time-major arrays (T_i, ...) such as ``behavior``
    (T_i, D), and scalars such as ``session_index``. Sessions differ in neuron count, so the
    unit axis is padded too and each count key gets its own unit mask.

    Returns:
        ``counts`` (B, T_max, U_max) float32, zero-padded; ``heldin``/``heldout`` likewise;
        ``time_mask`` (B, T_max) bool; ``unit_mask`` (B, U_max) bool, plus ``heldin_unit_mask``
        and ``heldout_unit_mask`` when those keys are given; other time-major arrays padded with
        NaN to (B, T_max, ...) float32; numeric scalars stacked to (B,) tensors; strings as lists.
    """
    if len(items) == 0:
        raise DataError("collate_binned: got an empty batch (no items)")
    count_keys = [k for k in ("counts", "heldin", "heldout") if k in items[0]]
    if not count_keys:
        raise DataError(f"collate_binned: items need 'counts' (T, U) or 'heldin'; found keys {sorted(items[0])}")
    time_lengths = np.array([np.shape(item[count_keys[0]])[0] for item in items])
    batch_size, t_max = len(items), int(time_lengths.max())
    batch: dict = {"time_mask": torch.from_numpy(np.arange(t_max)[None, :] < time_lengths[:, None])}
    for key in items[0]:
        values = [item.get(key) for item in items]
        if any(v is None for v in values):
            raise DataError(f"collate_binned: key {key!r} is missing from some items")
        first = np.asarray(values[0])
        if key in count_keys:
            shapes = [np.shape(v) for v in values]
            for i, shape in enumerate(shapes):
                if len(shape) != 2 or shape[0] != time_lengths[i]:
                    raise DataError(f"collate_binned: item {i} {key!r} has shape {shape}; expected "
                                    f"({time_lengths[i]}, units) like its {count_keys[0]!r}")
            unit_counts = np.array([shape[1] for shape in shapes])
            padded = np.zeros((batch_size, t_max, int(unit_counts.max())), dtype=np.float32)
            for i, v in enumerate(values):  # one copy per item, not per bin
                padded[i, : time_lengths[i], : unit_counts[i]] = v
            batch[key] = torch.from_numpy(padded)
            mask_name = "unit_mask" if key == "counts" else f"{key}_unit_mask"
            batch[mask_name] = torch.from_numpy(np.arange(padded.shape[2])[None, :] < unit_counts[:, None])
        elif first.ndim == 0:
            if first.dtype.kind in "biuf":
                batch[key] = torch.as_tensor(np.array(values))
            else:
                batch[key] = [v.item() if isinstance(v, np.generic) else v for v in values]
        else:
            for i, v in enumerate(values):
                if np.shape(v)[0] != time_lengths[i] or np.shape(v)[1:] != first.shape[1:]:
                    raise DataError(f"collate_binned: item {i} {key!r} has shape {np.shape(v)}; expected "
                                    f"({time_lengths[i]}, {', '.join(map(str, first.shape[1:]))})")
            padded = np.full((batch_size, t_max) + first.shape[1:], np.nan, dtype=np.float32)
            for i, v in enumerate(values):
                padded[i, : time_lengths[i]] = v
            batch[key] = torch.from_numpy(padded)
    return batch


class BinnedTrialDataset(Dataset):
    """Trials of one or many sessions, binned, one item per trial.

    Items are dicts of numpy arrays trimmed to the trial's real bins: ``counts`` (T_i, U) all
    units, ``heldin`` (T_i, U_in) and ``heldout`` (T_i, U_out) split by the units' heldout flag
    (table order kept), ``behavior`` (T_i, D) when a behaviour is chosen, ``session_index``,
    ``trial_index`` (row in that session's trial table) and ``split``. Batch them with
    :func:`collate_binned`.

    Args:
        binned: one :class:`BinnedTrials` per session.
        heldout: one (U,) bool array per session, the units' heldout flags.
        behavior: name of the behaviour to serve as ``behavior``; None serves none.
    """

    def __init__(self, binned: Sequence[BinnedTrials], heldout: Sequence[np.ndarray], behavior: str | None = None):
        if len(binned) != len(heldout):
            raise DataError(f"BinnedTrialDataset: {len(binned)} binned sessions but {len(heldout)} heldout arrays")
        self.binned = list(binned)
        self.heldout = [np.asarray(h, dtype=bool) for h in heldout]
        self.behavior = behavior
        for s, (trials, flags) in enumerate(zip(self.binned, self.heldout)):
            if trials.counts.shape[2] != len(flags):
                raise DataError(f"BinnedTrialDataset: session {s} has {trials.counts.shape[2]} units in counts "
                                f"but {len(flags)} heldout flags")
            if behavior is not None and behavior not in trials.behavior:
                raise DataError(f"BinnedTrialDataset: session {s} has no binned behavior {behavior!r} "
                                f"(has: {sorted(trials.behavior)})")
        sizes = np.array([len(b.counts) for b in self.binned], dtype=np.int64)
        # Item i -> (session, position): flat lookup tables instead of searching per item.
        self.session_of = np.repeat(np.arange(len(sizes)), sizes)
        self.position_of = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    @classmethod
    def from_sessions(cls, sessions: Sequence[Session], bin_size: float = DEFAULT_BIN_SIZE,
                      split: str | tuple[str, ...] | None = None, behavior: str | None = None,
                      **bin_kwargs) -> "BinnedTrialDataset":
        """Bin each session's trials (``bin_trials`` with ``bin_kwargs``, e.g. ``lag``, ``window``)."""
        binned = [bin_trials(s, bin_size, split=split, behavior=(behavior,) if behavior else (), **bin_kwargs)
                  for s in sessions]
        return cls(binned, [s.units.heldout for s in sessions], behavior)

    def __len__(self) -> int:
        return len(self.session_of)

    def __getitem__(self, i: int) -> dict:
        session, position = int(self.session_of[i]), int(self.position_of[i])
        trials, heldout = self.binned[session], self.heldout[session]
        n_bins = int(trials.mask[position].sum())
        counts = trials.counts[position, :n_bins]  # (T_i, U)
        item = {
            "counts": counts,
            "heldin": counts[:, ~heldout],
            "heldout": counts[:, heldout],
            "session_index": np.int64(session),
            "trial_index": np.int64(trials.trial_index[position]),
            "split": str(trials.split[position]),
        }
        if self.behavior is not None:
            item["behavior"] = trials.behavior[self.behavior][position, :n_bins]
        return item


class SpikeWindowDataset(Dataset):
    """Spike-token windows of one or many sessions, with behaviour targets at query times.

    POYO decodes behaviour at arbitrary timestamps: each item carries the window's tokens and
    the behaviour sampled (linear interpolation) at ``output_times`` after the window's start.

    Items: ``times`` (L,) float32 relative to the window start, ``units`` (L,) int64 (index into
    that session's unit table; map to a global vocabulary with ``session_index``),
    ``output_times`` (Q,) float32 relative, ``targets`` (Q, D) float32 (NaN where unknown; absent
    when the session has no behaviour), ``session_index``, ``window_start`` (s). Batch them with
    :meth:`collate`.

    Args:
        windows: one :class:`SpikeWindows` per session.
        behavior: one :class:`TimeSeries` (or None) per session, or None for no targets.
        output_times: (Q,) query times relative to the window start (s); default: the centres
            of 20 ms bins across the window.
    """

    def __init__(self, windows: Sequence[SpikeWindows], behavior: Sequence[TimeSeries | None] | None = None,
                 output_times: np.ndarray | None = None):
        self.windows = list(windows)
        self.behavior = [None] * len(self.windows) if behavior is None else list(behavior)
        if len(self.behavior) != len(self.windows):
            raise DataError(f"SpikeWindowDataset: {len(self.windows)} sessions of windows but "
                            f"{len(self.behavior)} behaviour series")
        if output_times is None:
            length = self.windows[0].length if self.windows else 1.0
            output_times = (np.arange(int(round(length / DEFAULT_BIN_SIZE))) + 0.5) * DEFAULT_BIN_SIZE
        self.output_times = np.asarray(output_times, dtype=np.float64)
        for s, w in enumerate(self.windows):
            if len(self.output_times) and (self.output_times.min() < 0 or self.output_times.max() > w.length):
                raise DataError(f"SpikeWindowDataset: output_times span {self.output_times.min():.4g}.."
                                f"{self.output_times.max():.4g} s but session {s}'s windows last {w.length} s")
        sizes = np.array([len(w) for w in self.windows], dtype=np.int64)
        self.session_of = np.repeat(np.arange(len(sizes)), sizes)
        self.position_of = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    @classmethod
    def from_sessions(cls, sessions: Sequence[Session], windows: Sequence[Windows], behavior: str | None = None,
                      output_times: np.ndarray | None = None) -> "SpikeWindowDataset":
        """Cut ``windows[s]`` from ``sessions[s]``; targets from behaviour ``behavior`` if given."""
        if len(sessions) != len(windows):
            raise DataError(f"SpikeWindowDataset: {len(sessions)} sessions but {len(windows)} window tables")
        series = None
        if behavior is not None:
            for s in sessions:
                if behavior not in s.behavior:
                    raise DataError(f"session {s.id!r} has no behavior {behavior!r} (has: {sorted(s.behavior)})")
            series = [s.behavior[behavior] for s in sessions]
        return cls([spike_windows(s, w) for s, w in zip(sessions, windows)], series, output_times)

    def __len__(self) -> int:
        return len(self.session_of)

    def __getitem__(self, i: int) -> dict:
        session, position = int(self.session_of[i]), int(self.position_of[i])
        windows = self.windows[session]
        times, units = windows.sequence(position)
        start = float(windows.starts[position])
        item = {"times": times, "units": units, "output_times": self.output_times.astype(np.float32),
                "session_index": np.int64(session), "window_start": np.float64(start)}
        if self.behavior[session] is not None:
            item["targets"] = self.behavior[session].at(start + self.output_times).astype(np.float32)
        return item

    @staticmethod
    def collate(items: Sequence[dict], pad_to_multiple: int = 8) -> dict:
        """Padded tokens (see :func:`collate_spike_tokens`) plus stacked queries and targets."""
        batch = collate_spike_tokens([(it["times"], it["units"]) for it in items], pad_to_multiple=pad_to_multiple)
        batch["output_times"] = torch.from_numpy(np.stack([it["output_times"] for it in items]))  # (B, Q)
        batch["session_index"] = torch.as_tensor(np.array([it["session_index"] for it in items]))
        batch["window_start"] = torch.as_tensor(np.array([it["window_start"] for it in items]))
        if all("targets" in it for it in items):
            batch["targets"] = torch.from_numpy(np.stack([it["targets"] for it in items]))  # (B, Q, D)
        return batch
