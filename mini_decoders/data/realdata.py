"""Loaders that turn the small real recordings of the registry into :class:`Session` records.

Each public dataset comes in its own shape — 1 ms binary spike trains per trial (Yu et al. 2009),
45 ms counts grouped by target direction (Golub et al. 2018), one raster file per neuron
(Zhang, Desimone et al. 2011), an NWB file written by other software (pynapple). Here each
becomes the package's one record, so every model and metric runs on it unchanged.

Conventions shared by the loaders:

* Data given as 1 ms bins keep that resolution: a spike in bin ``k`` is placed at the bin
  *centre*, ``(k + 0.5)`` ms after the trial start, so re-binning from the trial start at
  1 ms (or any whole number of ms) gives the original counts back exactly, with no spike
  sitting on a bin edge.
* Separate trials are laid end to end in time with a gap of :data:`TRIAL_GAP_S` between
  them, so no binning window that stays inside a trial can see a neighbour's spikes.
* Splits are assigned deterministically (seeded) and stratified by condition:
  :func:`stratified_splits`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io

from mini_decoders.data.nwb import read_nwb
from mini_decoders.data.registry import DandiEntry, fetch, get_entry
from mini_decoders.data.session import Session, Trials, Units
from mini_decoders.errors import DataError

TRIAL_GAP_S = 0.1  # s of silence between trials laid end to end
RASTER_BIN_S = 0.001  # 1 ms rasters (Yu 2009, Zhang-Desimone)
GOLUB_BIN_S = 0.045  # the BCI decoder's update period (expParams.intuitiveMapping.dt)
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)  # train / val / test


# ----------------------------------------------------------------------------- helpers
def stratified_splits(condition: np.ndarray, fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
                      seed: int = 0) -> np.ndarray:
    """Assign train/val/test per trial, in the given proportions within every condition.

    Args:
        condition: (N,) condition label per trial.
        fractions: (train, val, test), summing to 1.
        seed: the shuffle within each condition; same seed, same splits.

    Returns:
        (N,) str array of ``"train" | "val" | "test"``.
    """
    condition = np.asarray(condition).astype(str)
    rng = np.random.default_rng(seed)
    split = np.empty(len(condition), dtype=object)
    for label in np.unique(condition):  # loop over conditions (a handful), not trials
        members = rng.permutation(np.flatnonzero(condition == label))
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        split[members[:n_train]] = "train"
        split[members[n_train:n_train + n_val]] = "val"
        split[members[n_train + n_val:]] = "test"
    return split.astype(str)


def _rasters_to_spikes(rasters: list[np.ndarray], trial_starts: np.ndarray,
                       bin_size: float = RASTER_BIN_S) -> tuple[np.ndarray, np.ndarray]:
    """Spike times and units from per-trial (U, T_i) count rasters laid out at ``trial_starts``.

    Returns:
        spike_times: (S,) sorted seconds, each spike at the centre of its bin.
        spike_units: (S,) unit index.
    """
    times, units = [], []
    for raster, start in zip(rasters, trial_starts):  # loop per trial; spikes inside are vectorised
        unit, step = np.nonzero(raster)
        repeat = raster[unit, step].astype(np.int64)  # >1 when a bin holds several spikes
        times.append(np.repeat(start + (step + 0.5) * bin_size, repeat))
        units.append(np.repeat(unit, repeat))
    times, units = np.concatenate(times), np.concatenate(units).astype(np.int64)
    order = np.argsort(times, kind="stable")
    return times[order], units[order]


def _end_to_end(durations: np.ndarray, gap: float = TRIAL_GAP_S) -> np.ndarray:
    """(N,) start times of trials of ``durations`` placed one after another with ``gap`` between."""
    return np.concatenate(([0.0], np.cumsum(np.asarray(durations, dtype=np.float64) + gap)[:-1]))


def _loadmat(path: Path, *fields: str) -> dict:
    """Load a MAT v5 file with MATLAB structs as attribute objects; check the top-level fields."""
    try:
        content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises ValueError/TypeError/OSError for bad files
        raise DataError(f"{path}: not a readable MAT v5 file ({type(error).__name__}: {error})") from error
    missing = [name for name in fields if name not in content]
    if missing:
        found = sorted(key for key in content if not key.startswith("__"))
        raise DataError(f"{path}: expected variables {list(fields)}, missing {missing} (found {found})")
    return content


# ----------------------------------------------------------------------------- Yu et al. 2009 (DataHigh)
def load_yu2009(which: str = "ex1", cache: str | Path | None = None, seed: int = 0) -> Session:
    """Macaque PMd, 61 simultaneous units, delayed center-out reaching (DataHigh example data).

    ``ex1`` holds 210 trials (7 reach targets x 30) of the 400 ms delay period; ``ex2`` holds
    112 trials of 1.0-1.5 s in 2 conditions. Each MAT trial ``D[i].data`` is a (61, T) 1 ms
    raster. The files carry no kinematics, only the target label, so the session has no
    behaviour series; ``trials.extra["reach_target"]`` (int) is the target number.

    Args:
        which: ``"ex1"`` or ``"ex2"``.
        cache: registry cache folder (default :func:`~mini_decoders.data.registry.cache_dir`).
        seed: seed of the stratified train/val/test assignment.
    """
    files = {"ex1": 0, "ex2": 1}
    if which not in files:
        raise DataError(f"load_yu2009: which must be 'ex1' or 'ex2', got {which!r}")
    path = fetch("yu2009_pmd", cache)[files[which]]
    trials_struct = np.atleast_1d(_loadmat(path, "D")["D"])
    rasters = []
    for i, trial in enumerate(trials_struct):
        data = np.asarray(getattr(trial, "data", None))
        if data.ndim != 2 or (rasters and data.shape[0] != rasters[0].shape[0]):
            raise DataError(f"{path}: D[{i}].data must be (units, ms) with the same units in every trial, "
                            f"found shape {data.shape}")
        rasters.append(data)
    condition = np.array([str(trial.condition) for trial in trials_struct])
    durations = np.array([raster.shape[1] for raster in rasters]) * RASTER_BIN_S
    starts = _end_to_end(durations)
    spike_times, spike_units = _rasters_to_spikes(rasters, starts)
    labels = np.unique(condition)
    # 'reach3' -> 3; a label without a number gets its rank among the labels instead.
    numbers = {label: int(re.findall(r"\d+", label)[-1]) if re.findall(r"\d+", label) else rank
               for rank, label in enumerate(labels)}
    trials = Trials(starts, starts + durations, stratified_splits(condition, seed=seed), condition,
                    {"reach_target": np.array([numbers[c] for c in condition], dtype=np.int64)})
    session_id = f"yu2009_{which}"
    n_units = rasters[0].shape[0]
    units = Units([f"{session_id}/{k}" for k in range(n_units)], region=np.full(n_units, "PMd"))
    return Session(session_id, spike_times, spike_units, units, trials=trials, subject="monkey",
                   task="center_out_delay", source=str(path))


# ----------------------------------------------------------------------------- Golub et al. 2018 (BCI)
def load_golub2018(cache: str | Path | None = None, period: str = "beforeLearning") -> Session:
    """Macaque M1, 86 units, brain-computer-interface cursor control (monkey J).

    The file groups 45 ms time steps by cursor-to-target direction ("clouds"): 8 directions x
    69 steps, not one continuous recording. Each direction becomes one trial of 69 contiguous
    bins (``condition`` = the direction in degrees), and the trials are laid end to end with
    no gap, because :meth:`Session.from_binned` takes one contiguous count matrix.

    Behaviour, at bin centres: ``cursor_vel`` = ``vraw_intuitive`` (the intuitive BCI
    decoder's velocity output from these very spikes) and ``cursor_vel_perturbed`` =
    ``vraw_perturbed`` (the perturbed mapping's output). All trials are ``"train"``: with one
    trial per direction there is nothing to stratify.

    Args:
        period: ``"beforeLearning"`` or ``"afterLearning"`` (of the perturbed mapping).
    """
    if period not in ("beforeLearning", "afterLearning"):
        raise DataError(f"load_golub2018: period must be 'beforeLearning' or 'afterLearning', got {period!r}")
    path = fetch("golub2018_bci", cache)[0]
    content = _loadmat(path, period, "expParams")
    clouds = getattr(content[period], "clouds", None)
    for name in ("spikes", "vraw_intuitive", "vraw_perturbed", "angles"):
        if not hasattr(clouds, name):
            raise DataError(f"{path}: {period}.clouds has no field {name!r}")
    spikes = [np.asarray(s) for s in np.atleast_1d(clouds.spikes)]  # per direction: (U, T_k)
    angles = np.atleast_1d(clouds.angles).astype(np.int64)
    if len(spikes) != len(angles) or len({s.shape[0] for s in spikes}) != 1:
        raise DataError(f"{path}: {period}.clouds.spikes must be {len(angles)} arrays (units, steps) with equal "
                        f"unit counts, found shapes {[s.shape for s in spikes]}")
    counts = np.concatenate(spikes, axis=1).T  # (T, U)
    velocity = {name: np.concatenate([np.asarray(v) for v in np.atleast_1d(getattr(clouds, field))], axis=1).T
                for name, field in (("cursor_vel", "vraw_intuitive"), ("cursor_vel_perturbed", "vraw_perturbed"))}
    steps = np.array([s.shape[1] for s in spikes])
    edges = np.concatenate(([0], np.cumsum(steps))) * GOLUB_BIN_S
    condition = angles.astype(str)
    trials = Trials(edges[:-1], edges[1:], np.full(len(angles), "train"), condition,
                    {"direction_deg": angles})
    dt = float(getattr(content["expParams"].intuitiveMapping, "dt", GOLUB_BIN_S))
    if not np.isclose(dt, GOLUB_BIN_S):
        raise DataError(f"{path}: expParams.intuitiveMapping.dt is {dt} s, expected {GOLUB_BIN_S}")
    session = Session.from_binned(counts, GOLUB_BIN_S, id=f"golub2018_{period}", behavior=velocity, trials=trials,
                                  region=np.full(counts.shape[1], "M1"), subject="monkey J", task="bci_cursor")
    session.source = str(path)
    return session


# ----------------------------------------------------------------------------- Zhang, Desimone et al. 2011 (IT)
def load_zhang_desimone(cache: str | Path | None = None, seed: int = 0) -> list[Session]:
    """Macaque IT, 132 single units in 21 sessions, viewing 7 objects at 3 positions.

    One MAT file per unit: ``raster_data`` (presentations, 1000) 1 ms bins with stimulus onset
    at ms 501 (so 0.5 s into each trial: ``trials.extra["stimulus_onset_time"]``),
    ``raster_labels`` and ``raster_site_info.session_ID``. Units are grouped into sessions by
    that id. Within each session, every unit's file holds the same number of presentations
    with the *same* label sequence (checked here; 1006 has 419, all others 420), so the units
    of a session saw the same presentations and are treated as recorded together; units of
    different sessions are not (their label sequences differ).

    Trials: one per presentation, 1 s long, laid end to end; ``condition`` = ``stimulus_ID``,
    ``extra``: ``stimulus_position``, ``combined_ID_position``, ``stimulus_onset_time``.
    Splits are stratified by ``combined_ID_position`` (21 classes).

    Returns:
        21 sessions, ordered by session id (``"zhang_desimone_1001"``, ...).
    """
    paths = fetch("zhang_desimone_it", cache)
    by_session: dict[int, list[tuple[Path, np.ndarray, object, object]]] = {}
    for path in paths:  # loop per unit file
        content = _loadmat(path, "raster_data", "raster_labels", "raster_site_info")
        site, labels = content["raster_site_info"], content["raster_labels"]
        by_session.setdefault(int(site.session_ID), []).append((path, np.asarray(content["raster_data"]), labels, site))
    sessions = []
    for session_number in sorted(by_session):
        members = by_session[session_number]
        first_path, first_raster, labels, site = members[0]
        combined = np.asarray(labels.combined_ID_position).astype(str)
        for path, raster, other, _ in members[1:]:
            same_labels = np.array_equal(np.asarray(other.combined_ID_position).astype(str), combined)
            if raster.shape != first_raster.shape or not same_labels:
                raise DataError(f"{path}: session {session_number} units must share presentations; its raster "
                                f"{raster.shape} / labels differ from {first_path.name} {first_raster.shape}")
        n_trials, n_steps = first_raster.shape
        onset_step = int(site.alignment_event_time) - 1  # MATLAB's 1-based ms index -> 0-based bin
        duration = n_steps * RASTER_BIN_S
        starts = _end_to_end(np.full(n_trials, duration))
        stacked = np.stack([raster for _, raster, _, _ in members])  # (U, N, T)
        # Per trial, a (U, T) raster: move the trial axis first and reuse the shared converter.
        spike_times, spike_units = _rasters_to_spikes(list(stacked.transpose(1, 0, 2)), starts)
        session_id = f"zhang_desimone_{session_number}"
        unit_names = [f"{int(s.recording_channel):02d}{s.unit}" for _, _, _, s in members]
        trials = Trials(starts, starts + duration, stratified_splits(combined, seed=seed),
                        np.asarray(labels.stimulus_ID).astype(str),
                        {"stimulus_position": np.asarray(labels.stimulus_position).astype(str),
                         "combined_ID_position": combined,
                         "stimulus_onset_time": starts + onset_step * RASTER_BIN_S})
        units = Units([f"{session_id}/{name}" for name in unit_names], region=np.full(len(members), "IT"))
        sessions.append(Session(session_id, spike_times, spike_units, units, trials=trials, subject="monkey",
                                task="object_viewing", source=str(first_path.parent)))
    return sessions


# ----------------------------------------------------------------------------- NWB files
def load_pynapple(cache: str | Path | None = None) -> Session:
    """Mouse Neuropixels NWB from pynapple's tests: 3 units, no trials, no behaviour.

    Read through the package's NWB reader, which warns (not fails) about the missing trials
    and behaviour, as it must for files written by other software.
    """
    return read_nwb(fetch("pynapple_nwb", cache)[0])


def load(name: str, cache: str | Path | None = None) -> list[Session]:
    """Every session of a registered dataset, by registry name.

    ``yu2009_pmd`` -> [ex1, ex2]; ``golub2018_bci`` -> [beforeLearning, afterLearning];
    ``zhang_desimone_it`` -> 21 sessions; ``pynapple_nwb`` -> [one]; a DANDI set -> its NWB
    assets already in the cache (fetch them first with ``mini-decoders data fetch NAME``).
    """
    entry = get_entry(name)
    if name == "yu2009_pmd":
        return [load_yu2009("ex1", cache), load_yu2009("ex2", cache)]
    if name == "golub2018_bci":
        return [load_golub2018(cache, "beforeLearning"), load_golub2018(cache, "afterLearning")]
    if name == "zhang_desimone_it":
        return load_zhang_desimone(cache)
    if name == "pynapple_nwb":
        return [load_pynapple(cache)]
    if isinstance(entry, DandiEntry):
        paths = entry.local_files(cache)
        if not paths:
            raise DataError(f"{name}: no NWB files in {entry.local_dir(cache)}; download them first with "
                            f"`mini-decoders data fetch {name}` (the DANDI client: pip install "
                            f"'mini-decoders[dandi]'; {entry.url})")
        return [read_nwb(path) for path in paths]
    raise DataError(f"load: no loader for registered dataset {name!r}")
