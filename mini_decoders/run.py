"""The Run API: train a model, load it back, predict, write PRED.h5, evaluate.

It mirrors the command line (DESIGN §6), so a notebook needs no shell::

    run = train("ridge", ["sim/sim_0.nwb", "sim/sim_1.nwb"], profile="quick", out="runs/ridge")
    run = load_run("runs/ridge")
    run.write_predictions(sessions, "PRED.h5")
    scores = run.evaluate(sessions)          # {"sessions": {id: {...}}, "mean": {...}, ...}

A RUN folder holds ``config.json``, ``checkpoint.pt`` and ``metrics.json``
(:mod:`mini_decoders.run_folder`); a run is scored by :mod:`mini_decoders.scoring`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.data.nwb import read_nwb
from mini_decoders.files import replacing, write_json_atomic
from mini_decoders.models.base import PREDICTION_KEYS, Decoder, SessionSpec
from mini_decoders import run_cache
from mini_decoders.models.registry import adaptable_models, get_model
from mini_decoders.scoring import BEHAVIOR, finite_or_none, mean_scores, score_trials
from mini_decoders.run_folder import (CONFIG_NAME, FORMAT_VERSION, METRICS_NAME, has_checkpoint, history_summary,
                                      read_config, save_run_checkpoint, writing)
from mini_decoders.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mini_decoders.training.device import select_device, select_precision
from mini_decoders.training.profiles import resolve_profile
from mini_decoders.version import __version__

SessionsLike = Session | str | os.PathLike | Iterable[Session | str | os.PathLike]


# ================================================================================================
# Small I/O helpers

def as_sessions(sessions: SessionsLike) -> list[Session]:
    """Sessions as a list: Session objects are kept, paths are read with ``read_nwb``.

    Raises:
        DataError: nothing given, something that is neither a Session nor a path, or two sessions
            with one id.
    """
    if isinstance(sessions, (Session, str, os.PathLike)):
        sessions = [sessions]
    if sessions is None or not hasattr(sessions, "__iter__"):
        raise DataError(f"sessions must be a Session, an NWB path, or a list of them; got {type(sessions).__name__}")
    loaded = []
    for item in sessions:
        if isinstance(item, Session):
            loaded.append(item)
        elif not isinstance(item, (str, os.PathLike)):
            raise DataError(f"sessions must be Session objects or NWB paths; got a {type(item).__name__} "
                            f"({item!r:.60})")
        else:
            loaded.append(read_nwb(item))
    if not loaded:
        raise DataError("no sessions given: pass at least one Session or NWB path")
    ids = [s.id for s in loaded]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"session ids must be unique, found {duplicates} more than once "
                        "(the NWB identifier names each session)")
    return loaded


def trial_ids(session: Session, trial_index: np.ndarray) -> np.ndarray:
    """(N,) int64 id of each trial: the ``trial_id`` column if the table has one, else its row."""
    column = session.trials.extra.get("trial_id")
    if column is not None and np.issubdtype(np.asarray(column).dtype, np.integer):
        return np.asarray(column, dtype=np.int64)[trial_index]
    return np.asarray(trial_index, dtype=np.int64)


# ================================================================================================
# The Run

@dataclass
class Run:
    """A trained model and its RUN folder.

    Attributes:
        path: the RUN folder (None for a run that was never written).
        model: the trained :class:`~mini_decoders.models.base.Decoder`.
        config: the contents of ``config.json``.
        metrics: the contents of ``metrics.json`` (``{}`` before evaluation).
    """

    path: Path | None
    model: Decoder
    config: dict
    metrics: dict = field(default_factory=dict)
    cache_hit: bool = False  # train() copied this run from the run cache instead of training it

    @property
    def bin_size(self) -> float:
        return float(self.config.get("bin_size", DEFAULT_BIN_SIZE))

    def __repr__(self) -> str:
        sessions = [s["id"] for s in self.config.get("sessions", [])]
        return f"Run({self.config.get('model')!r}, profile={self.config.get('profile')!r}, sessions={sessions}, path={str(self.path)!r})"

    # ------------------------------------------------------------------ predictions
    def _binned(self, session: Session, behavior: bool) -> BinnedTrials:
        """Every trial of ``session`` binned from its start to stop (behaviour at the model's lag)."""
        names = (BEHAVIOR,) if behavior and BEHAVIOR in session.behavior else ()
        check_trial_lengths(session, self.model.name, self.model.config)
        return bin_trials(session, self.bin_size, split=None, behavior=names, lag=float(self.model.config.get("lag", 0.0)))

    def _predict_one(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        self.model.spec_for(session)  # refuse other units before any work
        self.model.eval()
        with torch.no_grad():
            predictions = self.model.predict_trials(session, binned)
        padded = ~binned.mask  # (N, T)
        out = {}
        for key, values in predictions.items():
            values = np.array(values, dtype=np.float32)  # copy: padding is written into it
            if key != "rates_forward":  # forward bins lie after the trial: no padding inside them
                values[padded] = np.nan
            out[key] = values
        return out

    def predict(self, sessions: SessionsLike) -> dict[str, dict[str, np.ndarray]]:
        """Predictions for every trial (all splits) of each session, 20 ms bins from start to stop.

        Returns:
            session id -> ``trial_id`` (N,) int64, ``split`` (N,) str, and the model's outputs:
            ``rates_heldin`` (N, T, U_in) and ``rates_heldout`` (N, T, U_out) expected spikes per
            bin (rate models), ``hand_vel`` (N, T, 2) (decoders); float32, NaN past each trial's end.

        Raises:
            RunError: a session's units are not the ones the run was trained on.
        """
        result = {}
        for session in as_sessions(sessions):
            binned = self._binned(session, behavior=False)
            result[session.id] = {"trial_id": trial_ids(session, binned.trial_index),
                                  "split": binned.split.astype(str), **self._predict_one(session, binned)}
        return result

    def write_predictions(self, sessions: SessionsLike, path: str | os.PathLike) -> Path:
        """Write :meth:`predict` to an NLB-style PRED.h5 (atomically) and return its path.

        Layout: one group per session named by its id (``/`` replaced by ``_``; the exact id is in
        the group attribute ``session_id``) holding ``trial_id`` [n] int64, ``split`` [n] UTF-8
        strings, ``rates_heldin`` / ``rates_heldout`` [n, bins, units] and/or ``hand_vel``
        [n, bins, 2] float32 with NaN padding; attribute ``bin_size_s`` on the file and each group.
        """
        import h5py  # slow to import; only writing predictions needs it

        path = Path(path)
        if path.is_dir():
            raise RunError(f"{path} is a folder; expected the path of the .h5 file to write (e.g. {path / 'PRED.h5'})")
        predictions = self.predict(sessions)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temp, h5py.File(temp, "w") as file:
            file.attrs["bin_size_s"] = self.bin_size
            file.attrs["model"] = str(self.config.get("model", ""))
            file.attrs["mini_decoders_version"] = __version__
            for session_id, arrays in predictions.items():
                group = file.create_group(session_id.replace("/", "_"))
                group.attrs["session_id"] = session_id
                group.attrs["bin_size_s"] = self.bin_size
                group.create_dataset("trial_id", data=arrays["trial_id"].astype(np.int64))
                group.create_dataset("split", data=arrays["split"].astype(object), dtype=h5py.string_dtype("utf-8"))
                for key in PREDICTION_KEYS:
                    if key in arrays:
                        group.create_dataset(key, data=arrays[key].astype(np.float32), compression="gzip")
        return path

    # ------------------------------------------------------------------ evaluation
    def finetune(self, sessions: SessionsLike, mode: str = "units", out: str | os.PathLike | None = None, *,
                 profile: str | None = None, max_steps: int | None = None, seed: int = 0,
                 progress: bool = True) -> "Run":
        """Adapt this run to new sessions (new units) and write a new RUN folder.

        Args:
            sessions: the new sessions (Session objects or NWB paths).
            mode: ``"units"`` — unit identification: only the new sessions' unit/context
                embeddings are learned, every other weight stays bit-identical; ``"full"`` — every
                weight is fine-tuned (new parameters get a higher learning rate).
            out: the new RUN folder (default ``runs/<model>-finetune-<date-time>``); this run's
                folder is never modified.
            profile: take the fine-tuning recipe (``finetune_*`` keys) of this profile instead of
                the one the run was trained with.
            max_steps: override the number of fine-tuning steps.

        Returns:
            A new :class:`Run` that knows the old and the new sessions.
        """
        if mode not in ("units", "full"):
            raise RunError(f"finetune mode must be 'units' or 'full', got {mode!r}")
        if not self.model.ADAPTS:
            able = adaptable_models()
            raise RunError(f"a {self.model.name!r} run cannot be fine-tuned to new units (it has no shared weights to "
                           f"keep); train it on the new data instead. Models that adapt: {', '.join(able) or 'none yet'}")
        sessions = as_sessions(sessions)
        out = Path(out) if out is not None else Path("runs") / f"{self.model.name}-finetune-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out / CONFIG_NAME).exists():
            raise RunError(f"{out} already holds a run ({CONFIG_NAME} exists); choose another --out")
        if self.path is not None and out.resolve() == Path(self.path).resolve():
            raise RunError("finetune writes a new RUN folder; --out must differ from the run being adapted")
        known = [s.id for s in sessions if self._knows(s)]
        if mode == "units" and len(known) == len(sessions):
            raise RunError(f"this run was trained on {', '.join(map(repr, known))}: --mode units learns embeddings for "
                           "new units only, so it would change nothing. To train more on these sessions use --mode "
                           f"full, or `mini-decoders train {self.model.name} ... --out {self.path or 'RUN'} --resume "
                           "--max-steps N`")
        model = copy.deepcopy(self.model)
        if profile is not None:
            recipe = type(model).recipe_config(resolve_profile(profile), model.config.get("recipe"))
            model.config.update({k: v for k, v in recipe.items() if k.startswith("finetune")})
        if max_steps is not None:
            if int(max_steps) < 1:
                raise RunError(f"--max-steps must be >= 1, got {max_steps}")
            model.config["finetune_steps"] = int(max_steps)
        for session in sessions:
            check_trial_lengths(session, model.name, model.config)
        torch.manual_seed(int(seed))
        # No resume for fine-tuning: on failure nothing of this call is kept.
        with writing(out, keep_resumable=False):
            config = {**self.config, "sessions": [], "model_config": model.config,
                      "finetuned_from": str(self.path) if self.path is not None else None, "finetune_mode": mode}
            started = time.perf_counter()
            history = model.finetune(sessions, mode, model.config, out_dir=out, progress=progress)
            train_seconds = time.perf_counter() - started
            config["sessions"] = [spec.to_dict() for spec in model.specs]
            config["model_config"] = model.config
            write_json_atomic(out / CONFIG_NAME, config)
            save_run_checkpoint(out, model)
            history = history if isinstance(history, dict) else {}
            training = {"train_seconds": train_seconds, "mode": mode,
                        "samples_per_second": history.get("samples", 0) / max(train_seconds, 1e-9),
                        "history": history_summary(history)}
            run = Run(out, model.cpu(), config, {"training": training})
            run.metrics = {**run.evaluate(sessions, split="test"), "training": training}
            write_json_atomic(out / METRICS_NAME, run.metrics)
        return run

    def _knows(self, session: Session) -> bool:
        """Whether ``session`` is one this run was trained on (same id, or the same unit ids)."""
        ids = [str(u) for u in session.units.ids]
        return session.id in self.model.session_index or any(spec.unit_ids == ids for spec in self.model.specs)

    def evaluate(self, sessions: SessionsLike, split: str = "test") -> dict:
        """NLB metrics of the run on the ``split`` trials of each session.

        Per session (and their ``mean``): ``co_bps`` (held-out units), ``vel_r2`` (direct R² for
        models that output velocity; NLB's ridge-from-rates for rate models, fitted on the train
        trials), ``psth_r2`` (rate models, when trials have 2+ condition labels); ``fp_bps`` only
        for models whose predictions include ``rates_forward`` (none of the baselines), scored
        against the spikes in the bins after each trial's end. A model with a method
        ``extra_metrics(session, binned) -> {name: value}`` adds its own scores of the same trials
        (MtM: ``cosmooth_bps``, ``forward_bps``, ...). Plus ``params``, ``train_seconds`` and
        ``samples_per_second`` from training.

        Returns:
            ``{"split": split, "sessions": {id: {metric: value}}, "mean": {metric: value},
            "params": int, "train_seconds": float | None, "samples_per_second": float | None}``.
        """
        per_session = {session.id: self._evaluate_one(session, split) for session in as_sessions(sessions)}
        mean = mean_scores(per_session)
        training = self.metrics.get("training", {})
        return {"split": split, "sessions": per_session, "mean": mean, "params": self.model.num_parameters(),
                "train_seconds": training.get("train_seconds"), "samples_per_second": training.get("samples_per_second")}

    def _evaluate_one(self, session: Session, split: str) -> dict[str, float | None]:
        _, spec = self.model.spec_for(session)
        binned = self._binned(session, behavior=True)
        evaluated = np.flatnonzero(binned.split == split)
        if len(evaluated) == 0:
            raise DataError(f"session {session.id!r} ({session.source or 'in memory'}) has no {split!r} trials to "
                            f"evaluate on (splits present: {sorted(set(binned.split.tolist()))})")
        predictions = self._predict_one(session, binned)
        scores = score_trials(session, binned, predictions, evaluated, spec.heldin_index, spec.heldout_index)
        extra_metrics = getattr(self.model, "extra_metrics", None)
        if callable(extra_metrics):  # a model's own scores on the same trials (MtM: its four tasks)
            extra = extra_metrics(session, binned.subset(evaluated))
            scores.update({key: finite_or_none(value) for key, value in extra.items()})
        return scores


# ================================================================================================
# train / load_run

def train(model: str, sessions: SessionsLike, profile: str | None = None, out: str | os.PathLike | None = None, *,
          recipe: str | None = None, device: str | None = None, max_steps: int | None = None, seed: int | None = None,
          resume: bool = False, progress: bool = True, precision: str | None = None,
          cache: str | os.PathLike | bool | None = None) -> Run:
    """Train ``model`` on ``sessions`` and write a RUN folder (``config.json``, ``checkpoint.pt``,
    ``metrics.json``).

    Args:
        model: a registry name (``ridge``, ``gru``, ``smoothing``, ...).
        sessions: Session objects or NWB paths; each session's train trials are fitted, val
            trials choose hyperparameters, and test trials are scored into ``metrics.json``.
        profile: ``tiny`` / ``quick`` / ``full`` / ``auto`` (None: ``MINI_DECODERS_PROFILE`` or auto).
        out: the RUN folder (default ``runs/<model>-<date-time>``).
        recipe: ``"default"`` (None: what works best on small data), ``"paper"`` (the method as
            published, scaled in size by the profile), or one change measured on its own:
            ``"paper+CHANGE"`` / ``"default-CHANGE"`` (see :mod:`mini_decoders.models.recipes`).
        device, max_steps: overrides of the profile's config (``max_steps``: gradient models only).
        precision: ``auto`` (bf16 on a GPU that has it, fp16 with a gradient scaler on one that
            does not, fp32 on a CPU), ``fp32``, ``bf16`` or ``fp16`` (CUDA only); gradient models only.
        seed: the run's seed (None: 0 for a new run, the run's own seed on resume).
        resume: continue an interrupted run in ``out`` (same model, sessions and seed).
        progress: print progress.
        cache: the run cache folder (None: ``$MINI_DECODERS_RUN_CACHE`` if set; False: none). A run
            with the same model, config, seed, device type and session contents that is in the
            cache is copied to ``out`` instead of trained (``Run.cache_hit``); a run trained here is
            stored in it (:mod:`mini_decoders.run_cache`). A resumed run never reads the cache.

    Every input is checked before anything is written. While it trains, the RUN folder is locked:
    a second ``train`` into it is refused. If training fails before it wrote a checkpoint to
    resume from, what this call wrote is removed (the folder too, if this call created it), so
    the same command runs once the input is fixed.

    Raises:
        RunError: unknown model, ``out`` already holds a run (without ``resume``), is in use by
            another process, or a resumed run does not match.
        DataError: a session has no train or no test trials, or no finite behaviour to decode.
    """
    model_class = get_model(model)
    profile = resolve_profile(profile)
    out = Path(out) if out is not None else Path("runs") / f"{model_class.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    model_config = model_class.recipe_config(profile, recipe)
    overrides = _checked_overrides(model_class, model_config, device, max_steps, precision)
    sessions = as_sessions(sessions)
    _check_trainable(model_class, sessions, {**model_config, **overrides})

    with writing(out, keep_resumable=True):
        config_path = out / CONFIG_NAME
        checkpointed = has_checkpoint(out)
        if config_path.exists() and not resume:
            if checkpointed or (out / METRICS_NAME).exists():
                raise RunError(f"{out} already holds a run ({CONFIG_NAME} exists); pass resume=True (--resume) to "
                               "continue it, or choose another --out")
            raise RunError(f"{out} holds an unfinished run with no checkpoint (it was stopped before writing one); "
                           "pass resume=True (--resume) to train it again from step 0, or choose another --out")
        model_config.update(overrides)
        model_config["seed"] = 0 if seed is None else int(seed)
        specs = [SessionSpec.of(s) for s in sessions]
        config = {"format_version": FORMAT_VERSION, "package_version": __version__,
                  "model": model_class.name, "profile": profile, "recipe": model_config["recipe"],
                  "model_config": model_config,
                  "bin_size": float(model_config.get("bin_size", DEFAULT_BIN_SIZE)),
                  "sessions": [spec.to_dict() for spec in specs]}
        if resume and config_path.exists():
            previous = read_config(out)
            if previous["model"] != config["model"] or [s["id"] for s in previous["sessions"]] != [s.id for s in specs]:
                raise RunError(f"cannot resume {out}: it is a {previous['model']!r} run on sessions "
                               f"{[s['id'] for s in previous['sessions']]}, not {model_class.name!r} on "
                               f"{[s.id for s in specs]}")
            if previous.get("recipe", "default") != config["recipe"]:
                raise RunError(f"cannot resume {out}: it was trained with recipe "
                               f"{previous.get('recipe', 'default')!r}, not {config['recipe']!r}; pass the same "
                               "--recipe, or choose another --out")
            run_seed = int(previous["model_config"].get("seed", 0))
            if seed is not None and int(seed) != run_seed:
                raise RunError(f"cannot resume {out} with --seed {seed}: it was trained with seed {run_seed}, and "
                               f"resuming replays that seed's batches; drop --seed or pass --seed {run_seed}")
            config = previous
            model_config = previous["model_config"]
            model_config.update(overrides)  # e.g. train longer
        if resume and not checkpointed:
            # kill -9 (or a power cut) before the first checkpoint: nothing to continue from.
            print(f"note: {out} has no checkpoint to resume from: training starts again from step 0",
                  file=sys.stderr, flush=True)

        cache_at = run_cache.cache_folder(cache)
        key = None
        with contextlib.ExitStack() as claim:
            if cache_at is not None and not resume:
                key = run_cache.cache_key(config, sessions, _device_type(model_config))
                # another process training the same run now (chapters execute side by side): wait for it
                claim.enter_context(run_cache.claimed(cache_at, key, progress=progress))
                entry = run_cache.lookup(cache_at, key)
                if entry is not None:
                    run_cache.copy_cached(entry, out)
                    run = load_run(out)
                    run.cache_hit = True
                    if progress:
                        print(f"{model_class.name}: the same run is in the run cache ({entry}); copied to {out}",
                              file=sys.stderr, flush=True)
                    return run

            torch.manual_seed(int(model_config["seed"]))
            np.random.seed(int(model_config["seed"]) % 2**32)
            net = model_class.build(sessions, model_config)
            write_json_atomic(config_path, config)

            started = time.perf_counter()
            history = net.fit(sessions, model_config, out_dir=out, resume=resume and checkpointed, progress=progress)
            train_seconds = time.perf_counter() - started
            save_run_checkpoint(out, net)

            training = {"train_seconds": train_seconds,
                        "samples_per_second": history.get("samples", 0) / max(train_seconds, 1e-9),
                        "history": history_summary(history)}
            run = Run(out, net.cpu(), config, {"training": training})
            scores = run.evaluate(sessions, split="test")
            run.metrics = {**scores, "training": training}
            write_json_atomic(out / METRICS_NAME, run.metrics)
            if key is not None:
                run_cache.store(out, cache_at, key, {"model": model_class.name, "recipe": config["recipe"],
                                                    "trained_in": str(out), "sessions": [s.id for s in sessions]})
    return run


def _device_type(model_config: dict) -> str:
    """The device type a run trains on (``cpu`` for closed-form models): part of its cache key."""
    if "device" not in model_config:
        return "cpu"
    return select_device(str(model_config.get("device") or "auto")).type


def _checked_overrides(model_class, model_config: dict, device: str | None, max_steps: int | None,
                       precision: str | None = None) -> dict:
    """``device``, ``max_steps`` and ``precision`` as config overrides, refused now if they cannot work."""
    overrides = {}
    if device is not None:
        select_device(str(device))  # unknown or unavailable devices fail here, before anything is written
        overrides["device"] = device
    if max_steps is not None:
        if "max_steps" not in model_config:
            raise RunError(f"{model_class.name} is fitted in closed form: --max-steps does not apply (it is for the "
                           f"models trained by gradient steps); drop it")
        if int(max_steps) < 1:
            raise RunError(f"--max-steps must be >= 1, got {max_steps}")
        overrides["max_steps"] = int(max_steps)
    if precision is not None:
        if "precision" not in model_config:
            raise RunError(f"{model_class.name} is fitted in closed form: --precision does not apply (it is for the "
                           f"models trained by gradient steps); drop it")
        # fp16 on a CPU, bf16 on a GPU without it: refused here, before anything is written
        select_precision(str(precision), select_device(str(device or model_config.get("device", "auto"))).type)
        overrides["precision"] = str(precision)
    return overrides


def _check_trainable(model_class, sessions: list[Session], model_config: dict) -> None:
    """Refuse, before anything is written, data that ``train`` could only fail on later.

    Every session needs train trials (to fit its read-in/read-out) and test trials (``train``
    scores them into ``metrics.json``); a model that decodes behaviour needs some finite
    ``hand_vel`` in the train trials; models with a longest sequence need every trial to fit.
    """
    bin_size = float(model_config.get("bin_size", DEFAULT_BIN_SIZE))
    for session in sessions:
        where = f"session {session.id!r} ({session.source or 'in memory'})"
        splits = session.trials.split
        present = ", ".join(f"{name} {int((splits == name).sum())}" for name in dict.fromkeys(splits.tolist()))
        present = f"trials.split has {present}" if len(splits) else "it has no trials table"
        if not (splits == "train").any():
            raise DataError(f"{where} has no 'train' trials to fit ({present}); mark some trials 'train'")
        if not (splits == "test").any():
            raise DataError(f"{where} has no 'test' trials ({present}): train scores each session's test trials "
                            "into metrics.json; mark some trials 'test' (e.g. with "
                            "mini_decoders.data.realdata.stratified_splits) before training")
        if BEHAVIOR in model_class.predicts and BEHAVIOR in session.behavior:
            binned = bin_trials(session, bin_size, split="train", behavior=(BEHAVIOR,))
            if not np.isfinite(binned.behavior[BEHAVIOR][binned.mask]).any():
                raise DataError(f"{where}: behaviour {BEHAVIOR!r} is NaN in every bin of its train trials; "
                                f"{model_class.name} learns to decode it and needs finite values")
        check_trial_lengths(session, model_class.name, model_config)


def check_trial_lengths(session: Session, model_name: str, model_config: dict) -> None:
    """Refuse trials longer than the model's longest sequence (``max_bins`` / ``max_time_bins``), naming one."""
    limit = model_config.get("max_bins", model_config.get("max_time_bins"))
    if limit is None or not len(session.trials):
        return
    bin_size = float(model_config.get("bin_size", DEFAULT_BIN_SIZE))
    n_bins = np.floor(session.trials.duration / bin_size + 1e-6).astype(np.int64)
    too_long = np.flatnonzero(n_bins > int(limit))
    if len(too_long):
        trial = int(too_long[0])
        key = "max_bins" if "max_bins" in model_config else "max_time_bins"
        start, stop = session.trials.start[trial], session.trials.stop[trial]
        raise DataError(f"session {session.id!r} ({session.source or 'in memory'}): trial {trial} "
                        f"({start:.6g}-{stop:.6g} s) is {n_bins[trial]} bins "
                        f"of {bin_size} s, longer than {model_name}'s {key}={int(limit)} "
                        f"({len(too_long)} trial(s) are); cut long trials into windows "
                        "(mini_decoders.data.windows.make_windows) or build the model with a larger "
                        f"{key}")


def load_run(path: str | os.PathLike) -> Run:
    """Load a RUN folder written by :func:`train`.

    Raises:
        RunError: the folder or its ``config.json`` is missing or invalid, the format version is
            incompatible, the model is unknown, or ``checkpoint.pt`` is missing, corrupt or does
            not match the config.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} does not exist; train one with `mini-decoders train MODEL --data ... "
                       f"--out {path}` (or `mini_decoders.train(...)`)")
    config = read_config(path)
    model_class = get_model(config["model"])
    try:
        specs = [SessionSpec.from_dict(s) for s in config["sessions"]]
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{path / CONFIG_NAME}: invalid 'sessions' entry ({error!r}); retrain the run") from None
    net = model_class(specs, config["model_config"])
    checkpoint_path = path / CHECKPOINT_NAME
    if not checkpoint_path.is_file():
        raise RunError(f"{path}: {CHECKPOINT_NAME} is missing; training did not finish. Resume it with "
                       f"`mini-decoders train {config['model']} --data ... --out {path} --resume`")
    payload = load_checkpoint(checkpoint_path)
    if "model" not in payload or "run" not in payload:
        raise RunError(f"{checkpoint_path}: holds no finished model (keys {sorted(payload)}); training did not finish. "
                       f"Resume it with `mini-decoders train {config['model']} --data ... --out {path} --resume`")
    try:
        net.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise RunError(f"{checkpoint_path} does not match {CONFIG_NAME} (different model sizes or another run's "
                       f"checkpoint): {str(error).splitlines()[0]}") from None
    net.load_extra_state(payload["run"].get("extra_state", {}))
    metrics_path = path / METRICS_NAME
    metrics = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError:
            metrics = {}  # metrics are a record of the past, not needed to use the model
    return Run(path, net.eval(), config, metrics)
