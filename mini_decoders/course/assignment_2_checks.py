"""Checks of assignment 2 (adapt a pretrained model to a new session); each item carries its rubric points.

Outcome items measure what the student's choice achieves, graded by :mod:`mini_decoders.course.outcomes`.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from types import SimpleNamespace

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed, student_name
from mini_decoders.course.outcomes import (count_optimizer_steps, grade_outcome, measure_once, outcome_cache_dir,
                                           outcome_setting, settings_digest)
from mini_decoders.course.registry import exercise
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.metrics import r2_score
from mini_decoders.models.base import SessionSpec
from mini_decoders.models.ndt2 import NDT2
from mini_decoders.models.poyo import POYO
from mini_decoders.run import load_run, train


A2 = "assignment_2_adaptation"
_SESSIONS: dict = {}  # simulated data of each setting, built once per process

# ================================================================================================
# Assignment 2: adapt a pretrained model to a new session

@exercise(function="layer_lr_multipliers", source=A2, reference="mini_decoders.models.ndt2.NDT2.lr_multipliers",
          assignment=2, points=30, title="layer-wise learning-rate decay for fine-tuning (NDT2, MAE recipe)")
def check_layer_lr_multipliers(student_fn) -> None:
    """Learning-rate multiplier per layer: the deeper, the closer to 1."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    random_decay = float(np.round(rng.uniform(0.3, 0.95), 3))
    cases = [(f"{n} layers, decay {d}", n, d) for n, d in ((4, 0.75), (1, 0.5), (6, random_decay))]
    for case, n_layers, decay in cases:
        stand_in = SimpleNamespace(config={"layer_decay": decay, "new_param_lr_mult": 10.0, "finetune_lr_scale": 0.5,
                                           "finetune_pooled_lr_mult": 0.1},
                                   encoder=[None] * n_layers)
        rules = NDT2.lr_multipliers(stand_in)
        expected = {key: value for key, value in rules.items() if key == "tokenizer." or key.startswith("encoder.")}
        got = call_student(student_fn, (n_layers, decay), case=case)
        if not isinstance(got, dict) or set(got) != set(expected):
            shown = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"`{student_name(student_fn)}` ({case}) should return a dict with the keys "
                              f"{sorted(expected)}, got {shown}")
        for key in expected:
            compare(got[key], expected[key], what=f"the multiplier of {key!r}", case=case, rtol=1e-9,
                    hint="encoder layer i of L gets decay ** (L - i): the last layer decay ** 1, the first decay ** L; "
                         "the tokenizer sits below layer 0 and gets decay ** (L + 1)")
    passed(student_name(student_fn), "NDT2.lr_multipliers", len(cases))


def _tiny_poyo(seed: int):
    """A small POYO built on one simulated session, plus a second session it has never seen."""
    data = simulate(n_sessions=2, n_trials=16, n_units=10, seed=seed % 1000)
    torch.manual_seed(seed)
    model = POYO.build(data.sessions[:1], POYO.CONFIGS["tiny"])
    return model, data.sessions


@exercise(function="unit_id_parameter_count", source=A2, reference="mini_decoders.models.poyo.POYO.finetune",
          assignment=2, points=30, title="how many numbers unit identification learns")
def check_unit_id_parameter_count(student_fn) -> None:
    """The number of values unit identification trains: one embedding per new unit and new session."""
    seed = fresh_seed()
    model, sessions = _tiny_poyo(seed)
    dim = int(model.config["dim"])
    cases = []
    for case, session in (("the session the model was trained on", sessions[0]), ("a new session", sessions[1])):
        known_units = set(model.tokenizer.unit_vocab.ids)
        new_units = [u for u in SessionSpec.of(session).unit_ids if u not in known_units]
        new_sessions = int(session.id not in model.session_vocab.ids)
        cases.append((case, session, (len(new_units) + new_sessions) * dim))
    for case, session, expected in cases:
        sizes = (len(model.tokenizer.unit_vocab), len(model.session_vocab))
        got = call_student(student_fn, (model, session), case=case)
        if (len(model.tokenizer.unit_vocab), len(model.session_vocab)) != sizes:
            raise CheckFailed(f"`{student_name(student_fn)}` changed the model (its vocabularies grew): only count, "
                              f"do not adapt")
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, (int, np.integer)) and not (isinstance(got, float) and got.is_integer()):
            raise CheckFailed(f"`{student_name(student_fn)}` ({case}) should return a whole number, got {got!r}")
        if int(got) != expected:
            raise CheckFailed(f"`{student_name(student_fn)}` ({case}) returned {int(got)}, expected {expected}\n  hint: a unit "
                              f"the model already knows needs nothing; each unknown unit and an unknown session get one "
                              f"embedding row of model.config['dim'] numbers; nothing else learns")
    passed(student_name(student_fn), "the rows POYO.finetune(mode='units') adds", len(cases))


ADAPTATION_SETUP = {
    "tiny": dict(n_trials=60, n_units=30, seed=1, pretrain_steps=1200, few_trials=10, max_steps=100),
    "quick": dict(n_trials=150, n_units=60, seed=1, pretrain_steps=3000, few_trials=20, max_steps=200),
}
_PRETRAINED: dict = {}


def _pretrained_poyo(setting: str, sessions) -> "POYO":
    """POYO (tiny architecture) pretrained on ``sessions``: trained once, kept on disk for every later call."""
    setup = ADAPTATION_SETUP[setting]
    if setting in _PRETRAINED:
        return _PRETRAINED[setting]
    folder = outcome_cache_dir() / f"assignment2-poyo-{setting}-{settings_digest(setup)}"
    run = None
    if (folder / "checkpoint.pt").is_file():
        try:
            run = load_run(folder)
        except Exception:  # a damaged cache: train again
            shutil.rmtree(folder, ignore_errors=True)
    if run is None:
        scratch = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng():
            run = train("poyo", sessions, profile="tiny", out=scratch, max_steps=setup["pretrain_steps"], seed=0,
                        progress=False)
        try:
            scratch.rename(folder)
        except OSError:  # another process got there first: theirs is the same model
            shutil.rmtree(scratch, ignore_errors=True)
    run.model.eval()
    _PRETRAINED[setting] = run.model
    return run.model


def adaptation_problem(setting: str | None = None) -> SimpleNamespace:
    """Assignment 2 part 3: a POYO pretrained on two sessions and a third session with few train trials.

    Returns:
        ``pretrained`` (the model; adapt a copy), ``session`` (the new session with its first
        ``few_trials`` train trials and its val trials, no test trials), ``max_steps`` (the
        optimiser-step budget), ``new_session`` (all its trials; the grader scores the test ones),
        ``dataset`` (the simulation, for the oracle) and ``setting``.
    """
    setting = setting or outcome_setting()
    setup = ADAPTATION_SETUP[setting]
    key = ("adaptation", setting)
    if key not in _SESSIONS:
        _SESSIONS[key] = simulate(n_sessions=3, n_trials=setup["n_trials"], n_units=setup["n_units"],
                                  seed=setup["seed"])
    dataset = _SESSIONS[key]
    sessions = dataset.sessions
    new = sessions[2]
    train_trials = np.flatnonzero(new.trials.split == "train")[:setup["few_trials"]]
    few = new.select_trials(np.sort(np.concatenate([train_trials, np.flatnonzero(new.trials.split == "val")])))
    return SimpleNamespace(pretrained=_pretrained_poyo(setting, sessions[:2]), session=few,
                           max_steps=setup["max_steps"], new_session=new, dataset=dataset, setting=setting)


def velocity_r2(model, session, split: str = "val") -> float:
    """Velocity R² of a POYO (or any velocity decoder) on the ``split`` trials of ``session``."""
    binned = bin_trials(session, model.bin_size, split=split, behavior=("hand_vel",), lag=float(model.config.get("lag", 0.0)))
    predicted = model.predict_trials(session, binned)["hand_vel"]
    return float(r2_score(predicted[binned.mask], binned.behavior["hand_vel"][binned.mask]))


@exercise(function="adapt_to_session", source=A2, reference="mini_decoders.models.poyo.POYO.finetune", assignment=2,
          points=40, outcome=True,
          title="adapt a pretrained POYO to a new session on a budget: measured velocity R² on its test trials")
def check_adapt_to_session(student_fn) -> None:
    """Outcome: the student's adaptation (what to train, what to freeze) scored on the new session's test trials."""
    problem = adaptation_problem()
    name = student_name(student_fn)

    def measure() -> dict:
        model = copy.deepcopy(problem.pretrained)
        case = (f"{problem.setting} setting: a POYO pretrained on 2 sessions, a new session with "
                f"{int((problem.session.trials.split == 'train').sum())} train trials, {problem.max_steps} steps")
        torch.manual_seed(0)
        started = time.perf_counter()
        with count_optimizer_steps() as counter:
            result = call_student(student_fn, (model, problem.session, problem.max_steps), case=case)
        seconds = time.perf_counter() - started
        if not isinstance(result, POYO):
            raise CheckFailed(f"`{name}` should return the adapted POYO model, got {type(result).__name__}")
        if counter.steps > problem.max_steps:
            raise CheckFailed(f"`{name}` took {counter.steps} optimiser steps, the budget is {problem.max_steps}: a "
                              f"score bought with more steps does not count\n  hint: pass finetune_steps (and "
                              f"unfreeze_after) that add up to at most max_steps")
        try:
            result.spec_for(problem.new_session)
        except Exception as error:
            raise CheckFailed(f"the returned model still refuses the new session ({type(error).__name__}: "
                              f"{str(error)[:120]}...)\n  hint: the model must learn embeddings for the session's "
                              f"units; look at POYO.finetune") from None
        return {"r2": velocity_r2(result, problem.new_session, "test"), "steps": counter.steps, "seconds": seconds}

    measured = measure_once("adapt_to_session", problem.setting, student_fn, measure)
    grade_outcome(name, "adapt_to_session", {"velocity R² (test trials)": measured["r2"]}, problem.setting,
                  summary=f"{measured['steps']} of {problem.max_steps} optimiser steps, {measured['seconds']:.0f} s",
                  hint="compare what to train on the val trials (velocity_r2(model, session, 'val')): the new "
                       "embeddings only, everything, or embeddings first and then everything; a few trials fit few "
                       "numbers")
