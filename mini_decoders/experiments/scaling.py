"""The data-scaling curve (issue 24): test score against the number of training trials.

    mini-decoders benchmark --scaling --profile quick --json S.json

When does a transformer pay off? Every model is trained on ``n`` train trials of one session, for
several ``n`` and several seeds, and scored on that session's test trials, which are the same for
every point: a curve per model, with the spread over seeds as error bars. Each model is judged on
its own metric (co-bps for rate models, velocity R² for decoders) against the classic baseline its
class names (NLB's smoothing, the Wiener filter ``ridge``), trained on the very same trials; the
*crossing* of a model is the smallest ``n`` from which its mean stays above the baseline's at every
larger ``n`` (:func:`crossing_points`).

What stays fixed along a curve, so that only the amount of data changes:

- the trials: for each seed one random order of the session's train trials; the ``n`` trials of
  that seed are the first ``n`` of it, so its 25 lie inside its 50 (:func:`train_subsets`). Val
  and test trials are kept as they are; the test trials are scored, the val trials choose what a
  recipe chooses on them (smoothing's kernel, early stopping);
- the compute: every gradient model takes the same number of optimiser steps at every ``n``
  (``SCALING_PROFILES[profile]["steps"]``), so a small ``n`` means more passes over fewer trials;
- the recipe: each model trains with its own registered recipe of the profile's ``model_profile``
  through :func:`mini_decoders.run.train`, which keeps held-out neurons and test trials out of training.

**The second axis, pretraining.** With more than one session (the last one is the target; the
simulator writes three in ``quick``), every model that adapts to new units (``ADAPTS``: POYO, NDT2,
MtM) also gets a *pretrained* curve: the model is pretrained on the other sessions, then fine-tuned
(``Run.finetune(mode="full")``, every weight) on the same ``n`` trials for the same number of steps
as its from-scratch curve. The pretraining and fine-tuning are the transfer experiment's own
(:func:`mini_decoders.experiments.transfer.pretrain` and :func:`~mini_decoders.experiments.transfer.adapt`).

Every cell (one model, ``n`` and seed) is one JSON row in ``<work>/rows``, written atomically; a
rerun reuses the rows made with the same data and settings (:mod:`mini_decoders.experiments.cells`).
The table is printed by :func:`mini_decoders.experiments.report.format_scaling` and drawn by
:func:`plot_scaling`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mini_decoders.data.synth import write_synthetic
from mini_decoders.errors import DataError, RunError
from mini_decoders.experiments.cells import file_stamp
from mini_decoders.experiments.oracle import oracle_row
from mini_decoders.experiments.transfer import RecipeCells, adapt, judged_score, keep_train_trials, pretrain
from mini_decoders.files import write_json_atomic
from mini_decoders.metrics import METRIC_LABELS
from mini_decoders.models.registry import MODELS, get_model
from mini_decoders.run import as_sessions, train
from mini_decoders.training.profiles import resolve_profile
from mini_decoders.version import __version__

FORMAT = "mini-decoders-scaling/1"
FINETUNE_MODE = "full"  # the pretrained curve fine-tunes every weight on the n trials

# Per profile: the simulated sessions (when no data is given; the last is the target), the models'
# own profile, the train-trial counts, the number of seeds, the models (their baselines are added),
# the optimiser steps of each gradient model (None: its recipe's), and the pretraining.
SCALING_PROFILES: dict[str, dict[str, Any]] = {
    # Proves that every part runs (tests, the notebook CI): seconds, numbers meaningless.
    "tiny": dict(synth=dict(n_sessions=2, n_trials=40, n_units=24), model_profile="tiny", trial_counts=(6, 12, 24),
                 seeds=3, models=("smoothing", "ridge", "ndt1", "poyo"),
                 steps={"gru": 10, "ndt1": 8, "poyo": 4}, default_steps=8,
                 pretrain=dict(steps=10, per_seed=False)),
    # The quick recipes with fewer steps. Measured with one torch thread: 7.1 CPU-minutes (12 minutes
    # of wall-clock on 2 cores shared with other work); NDT1's 150 steps reach smoothing's co-bps at
    # 200 trials (0.188 vs 0.190), POYO's 100 from scratch stay near R² 0.1, and pretrained on the
    # two other sessions POYO beats the Wiener filter from 25 trials on (0.82 vs 0.70).
    "quick": dict(synth=dict(n_sessions=3, n_trials=300, n_units=64), model_profile="quick",
                  trial_counts=(25, 50, 100, 200), seeds=3, models=("smoothing", "ridge", "gru", "ndt1", "poyo"),
                  steps={"gru": 80, "ndt1": 150, "poyo": 100}, default_steps=150,
                  pretrain=dict(steps=400, per_seed=False)),
    # The quick recipes trained to their full step counts, more seeds and trials: for a GPU, or a night.
    "full": dict(synth=dict(n_sessions=4, n_trials=640, n_units=96), model_profile="quick",
                 trial_counts=(25, 50, 100, 200, 400), seeds=5,
                 models=("smoothing", "ridge", "gru", "ndt1", "ndt2", "poyo"), steps={}, default_steps=None,
                 pretrain=dict(steps=None, per_seed=True)),
}


# ================================================================================================
# The trials

def train_subsets(session, counts: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """For each ``n`` in ``counts``, ``n`` of ``session``'s train trials (trial-table rows, sorted).

    One seeded random order of the train trials per ``seed``; the ``n`` trials are its first ``n``,
    so the subsets of one seed are nested and two seeds draw different ones. Counts larger than the
    number of train trials are left out.

    Raises:
        DataError: the session has no train trials.
    """
    train_rows = np.flatnonzero(np.asarray(session.trials.split) == "train")
    if not len(train_rows):
        raise DataError(f"session {session.id!r} has no train trials to draw from")
    order = np.random.default_rng([int(seed), 2024]).permutation(train_rows)
    return {int(n): np.sort(order[:int(n)]) for n in counts if 1 <= int(n) <= len(train_rows)}


def parse_counts(counts: str | Sequence[int]) -> tuple[int, ...]:
    """``"25,50,100"`` or numbers -> sorted distinct counts, each >= 2."""
    try:
        values = tuple(int(v) for v in (counts.split(",") if isinstance(counts, str) else counts) if str(v).strip())
    except ValueError:
        raise RunError(f"scaling: trial counts must be whole numbers like 25,50,100, got {counts!r}") from None
    if not values or min(values) < 2:
        raise RunError(f"scaling: trial counts must be whole numbers >= 2 like 25,50,100, got {counts!r}")
    return tuple(sorted(set(values)))


def _models(models: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """The requested models and, after them, the classic baseline of each (the curves they are judged against)."""
    if models is None:
        names = list(default)
    else:
        names = [m.strip().lower() for m in (models.split(",") if isinstance(models, str) else models)]
        names = [m for m in names if m]
        unknown = [m for m in names if m not in MODELS]
        if unknown:
            raise RunError(f"scaling --models: unknown model(s) {unknown}; expected names from {', '.join(MODELS)}")
        if not names:
            raise RunError(f"scaling --models: no model given; expected names from {', '.join(MODELS)}")
    baselines = [get_model(m).BASELINE for m in names if get_model(m).BASELINE]
    return list(dict.fromkeys(names + baselines))


# ================================================================================================
# The experiment

def run_scaling(data: Sequence[str | Path] | None = None, profile: str = "tiny", *, seeds: Sequence[int] | None = None,
                trial_counts: Sequence[int] | None = None, models: str | Sequence[str] | None = None,
                work: str | Path = "scaling.work", device: str = "cpu",
                log: Callable[[str], None] | None = print) -> dict:
    """Train every model on ``n`` train trials for each ``n`` and seed; the curves and their crossings.

    Args:
        data: NWB files; the **last** is the target session (the curves), the others are the
            pretraining pool. None: the profile's simulated sessions, written to ``<work>/data``.
        profile: a key of :data:`SCALING_PROFILES` (``tiny``, ``quick``, ``full``; ``auto``: ``quick``).
        seeds: the seeds (default: ``0 .. k-1``, ``k`` from the profile); at least 3.
        trial_counts: the numbers of train trials (default: the profile's); counts the target
            session does not have are left out (``skipped_trial_counts`` says which).
        models: names or a comma-separated string (default: the profile's); the classic baseline
            of each is added.
        work: the folder of rows, RUN folders and simulated data; a rerun reuses finished rows.
        device: the training device of every model.
        log: where progress lines go (None: silent).

    Returns:
        The table (module docstring, and ``format`` ``mini-decoders-scaling/1``): ``curves`` (one per
        model and pretraining; points with ``n_trials``, one score per seed, ``mean``, ``std``,
        ``train_seconds``), ``crossings``, ``oracle``, ``steps``, ``errors``, ``seconds``.

    Raises:
        RunError: unknown profile or model, fewer than 3 seeds, bad trial counts.
        DataError: a data file is missing, or the target session has fewer train trials than the smallest count.
    """
    say = log or (lambda message: None)
    profile = resolve_profile(profile)
    if profile not in SCALING_PROFILES:
        raise RunError(f"scaling: profile must be one of {', '.join(SCALING_PROFILES)}, got {profile!r}")
    settings = SCALING_PROFILES[profile]
    seeds = [int(s) for s in (range(settings["seeds"]) if seeds is None else seeds)]
    if len(set(seeds)) < 3:
        raise RunError(f"scaling: error bars need at least 3 distinct seeds, got {seeds}")
    counts = parse_counts(settings["trial_counts"] if trial_counts is None else trial_counts)
    names = _models(models, settings["models"])
    classes = {name: get_model(name) for name in names}
    model_profile = settings["model_profile"]
    started = time.perf_counter()
    work = Path(work)

    if data:
        paths = [Path(p).resolve() for p in data]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"scaling --data: file(s) not found: {missing}")
    else:
        # absolute: the cells' keys stamp the files by path, and a rerun finds them by this glob
        paths = sorted(p.resolve() for p in (work / "data").glob("*.nwb")) or [
            p.resolve() for p in write_synthetic(work / "data", seed=seeds[0], **settings["synth"])]
    sessions = as_sessions([str(p) for p in paths])
    target, pool = sessions[-1], sessions[:-1]
    n_available = int((np.asarray(target.trials.split) == "train").sum())
    skipped = [n for n in counts if n > n_available]
    counts = tuple(n for n in counts if n <= n_available)
    if not counts:
        raise DataError(f"scaling: the target session {target.id!r} has {n_available} train trials, fewer than the "
                        f"smallest count asked for ({min(skipped)}); ask for smaller trial_counts")
    if skipped:
        say(f"scaling: {target.id!r} has {n_available} train trials: counts {skipped} left out")
    subsets = {seed: train_subsets(target, counts, seed) for seed in seeds}
    test_rows = np.flatnonzero(np.asarray(target.trials.split) == "test")

    def steps_of(model: str) -> int | None:
        if "max_steps" not in classes[model].recipe_config(model_profile):
            return None  # fitted in closed form (ridge, smoothing): no steps
        steps = settings["steps"].get(model, settings["default_steps"])
        return int(steps if steps is not None else classes[model].recipe_config(model_profile)["max_steps"])

    steps = {name: steps_of(name) for name in names}
    pretrained = [name for name in names if classes[name].ADAPTS] if pool else []
    pretrain_steps = {name: int(settings["pretrain"]["steps"] or classes[name].recipe_config(model_profile)["max_steps"])
                      for name in pretrained}
    per_seed = bool(settings["pretrain"]["per_seed"])
    stamp = {"format": FORMAT, "files": [file_stamp(str(p)) for p in paths], "model_profile": model_profile,
             "device": device, "pretrain_per_seed": per_seed}
    cells = RecipeCells(work, stamp, model_profile, say, what="scaling",
                        per_model={name: {"steps": steps[name], "pretrain_steps": pretrain_steps.get(name)}
                                   for name in names})
    say(f"scaling: {', '.join(names)} (pretrained: {', '.join(pretrained) or 'none'}) on {target.id!r} with "
        f"{list(counts)} train trials x seeds {seeds}; test: its {len(test_rows)} test trials; profile {profile}")

    errors: list[dict] = []

    def cell(name: str, model: str, compute: Callable[[], dict]) -> dict | None:
        row = cells.get(name, model, compute)
        if row["status"] != "ok":
            errors.append({"cell": name, "error": row["error"]})
            return None
        return row

    pretrain_runs: dict[tuple[str, int], dict | None] = {}
    for name in pretrained:
        for seed in (seeds if per_seed else seeds[:1]):
            cell_name = f"{name}__pretrain__s{seed}"
            pretrain_runs[(name, seed)] = cell(cell_name, name, lambda name=name, seed=seed, cell_name=cell_name: pretrain(
                name, pool, cells.fresh_run_dir(cell_name), profile=model_profile, steps=pretrain_steps[name],
                seed=seed, metric=classes[name].JUDGED_ON, device=device))

    curves = []
    for name, is_pretrained in [(n, False) for n in names] + [(n, True) for n in pretrained]:
        metric = classes[name].JUDGED_ON
        points = []
        for n in counts:
            scores, seconds = [], []
            for seed in seeds:
                few = keep_train_trials(target, subsets[seed][n])
                cell_name = f"{name}{'__pretrained' if is_pretrained else ''}__n{n}__s{seed}"
                if is_pretrained:
                    pre = pretrain_runs.get((name, seed if per_seed else seeds[0]))
                    if pre is None:
                        scores.append(None)
                        continue

                    def compute(pre=pre, few=few, cell_name=cell_name, seed=seed) -> dict:
                        return adapt(pre["run"], [few], cells.fresh_run_dir(cell_name), mode=FINETUNE_MODE,
                                     profile=model_profile, steps=steps[name], seed=seed, metric=metric)
                else:
                    def compute(name=name, few=few, cell_name=cell_name, seed=seed) -> dict:
                        run = train(name, [few], profile=model_profile, out=cells.fresh_run_dir(cell_name),
                                    device=device, max_steps=steps[name], seed=seed, progress=False)
                        return {"score": judged_score(run.metrics, metric), "all_scores": run.metrics.get("mean", {}),
                                "seconds": run.metrics.get("training", {}).get("train_seconds"), "steps": steps[name]}

                row = cell(cell_name, name, lambda compute=compute, n=n, seed=seed, few=few: {
                    **compute(), "n_trials": n, "seed": seed, "train_trials": _train_rows(target, few).tolist()})
                scores.append(None if row is None else row["score"])
                if row is not None and row.get("seconds") is not None:
                    seconds.append(float(row["seconds"]))
            points.append(_point(n, scores, seconds))
        curve = {"model": name, "pretrained": is_pretrained, "metric": metric,
                 "baseline": classes[name].BASELINE or None, "classic": bool(classes[name].CLASSIC),
                 "steps": steps[name], "points": points}
        if is_pretrained:
            curve["pretrain_steps"] = pretrain_steps[name]
        curves.append(curve)
        say(f"  {_curve_label(curve)}: " + ", ".join(
            f"n={p['n_trials']} {_mean_text(p)}" for p in points))

    oracle = oracle_row([str(paths[-1])], [target])
    table = {"format": FORMAT, "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "command": None, "profile": profile, "model_profile": model_profile, "seeds": seeds,
             "trial_counts": list(counts), "skipped_trial_counts": skipped, "train_trials_available": n_available,
             "test_trials": int(len(test_rows)), "data": [str(p) for p in paths], "target_session": target.id,
             "pretrain_sessions": [s.id for s in pool] if pretrained else [],
             "pretrain": {"models": pretrained, "steps": pretrain_steps, "per_seed": per_seed,
                          "finetune_mode": FINETUNE_MODE,
                          "seconds": {f"{m}/s{s}": (r or {}).get("train_seconds") for (m, s), r in pretrain_runs.items()}},
             "steps": steps, "curves": curves,
             "oracle": None if oracle is None else {"co_bps": oracle.get("co_bps"), "vel_r2": oracle.get("vel_r2")},
             "errors": errors}
    table["crossings"] = crossing_points(table)
    table["seconds"] = time.perf_counter() - started
    return table


def _train_rows(session, few) -> np.ndarray:
    """The rows of ``session``'s trial table that are train trials of ``few`` (what a cell trained on, kept in its row)."""
    trained = np.asarray(few.trials.split) == "train"
    return np.flatnonzero(np.isin(session.trials.start, few.trials.start[trained])
                          & np.isin(session.trials.stop, few.trials.stop[trained]))


def _point(n: int, scores: list[float | None], seconds: list[float]) -> dict:
    """One point of a curve: every seed's score (None: failed), their mean and sample std (ddof 1)."""
    kept = np.array([s for s in scores if s is not None], dtype=float)
    return {"n_trials": int(n), "scores": scores, "mean": float(kept.mean()) if len(kept) else None,
            "std": float(kept.std(ddof=1)) if len(kept) > 1 else None,
            "train_seconds": float(np.mean(seconds)) if seconds else None}


def _curve_label(curve: dict) -> str:
    return curve["model"] + ("+pretrained" if curve.get("pretrained") else "")


def _mean_text(point: dict) -> str:
    if point.get("mean") is None:
        return "-"
    return f"{point['mean']:.3f}" + ("" if point.get("std") is None else f"±{point['std']:.3f}")


# ================================================================================================
# Crossings

def crossing_points(table: dict) -> list[dict]:
    """Where each curve with a baseline crosses it for good.

    For every curve that names a ``baseline`` (whose own curve, not pretrained, is in the table),
    on the trial counts both have a mean at: ``n_trials`` is the smallest count from which the
    curve's mean is above the baseline's at that count and every larger one (None: it is not above
    at the largest count, so never for good); ``margin_at_largest`` is the curve's mean minus the
    baseline's at the largest count (None when either is missing).
    """
    baselines = {c["model"]: c for c in table["curves"] if not c.get("pretrained")}
    crossings = []
    for curve in table["curves"]:
        base = baselines.get(curve.get("baseline") or "")
        if base is None:
            continue
        ours = {p["n_trials"]: p.get("mean") for p in curve["points"]}
        theirs = {p["n_trials"]: p.get("mean") for p in base["points"]}
        common = sorted(set(ours) & set(theirs))
        above = [ours[n] is not None and theirs[n] is not None and ours[n] > theirs[n] for n in common]
        crossing = None
        for n, is_above in zip(reversed(common), reversed(above)):
            if not is_above:
                break
            crossing = n
        largest = common[-1] if common else None
        margin = (ours[largest] - theirs[largest]
                  if largest is not None and ours[largest] is not None and theirs[largest] is not None else None)
        crossings.append({"model": curve["model"], "pretrained": bool(curve.get("pretrained")),
                          "baseline": base["model"], "metric": curve["metric"], "n_trials": crossing,
                          "margin_at_largest": None if margin is None else float(margin),
                          "classic": bool(curve.get("classic"))})
    return crossings


# ================================================================================================
# The picture

def plot_scaling(table: dict, path: str | Path | None = None, axes=None):
    """Test score against train trials, one panel per metric: mean ± std over seeds, baselines dashed.

    Pretrained curves are drawn with open markers in their model's colour; the oracle (simulated
    data) is a dashed black line; a crossing is a dotted vertical line in the model's colour.

    Returns:
        The figure (saved as PNG when ``path`` is given).
    """
    import matplotlib.pyplot as plt  # only when a picture is asked for (see experiments.report)

    from mini_decoders.experiments.report import save_figure
    from mini_decoders.viz_scores import ORACLE_STYLE

    metrics = list(dict.fromkeys(c["metric"] for c in table["curves"]))
    if axes is None:
        fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5.6 * max(1, len(metrics)), 4.0), squeeze=False)
    else:
        fig = np.ravel(axes)[0].figure
    axes = list(np.ravel(axes))
    colors = {name: f"C{i % 10}" for i, name in enumerate(MODELS)}
    oracle = table.get("oracle") or {}
    crossings = {(c["model"], c["pretrained"]): c for c in table.get("crossings", [])}
    for ax, metric in zip(axes, metrics):
        for curve in (c for c in table["curves"] if c["metric"] == metric):
            points = [p for p in curve["points"] if p.get("mean") is not None]
            if not points:
                continue
            x = [p["n_trials"] for p in points]
            y = [p["mean"] for p in points]
            err = [p.get("std") or 0.0 for p in points]
            color = colors.get(curve["model"], "0.3")
            classic = curve.get("classic") or not curve.get("baseline")
            ax.errorbar(x, y, yerr=err, color=color, capsize=3,
                        linestyle="--" if classic else ("-." if curve.get("pretrained") else "-"),
                        marker="o", markerfacecolor="white" if curve.get("pretrained") else color,
                        label=_curve_label(curve) + (" (baseline)" if not curve.get("baseline") else ""))
            crossing = crossings.get((curve["model"], bool(curve.get("pretrained"))))
            if crossing and crossing["n_trials"] is not None and not crossing.get("classic"):
                ax.axvline(crossing["n_trials"], color=color, linestyle=":", linewidth=1)
        if oracle.get(metric) is not None:
            ax.axhline(oracle[metric], label=f"oracle ({oracle[metric]:.3f})", **ORACLE_STYLE)
        ax.set_xscale("log")
        counts = table.get("trial_counts", [])
        if counts:
            ax.set_xticks(counts, [str(n) for n in counts])
            ax.minorticks_off()
        ax.set_xlabel("train trials (log scale)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric) + " on the test trials")
        ax.set_title(f"{METRIC_LABELS.get(metric, metric)}: mean ± std over {len(table.get('seeds', []))} seeds",
                     fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(f"data scaling on {table.get('target_session')!r}, profile {table.get('profile')}; "
                 f"dotted: where a transformer overtakes its baseline for good", fontsize=10)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def write_scaling(table: dict, json_path: str | Path, plot_path: str | Path | None = None) -> tuple[Path, Path]:
    """Write the table (atomically) and its picture (default: the JSON path with ``.png``); both paths."""
    import matplotlib.pyplot as plt  # see plot_scaling

    json_path = Path(json_path)
    plot_path = Path(plot_path) if plot_path is not None else json_path.with_suffix(".png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_path, table)
    plt.close(plot_scaling(table, plot_path))
    return json_path, plot_path
