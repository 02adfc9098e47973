"""Transfer: pretrain on N sessions, adapt to an unseen one with k% of its trials, against from scratch.

All three multi-session papers tell the same story — pretraining on more sessions makes a new
session cheaper to learn — each on its own data and with its own adaptation recipe:

- **POYO**: *unit identification*: new unit and session embeddings, everything else frozen;
- **NDT2**: *context tuning*: new session (and subject / task) context tokens, backbone frozen;
- **MtM**: a *new stitcher*: the new session's read-in, read-out and session token.

In the package all three are ``Run.finetune(..., mode="units")``. This module puts them on
common ground: the same sessions, the same held-out session, the same k% of its train trials
(:func:`few_train_trials`, one random subset per k shared by every model), the same seeds. For
each model and each N it pretrains one RUN on the first N sessions, adapts it to the new session
at every k, and trains the same model *from scratch* on the same k% of trials for as many steps
as the adaptation takes (equal steps on the new session). Each model is scored on the new
session's test trials with the metric it is judged on in the benchmark (POYO: velocity R²; NDT2,
MtM: co-bps), next to the classic baseline trained on the same trials (ridge, smoothing) and the
oracle (true rates, when the data is simulated).

Every cell (a pretraining, an adaptation, a scratch run, a baseline) is one JSON file in
``<work>/rows``, written atomically; a rerun skips the cells that are there
(:mod:`mini_decoders.experiments.cells`). The results are drawn by
:func:`mini_decoders.experiments.report.plot_transfer`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mini_decoders.errors import DataError, RunError
from mini_decoders.experiments.budget import steps_for_budget
from mini_decoders.experiments.cells import Cells, digest, error_row, file_stamp
from mini_decoders.experiments.oracle import oracle_row
from mini_decoders.models.registry import adaptable_models, get_model
from mini_decoders.run import as_sessions, load_run, train
from mini_decoders.training.profiles import config_for, resolve_profile

# How every model adapts here: its own recipe for new units (the model class's ADAPTATION says what it learns).
MODE = "units"
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(pretrain_counts=(1, 2), fractions=(0.5, 1.0), budget_seconds=None),
    "quick": dict(pretrain_counts=(1, 3), fractions=(0.1, 0.3, 1.0), budget_seconds=150.0),
    "full": dict(pretrain_counts=(1, 2, 4, 8), fractions=(0.05, 0.1, 0.2, 0.5, 1.0), budget_seconds=None),
}


# ================================================================================================
# Inputs

def few_train_trials(session, fraction: float, seed: int = 0):
    """``session`` keeping a random ``fraction`` of its train trials (at least 2); val and test kept.

    The subset depends only on ``(seed, fraction)`` and the trial table, so every model adapts to
    the same trials.

    Raises:
        RunError: ``fraction`` is not in (0, 1].
    """
    if not 0 < float(fraction) <= 1:
        raise RunError(f"transfer: a fraction of train trials must be in (0, 1], got {fraction}")
    split = np.asarray(session.trials.split)
    train = np.flatnonzero(split == "train")
    if len(train) < 2:
        raise DataError(f"session {session.id!r} has {len(train)} train trials; adapting needs at least 2")
    n_keep = min(len(train), max(2, int(round(float(fraction) * len(train)))))
    rng = np.random.default_rng([int(seed), int(round(float(fraction) * 1e6))])
    return keep_train_trials(session, rng.choice(train, n_keep, replace=False))


def keep_train_trials(session, kept: np.ndarray):
    """``session`` whose train trials are only those in ``kept`` (trial-table rows); val and test kept as they are.

    Raises:
        DataError: a row in ``kept`` is not a train trial (a model must never fit val or test trials).
    """
    split = np.asarray(session.trials.split)
    kept = np.asarray(kept, dtype=np.int64)
    if len(kept) and (kept.min() < 0 or kept.max() >= len(split) or (split[kept] != "train").any()):
        raise DataError(f"session {session.id!r}: the trials to keep must be train trials; got rows that are not")
    return session.select_trials(np.sort(np.concatenate([np.unique(kept), np.flatnonzero(split != "train")])))


def parse_counts(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,3"`` -> (1, 3); each >= 1."""
    try:
        values = tuple(int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip())
    except ValueError:
        raise RunError(f"--pretrain-sessions: expected whole numbers like 1,3, got {text!r}") from None
    if not values or min(values) < 1:
        raise RunError(f"--pretrain-sessions: expected numbers >= 1 like 1,3, got {text!r}")
    return tuple(sorted(set(values)))


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.1,0.3,1"`` -> (0.1, 0.3, 1.0); each in (0, 1]."""
    try:
        values = tuple(float(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip())
    except ValueError:
        raise RunError(f"--fractions: expected numbers like 0.1,0.3,1, got {text!r}") from None
    if not values or min(values) <= 0 or max(values) > 1:
        raise RunError(f"--fractions: expected fractions of the train trials in (0, 1] like 0.1,0.3,1, got {text!r}")
    return tuple(sorted(set(values)))


# ================================================================================================
# Cells

class RecipeCells(Cells):
    """The cells of one experiment: one JSON row and one RUN folder each.

    A cell's key hashes the experiment's settings and the recipe of the one model it trains, so
    changing one model's recipe retrains that model's cells and reuses every other. ``per_model``
    adds settings of one model alone (its steps) to its cells' keys, so changing them, or adding a
    model, retrains no other model's cells. ``what`` names the experiment in the progress lines
    (the scaling curve uses these cells too).
    """

    def __init__(self, work: Path, stamp: dict, profile: str, log: Callable[[str], None], what: str = "transfer",
                 per_model: dict[str, Any] | None = None):
        super().__init__(work)
        self.stamp, self.profile, self.log, self.what = stamp, profile, log, what
        self.per_model = per_model or {}
        (self.work / "rows").mkdir(parents=True, exist_ok=True)

    def key(self, model: str) -> str:
        recipe = config_for(get_model(model).CONFIGS, self.profile)
        own = {"settings": self.per_model[model]} if model in self.per_model else {}
        return digest({**self.stamp, "model": model, "recipe": recipe, **own})

    def get(self, name: str, model: str, compute: Callable[[], dict]) -> dict:
        """The saved row ``name`` if it was made with ``model``'s key and succeeded, else ``compute()`` saved."""
        key = self.key(model)
        row = self.done(name, key)
        if row is not None:
            return row
        self.log(f"  {self.what}: {name}")
        started = time.perf_counter()

        def failed(error: str, detail: str) -> dict:
            self.log(f"    error: {error}"[:400])
            return {**error_row(error, detail), "name": name, "wall_seconds": time.perf_counter() - started}

        return self.compute(name, key, lambda: {"status": "ok", **compute(), "name": name,
                                                "wall_seconds": time.perf_counter() - started}, failed)


def judged_score(metrics: dict, metric: str) -> float | None:
    """A run's mean score on ``metric`` (``Run.evaluate``'s ``mean``), None when absent or not finite."""
    value = metrics.get("mean", {}).get(metric)
    return float(value) if value is not None and np.isfinite(value) else None


def pretrain(model: str, pool, out: Path, *, profile: str, steps: int, seed: int, metric: str,
             device: str | None = None, progress: bool = False) -> dict:
    """Train ``model`` on the sessions of ``pool`` into ``out``: what to adapt from (a cell's row)."""
    run = train(model, pool, profile=profile, out=out, device=device, max_steps=steps, seed=seed, progress=progress)
    return {"model": model, "n_sessions": len(pool), "sessions": [s.id for s in pool],
            "score_on_pool": judged_score(run.metrics, metric), **_trained(run), "run": str(run.path)}


def adapt(pretrained_run: str | Path, sessions, out: Path, *, mode: str, profile: str, steps: int, seed: int,
          metric: str, progress: bool = False) -> dict:
    """Fine-tune the RUN folder ``pretrained_run`` to ``sessions`` (``Run.finetune``) and score it (a cell's row)."""
    adapted = load_run(pretrained_run).finetune(sessions, mode=mode, out=out, profile=profile, max_steps=steps,
                                                seed=seed, progress=progress)
    return {"score": judged_score(adapted.metrics, metric), "all_scores": adapted.metrics.get("mean", {}),
            "seconds": adapted.metrics.get("training", {}).get("train_seconds"), "steps": steps}


def _trained(run) -> dict:
    training = run.metrics.get("training", {})
    return {"train_seconds": training.get("train_seconds"), "samples_per_second": training.get("samples_per_second"),
            "steps": run.config.get("model_config", {}).get("max_steps"),
            "finetune_steps": run.config.get("model_config", {}).get("finetune_steps")}


# ================================================================================================
# The experiment

def transfer_experiment(data: Sequence[str | Path], models: Sequence[str] | None = None,
                        pretrain_counts: Sequence[int] | None = None, fractions: Sequence[float] | None = None,
                        profile: str | None = None, work: str | Path | None = None, *, seed: int = 0,
                        device: str | None = None, threads: int | None = None, pretrain_steps: int | None = None,
                        budget_seconds: float | str | None = "auto", finetune_steps: int | None = None,
                        scratch_steps: int | None = None, baselines: bool = True, progress: bool = False,
                        log: Callable[[str], None] | None = print) -> dict:
    """Pretrain on N sessions, adapt to the last session with k% of its train trials, vs from scratch.

    Args:
        data: NWB files; the **last** is the new session, the others the pretraining pool (in order:
            N sessions = the first N).
        models: models that adapt to new units (their class's ``ADAPTS``; default: every one of them).
        pretrain_counts: the N values (default per profile; capped at the pool size).
        fractions: the k values as fractions of the new session's train trials (default per profile).
        profile: the recipe of every run.
        work: the folder of cells and RUN folders (required).
        pretrain_steps: steps of every pretraining (default: the profile's recipe, cut to what fits
            ``budget_seconds`` on this machine, measured once per model; the same for every N, so
            more sessions means more data at the same compute).
        budget_seconds: wall-clock per pretraining (``"auto"``: the profile's; None: the recipe).
        finetune_steps: steps of each adaptation (default: the model's profile ``finetune_steps``).
        scratch_steps: steps of each from-scratch run (default: the same as the adaptation's).
        baselines: also train the classic baseline of each judged metric on the same k% trials.

    Returns:
        ``{"new_session", "pool", "profile", "pretrain_counts", "fractions", "models": {model:
        {"metric", "mode", "adaptation", "pretrain": [...], "adapted": [...], "scratch": [...]}},
        "baselines": {name: [...]}, "oracle": {...} | None, "errors": [...], "seconds"}``; each
        point holds ``n_sessions`` / ``fraction`` / ``n_train_trials`` / ``score`` / ``seconds``.
    """
    say = log or (lambda message: None)
    if work is None:
        raise RunError("transfer_experiment: give `work`, the folder that keeps its runs and rows")
    work = Path(work)
    profile = resolve_profile(profile)
    defaults = PROFILE_DEFAULTS[profile]
    paths = [str(Path(p).resolve()) for p in data]
    if len(paths) < 2:
        raise RunError(f"transfer needs at least 2 sessions (pretraining pool + the new one), got {len(paths)}")
    adaptable = adaptable_models()
    models = [m for m in (models or adaptable) if m]
    unknown = [m for m in models if m not in adaptable]
    if unknown:
        raise RunError(f"transfer: model(s) {unknown} have no adaptation recipe; expected from {sorted(adaptable)}")
    classes = {model: get_model(model) for model in models}
    pool_size = len(paths) - 1
    counts = sorted({min(n, pool_size) for n in parse_counts(pretrain_counts or defaults["pretrain_counts"])})
    fractions = parse_fractions(fractions or defaults["fractions"])
    if budget_seconds == "auto":
        budget_seconds = None if pretrain_steps is not None else defaults["budget_seconds"]
    if threads:
        torch.set_num_threads(int(threads))

    sessions = as_sessions(paths)
    pool, new = sessions[:-1], sessions[-1]
    stamp = {"files": [file_stamp(p) for p in paths], "profile": profile, "seed": seed, "device": device,
             "pretrain_steps": pretrain_steps, "budget_seconds": budget_seconds, "finetune_steps": finetune_steps,
             "scratch_steps": scratch_steps}
    cells = RecipeCells(work, stamp, profile, say)  # each cell's key adds its model's recipe
    started = time.perf_counter()
    few = {fraction: few_train_trials(new, fraction, seed) for fraction in fractions}
    n_train = {fraction: int((np.asarray(s.trials.split) == "train").sum()) for fraction, s in few.items()}
    say(f"transfer: models {models}, pretrain on N in {counts} of {[s.id for s in pool]}, adapt to {new.id!r} "
        f"with k in {[f'{f:.0%}' for f in fractions]} of its train trials")

    result: dict[str, Any] = {"new_session": new.id, "pool": [s.id for s in pool], "profile": profile, "seed": seed,
                              "pretrain_counts": counts, "fractions": list(fractions),
                              "n_train_trials": [n_train[f] for f in fractions],
                              "models": {}, "baselines": {}, "errors": []}

    def cell(name: str, model: str, compute: Callable[[], dict]) -> dict | None:
        """The cell's row (reused or computed), or None when it failed (the error is recorded)."""
        row = cells.get(name, model, compute)
        if row["status"] != "ok":
            result["errors"].append({"cell": name, "error": row["error"]})
            return None
        return row

    def trained_on_few(model: str, fraction: float, name: str, metric: str, **options) -> Callable[[], dict]:
        """A cell that trains ``model`` on the new session's ``fraction`` of train trials alone."""
        def compute() -> dict:
            run = train(model, [few[fraction]], profile=profile, out=cells.fresh_run_dir(name), seed=seed, **options)
            return {"score": judged_score(run.metrics, metric), "all_scores": run.metrics.get("mean", {}),
                    "seconds": run.metrics.get("training", {}).get("train_seconds")}
        return compute

    for model in models:
        metric = classes[model].JUDGED_ON
        recipe = config_for(classes[model].CONFIGS, profile)
        entry: dict[str, Any] = {"metric": metric, "mode": MODE, "adaptation": classes[model].ADAPTATION,
                                 "pretrain": [], "adapted": [], "scratch": []}
        result["models"][model] = entry

        def budget_cell(model=model) -> dict:
            if pretrain_steps is not None:
                return {"steps": int(pretrain_steps)}
            if budget_seconds is None:
                return {"steps": int(recipe["max_steps"])}
            return steps_for_budget(model, pool[:max(counts)], profile, float(budget_seconds), seed=seed, device=device)

        budget = cell(f"{model}__budget", model, budget_cell)
        if budget is None:
            continue
        steps = int(budget["steps"])
        tune_steps = int(finetune_steps if finetune_steps is not None else recipe.get("finetune_steps", steps))
        from_scratch_steps = int(scratch_steps if scratch_steps is not None else tune_steps)

        for n in counts:
            name = f"{model}__pretrain__N{n}"

            def pretrain_cell(n=n, name=name, model=model) -> dict:
                return pretrain(model, pool[:n], cells.fresh_run_dir(name), profile=profile, steps=steps, seed=seed,
                                metric=metric, device=device, progress=progress)

            pre = cell(name, model, pretrain_cell)
            if pre is None:
                continue
            entry["pretrain"].append({k: pre.get(k) for k in ("n_sessions", "score_on_pool", "train_seconds",
                                                                "samples_per_second", "steps")})
            for fraction in fractions:
                name = f"{model}__adapt__N{n}__k{fraction:g}"

                def adapt_cell(fraction=fraction, name=name, pre=pre) -> dict:
                    return adapt(pre["run"], [few[fraction]], cells.fresh_run_dir(name), mode=MODE, profile=profile,
                                 steps=tune_steps, seed=seed, metric=metric, progress=progress)

                row = cell(name, model, adapt_cell)
                if row is not None:
                    entry["adapted"].append({"n_sessions": n, "fraction": fraction, "n_train_trials": n_train[fraction],
                                             "score": row["score"], "seconds": row["seconds"], "steps": row["steps"]})
        for fraction in fractions:
            name = f"{model}__scratch__k{fraction:g}"
            scratch = trained_on_few(model, fraction, name, metric, device=device, max_steps=from_scratch_steps,
                                     progress=progress)
            row = cell(name, model, lambda scratch=scratch: {**scratch(), "steps": from_scratch_steps})
            if row is not None:
                entry["scratch"].append({"fraction": fraction, "n_train_trials": n_train[fraction],
                                         "score": row["score"], "seconds": row["seconds"], "steps": row["steps"]})

    baseline_of = {model_class.JUDGED_ON: model_class.BASELINE for model_class in classes.values()}
    metrics_needed = sorted(baseline_of)
    if baselines:
        for metric in metrics_needed:
            baseline = baseline_of[metric]
            points = []
            for fraction in fractions:
                name = f"{baseline}__baseline__k{fraction:g}"
                row = cell(name, baseline, trained_on_few(baseline, fraction, name, metric, progress=False))
                if row is not None:
                    points.append({"fraction": fraction, "n_train_trials": n_train[fraction], "score": row["score"],
                                   "seconds": row["seconds"]})
            result["baselines"][baseline] = {"metric": metric, "points": points}
    oracle = oracle_row([paths[-1]], [new])
    result["oracle"] = None if oracle is None else {m: oracle.get(m) for m in metrics_needed}
    result["seconds"] = time.perf_counter() - started
    return result
