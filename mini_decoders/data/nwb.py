"""Read and write sessions as NWB files in the NLB/DANDI layout.

The Neural Latents Benchmark (NLB) files on DANDI are plain NWB with a few conventions, and we
write exactly those, so that our files and real NLB files are interchangeable:

- ``units``: one row per unit with ``spike_times`` (ragged, seconds), ``obs_intervals`` (ragged
  (K, 2): when the unit was recorded), ``heldout`` (bool). We add ``location`` (the brain region;
  NLB files keep it on the electrode instead) and ``unit_name`` (the local part of our unit id
  ``"<session>/<unit>"``, so ids round-trip).
- ``trials``: ``start_time``, ``stop_time``, ``split`` (train/val/test/none), plus ``condition``
  and every extra per-trial column.
- ``processing/behavior``: one TimeSeries per behaviour signal (``hand_vel``, ...), always with
  explicit timestamps so that times round-trip bit for bit.
- ``identifier`` is the session id, ``subject.subject_id`` the subject, and the task label is
  kept in ``session_description`` (NWB has no dedicated task field; NLB files put a one-line
  description of the task there too).

``nlb_tools.nwb_interface.NWBDataset`` bins everything on a 1 ms grid that runs from 0 to the end
of the last ``obs_intervals`` entry and drops any TimeSeries whose timestamps are off that grid; so
behaviour meant for NLB tools should be sampled at 1 kHz on whole milliseconds, and the default
observation interval ends one millisecond after the last event.

Reading accepts files written by other software too: region comes from ``units.location``,
else from the unit's electrode ``location``, else its electrode group's; behaviour may sit in
containers (BehavioralTimeSeries, Position) inside ``processing/behavior``. Parts that are missing
(trials, behaviour) are reported with a warning; a file without units cannot be decoded and is an
error.
"""

from __future__ import annotations

import datetime
import os
import warnings
from pathlib import Path

import numpy as np

from mini_decoders.data.session import SPLITS, Session, TimeSeries, Trials, Units, empty_trials
from mini_decoders.errors import DataError
from mini_decoders.files import replacing

# Trial columns that NWB or this layout already gives a meaning to: an extra column may not reuse them.
_RESERVED_TRIAL_COLUMNS = ("start_time", "stop_time", "split", "condition", "tags", "timeseries", "id")
_BEHAVIOR_MODULE_NAMES = ("behavior", "behaviour")
# NWB requires a session start; our sessions have none, so a fixed one keeps files reproducible.
_DEFAULT_START = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


# --------------------------------------------------------------------------------------- writing
def write_nwb(session: Session, path: str | os.PathLike) -> Path:
    """Write ``session`` to ``path`` as an NWB file in the NLB/DANDI layout (atomically).

    Args:
        session: the record to write; it must have at least one unit.
        path: destination ``.nwb`` file; its folder is created if needed.

    Unit ids ``"<session.id>/<name>"`` are stored as ``unit_name = name``; an id without that prefix is
    stored whole (and reads back as ``"<session.id>/<id>"``). Without ``units.obs_intervals`` every
    unit gets one interval covering the session. A session without trials writes no trials table
    (``NWBDataset`` then cannot open the file: it requires one).

    Returns:
        The path written.
    """
    # pynwb and hdmf take seconds to import: only the functions that read or write NWB load them
    from hdmf.common import VectorData, VectorIndex
    from pynwb import NWBHDF5IO, NWBFile, ProcessingModule
    from pynwb import TimeSeries as NWBTimeSeries
    from pynwb.epoch import TimeIntervals
    from pynwb.file import Subject
    from pynwb.misc import Units as NWBUnits

    path = Path(path)
    session.validate()
    if session.n_units == 0:
        raise DataError(f"write_nwb({path}): session {session.id!r} has no units; an NWB file for decoding needs a units table")
    nwbfile = NWBFile(session_description=session.task, identifier=session.id, session_start_time=_DEFAULT_START,
                      subject=Subject(subject_id=session.subject) if session.subject else None)

    # Units: one ragged column per unit, built in one go from the spikes grouped by unit.
    units = session.units
    by_unit = np.argsort(session.spike_units, kind="stable")  # keeps each unit's spikes time-sorted
    spike_ends = np.cumsum(np.bincount(session.spike_units, minlength=session.n_units))
    intervals = units.obs_intervals if units.obs_intervals is not None else _default_obs_intervals(session)
    intervals = [np.asarray(i, dtype=np.float64).reshape(-1, 2) for i in intervals]
    if len(intervals) != session.n_units:
        raise DataError(f"write_nwb({path}): units.obs_intervals has {len(intervals)} entries, expected one per unit ({session.n_units})")
    spike_times = VectorData(name="spike_times", description="spike times of each unit (s)",
                             data=session.spike_times[by_unit])
    obs_intervals = VectorData(name="obs_intervals", description="intervals (s) during which each unit was observed",
                               data=np.concatenate(intervals) if intervals else np.zeros((0, 2)))
    columns = [
        spike_times,
        VectorIndex(name="spike_times_index", data=spike_ends, target=spike_times),
        obs_intervals,
        VectorIndex(name="obs_intervals_index", data=np.cumsum([len(i) for i in intervals]), target=obs_intervals),
        VectorData(name="heldout", description="True for held-out units (predicted, not given as input)",
                   data=units.heldout.astype(bool)),
        VectorData(name="location", description="brain region of the unit", data=units.region.astype(str)),
        VectorData(name="unit_name", description="local unit name; the global unit id is '<identifier>/<unit_name>'",
                   data=np.array([_local_name(uid, session.id) for uid in units.ids], dtype=str)),
    ]
    nwbfile.units = NWBUnits(name="units", description="sorted units", id=np.arange(session.n_units), columns=columns)

    if len(session.trials):
        nwbfile.trials = TimeIntervals(name="trials", description="experimental trials", id=np.arange(len(session.trials)),
                                       columns=_trial_columns(session.trials, path, VectorData, VectorIndex))

    if session.behavior:
        module = ProcessingModule(name="behavior", description="behavioural signals")
        for name, series in session.behavior.items():
            module.add(NWBTimeSeries(name=name, data=series.values, timestamps=series.timestamps,
                                     unit=series.unit, description=f"{name} ({series.values.shape[1]} channels)"))
        nwbfile.add_processing_module(module)

    # Write next to the destination, then rename: a crash never leaves a half-written .nwb behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, suffix=".partial.nwb") as temp, NWBHDF5IO(str(temp), "w") as io:
        io.write(nwbfile)
    return path


def _default_obs_intervals(session: Session) -> list[np.ndarray]:
    """One (1, 2) interval per unit covering the session on whole milliseconds.

    The end is one millisecond past the last event because NWBDataset's 1 ms grid stops *before*
    the end of the observation interval; an event at the very end would otherwise fall off it.
    """
    start = np.floor(session.start_time * 1000) / 1000
    stop = (np.floor(session.stop_time * 1000) + 1) / 1000
    return [np.array([[start, stop]]) for _ in range(session.n_units)]


def _local_name(unit_id: str, session_id: str) -> str:
    prefix = f"{session_id}/"
    return unit_id[len(prefix):] if unit_id.startswith(prefix) else unit_id


def _trial_columns(trials: Trials, path: Path, VectorData, VectorIndex) -> list:
    """The trials table as hdmf columns: fixed ones first, then every extra column."""
    columns = [
        VectorData(name="start_time", description="trial start (s)", data=trials.start),
        VectorData(name="stop_time", description="trial stop (s)", data=trials.stop),
        VectorData(name="split", description=f"data split, one of {SPLITS}", data=trials.split.astype(str)),
        VectorData(name="condition", description="condition label", data=trials.condition.astype(str)),
    ]
    for name, values in trials.extra.items():
        if name in _RESERVED_TRIAL_COLUMNS:
            raise DataError(f"write_nwb({path}): trials.extra column {name!r} clashes with a reserved trials "
                            f"column name {_RESERVED_TRIAL_COLUMNS}; rename it")
        if len(values) != len(trials):
            raise DataError(f"write_nwb({path}): trials.extra[{name!r}] has {len(values)} rows, expected {len(trials)}")
        if values.dtype == object and any(np.ndim(v) > 0 for v in values):
            # Ragged column (one sequence per trial, e.g. barrier positions): flat data + end index.
            rows = [np.asarray(v) for v in values]
            flat = VectorData(name=name, description=f"{name} (ragged per trial)", data=np.concatenate(rows))
            columns += [flat, VectorIndex(name=f"{name}_index", data=np.cumsum([len(r) for r in rows]), target=flat)]
        else:
            data = values.astype(str) if values.dtype == object or values.dtype.kind == "U" else values
            columns.append(VectorData(name=name, description=name, data=data))
    return columns


# --------------------------------------------------------------------------------------- reading
def read_nwb(path: str | os.PathLike) -> Session:
    """Read a Session from an NWB file (ours, a DANDI NLB file, or any NWB with a units table).

    Unit ids become ``"<identifier>/<unit_name>"`` (``unit_name`` column, else the row id). Missing
    trials or behaviour give a ``UserWarning`` naming the file and what is missing.

    Raises:
        DataError: the file is missing or unreadable, has no units, or its spikes are invalid
            (negative, unsorted within a unit, NaN, outside the unit's ``obs_intervals``), a trial
            lies outside the recorded intervals, or its behaviour contains inf.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"read_nwb: expected the path of an .nwb file, got {path!r:.80}")
    session, missing = _load(Path(path))
    if missing:
        warnings.warn(f"{path}: {'; '.join(missing)}. Loaded what exists.", UserWarning, stacklevel=2)
    return session


def _load(path: Path) -> tuple[Session, list[str]]:
    """The Session in ``path`` and a list of human-readable notes on what the file lacks."""
    from pynwb import NWBHDF5IO  # slow to import: see write_nwb

    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an .nwb file")
    io = None
    try:
        io = NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    except Exception as exc:  # h5py/hdmf raise many types (OSError, KeyError, ...) for a bad file
        if io is not None:
            _close_quietly(io)
        raise DataError(f"{path}: not a readable NWB/HDF5 file (maybe a truncated or partial download?): "
                        f"{type(exc).__name__}: {exc}") from exc
    try:
        return _session_from_nwbfile(nwbfile, path)
    finally:
        _close_quietly(io)


def _close_quietly(io) -> None:
    try:
        io.close()
    except Exception:
        pass


def _session_from_nwbfile(nwbfile, path: Path) -> tuple[Session, list[str]]:
    missing = []
    if nwbfile.units is None:
        raise DataError(f"{path}: has no units table; a units table with spike_times is required for decoding")
    session_id = str(nwbfile.identifier)
    spike_times, spike_units, units = _read_units(nwbfile.units, path, session_id, nwbfile)
    if len(units) == 0:
        missing.append("the units table is empty (no spikes)")

    trials = _read_trials(nwbfile.trials, path) if nwbfile.trials is not None else empty_trials()
    if nwbfile.trials is None:
        others = [name for name in (nwbfile.intervals or {}) if name != "trials"]
        missing.append("no trials table" + (f" (other interval tables: {', '.join(others)})" if others else ""))

    behavior = _read_behavior(nwbfile, path)
    if not behavior:
        missing.append("no behaviour (no TimeSeries in processing/behavior)")

    subject = nwbfile.subject.subject_id if nwbfile.subject is not None and nwbfile.subject.subject_id else ""
    session = Session(id=session_id, spike_times=spike_times, spike_units=spike_units, units=units, behavior=behavior,
                      trials=trials, subject=str(subject), task=str(nwbfile.session_description or ""), source=str(path))
    return session, missing


def _read_units(table, path: Path, session_id: str, nwbfile) -> tuple[np.ndarray, np.ndarray, Units]:
    """(spike_times (S,) sorted, spike_units (S,), Units) from an NWB units table."""
    colnames = list(table.colnames)
    n_units = len(table.id)
    names = (_strings(table["unit_name"].data[:]) if "unit_name" in colnames
             else np.asarray(table.id.data[:]).astype(str))
    if "spike_times" not in colnames:
        raise DataError(f"{path}: units table has no spike_times column (columns: {colnames})")
    flat, ends = _ragged(table["spike_times"])
    flat = flat.astype(np.float64)
    counts = np.diff(ends, prepend=0)
    spike_units = np.repeat(np.arange(n_units), counts)
    _check_spikes(flat, spike_units, ends, names, path)

    heldout = np.asarray(table["heldout"].data[:], dtype=bool) if "heldout" in colnames else np.zeros(n_units, bool)
    obs_intervals = None
    if "obs_intervals" in colnames:
        interval_rows, interval_ends = _ragged(table["obs_intervals"])
        obs_intervals = np.split(interval_rows.astype(np.float64).reshape(-1, 2), interval_ends[:-1])
    units = Units(ids=[f"{session_id}/{name}" for name in names], region=_unit_regions(table, nwbfile),
                  heldout=heldout, obs_intervals=obs_intervals)
    order = np.argsort(flat, kind="stable")  # one global time order for all units
    return flat[order], spike_units[order], units


def _ragged(column) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, end index per row) of a ragged (indexed) hdmf column."""
    if not hasattr(column, "target"):  # a plain column: one value per row
        values = np.asarray(column.data[:])
        return values, np.arange(1, len(values) + 1)
    return np.asarray(column.target.data[:]), np.asarray(column.data[:], dtype=np.int64)


def _check_spikes(flat: np.ndarray, spike_units: np.ndarray, ends: np.ndarray, names: np.ndarray, path: Path) -> None:
    """Raise DataError naming the file and unit for non-finite, negative or unsorted spike times."""
    def unit_of(i: int) -> str:
        return f"unit {str(names[spike_units[i]])!r} (row {spike_units[i]})"

    bad = np.flatnonzero(~np.isfinite(flat))
    if len(bad):
        raise DataError(f"{path}: {unit_of(bad[0])} has a NaN or inf spike time; spike times must be finite")
    bad = np.flatnonzero(flat < 0)
    if len(bad):
        raise DataError(f"{path}: {unit_of(bad[0])} has a negative spike time ({flat[bad[0]]:.6g} s); "
                        "spike times must be >= 0 s")
    # Real files store each unit's spikes in time order; a decrease within a unit means a corrupt or
    # mis-written file, so we report it rather than silently re-sorting.
    decreasing = np.diff(flat) < 0
    same_unit = spike_units[1:] == spike_units[:-1]
    bad = np.flatnonzero(decreasing & same_unit)
    if len(bad):
        i = bad[0] + 1
        within = i - (ends[spike_units[i] - 1] if spike_units[i] > 0 else 0)
        raise DataError(f"{path}: {unit_of(i)} has unsorted spike_times: spike {within} ({flat[i]:.6g} s) "
                        f"is earlier than spike {within - 1} ({flat[i - 1]:.6g} s); each unit's spike times must be ascending")


def _unit_regions(table, nwbfile) -> np.ndarray:
    """(U,) region per unit: units.location, else the first electrode's location, else its group's."""
    n_units = len(table.id)
    colnames = list(table.colnames)
    region = _strings(table["location"].data[:]) if "location" in colnames else np.full(n_units, "", dtype=object)
    region = region.astype(object)
    if "electrodes" in colnames and (region == "").any():
        rows, ends = _ragged(table["electrodes"])
        electrodes = table["electrodes"].target.table if hasattr(table["electrodes"], "target") else nwbfile.electrodes
        if electrodes is not None and "location" in electrodes.colnames and len(rows):
            locations = _strings(electrodes["location"].data[:])
            starts = np.concatenate([[0], ends[:-1]])
            has_electrode = ends > starts
            first = np.where(has_electrode, rows[np.minimum(starts, len(rows) - 1)], 0)
            from_electrode = np.where(has_electrode, locations[first.astype(np.int64)], "")
            region = np.where(region == "", from_electrode, region)
    if "electrode_group" in colnames and (region == "").any():
        groups = table["electrode_group"].data[:]
        from_group = np.array([getattr(g, "location", "") or "" for g in groups], dtype=object)
        region = np.where(region == "", from_group, region)
    return region.astype(str)


def _read_trials(table, path: Path) -> Trials:
    """Trials with split/condition and every other readable column as ``extra``."""
    colnames = list(table.colnames)
    n = len(table.id)
    extra = {}
    for name in colnames:
        if name in ("start_time", "stop_time", "split", "condition"):
            continue
        column = table[name]
        if type(column).__name__ in ("DynamicTableRegion", "TimeSeriesReferenceVectorData"):
            continue  # references to other tables/series: not a per-trial value
        if hasattr(column, "target"):
            if type(column.target).__name__ != "VectorData":
                continue
            flat, ends = _ragged(column)
            flat = _strings(flat) if flat.dtype.kind in "OSU" else flat
            rows = np.empty(n, dtype=object)
            rows[:] = np.split(flat, ends[:-1]) if n else []
            extra[name] = rows
        else:
            values = np.asarray(column.data[:])
            extra[name] = _strings(values).astype(str) if values.dtype.kind in "OS" else values
    split = _strings(table["split"].data[:]).astype(str) if "split" in colnames else None
    if split is not None:
        unknown = sorted(set(split.tolist()) - set(SPLITS))
        if unknown:
            raise DataError(f"{path}: trials.split has values {unknown}; expected each to be one of {SPLITS}")
    condition = _strings(table["condition"].data[:]).astype(str) if "condition" in colnames else None
    return Trials(start=np.asarray(table["start_time"].data[:], dtype=np.float64),
                  stop=np.asarray(table["stop_time"].data[:], dtype=np.float64),
                  split=split, condition=condition, extra=extra)


def _read_behavior(nwbfile, path: Path) -> dict[str, TimeSeries]:
    """Every TimeSeries in processing/behavior, directly or inside containers (Position, ...)."""
    from pynwb import TimeSeries as NWBTimeSeries  # slow to import: see write_nwb

    behavior = {}
    for module_name, module in nwbfile.processing.items():
        if module_name.lower() not in _BEHAVIOR_MODULE_NAMES:
            continue
        for interface_name, interface in module.data_interfaces.items():
            if isinstance(interface, NWBTimeSeries):
                found = [(interface_name, interface)]
            elif hasattr(interface, "time_series") or hasattr(interface, "spatial_series"):
                members = getattr(interface, "spatial_series", None) or getattr(interface, "time_series", None) or {}
                # Inside a container the series' own name is what a user looks for ("hand_pos");
                # the container name only disambiguates clashes.
                found = [(name if name not in behavior else f"{interface_name}_{name}", series)
                         for name, series in members.items()]
            else:
                continue
            for name, series in found:
                behavior[name] = _read_series(series, name, path)
    return behavior


def _read_series(series, name: str, path: Path) -> TimeSeries:
    values = np.asarray(series.data[:])
    if values.dtype.kind not in "fiub":
        raise DataError(f"{path}: behaviour {name!r} has non-numeric data (dtype {values.dtype})")
    values = values.astype(np.float64).reshape(len(values), -1)
    # NWB stores raw values with a scale to the stated unit; apply it so values are in ``unit``.
    conversion = float(series.conversion) if series.conversion is not None else 1.0
    offset = float(getattr(series, "offset", 0.0) or 0.0)
    if conversion != 1.0 or offset != 0.0:
        values = values * conversion + offset
    if series.timestamps is not None:
        timestamps = np.asarray(series.timestamps[:], dtype=np.float64)
    else:
        timestamps = (series.starting_time or 0.0) + np.arange(len(values)) / series.rate
    if np.isinf(values).any():
        raise DataError(f"{path}: behaviour {name!r} contains inf values (NaN gaps are allowed, inf is not)")
    return TimeSeries(timestamps, values, unit=str(series.unit or ""))


def _strings(values) -> np.ndarray:
    """Decode an HDF5 string column (str or bytes elements) to an object array of str."""
    values = np.asarray(values, dtype=object)
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.ravel()],
                    dtype=object).reshape(values.shape)


# --------------------------------------------------------------------------------------- summary
def describe_nwb(path: str | os.PathLike) -> str:
    """A human summary of an NWB file for ``mini-decoders data info``.

    Lists identifier, subject, task, units (held-in/held-out, regions with counts), spikes and mean
    rate, time span, trials per split, behaviour (shape, sampling rate, unit) and what is missing.

    Raises:
        DataError: explaining why the file cannot be read.
    """
    path = Path(path)
    session, missing = _load(path)
    units = session.units
    span = session.stop_time - session.start_time
    regions = ", ".join(f"{name or '(unknown)'} {int((units.region == name).sum())}" for name in units.regions)
    mean_rate = session.n_spikes / max(session.n_units, 1) / max(span, 1e-9)
    lines = [
        f"file:       {path}",
        f"identifier: {session.id}",
        f"subject:    {session.subject or '(none)'}",
        f"task:       {session.task or '(none)'}",
        f"units:      {session.n_units} ({len(units.heldin_index)} held-in, {len(units.heldout_index)} heldout)"
        + (f"; regions: {regions}" if regions else ""),
        f"spikes:     {session.n_spikes} (mean rate {mean_rate:.2f} Hz per unit)",
        f"time span:  {session.start_time:.3f} - {session.stop_time:.3f} s ({span:.1f} s)",
    ]
    if len(session.trials):
        per_split = ", ".join(f"{name} {len(session.trials.index(name))}" for name in SPLITS
                              if len(session.trials.index(name)))
        extra = f"; columns: {', '.join(session.trials.extra)}" if session.trials.extra else ""
        lines.append(f"trials:     {len(session.trials)} ({per_split}){extra}")
    else:
        lines.append("trials:     no trials")
    if session.behavior:
        for name, series in session.behavior.items():
            rate = 1.0 / series.sampling_interval if series.sampling_interval > 0 else float("nan")
            nan_share = np.isnan(series.values).mean() if series.values.size else 0.0
            lines.append(f"behaviour:  {name} {series.values.shape} at {rate:.4g} Hz"
                         + (f", unit {series.unit}" if series.unit else "")
                         + (f", {100 * nan_share:.1f}% NaN" if nan_share else ""))
    else:
        lines.append("behaviour:  no behaviour")
    lines.append(f"missing:    {'; '.join(missing)}" if missing else "missing:    nothing")
    return "\n".join(lines)
