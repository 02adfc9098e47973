"""The run cache: a run with the same model, config, seed and session contents is copied, not retrained.

Each test asserts what breaks when the cache is wrong: a hit that should have been a miss (another
seed, another step count, one spike moved) would hand back a model that was never trained on what
the caller asked for; a miss that should have been a hit retrains (caught by making ``fit`` fail).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mini_decoders.data.session import Session
from mini_decoders.data.simulate import simulate
from mini_decoders.data.synth import write_synthetic
from mini_decoders.models.registry import get_model
from mini_decoders.run import train
from mini_decoders.run_cache import CACHE_ENV, KEY_NAME, cache_folder, session_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sessions():
    return simulate(n_sessions=2, n_trials=30, n_units=24, seed=0).sessions


def forbid_fitting(monkeypatch, name: str) -> None:
    """Make training ``name`` impossible: a call that should be a cache hit must not reach ``fit``."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name}.fit() was called: the run should have come from the cache")
    monkeypatch.setattr(get_model(name), "fit", refuse)


def state(run) -> dict:
    return {k: v.clone() for k, v in run.model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_a_second_identical_train_is_a_copy_of_the_first(sessions, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = train("ndt1", sessions, profile="tiny", max_steps=3, out=tmp_path / "a", cache=cache, progress=False)
    assert not first.cache_hit
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    forbid_fitting(monkeypatch, "ndt1")  # the second call may not train
    second = train("ndt1", sessions, profile="tiny", max_steps=3, out=tmp_path / "b", cache=cache, progress=False)
    assert second.cache_hit and second.path == tmp_path / "b"
    assert second.metrics == first.metrics  # the scores and the training time of the run that was trained
    for name, tensor in state(first).items():
        torch.testing.assert_close(state(second)[name], tensor, rtol=0, atol=0)
    assert json.loads((tmp_path / "b" / KEY_NAME).read_text())["trained_in"] == str(tmp_path / "a")


@pytest.mark.parametrize("change", ["seed", "max_steps", "recipe", "one spike moved", "one trial's split"])
def test_anything_that_changes_the_weights_is_another_key(change, sessions, tmp_path):
    cache = tmp_path / "cache"
    train("ndt1", sessions, profile="tiny", max_steps=2, out=tmp_path / "a", cache=cache, progress=False)
    kwargs = dict(profile="tiny", max_steps=2, seed=0, cache=cache, progress=False)
    data = sessions
    if change == "seed":
        kwargs["seed"] = 1
    elif change == "max_steps":
        kwargs["max_steps"] = 3
    elif change == "recipe":
        kwargs["recipe"] = "paper"
    else:
        s = sessions[0]
        times, trials = s.spike_times.copy(), s.trials
        if change == "one spike moved":
            times[len(times) // 2] += 1e-4
            times = np.sort(times)
        else:
            split = trials.split.copy()
            split[np.flatnonzero(split == "train")[0]] = "val"
            trials = type(trials)(trials.start, trials.stop, split, trials.condition, trials.extra)
        data = [Session(s.id, times, s.spike_units, s.units, s.behavior, trials, s.subject, s.task), *sessions[1:]]
        assert session_fingerprint(data[0]) != session_fingerprint(s)
    run = train("ndt1", data, out=tmp_path / "b", **kwargs)
    assert not run.cache_hit, change
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2


def test_sessions_read_from_nwb_hit_the_run_trained_on_the_same_sessions_in_memory(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    memory = simulate(n_sessions=2, n_trials=30, n_units=24, seed=3).sessions
    first = train("ridge", memory, profile="tiny", out=tmp_path / "a", cache=cache, progress=False)
    paths = write_synthetic(tmp_path / "data", n_sessions=2, n_trials=30, n_units=24, seed=3)
    forbid_fitting(monkeypatch, "ridge")
    second = train("ridge", [str(p) for p in paths], profile="tiny", out=tmp_path / "b", cache=cache, progress=False)
    assert second.cache_hit and second.metrics["mean"] == first.metrics["mean"]


def test_the_environment_turns_it_on_and_false_turns_it_off(sessions, tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_folder() is None
    train("ridge", sessions, profile="tiny", out=tmp_path / "a", progress=False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    train("ridge", sessions, profile="tiny", out=tmp_path / "b", progress=False)
    assert train("ridge", sessions, profile="tiny", out=tmp_path / "c", progress=False).cache_hit
    assert not train("ridge", sessions, profile="tiny", out=tmp_path / "d", cache=False, progress=False).cache_hit


def test_an_incomplete_entry_is_not_a_hit(sessions, tmp_path):
    cache = tmp_path / "cache"
    train("ridge", sessions, profile="tiny", out=tmp_path / "a", cache=cache, progress=False)
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    (entry / "metrics.json").unlink()  # e.g. a copy interrupted by hand
    run = train("ridge", sessions, profile="tiny", out=tmp_path / "b", cache=cache, progress=False)
    assert not run.cache_hit and (entry / "metrics.json").is_file()  # retrained, and the entry is whole again


def test_a_run_another_process_is_training_is_waited_for_not_trained_twice(sessions, tmp_path, monkeypatch):
    """Chapters execute side by side in `make book`: the second to ask for a run waits for the first."""
    import multiprocessing
    import shutil
    import threading

    from mini_decoders.run_cache import claimed

    cache = tmp_path / "cache"
    first = train("ndt1", sessions, profile="tiny", max_steps=2, out=tmp_path / "a", cache=cache, progress=False)
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    shutil.move(entry, tmp_path / "stored-later")  # the cache as it is while the first process still trains
    # The first process: holds the key's claim (as train() does while training), stores the run, lets go.
    ctx = multiprocessing.get_context("fork")
    holding, release = ctx.Event(), ctx.Event()

    def trainer():
        with claimed(cache, entry.name):
            holding.set()
            release.wait(30)
            shutil.move(tmp_path / "stored-later", entry)

    process = ctx.Process(target=trainer)
    process.start()
    try:
        assert holding.wait(30)
        forbid_fitting(monkeypatch, "ndt1")  # waiting, then copying, is right; training it again is not
        threading.Timer(1.0, release.set).start()
        second = train("ndt1", sessions, profile="tiny", max_steps=2, out=tmp_path / "b", cache=cache, progress=False)
    finally:
        release.set()
        process.join(30)
    assert second.cache_hit and second.metrics == first.metrics
