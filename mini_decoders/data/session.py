"""The Session record: one recording, many views.

A :class:`Session` keeps spikes as they were recorded — a sorted array of spike times and the
index of the unit that fired each one — plus the unit table, behaviour time series and trials.
Every model in the book takes a *view* of it: binned counts (NDT, MtM, VQ) or spike tokens
(POYO). Keeping the raw spikes as the single source means no view ever loses information
another one needs.

All times are in seconds. Unit ids are strings that are unique across sessions
(``"<session>/<unit>"``), so that vocabularies of many sessions can be merged without clashes.

Data outside the recorded intervals is *refused*, naming the unit, trial or behaviour series,
not clipped: when a unit has ``obs_intervals`` (NWB files do), each of its spikes must lie in one
of them, every trial inside the span they cover, and every behaviour series must overlap that
span (``from_binned``: the span of the bins). Such data almost always means a mistake upstream
(milliseconds read as seconds, the wrong file, intervals written for another session); clipping
would hide it and silently change counts and trial lengths, and a trial past the end would be
filled with silence that looks like data. A tolerance of ``TIME_TOLERANCE_S`` (1 ms, one sample
at 1 kHz) absorbs rounding at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mini_decoders.errors import DataError

SPLITS = ("train", "val", "test", "none")
TIME_TOLERANCE_S = 1e-3  # how far data may stick out of the recorded intervals (rounding at the edges)
MAX_RATE_HZ = 5000.0  # from_binned refuses faster counts: no neuron (nor a threshold crossing) fires that fast
MAX_SPIKES = 10**9  # from_binned refuses more spikes in all: about 16 GB of spike times and units


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
        columns = {"region": self.region.shape, "heldout": self.heldout.shape}
        if self.obs_intervals is not None:
            columns["obs_intervals"] = (len(self.obs_intervals),)
        for name, shape in columns.items():
            if shape != (n,):
                found = f"{shape[0]} entries" if len(shape) == 1 else f"shape {shape}"
                raise DataError(f"units.{name} has {found} but there are {n} unit ids; give one per unit")

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


def _number(value) -> str:
    """A number as a person writes it: whole numbers in full, others to 6 significant digits."""
    value = float(value)
    return str(int(value)) if np.isfinite(value) and value == int(value) else f"{value:.6g}"


def empty_trials() -> Trials:
    return Trials(np.zeros(0), np.zeros(0))


def check_inside(trials: Trials, behavior: dict[str, TimeSeries], first: float, last: float, where: str,
                 recorded: str) -> None:
    """Raise DataError naming the first trial outside ``[first, last]`` or behaviour series wholly outside it."""
    tol = TIME_TOLERANCE_S
    for bad, edge in ((np.flatnonzero(trials.start < first - tol), "starts before"),
                      (np.flatnonzero(trials.stop > last + tol), "ends after")):
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where}: trial {i} ({trials.start[i]:.6g}-{trials.stop[i]:.6g} s) {edge} {recorded}; "
                            f"{len(bad)} trial(s) do: are the trial times in seconds, and from this recording?")
    for name, series in behavior.items():
        t = series.timestamps
        if len(t) and (t.max() < first - tol or t.min() > last + tol):
            raise DataError(f"{where}: behavior {name!r} ({t.min():.6g}-{t.max():.6g} s) lies outside {recorded}; "
                            "are its timestamps in seconds, and from this recording?")


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
        if self.units.obs_intervals is not None and len(self.units):
            self._check_observed(where)
        return self

    def _check_observed(self, where: str) -> None:
        """Spikes inside their unit's obs_intervals; trials and behaviour inside the span they cover."""
        intervals = [np.asarray(i, dtype=np.float64).reshape(-1, 2) for i in self.units.obs_intervals]
        owner = np.concatenate([np.full(len(i), u) for u, i in enumerate(intervals)]).astype(np.int64)
        bounds = np.concatenate(intervals) if len(owner) else np.zeros((0, 2))
        if not np.isfinite(bounds).all():
            raise DataError(f"{where}: units.obs_intervals contains NaN or inf")
        if len(self.spike_times):
            # One searchsorted for all units: shift each unit's times by its own offset so units never
            # overlap, then a spike is covered when the latest interval starting before it reaches it.
            shift = float(max(np.abs(bounds).max(initial=0.0), np.abs(self.spike_times).max())) * 2 + 1.0
            starts, stops = bounds[:, 0] + owner * shift, bounds[:, 1] + owner * shift
            order = np.argsort(starts, kind="stable")
            starts, reach = starts[order], np.maximum.accumulate(stops[order]) if len(order) else stops
            times = self.spike_times + self.spike_units * shift
            latest = np.searchsorted(starts - TIME_TOLERANCE_S, times, side="right") - 1
            covered = (latest >= 0) & (reach[np.maximum(latest, 0)] + TIME_TOLERANCE_S >= times)
            if not covered.all():
                spike = int(np.flatnonzero(~covered)[0])
                unit = int(self.spike_units[spike])
                spans = ", ".join(f"{a:.6g}-{b:.6g} s" for a, b in intervals[unit][:5]) or "none"
                raise DataError(f"{where}: unit {str(self.units.ids[unit])!r} has a spike at "
                                f"{self.spike_times[spike]:.6g} s, outside its observation intervals ({spans}); "
                                f"{int((~covered).sum())} spike(s) lie outside their unit's obs_intervals")
        if not len(bounds):
            return
        first, last = float(bounds[:, 0].min()), float(bounds[:, 1].max())
        recorded = f"the recorded intervals (units observed {first:.6g}-{last:.6g} s)"
        check_inside(self.trials, self.behavior, first, last, where, recorded)

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
            counts: (T, U) non-negative integer spike counts, one row per contiguous bin (at most
                ``MAX_RATE_HZ * bin_size`` per bin and ``MAX_SPIKES`` in all).
            bin_size: bin width (s).
            behavior: name -> (T, D) array sampled at the bin centres, or a :class:`TimeSeries`.
            trials: a :class:`Trials` table, or None; every trial must lie within the bins.
            t_start: time of the first bin's left edge (s).

        Raises:
            DataError: naming the field: counts that are not counts, unit columns (``heldout``,
                ``region``, ``unit_names``) of another length, trials or behaviour outside the bins.
        """
        counts = np.asarray(counts)
        if counts.ndim != 2:
            raise DataError(f"from_binned: counts must be 2-D (T bins, U units), got shape {counts.shape}")
        if counts.dtype.kind not in "biuf":
            raise DataError(f"from_binned: counts must be numbers, got dtype {counts.dtype}")
        if not isinstance(bin_size, (int, float, np.number)) or not np.isfinite(bin_size) or bin_size <= 0:
            raise DataError(f"from_binned: bin_size must be a number of seconds > 0, got {bin_size!r}")
        if counts.dtype.kind == "f":  # counts computed in floating point may be off by rounding
            bad = ~np.isfinite(counts) | (counts < 0) | (np.abs(counts - np.round(counts)) > 1e-6)
        else:
            bad = counts < 0
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise DataError(f"from_binned: counts must be finite non-negative integers; counts[{row}, {column}] is "
                            f"{_number(counts[row, column])} ({int(bad.sum())} entries are not)")
        # Bounded before anything is allocated per spike: a wrong scale (rates, not counts; bin_size
        # in ms) must be an error, not an attempt to place 10^9 spikes.
        limit = max(1.0, MAX_RATE_HZ * bin_size)
        if counts.size and counts.max() > limit:
            row, column = np.unravel_index(int(np.argmax(counts)), counts.shape)
            value = counts[row, column]
            raise DataError(f"from_binned: counts[{row}, {column}] is {_number(value)} spikes in one {bin_size} s bin "
                            f"({value / bin_size:.3g} Hz); no neuron fires faster than {MAX_RATE_HZ:g} Hz: are these "
                            "spike counts (not rates), and is bin_size in seconds?")
        total = float(counts.sum(dtype=np.float64))
        if total > MAX_SPIKES:
            raise DataError(f"from_binned: counts hold {total:.3g} spikes, more than {MAX_SPIKES:.0e}; "
                            "split the recording into several sessions")
        counts = np.round(counts).astype(np.int64)
        for name, values in (("heldout", heldout), ("region", region), ("unit_names", unit_names)):
            if values is not None and len(values) != counts.shape[1]:
                raise DataError(f"from_binned: {name} has {len(values)} entries, expected one per unit "
                                f"(counts has {counts.shape[1]} columns)")
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
        trials = trials if trials is not None else empty_trials()
        t_stop = t_start + n_bins * bin_size
        check_inside(trials, series, t_start, t_stop, "from_binned",
                     f"the binned data ({t_start:.6g}-{t_stop:.6g} s: {n_bins} bins of {bin_size} s)")
        names = [str(i) for i in range(n_units)] if unit_names is None else list(unit_names)
        table = Units(ids=[f"{id}/{n}" for n in names], region=region, heldout=heldout)
        return cls(id=id, spike_times=times[order], spike_units=units[order], units=table, behavior=series,
                   trials=trials, subject=subject, task=task, source="from_binned")

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
