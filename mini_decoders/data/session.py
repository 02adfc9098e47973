"""The Session record: one recording, many views.

A :class:`Session` keeps spikes as they were recorded — a sorted array of spike times and the
index of the unit that fired each one — plus the unit table, behaviour time series and trials.
Every model in the book takes a *view* of it: binned counts (NDT, MtM, VQ) or spike tokens
(POYO). Keeping the raw spikes as the single source means no view ever loses information
another one needs.

All times are in seconds. Unit ids are strings that are unique across sessions
(``"<session>/<unit>"``), so that vocabularies of many sessions can be merged without clashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mini_decoders.errors import DataError

SPLITS = ("train", "val", "test", "none")


@dataclass
class TimeSeries:
    """A regularly or irregularly sampled signal, e.g. hand velocity.

    Args:
        timestamps: (T,) float seconds, increasing.
        values: (T, D) float; ``D`` channels (e.g. x and y velocity).
        unit: physical unit of ``values`` (free text, e.g. ``"mm/s"``).
    """

    timestamps: np.ndarray
    values: np.ndarray
    unit: str = ""

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        self.values = values

    @property
    def sampling_interval(self) -> float:
        """Median spacing of the timestamps (s)."""
        return float(np.median(np.diff(self.timestamps))) if len(self.timestamps) > 1 else np.nan

    def at(self, times: np.ndarray) -> np.ndarray:
        """Values linearly interpolated at ``times`` (N,) -> (N, D); NaN outside the range."""
        times = np.asarray(times, dtype=np.float64)
        out = np.empty((len(times), self.values.shape[1]))
        for d in range(self.values.shape[1]):  # loop over channels (2-3), not samples
            out[:, d] = np.interp(times, self.timestamps, self.values[:, d], left=np.nan, right=np.nan)
        return out


@dataclass
class Units:
    """The unit (neuron) table.

    Args:
        ids: (U,) str, unique across sessions, e.g. ``"sessionA/17"``.
        region: (U,) str brain region of each unit (``""`` when unknown).
        heldout: (U,) bool; held-out units are hidden from the model's input and predicted
            from the held-in ones (NLB co-smoothing).
        obs_intervals: optional list of U arrays of shape (K, 2): when each unit was observed.
    """

    ids: np.ndarray
    region: np.ndarray | None = None
    heldout: np.ndarray | None = None
    obs_intervals: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=str)
        n = len(self.ids)
        self.region = np.full(n, "", dtype=object) if self.region is None else np.asarray(self.region, dtype=object)
        self.region = self.region.astype(str)
        self.heldout = np.zeros(n, dtype=bool) if self.heldout is None else np.asarray(self.heldout, dtype=bool)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def heldin_index(self) -> np.ndarray:
        """(U_in,) int indices of held-in units, in table order."""
        return np.flatnonzero(~self.heldout)

    @property
    def heldout_index(self) -> np.ndarray:
        """(U_out,) int indices of held-out units, in table order."""
        return np.flatnonzero(self.heldout)

    @property
    def regions(self) -> list[str]:
        """Distinct regions in order of first appearance."""
        return list(dict.fromkeys(self.region.tolist()))


@dataclass
class Trials:
    """The trial table.

    Args:
        start, stop: (N,) float seconds.
        split: (N,) str, each one of ``"train" | "val" | "test" | "none"``.
        condition: (N,) str condition label (e.g. reach target); ``""`` when unknown.
        extra: further per-trial columns (name -> (N, ...) array), e.g. ``move_onset_time``.
    """

    start: np.ndarray
    stop: np.ndarray
    split: np.ndarray | None = None
    condition: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64)
        self.stop = np.asarray(self.stop, dtype=np.float64)
        n = len(self.start)
        self.split = np.full(n, "train") if self.split is None else np.asarray(self.split).astype(str)
        self.condition = np.full(n, "") if self.condition is None else np.asarray(self.condition).astype(str)
        self.extra = {k: np.asarray(v) for k, v in self.extra.items()}

    def __len__(self) -> int:
        return len(self.start)

    @property
    def duration(self) -> np.ndarray:
        """(N,) float seconds."""
        return self.stop - self.start

    def index(self, split: str | tuple[str, ...] | None = None) -> np.ndarray:
        """Indices of the trials in ``split`` (a name, a tuple of names, or None for all)."""
        if split is None:
            return np.arange(len(self))
        names = (split,) if isinstance(split, str) else tuple(split)
        for name in names:
            if name not in SPLITS:
                raise DataError(f"unknown split {name!r}: expected one of {SPLITS}")
        return np.flatnonzero(np.isin(self.split, names))

    def subset(self, index: np.ndarray) -> "Trials":
        """A new table with the rows in ``index``."""
        return Trials(self.start[index], self.stop[index], self.split[index], self.condition[index],
                      {k: v[index] for k, v in self.extra.items()})


def empty_trials() -> Trials:
    return Trials(np.zeros(0), np.zeros(0))


@dataclass
class Session:
    """One recording session.

    Args:
        id: the session identifier (the NWB ``identifier``), unique across a dataset.
        spike_times: (S,) float64 seconds, sorted ascending.
        spike_units: (S,) int64 index into ``units`` of the unit that fired each spike.
        units: the unit table (U rows).
        behavior: name -> :class:`TimeSeries` (e.g. ``"hand_vel"``); may be empty.
        trials: the trial table; may be empty.
        subject, task: free-text context labels (NDT2 and MtM use them as context tokens).
        source: where the session came from (a file path or a description), used in messages.
    """

    id: str
    spike_times: np.ndarray
    spike_units: np.ndarray
    units: Units
    behavior: dict[str, TimeSeries] = field(default_factory=dict)
    trials: Trials = field(default_factory=empty_trials)
    subject: str = ""
    task: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        self.spike_times = np.asarray(self.spike_times, dtype=np.float64)
        self.spike_units = np.asarray(self.spike_units, dtype=np.int64)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Session":
        """Raise :class:`DataError` naming the field when the record is inconsistent."""
        where = f"session {self.id!r}" + (f" ({self.source})" if self.source else "")
        t, u = self.spike_times, self.spike_units
        if t.ndim != 1 or u.shape != t.shape:
            raise DataError(f"{where}: spike_times {t.shape} and spike_units {u.shape} must be 1-D and equal length")
        if len(t):
            if not np.all(np.isfinite(t)):
                raise DataError(f"{where}: spike_times contains NaN or inf")
            if t[0] < 0:
                raise DataError(f"{where}: spike_times must be >= 0 s, found {t.min():.6g}")
            if np.any(np.diff(t) < 0):
                bad = int(np.flatnonzero(np.diff(t) < 0)[0])
                raise DataError(f"{where}: spike_times must be sorted ascending; spike {bad + 1} "
                                f"({t[bad + 1]:.6g} s) comes before spike {bad} ({t[bad]:.6g} s). "
                                "Use Session.from_spike_lists(...) to build from unsorted per-unit lists")
            if u.min() < 0 or u.max() >= len(self.units):
                raise DataError(f"{where}: spike_units has index {int(u.min() if u.min() < 0 else u.max())} "
                                f"but the units table has {len(self.units)} rows (valid 0..{len(self.units) - 1})")
        if len(np.unique(self.units.ids)) != len(self.units):
            raise DataError(f"{where}: unit ids must be unique")
        for name, series in self.behavior.items():
            if series.values.shape[0] != series.timestamps.shape[0]:
                raise DataError(f"{where}: behavior {name!r} has {series.timestamps.shape[0]} timestamps "
                                f"but {series.values.shape[0]} rows of values")
            if not np.all(np.isfinite(series.timestamps)):
                raise DataError(f"{where}: behavior {name!r} timestamps contain NaN or inf")
            if np.isinf(series.values).any():
                raise DataError(f"{where}: behavior {name!r} contains inf values")
        tr = self.trials
        if len(tr):
            if np.any(tr.stop <= tr.start):
                bad = int(np.flatnonzero(tr.stop <= tr.start)[0])
                raise DataError(f"{where}: trial {bad} has stop_time {tr.stop[bad]:.6g} <= start_time {tr.start[bad]:.6g}")
            bad_split = sorted(set(tr.split.tolist()) - set(SPLITS))
            if bad_split:
                raise DataError(f"{where}: trials.split has {bad_split}; expected values in {SPLITS}")
        return self

    # ------------------------------------------------------------------ basic facts
    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def n_spikes(self) -> int:
        return len(self.spike_times)

    @property
    def start_time(self) -> float:
        """Earliest of first spike, first trial start and first behaviour sample (s)."""
        candidates = [self.spike_times[:1], self.trials.start[:1]] + [b.timestamps[:1] for b in self.behavior.values()]
        values = np.concatenate(candidates)
        return float(values.min()) if len(values) else 0.0

    @property
    def stop_time(self) -> float:
        """Latest of last spike, last trial stop and last behaviour sample (s)."""
        candidates = [self.spike_times[-1:], self.trials.stop] + [b.timestamps[-1:] for b in self.behavior.values()]
        values = np.concatenate(candidates)
        return float(values.max()) if len(values) else 0.0

    def spikes_of(self, unit: int) -> np.ndarray:
        """Spike times (s) of one unit."""
        return self.spike_times[self.spike_units == unit]

    def mean_rates(self) -> np.ndarray:
        """(U,) mean firing rate of each unit over the session span (Hz)."""
        span = max(self.stop_time - self.start_time, 1e-9)
        return np.bincount(self.spike_units, minlength=self.n_units) / span

    def __repr__(self) -> str:
        return (f"Session({self.id!r}, units={self.n_units} ({int(self.units.heldout.sum())} held out), "
                f"spikes={self.n_spikes}, trials={len(self.trials)}, behavior={list(self.behavior)}, "
                f"regions={self.units.regions}, span={self.start_time:.1f}-{self.stop_time:.1f} s)")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_spike_lists(cls, id: str, spike_lists: list[np.ndarray], unit_names: list[str] | None = None,
                         **kwargs) -> "Session":
        """Build from one array of spike times per unit (any order within a unit).

        Args:
            id: session id.
            spike_lists: U arrays of spike times (s).
            unit_names: local unit names; the global ids become ``"<id>/<name>"``.
            **kwargs: ``region``, ``heldout`` (per unit) and any :class:`Session` field.
        """
        names = [str(i) for i in range(len(spike_lists))] if unit_names is None else list(unit_names)
        times = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in spike_lists]) if spike_lists else np.zeros(0)
        units = np.concatenate([np.full(len(np.ravel(s)), i, dtype=np.int64) for i, s in enumerate(spike_lists)]) if spike_lists else np.zeros(0, np.int64)
        order = np.argsort(times, kind="stable")
        table = Units(ids=[f"{id}/{n}" for n in names], region=kwargs.pop("region", None),
                      heldout=kwargs.pop("heldout", None), obs_intervals=kwargs.pop("obs_intervals", None))
        return cls(id=id, spike_times=times[order], spike_units=units[order], units=table, **kwargs)

    @classmethod
    def from_binned(cls, counts: np.ndarray, bin_size: float, *, id: str = "binned", behavior=None, trials=None,
                    t_start: float = 0.0, unit_names: list[str] | None = None, region=None, heldout=None,
                    subject: str = "", task: str = "", seed: int = 0) -> "Session":
        """Build a Session from data that comes already binned.

        Spikes in each bin are placed evenly inside the bin (deterministic; ``seed`` is kept for
        API stability), so re-binning at ``bin_size`` or any multiple of it on the same grid gives
        back ``counts`` exactly.

        Args:
            counts: (T, U) non-negative integer spike counts, one row per contiguous bin.
            bin_size: bin width (s).
            behavior: name -> (T, D) array sampled at the bin centres, or a :class:`TimeSeries`.
            trials: a :class:`Trials` table, or None.
            t_start: time of the first bin's left edge (s).
        """
        counts = np.asarray(counts)
        if counts.ndim != 2:
            raise DataError(f"from_binned: counts must be 2-D (T bins, U units), got shape {counts.shape}")
        if bin_size <= 0:
            raise DataError(f"from_binned: bin_size must be > 0 s, got {bin_size}")
        if not np.all(np.isfinite(counts)) or (counts < 0).any() or not np.allclose(counts, np.round(counts)):
            raise DataError("from_binned: counts must be finite non-negative integers")
        counts = np.round(counts).astype(np.int64)
        n_bins, n_units = counts.shape
        flat = counts.ravel()  # (T*U,) bin-major
        cell = np.repeat(np.arange(flat.size), flat)  # one entry per spike
        rank = np.arange(cell.size) - np.repeat(np.cumsum(flat) - flat, flat)  # k-th spike within its cell
        bins, units = np.divmod(cell, n_units)
        offset = (rank + 0.5) / np.repeat(flat, flat)  # evenly spaced in (0, 1)
        times = t_start + (bins + offset) * bin_size
        order = np.argsort(times, kind="stable")
        series = {}
        centres = t_start + (np.arange(n_bins) + 0.5) * bin_size
        for name, value in (behavior or {}).items():
            series[name] = value if isinstance(value, TimeSeries) else TimeSeries(centres, np.asarray(value))
            if len(series[name].timestamps) != n_bins and not isinstance(value, TimeSeries):
                raise DataError(f"from_binned: behavior {name!r} has {len(value)} rows but counts has {n_bins} bins")
        names = [str(i) for i in range(n_units)] if unit_names is None else list(unit_names)
        table = Units(ids=[f"{id}/{n}" for n in names], region=region, heldout=heldout)
        return cls(id=id, spike_times=times[order], spike_units=units[order], units=table, behavior=series,
                   trials=trials if trials is not None else empty_trials(), subject=subject, task=task,
                   source="from_binned")

    # ------------------------------------------------------------------ derived sessions
    def select_units(self, index: np.ndarray) -> "Session":
        """A new Session keeping only the units in ``index`` (re-indexed in that order)."""
        index = np.asarray(index, dtype=np.int64)
        remap = np.full(self.n_units, -1, dtype=np.int64)
        remap[index] = np.arange(len(index))
        keep = remap[self.spike_units] >= 0
        u = self.units
        units = Units(u.ids[index], u.region[index], u.heldout[index],
                      None if u.obs_intervals is None else [u.obs_intervals[i] for i in index])
        return Session(self.id, self.spike_times[keep], remap[self.spike_units[keep]], units, dict(self.behavior),
                       self.trials, self.subject, self.task, self.source)

    def select_trials(self, index: np.ndarray) -> "Session":
        """A new Session with the same spikes and only the trials in ``index``."""
        return Session(self.id, self.spike_times, self.spike_units, self.units, dict(self.behavior),
                       self.trials.subset(np.asarray(index)), self.subject, self.task, self.source)
