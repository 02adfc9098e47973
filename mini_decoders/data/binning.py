"""Binned views of a Session: population spike-count matrices.

Binning is the view used by NDT1, NDT2, MtM and the VQ tokenizer. It is written once here,
fully vectorised (one ``np.bincount`` over all spikes of all trials), so a one-hour session
bins in well under a second.

Convention: bin ``i`` of a trial covers ``[start + i*bin_size, start + (i+1)*bin_size)``; a trial
of duration ``d`` has ``floor(d / bin_size)`` full bins (a trailing partial bin is dropped so
every bin has the same width and counts are comparable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mini_decoders.data.session import Session, TimeSeries
from mini_decoders.errors import DataError

DEFAULT_BIN_SIZE = 0.02  # s; NLB and NDT2 use 20 ms
_EDGE_TOLERANCE = 1e-6  # fraction of a bin: spikes on an edge (1 ms data) go to the later bin despite fp error


def n_full_bins(duration: np.ndarray | float, bin_size: float) -> np.ndarray:
    """Number of whole bins in each duration: floor(duration / bin_size), robust to fp error."""
    return np.floor(np.asarray(duration) / bin_size + _EDGE_TOLERANCE).astype(np.int64)


def _check_bin_size(bin_size: float) -> None:
    if not np.isfinite(bin_size) or bin_size <= 0:
        raise DataError(f"bin_size must be a positive number of seconds, got {bin_size}")


def bin_intervals(spike_times: np.ndarray, spike_units: np.ndarray, n_units: int, starts: np.ndarray,
                  n_bins: np.ndarray | int, bin_size: float) -> np.ndarray:
    """Count spikes in bins of many intervals at once.

    Args:
        spike_times: (S,) sorted spike times (s).
        spike_units: (S,) unit index per spike.
        n_units: U.
        starts: (N,) start time of each interval (s); intervals may overlap.
        n_bins: (N,) or scalar number of bins per interval.
        bin_size: bin width (s).

    Returns:
        (N, T_max, U) int64 counts; bins past an interval's own length are zero.
    """
    _check_bin_size(bin_size)
    starts = np.asarray(starts, dtype=np.float64)
    n_bins = np.broadcast_to(np.asarray(n_bins, dtype=np.int64), starts.shape)
    n_intervals = len(starts)
    t_max = int(n_bins.max()) if n_intervals else 0
    if n_intervals == 0 or t_max == 0:
        return np.zeros((n_intervals, t_max, n_units), dtype=np.int64)
    stops = starts + n_bins * bin_size
    lo = np.searchsorted(spike_times, starts - _EDGE_TOLERANCE * bin_size, side="left")
    hi = np.searchsorted(spike_times, stops - _EDGE_TOLERANCE * bin_size, side="left")
    per_interval = hi - lo
    # Gather every (interval, spike) pair without a Python loop: ranges lo[i]..hi[i] concatenated.
    interval_id = np.repeat(np.arange(n_intervals), per_interval)
    first = np.repeat(lo - np.concatenate(([0], np.cumsum(per_interval)[:-1])), per_interval)
    spike_index = first + np.arange(per_interval.sum())
    offset = (spike_times[spike_index] - starts[interval_id]) / bin_size
    bins = np.floor(offset + _EDGE_TOLERANCE).astype(np.int64)
    keep = (bins >= 0) & (bins < n_bins[interval_id])
    flat = (interval_id[keep] * t_max + bins[keep]) * n_units + spike_units[spike_index[keep]]
    counts = np.bincount(flat, minlength=n_intervals * t_max * n_units)
    return counts.reshape(n_intervals, t_max, n_units)


def bin_session(session: Session, bin_size: float = DEFAULT_BIN_SIZE, start: float | None = None,
                stop: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The whole session (or ``[start, stop)``) as one count matrix.

    Returns:
        counts: (T, U) int64.
        edges: (T + 1,) bin edges (s).
    """
    start = session.start_time if start is None else start
    stop = session.stop_time if stop is None else stop
    if stop <= start:
        raise DataError(f"bin_session: stop ({stop}) must be after start ({start})")
    n = int(n_full_bins(stop - start, bin_size))
    if n == 0:
        raise DataError(f"bin_session: interval {stop - start:.4g} s is shorter than one bin of {bin_size} s")
    counts = bin_intervals(session.spike_times, session.spike_units, session.n_units, np.array([start]), n, bin_size)
    return counts[0], start + np.arange(n + 1) * bin_size


@dataclass
class BinnedTrials:
    """Trials of one session as padded count tensors.

    Attributes:
        counts: (N, T, U) float32 spike counts; padded bins are 0 (see ``mask``).
        mask: (N, T) bool, True on real bins.
        starts: (N,) time of each trial's first bin edge (s).
        trial_index: (N,) row of each trial in the session's trial table.
        split: (N,) str.
        condition: (N,) str.
        bin_size: bin width (s).
        behavior: name -> (N, T, D) float32 values at bin centres (NaN where unknown or padded).
    """

    counts: np.ndarray
    mask: np.ndarray
    starts: np.ndarray
    trial_index: np.ndarray
    split: np.ndarray
    condition: np.ndarray
    bin_size: float
    behavior: dict[str, np.ndarray]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) number of real bins per trial."""
        return self.mask.sum(1)

    def bin_centres(self) -> np.ndarray:
        """(N, T) time of each bin centre (s)."""
        return self.starts[:, None] + (np.arange(self.counts.shape[1]) + 0.5) * self.bin_size

    def subset(self, index: np.ndarray) -> "BinnedTrials":
        """The trials at positions ``index`` (positions in this object, not trial-table rows)."""
        return BinnedTrials(self.counts[index], self.mask[index], self.starts[index], self.trial_index[index],
                            self.split[index], self.condition[index], self.bin_size,
                            {k: v[index] for k, v in self.behavior.items()})


def bin_behavior(series: TimeSeries, starts: np.ndarray, n_bins: int, bin_size: float) -> np.ndarray:
    """Behaviour sampled at the centres of ``n_bins`` bins after each start -> (N, n_bins, D).

    Linear interpolation at the bin centre keeps NaN gaps local (NLB hand velocity has them).
    """
    centres = np.asarray(starts)[:, None] + (np.arange(n_bins) + 0.5) * bin_size  # (N, T)
    return series.at(centres.ravel()).reshape(len(starts), n_bins, -1)


def bin_trials(session: Session, bin_size: float = DEFAULT_BIN_SIZE, split: str | tuple[str, ...] | None = None,
               align: str | None = None, window: tuple[float, float] | None = None,
               behavior: tuple[str, ...] | None = None, lag: float = 0.0) -> BinnedTrials:
    """Bin the trials of a session into padded (N, T, U) tensors.

    Args:
        session: the session.
        bin_size: bin width (s).
        split: only trials in this split (or tuple of splits); None = all.
        align: name of a per-trial time column in ``trials.extra`` (e.g. ``"move_onset_time"``)
            to align to; None = each trial's ``start``.
        window: (before, after) seconds around the alignment time; None = each trial's own
            start..stop (unequal lengths padded).
        behavior: names of behaviour series to bin (default: all).
        lag: behaviour is read ``lag`` seconds *after* each bin (neural activity leads movement;
            NLB uses 100-140 ms for motor cortex).

    Returns:
        :class:`BinnedTrials`.
    """
    _check_bin_size(bin_size)
    trials = session.trials
    if len(trials) == 0:
        raise DataError(f"session {session.id!r} ({session.source or 'in memory'}) has no trials table: "
                        "use bin_session(...) or make_windows(...) for continuous data")
    index = trials.index(split)
    if align is None:
        anchor = trials.start[index]
    else:
        if align not in trials.extra:
            raise DataError(f"session {session.id!r}: trials has no column {align!r} to align to "
                            f"(columns: {sorted(trials.extra)})")
        anchor = trials.extra[align][index].astype(np.float64)
        keep = np.isfinite(anchor)
        index, anchor = index[keep], anchor[keep]
    if window is None:
        if align is not None:
            raise DataError("bin_trials: `align` needs a `window` (before, after) in seconds")
        starts = anchor
        n_bins = n_full_bins(trials.stop[index] - starts, bin_size)
    else:
        before, after = window
        if before + after <= 0:
            raise DataError(f"bin_trials: window {window} is empty; expected (before, after) with before + after > 0")
        starts = anchor - before
        n_bins = np.full(len(index), int(n_full_bins(before + after, bin_size)))
    if len(index) and n_bins.min() < 1:
        short = index[int(np.argmin(n_bins))]
        raise DataError(f"session {session.id!r}: trial {short} lasts less than one bin of {bin_size} s")
    counts = bin_intervals(session.spike_times, session.spike_units, session.n_units, starts, n_bins, bin_size)
    t_max = counts.shape[1]
    mask = np.arange(t_max)[None, :] < n_bins[:, None]
    names = list(session.behavior) if behavior is None else list(behavior)
    binned_behavior = {}
    for name in names:
        if name not in session.behavior:
            raise DataError(f"session {session.id!r} has no behavior {name!r} (has: {sorted(session.behavior)})")
        values = bin_behavior(session.behavior[name], starts + lag, t_max, bin_size)
        values[~mask] = np.nan
        binned_behavior[name] = values.astype(np.float32)
    return BinnedTrials(counts.astype(np.float32), mask, starts, index, trials.split[index], trials.condition[index],
                        bin_size, binned_behavior)
