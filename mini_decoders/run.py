"""The Run API: train a model, load it back, predict, write PRED.h5, evaluate.

It mirrors the command line (DESIGN §6), so a notebook needs no shell::

    run = train("ridge", ["sim/sim_0.nwb", "sim/sim_1.nwb"], profile="quick", out="runs/ridge")
    run = load_run("runs/ridge")
    run.write_predictions(sessions, "PRED.h5")
    scores = run.evaluate(sessions)          # {"sessions": {id: {...}}, "mean": {...}, ...}

A RUN folder holds three files:

- ``config.json``: model name, profile, model config, package and format version, bin size and,
  per training session, its id, unit ids, held-out flags and behaviour channels;
- ``checkpoint.pt``: ``torch.save`` of plain values and tensors (``weights_only``-safe); the key
  ``"model"`` is the ``state_dict`` and ``"run"`` the run's own record (format, extra state);
- ``metrics.json``: evaluation on the training sessions' test trials plus training statistics.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

import mini_decoders
from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_intervals, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.files import LOCK_NAME, FolderLock, replacing
from mini_decoders.metrics import (bits_per_spike, psth_r2_from_spikes, r2_score,
                                   velocity_r2_from_rates)
from mini_decoders.models.base import PREDICTION_KEYS, Decoder, SessionSpec
from mini_decoders.models.registry import get_model
from mini_decoders.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mini_decoders.train.profiles import resolve_profile

FORMAT_VERSION = 1  # bump when config.json / checkpoint.pt change incompatibly
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
PSTH_KERN_SD = 0.07  # s; NLB smooths MC_Maze / DMFC true PSTHs with 70 ms
BEHAVIOR = "hand_vel"

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
            from mini_decoders.data.nwb import read_nwb  # pynwb is slow to import; only when a path is given

            loaded.append(read_nwb(item))
    if not loaded:
        raise DataError("no sessions given: pass at least one Session or NWB path")
    ids = [s.id for s in loaded]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DataError(f"session ids must be unique, found {duplicates} more than once "
                        "(the NWB identifier names each session)")
    return loaded


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to a temp file next to ``path``, then rename it over ``path``.

    Raises:
        RunError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path} is a folder; expected the path of a .json file to write (e.g. {path / 'scores.json'})")
    with replacing(path) as temp, open(temp, "w") as file:
        json.dump(data, file, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a metric that could not be computed is written as null."""
    return float(value) if value is not None and np.isfinite(value) else None


def all_unit_rates(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """(N, T, U_in + U_out) held-in rates then held-out rates, the unit order NLB scores in."""
    parts = [predictions[key] for key in ("rates_heldin", "rates_heldout") if key in predictions]
    return np.concatenate(parts, axis=-1)


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
        import h5py

        path = Path(path)
        if path.is_dir():
            raise RunError(f"{path} is a folder; expected the path of the .h5 file to write (e.g. {path / 'PRED.h5'})")
        predictions = self.predict(sessions)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temp, h5py.File(temp, "w") as file:
            file.attrs["bin_size_s"] = self.bin_size
            file.attrs["model"] = str(self.config.get("model", ""))
            file.attrs["mini_decoders_version"] = mini_decoders.__version__
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
        import copy

        if mode not in ("units", "full"):
            raise RunError(f"finetune mode must be 'units' or 'full', got {mode!r}")
        if not callable(getattr(self.model, "finetune", None)):
            able = [name for name in ("ndt2", "poyo", "mtm") if callable(getattr(_model_class_or_none(name), "finetune", None))]
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
        with _writing(out, keep_resumable=False):
            config = {**self.config, "sessions": [], "model_config": model.config,
                      "finetuned_from": str(self.path) if self.path is not None else None, "finetune_mode": mode}
            started = time.perf_counter()
            history = model.finetune(sessions, mode, model.config, out_dir=out, progress=progress)
            train_seconds = time.perf_counter() - started
            config["sessions"] = [spec.to_dict() for spec in model.specs]
            config["model_config"] = model.config
            write_json_atomic(out / CONFIG_NAME, config)
            _save_run_checkpoint(out, model)
            history = history if isinstance(history, dict) else {}
            training = {"train_seconds": train_seconds, "mode": mode,
                        "samples_per_second": history.get("samples", 0) / max(train_seconds, 1e-9),
                        "history": _history_summary(history)}
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
        per_session = {}
        for session in as_sessions(sessions):
            per_session[session.id] = self._evaluate_one(session, split)
        keys = dict.fromkeys(k for scores in per_session.values() for k in scores)
        mean = {}
        for key in keys:
            values = [s[key] for s in per_session.values() if s.get(key) is not None]
            mean[key] = _finite_or_none(float(np.mean(values))) if values else None
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
        counts = np.where(binned.mask[:, :, None], binned.counts.astype(np.float64), np.nan)  # (N, T, U)
        velocity = binned.behavior.get(BEHAVIOR)  # (N, T, D), NaN in padding
        scores: dict[str, float | None] = {}
        if "rates_heldout" in predictions and spec.n_heldout:
            scores["co_bps"] = _finite_or_none(bits_per_spike(predictions["rates_heldout"][evaluated],
                                                              counts[evaluated][..., spec.heldout_index]))
        if "rates_forward" in predictions:  # models that forecast the bins after each trial's end
            forward = predictions["rates_forward"][evaluated]  # (N, T_fp, U_in + U_out)
            stops = binned.starts[evaluated] + binned.lengths[evaluated] * self.bin_size
            future = bin_intervals(session.spike_times, session.spike_units, session.n_units, stops,
                                   forward.shape[1], self.bin_size).astype(np.float64)  # (N, T_fp, U)
            order = np.concatenate([spec.heldin_index, spec.heldout_index])
            scores["fp_bps"] = _finite_or_none(bits_per_spike(forward, future[..., order]))
        if velocity is not None and np.isfinite(velocity[evaluated]).any():
            if "hand_vel" in predictions:
                scores["vel_r2"] = _finite_or_none(r2_score(predictions["hand_vel"][evaluated], velocity[evaluated]))
            elif "rates_heldin" in predictions:
                rates = all_unit_rates(predictions)
                train = np.flatnonzero(binned.split == "train")
                if len(train):
                    scores["vel_r2"] = _finite_or_none(velocity_r2_from_rates(rates[train], velocity[train],
                                                                              rates[evaluated], velocity[evaluated]))
        conditions = binned.condition[evaluated]
        if "rates_heldin" in predictions and len(set(conditions.tolist()) - {""}) >= 2:
            # psth_r2 averages rates over a condition's trials without NaN handling: compare the
            # bins every evaluated trial has (NLB's aligned windows have equal lengths anyway).
            common = int(binned.lengths[evaluated].min())
            order = np.concatenate([spec.heldin_index, spec.heldout_index])
            rates = all_unit_rates(predictions)
            scores["psth_r2"] = _finite_or_none(psth_r2_from_spikes(
                rates[evaluated, :common].astype(np.float64), counts[evaluated, :common][..., order],
                conditions, self.bin_size, PSTH_KERN_SD))
        extra_metrics = getattr(self.model, "extra_metrics", None)
        if callable(extra_metrics):  # a model's own scores on the same trials (MtM: its four tasks)
            extra = extra_metrics(session, binned.subset(evaluated))
            scores.update({key: _finite_or_none(value) for key, value in extra.items()})
        return scores


# ================================================================================================
# train / load_run

def train(model: str, sessions: SessionsLike, profile: str | None = None, out: str | os.PathLike | None = None, *,
          recipe: str | None = None, device: str | None = None, max_steps: int | None = None, seed: int | None = None,
          resume: bool = False, progress: bool = True, precision: str | None = None) -> Run:
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

    with _writing(out, keep_resumable=True):
        config_path = out / CONFIG_NAME
        has_checkpoint = _has_checkpoint(out)
        if config_path.exists() and not resume:
            if has_checkpoint or (out / METRICS_NAME).exists():
                raise RunError(f"{out} already holds a run ({CONFIG_NAME} exists); pass resume=True (--resume) to "
                               "continue it, or choose another --out")
            raise RunError(f"{out} holds an unfinished run with no checkpoint (it was stopped before writing one); "
                           "pass resume=True (--resume) to train it again from step 0, or choose another --out")
        model_config.update(overrides)
        model_config["seed"] = 0 if seed is None else int(seed)
        specs = [SessionSpec.of(s) for s in sessions]
        config = {"format_version": FORMAT_VERSION, "package_version": mini_decoders.__version__,
                  "model": model_class.name, "profile": profile, "recipe": model_config["recipe"],
                  "model_config": model_config,
                  "bin_size": float(model_config.get("bin_size", DEFAULT_BIN_SIZE)),
                  "sessions": [spec.to_dict() for spec in specs]}
        if resume and config_path.exists():
            previous = _read_config(out)
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
        if resume and not has_checkpoint:
            # kill -9 (or a power cut) before the first checkpoint: nothing to continue from.
            print(f"note: {out} has no checkpoint to resume from: training starts again from step 0",
                  file=sys.stderr, flush=True)

        torch.manual_seed(int(model_config["seed"]))
        np.random.seed(int(model_config["seed"]) % 2**32)
        net = model_class.build(sessions, model_config)
        write_json_atomic(config_path, config)

        started = time.perf_counter()
        history = net.fit(sessions, model_config, out_dir=out, resume=resume and has_checkpoint, progress=progress)
        train_seconds = time.perf_counter() - started
        _save_run_checkpoint(out, net)

        training = {"train_seconds": train_seconds,
                    "samples_per_second": history.get("samples", 0) / max(train_seconds, 1e-9),
                    "history": _history_summary(history)}
        run = Run(out, net.cpu(), config, {"training": training})
        scores = run.evaluate(sessions, split="test")
        run.metrics = {**scores, "training": training}
        write_json_atomic(out / METRICS_NAME, run.metrics)
    return run


def _checked_overrides(model_class, model_config: dict, device: str | None, max_steps: int | None,
                       precision: str | None = None) -> dict:
    """``device``, ``max_steps`` and ``precision`` as config overrides, refused now if they cannot work."""
    from mini_decoders.train.trainer import select_device, select_precision

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


def _has_checkpoint(folder: Path) -> bool:
    """Whether a Trainer left something to resume from in ``folder`` (or a stage's subfolder)."""
    return folder.is_dir() and any(folder.rglob(CHECKPOINT_NAME))


@contextlib.contextmanager
def _writing(out: Path, *, keep_resumable: bool):
    """Hold ``out`` as this process's RUN folder: created if needed, locked, cleaned up on failure.

    On any failure (Ctrl-C included) the files and folders this call added are removed, unless
    ``keep_resumable`` and a checkpoint exists to resume from; the folder itself goes too when this
    call created it. Anything that was in the folder before is never touched.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} exists and is not a folder; a RUN is a folder ({CONFIG_NAME}, "
                       f"{CHECKPOINT_NAME}, {METRICS_NAME}): choose another --out")
    try:
        out.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        lock = FolderLock(out, "run folder").acquire()
    except BaseException:
        if created:
            _remove_quietly(out)  # only when still empty: another writer may have claimed it meanwhile
        raise
    before = {path.name for path in out.iterdir()}
    try:
        yield
    except BaseException:
        if not (keep_resumable and _has_checkpoint(out)):
            for path in out.iterdir():
                if path.name not in before and path.name != LOCK_NAME:
                    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        lock.release()
        if created:
            _remove_quietly(out)
        raise
    lock.release()


def _remove_quietly(folder: Path) -> None:
    """Remove ``folder`` if it is empty (anything inside means someone else is using it)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _model_class_or_none(name: str):
    try:
        return get_model(name)
    except RunError:
        return None


def _history_summary(history: dict) -> dict:
    """What of a fit's history goes into metrics.json: per-session choices, the last log line and
    the training loss curve (``loss_curve``: ``[step, loss]`` per logged step, for plots and checks)."""
    summary = {k: v for k, v in history.items() if k != "records"}
    records = history.get("records", [])
    if records and "session" in records[0]:
        summary["sessions"] = records  # closed-form fits: one small record per session
    elif records:
        summary["steps"] = len(records)
        summary["last"] = records[-1]
        summary["loss_curve"] = [[record["step"], record["loss"]] for record in records if "loss" in record]
    return json.loads(json.dumps(summary, default=_json_default))


def _save_run_checkpoint(out: Path, net: Decoder) -> None:
    """Add the run's record to ``checkpoint.pt`` (keeping what a Trainer stored there for resuming)."""
    path = out / CHECKPOINT_NAME
    payload = load_checkpoint(path) if path.exists() else {}
    # non-tensor entries (a vocabulary's ids kept as extra state) are plain python: kept as they are
    payload["model"] = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in net.state_dict().items()}
    payload["run"] = {"format_version": FORMAT_VERSION, "model": net.name, "extra_state": net.extra_state()}
    save_checkpoint(path, payload)


def _read_config(path: Path) -> dict:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise RunError(f"{path} is not a run folder: {CONFIG_NAME} is missing (a RUN folder holds {CONFIG_NAME}, "
                       f"{CHECKPOINT_NAME} and {METRICS_NAME}; train one with `mini-decoders train MODEL --data ... "
                       f"--out {path}`)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{config_path} is not valid JSON ({error}); the run folder is damaged, retrain it") from None
    if not isinstance(config, dict):
        raise RunError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise RunError(f"{config_path}: run format version {version!r} is not supported by mini-decoders "
                       f"{mini_decoders.__version__}, which reads format version {FORMAT_VERSION}; the run was written "
                       f"by mini-decoders {config.get('package_version', 'unknown')}: retrain it with this version, "
                       "or load it with the version that wrote it")
    missing = [key for key in ("model", "model_config", "sessions") if key not in config]
    if missing:
        raise RunError(f"{config_path}: missing field(s) {missing}; the run folder is damaged, retrain it")
    return config


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
    config = _read_config(path)
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
