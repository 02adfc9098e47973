"""Fixed-length windows over a Session, and time-based splits for data without trials.

Spike-token models (POYO) and most self-supervised recipes train on short windows of equal
length (1 s is typical) instead of whole trials: equal lengths make batches cheap, and a window
can be cut from anywhere in a recording, with or without a trial structure. A :class:`Windows`
table only says *where* the windows are (start times, one length, split, trial); the views
(spike tokens in :mod:`mini_decoders.data.batching`, counts in :mod:`mini_decoders.data.binning`)
are cut from it.

Windows inherit the train/val/test split of the trial they lie in, so a model never trains on
a window that overlaps a test trial by construction. For continuous recordings without trials,
:func:`split_by_time` makes a trial table of contiguous train/val/test blocks first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mini_decoders.data.session import SPLITS, Session, Trials
from mini_decoders.errors import DataError

# Times computed as start + k * step carry float error (0.1 * 3 != 0.3); a window that fits
# up to this many seconds is still counted as fitting.
_FIT_TOLERANCE_S = 1e-9


@dataclass
class Windows:
    """Equal-length windows cut from one session.

    Attributes:
        starts: (N,) float64 start time of each window (s).
        length: window length (s), the same for all windows.
        split: (N,) str, the split of the trial each window belongs to (``"none"`` outside trials).
        trial_index: (N,) int64 row in the session's trial table, -1 when not inside a trial.
        valid_length: (N,) float64 seconds from each window's start that lie inside its trial
            (``length`` except for a trial shorter than ``length``; see :func:`make_windows`).
        session_id: the id of the session the windows were cut from (for messages).
    """

    starts: np.ndarray
    length: float
    split: np.ndarray
    trial_index: np.ndarray
    valid_length: np.ndarray | None = None
    session_id: str = ""

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.float64)
        self.length = float(self.length)
        self.split = np.asarray(self.split).astype(str)
        self.trial_index = np.asarray(self.trial_index, dtype=np.int64)
        if self.valid_length is None:
            self.valid_length = np.full(len(self.starts), self.length)
        self.valid_length = np.asarray(self.valid_length, dtype=np.float64)
        n = len(self.starts)
        if not (self.split.shape == self.trial_index.shape == self.valid_length.shape == (n,)):
            raise DataError(f"Windows of session {self.session_id!r}: starts {self.starts.shape}, split "
                            f"{self.split.shape}, trial_index {self.trial_index.shape} and valid_length "
                            f"{self.valid_length.shape} must all be (N,)")

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def stops(self) -> np.ndarray:
        """(N,) end time of each window (s), exclusive."""
        return self.starts + self.length

    def index(self, split: str | tuple[str, ...] | None = None) -> np.ndarray:
        """Positions of the windows in ``split`` (a name, a tuple of names, or None for all)."""
        if split is None:
            return np.arange(len(self))
        return np.flatnonzero(np.isin(self.split, _split_names(split)))

    def subset(self, index: np.ndarray) -> "Windows":
        """The windows at positions ``index``."""
        index = np.asarray(index)
        return Windows(self.starts[index], self.length, self.split[index], self.trial_index[index],
                       self.valid_length[index], self.session_id)


def _split_names(split: str | tuple[str, ...]) -> tuple[str, ...]:
    names = (split,) if isinstance(split, str) else tuple(split)
    for name in names:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}: expected one of {SPLITS}")
    return names


def _check_positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"make_windows: {name} must be a positive number of seconds, got {value}")


def make_windows(session: Session, length: float = 1.0, step: float | None = None,
                 split: str | tuple[str, ...] | None = None, source: str = "trials") -> Windows:
    """Sliding windows of ``length`` seconds every ``step`` seconds.

    ``source="trials"``: windows are laid inside each trial, starting at the trial's start.
    Every moment of a trial is in at least one window: when the regular grid stops short of the
    trial's end, one more window *ending at the trial's stop* is added (it overlaps the one before
    it; at evaluation the overlap is stitched like any other). A trial shorter than ``length``
    gives exactly one window starting at the trial start; that window still lasts ``length`` and
    so runs past the trial's stop into whatever was recorded next (inter-trial time). Its
    ``valid_length`` is the trial's duration, so a model or metric can mask the part outside the
    trial.

    ``source="session"``: windows tile the whole span ``session.start_time .. stop_time`` (the
    last partial window is dropped). Each window takes the split and index of the trial it
    overlaps most (earliest trial on ties); ``"none"`` and -1 when it overlaps no trial.

    Args:
        session: the session.
        length: window length (s).
        step: distance between window starts (s); defaults to ``length`` (no overlap). A step
            below ``length`` gives overlapping windows, used to stitch predictions at evaluation.
        split: keep only trials (``"trials"``) or windows (``"session"``) in this split or tuple
            of splits; None keeps all.
        source: ``"trials"`` or ``"session"``.

    Returns:
        :class:`Windows`, ordered by trial then time (``"trials"``) or by time (``"session"``).
    """
    step = length if step is None else step
    _check_positive("length", length)
    _check_positive("step", step)
    where = f"session {session.id!r}" + (f" ({session.source})" if session.source else "")
    if source == "trials":
        windows = _windows_in_trials(session, length, step, split, where)
    elif source == "session":
        windows = _windows_over_session(session, length, step)
        if split is not None:
            windows = windows.subset(windows.index(split))
    else:
        raise DataError(f"make_windows: source must be 'trials' or 'session', got {source!r}")
    if len(windows) == 0:
        raise DataError(f"make_windows: no window of {length} s fits in {where}"
                        + (f" with split {split!r}" if split is not None else "")
                        + f" (span {session.stop_time - session.start_time:.6g} s, {len(session.trials)} trials)")
    return windows


def _windows_in_trials(session: Session, length: float, step: float, split, where: str) -> Windows:
    trials = session.trials
    if len(trials) == 0:
        raise DataError(f"make_windows: {where} has no trials table; use source='session', or give it "
                        "contiguous train/val/test blocks with split_by_time(session)")
    trial_index = trials.index(split)
    trial_start, trial_stop = trials.start[trial_index], trials.stop[trial_index]
    duration = trial_stop - trial_start
    # Regular windows per trial: starts at 0, step, 2*step, ... while start + length <= duration.
    n_regular = np.maximum(np.floor((duration - length) / step + _FIT_TOLERANCE_S / step).astype(np.int64) + 1, 1)
    last_stop = trial_start + (n_regular - 1) * step + length
    # One extra window flush with the trial's end when the grid leaves part of the trial uncovered.
    needs_tail = (last_stop < trial_stop - _FIT_TOLERANCE_S) & (duration >= length)
    n_windows = n_regular + needs_tail
    owner = np.repeat(np.arange(len(trial_index)), n_windows)  # position in trial_index per window
    first_window = np.cumsum(n_windows) - n_windows
    rank = np.arange(n_windows.sum()) - first_window[owner]  # k-th window within its trial
    starts = trial_start[owner] + rank * step
    is_tail = needs_tail[owner] & (rank == n_windows[owner] - 1)
    starts[is_tail] = trial_stop[owner][is_tail] - length
    valid_length = np.minimum(length, trial_stop[owner] - starts)
    return Windows(starts, length, trials.split[trial_index][owner], trial_index[owner], valid_length, session.id)


def _windows_over_session(session: Session, length: float, step: float) -> Windows:
    t0, t1 = session.start_time, session.stop_time
    fits = t1 - t0 >= length - _FIT_TOLERANCE_S
    n = int(np.floor((t1 - t0 - length) / step + _FIT_TOLERANCE_S / step)) + 1 if fits else 0
    starts = t0 + np.arange(n) * step
    trial_index = _most_overlapping_trial(session.trials, starts, starts + length)
    split = np.full(n, "none", dtype=object)
    inside = trial_index >= 0
    split[inside] = session.trials.split[trial_index[inside]]
    return Windows(starts, length, split, trial_index, None, session.id)


def _most_overlapping_trial(trials: Trials, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """(N,) index of the trial overlapping each interval the most; -1 when none overlaps.

    Vectorised over (interval, candidate trial) pairs: with trials sorted by start, the
    candidates of an interval are a contiguous run, found with two searchsorted calls.
    """
    result = np.full(len(starts), -1, dtype=np.int64)
    if len(trials) == 0 or len(starts) == 0:
        return result
    order = np.argsort(trials.start, kind="stable")
    trial_start, trial_stop = trials.start[order], trials.stop[order]
    # Trials before `first` all end before the interval starts (running max copes with nested trials).
    first = np.searchsorted(np.maximum.accumulate(trial_stop), starts, side="right")
    last = np.searchsorted(trial_start, stops, side="left")  # exclusive: trials starting before the stop
    n_candidates = np.maximum(last - first, 0)
    interval = np.repeat(np.arange(len(starts)), n_candidates)
    run_start = np.cumsum(n_candidates) - n_candidates
    candidate = first[interval] + np.arange(n_candidates.sum()) - run_start[interval]
    overlap = np.minimum(stops[interval], trial_stop[candidate]) - np.maximum(starts[interval], trial_start[candidate])
    # Best pair per interval: sort by (interval, -overlap, trial position) and keep the first of each.
    best = np.lexsort((candidate, -overlap, interval))
    is_first = np.r_[True, interval[best][1:] != interval[best][:-1]]
    best = best[is_first]
    positive = overlap[best] > 0
    result[interval[best][positive]] = order[candidate[best][positive]]
    return result


def split_by_time(session: Session, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), n_blocks: int = 1,
                  gap: float = 0.0, start: float | None = None, stop: float | None = None) -> Trials:
    """Contiguous train/val/test blocks for a recording without trials.

    The span ``start..stop`` (default: the session's) is cut into ``n_blocks`` equal chunks; each
    chunk is divided, in time order, into a train, a val and a test block of the given fractions.
    Contiguous blocks (rather than randomly assigned windows) keep neighbouring, correlated
    moments on the same side of the split; several chunks spread slow drifts (electrode
    movement, fatigue) across all three splits. ``gap`` seconds are left out before each val and
    test block so that a window straddling a boundary cannot leak across it.

    Use the result as the session's trial table, e.g.
    ``dataclasses.replace(session, trials=split_by_time(session))``, then
    ``make_windows(..., source="trials")``.

    Args:
        session: the session (only its span and id are used).
        fractions: (train, val, test), non-negative, summing to 1. A zero fraction gives no block.
        n_blocks: number of train/val/test chunks.
        gap: seconds left unassigned before each val and test block.
        start, stop: the span to split (s).

    Returns:
        :class:`Trials` with one row per block in time order, ``split`` set and
        ``condition = ""``; ``extra["block"]`` holds the chunk number.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or not np.all(np.isfinite(fractions)) or (fractions < 0).any() \
            or abs(fractions.sum() - 1) > 1e-6:
        raise DataError(f"split_by_time: fractions must be three non-negative numbers (train, val, test) "
                        f"summing to 1, got {fractions.tolist()}")
    if n_blocks < 1 or int(n_blocks) != n_blocks:
        raise DataError(f"split_by_time: n_blocks must be a positive integer, got {n_blocks}")
    if not np.isfinite(gap) or gap < 0:
        raise DataError(f"split_by_time: gap must be >= 0 s, got {gap}")
    start = session.start_time if start is None else float(start)
    stop = session.stop_time if stop is None else float(stop)
    chunk = (stop - start) / n_blocks
    # Each chunk spends its gaps first, so a split's share of the *usable* time is its fraction.
    n_gaps = int((fractions[1:] > 0).sum())
    usable = chunk - n_gaps * gap
    if usable <= 0:
        raise DataError(f"split_by_time: session {session.id!r} span {stop - start:.6g} s in {n_blocks} block(s) "
                        f"leaves {chunk:.6g} s per block, not enough for {n_gaps} gap(s) of {gap} s")
    sizes = fractions * usable  # (3,) seconds of train, val, test per chunk
    gaps = np.array([0.0, gap, gap]) * (fractions > 0)
    offsets = np.cumsum(gaps + sizes) - sizes  # start of each block within its chunk
    keep = np.flatnonzero(fractions > 0)
    chunk_start = start + np.arange(n_blocks) * chunk  # (n_blocks,)
    block_start = (chunk_start[:, None] + offsets[keep][None, :]).ravel()
    block_stop = block_start + np.tile(sizes[keep], n_blocks)
    names = np.array(["train", "val", "test"])[keep]
    return Trials(block_start, block_stop, np.tile(names, n_blocks),
                  extra={"block": np.repeat(np.arange(n_blocks), len(keep))})
