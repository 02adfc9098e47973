"""The run cache: a finished run is trained once per build, then copied wherever it is asked for again.

The book's chapters and the benchmark train the same models on the same simulated sessions: chapter 3
trains NDT1 on three sessions, and chapter 8 trains it again, with the same recipe, data and seed,
for its side-by-side table. With a cache folder set (``MINI_DECODERS_RUN_CACHE``, which ``make book``
and ``make benchmark-json`` point at ``_build/run_cache``), :func:`~mini_decoders.run.train` looks up
its run before training and, on a hit, copies the cached RUN folder to its ``out`` instead; a run it
trains is stored for the next caller. Without the variable nothing is cached.

The key is a SHA-256 of everything that decides the trained weights:

- the model name and its full resolved config (recipe, profile's sizes, steps, learning rates,
  seed, device, precision) and the config's format and package versions;
- a fingerprint of each training session's content (:func:`session_fingerprint`): spike times
  and units, the unit table, trials and splits, behaviour. Where a session came from (a file
  path, or simulated in memory) is not part of it, so the same sessions read from NWB files hit a
  run trained on the simulator's sessions in memory.

Training on a CPU with one seed is deterministic, so a hit is the run the caller would have
trained (its ``metrics.json`` keeps the training time of the run that was trained). A run trained
on another device type is another key.

Processes that share a cache (``make book`` executes chapters side by side) never train one run
twice: before training, :func:`claimed` takes a lock on the key, and a second process asking for
the same run waits there until the first has stored it, then copies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from mini_decoders.data.session import Session
from mini_decoders.errors import RunError
from mini_decoders.files import LOCK_NAME, json_default
from mini_decoders.run_folder import CONFIG_NAME, METRICS_NAME
from mini_decoders.training.checkpoint import CHECKPOINT_NAME

CACHE_ENV = "MINI_DECODERS_RUN_CACHE"
KEY_NAME = "run_cache_key.json"  # written into every cached and every copied RUN folder

__all__ = ["CACHE_ENV", "cache_folder", "cache_key", "claimed", "copy_cached", "lookup", "session_fingerprint",
           "store"]


def cache_folder(cache: str | os.PathLike | bool | None = None) -> Path | None:
    """The cache folder: ``cache`` if it is a path, ``$MINI_DECODERS_RUN_CACHE`` when None, else None.

    ``cache=False`` turns the cache off whatever the environment says.
    """
    if cache is False:
        return None
    if cache is None or cache is True:
        value = os.environ.get(CACHE_ENV, "").strip()
        if not value:
            if cache is True:
                raise RunError(f"cache=True but ${CACHE_ENV} is not set: set it to a folder, or pass the folder")
            return None
        return Path(value).expanduser()
    return Path(cache).expanduser()


def session_fingerprint(session: Session) -> str:
    """SHA-256 of what a model can learn from ``session`` (not where it came from).

    Covers the id, spike times (float64) and their units, unit ids, regions and held-out flags,
    each trial's start, stop, split and condition, behaviour timestamps and values (float64),
    subject and task.
    """
    digest = hashlib.sha256()

    def add(name: str, value) -> None:
        digest.update(name.encode())
        array = np.ascontiguousarray(value)
        if array.dtype.kind in "USO":
            digest.update("\x1f".join(map(str, array.ravel().tolist())).encode())
        else:
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(array.tobytes())

    add("id", np.array([session.id, session.subject, session.task]))
    add("spike_times", session.spike_times.astype(np.float64))
    add("spike_units", session.spike_units.astype(np.int64))
    add("unit_ids", session.units.ids)
    add("unit_region", session.units.region)
    add("unit_heldout", session.units.heldout.astype(bool))
    add("trial_start", session.trials.start.astype(np.float64))
    add("trial_stop", session.trials.stop.astype(np.float64))
    add("trial_split", session.trials.split)
    add("trial_condition", session.trials.condition)
    for name in sorted(session.behavior):
        series = session.behavior[name]
        add(f"behavior/{name}/t", series.timestamps.astype(np.float64))
        add(f"behavior/{name}/v", series.values.astype(np.float64))
    return digest.hexdigest()


def cache_key(config: dict, sessions: list[Session], device_type: str) -> str:
    """The key of a run: SHA-256 of its config (minus the per-session records, which the data
    fingerprints replace), the device type it trains on, and each session's fingerprint, in order."""
    described = {key: value for key, value in config.items() if key != "sessions"}
    payload = {"config": described, "device_type": device_type,
               "sessions": [session_fingerprint(s) for s in sessions]}
    text = json.dumps(payload, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def lookup(folder: Path, key: str) -> Path | None:
    """The cached RUN folder of ``key``, when a complete one is there (config, checkpoint, metrics)."""
    entry = folder / key
    if all((entry / name).is_file() for name in (CONFIG_NAME, CHECKPOINT_NAME, METRICS_NAME, KEY_NAME)):
        return entry
    return None


@contextmanager
def claimed(folder: Path, key: str, progress: bool = False) -> Iterator[None]:
    """Hold the right to train the run ``key`` while the block runs; wait while another process holds it.

    The holder looks the key up, trains on a miss and stores the run before it lets go, so a second
    process asking for the same run waits here and then finds it with :func:`lookup`, instead of
    training it a second time beside the first. The lock is ``flock`` on ``folder/.<key>.training``,
    which the operating system drops when its holder exits for any reason (a killed build never
    blocks the next one); the small file is left in place, since removing a lock file others may
    be waiting on would let two holders in. Where ``flock`` does not exist (Windows) nothing waits.
    """
    try:
        import fcntl
    except ImportError:  # Windows: at worst two processes train the same run, and one store wins
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f".{key}.training", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if progress:
                print(f"run cache: another process is training this run ({key[:12]}); waiting for it",
                      file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def copy_cached(entry: Path, out: Path) -> None:
    """Copy a cached RUN folder's files into ``out`` (which holds no run; its lock file is kept)."""
    for path in entry.iterdir():
        if path.name == LOCK_NAME:
            continue
        target = out / path.name
        shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)


def store(out: Path, folder: Path, key: str, description: dict) -> Path:
    """Copy the finished RUN folder ``out`` into the cache under ``key`` (atomically) and return it.

    The copy is written to a temporary folder beside the entry and renamed into place, so a reader
    never sees half a run; when another process stored the same key first, its entry is kept.
    """
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / key
    if lookup(folder, key) is not None:
        return entry
    temporary = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=folder))
    try:
        for path in out.iterdir():
            if path.name == LOCK_NAME:
                continue
            target = temporary / path.name
            shutil.copytree(path, target) if path.is_dir() else shutil.copy2(path, target)
        (temporary / KEY_NAME).write_text(json.dumps({"key": key, **description}, indent=2, default=json_default))
        try:
            temporary.rename(entry)
        except OSError:  # stored meanwhile by another process (or a stale half entry): keep what is there
            if lookup(folder, key) is None:
                shutil.rmtree(entry, ignore_errors=True)
                temporary.rename(entry)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return entry
