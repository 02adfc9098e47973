"""The side-by-side benchmark (chapter 8): every model on the same data, metrics, seeds and budget.

Each paper reports its own data with its own metrics. Here one command trains every model on the
same sessions and splits, with the same seed and the same training budget, scores each on the same
test trials with the NLB metrics, and measures what it costs::

    mini-decoders data synth --out D --sessions 3
    mini-decoders benchmark --data D/*.nwb --profile quick --json B.json --plot B.png

What one *row* (one model) holds, all measured in the same way for every model:

- scores on the test trials (mean over sessions, and per session): ``co_bps`` (held-out neurons,
  NLB bits/spike), ``fp_bps`` (models that forecast), ``vel_r2`` (decoders: direct; rate models:
  NLB's ridge from rates), ``psth_r2``; each model is *judged* on one of them, against the classic
  baseline of that metric (each model class says which: ``JUDGED_ON``, ``BASELINE``): rate models
  by bits/spike against NLB's smoothing, decoders by R² against the Wiener filter (``ridge``);
- ``params``, ``train_seconds``, ``steps`` (the budget it got), ``samples_per_second``,
  ``peak_memory_mb`` (CUDA ``max_memory_allocated`` on a GPU; on a CPU the growth of the
  process's peak resident set during the row, which Linux lets us reset per row);
- ``cost``: inference time per window against sequence length, against the number of spikes in
  a window (the same windows with spikes thinned at random) and against the number of neurons
  (fresh models built for simulated populations of several sizes).

The *oracle* row scores the simulator's true rates with the same metrics (it needs the
``<id>_truth.h5`` files ``mini-decoders data synth`` writes next to each NWB file; real data has none).

**Same budget.** ``max_steps`` gives every gradient model the same number of optimiser steps;
``budget_seconds`` the same wall-clock: two short probe runs measure each model's seconds per step
and its fixed cost, and the model trains for as many steps as fit (never more than its profile's
recipe). Closed-form models (ridge, smoothing) have no steps and take what they take.

**Resumable.** Everything lives in a work folder (default: ``<json>.work`` beside the JSON). Each
row is one JSON file in ``rows/``, written atomically (temp file + rename) when the row is done
(:mod:`mini_decoders.experiments.cells`); a rerun skips the rows that are there and were made with
the same data and settings, and resumes a model whose training was interrupted from its RUN
folder's checkpoint. Rows that ended in an error are retried. By default each model runs in its own
Python process: a crash, even a hard one, becomes an error row, and peak memory is that model's alone.

The budget probes are in :mod:`~mini_decoders.experiments.budget`, the cost sweeps and memory in
:mod:`~mini_decoders.experiments.cost`, the text and pictures in :mod:`~mini_decoders.experiments.report`.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mini_decoders.data.synth import write_synthetic
from mini_decoders.errors import DataError, RunError
from mini_decoders.experiments.budget import is_gradient_model, steps_for_budget
from mini_decoders.experiments.cells import (FORMAT, BenchmarkSettings, Cells, recipe_labels, row_label,
                                             run_python_module, split_label)
from mini_decoders.experiments.cost import PeakMemory, inference_cost
from mini_decoders.experiments.oracle import oracle_row
from mini_decoders.experiments.report import plot_benchmark, plot_transfer
from mini_decoders.experiments.transfer import transfer_experiment
from mini_decoders.files import write_json_atomic
from mini_decoders.metrics import METRICS, SCORED_BY
from mini_decoders.models.registry import MODELS, adaptable_models, classic_baseline, get_model
from mini_decoders.run import as_sessions, load_run, train
from mini_decoders.training.profiles import resolve_profile
from mini_decoders.training.device import select_device
from mini_decoders.version import __version__

# The classic baseline of each judged metric (NLB's smoothing for bits/spike, the Wiener filter for
# velocity R²), as the models' own BASELINE says.
BASELINE_OF = {metric: classic_baseline(metric) for metric in SCORED_BY}

# Per profile: the training budget and the size of the cost sweeps.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(budget_seconds=None, cost_lengths=(0.5, 1.0), cost_fractions=(0.5, 1.0), cost_units=(16, 32),
                 cost_windows=4, cost_repeats=1, synth=dict(n_sessions=3, n_trials=40, n_units=30)),
    # No wall-clock cut: each model trains its own quick recipe, the one its chapter trains (each
    # within DESIGN's "<= 5 minutes of training per model on 2 cores"; chapters print the seconds).
    # The same runs as the chapters', so a build's run cache (mini_decoders.run_cache) hands them
    # over instead of training them twice. `--budget-seconds S` gives every gradient model one
    # wall-clock ceiling instead, `--max-steps N` one number of steps.
    "quick": dict(budget_seconds=None, cost_lengths=(0.25, 0.5, 1.0, 2.0), cost_fractions=(0.25, 0.5, 1.0),
                  cost_units=(32, 64, 128, 256), cost_windows=16, cost_repeats=3, synth=dict(n_sessions=3)),
    "full": dict(budget_seconds=None, cost_lengths=(0.25, 0.5, 1.0, 2.0, 4.0), cost_fractions=(0.125, 0.25, 0.5, 1.0),
                 cost_units=(64, 128, 256, 512, 1024), cost_windows=64, cost_repeats=5, synth=dict(n_sessions=4)),
}


# ================================================================================================
# One row

def model_row(label: str, settings: BenchmarkSettings, *, progress: bool = False) -> dict:
    """Train the cell ``label`` (a model, ``@recipe`` optional) under ``settings``, score it on the
    test trials and measure its costs.

    The RUN folder is ``<work>/runs/<label>``; an interrupted training there is resumed from its
    checkpoint when it was started with the same settings, and started afresh otherwise. Peak
    memory covers reading the data, the budget probes, training and scoring (not the cost sweeps).

    Raises:
        whatever training or evaluation raises (the callers turn it into an error row).
    """
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    started = time.perf_counter()
    model, recipe = split_label(label)
    model_class = get_model(model)
    out = Path(settings.work) / "runs" / label
    key_path = out / "benchmark_key.json"
    key = settings.row_key(label)
    with PeakMemory(settings.device) as memory:
        sessions = as_sessions(settings.data)
        previous = json.loads(key_path.read_text()) if key_path.is_file() else None
        if out.exists() and (previous is None or previous.get("key") != key):
            shutil.rmtree(out)  # another benchmark's (or an unfinished, unmarked) run: start afresh
            previous = None
        gradient = is_gradient_model(model, settings.profile)
        budget: dict[str, Any] = {**settings.budget}
        if previous is not None:
            budget = previous["budget"]
        elif gradient and settings.max_steps is not None:
            budget["steps"] = int(settings.max_steps)
        elif gradient and settings.budget_seconds is not None:
            budget.update(steps_for_budget(model, sessions, settings.profile, settings.budget_seconds,
                                           seed=settings.seed, device=settings.device, recipe=recipe))
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(key_path, {"key": key, "budget": budget})
        resumed = (out / "config.json").is_file()
        eval_seconds = None
        if (out / "metrics.json").is_file():
            run = load_run(out)  # trained and scored before the row was written: only the costs are missing
        else:
            tick = time.perf_counter()
            run = train(model, sessions, profile=settings.profile, out=out, recipe=recipe, device=settings.device,
                        max_steps=budget.get("steps") if gradient else None, seed=settings.seed, resume=resumed,
                        progress=progress)
            # train() fits, then scores the test trials: what is not fitting is (almost all) evaluation
            eval_seconds = time.perf_counter() - tick - run.metrics.get("training", {}).get("train_seconds", 0.0)
        scores = run.metrics if "mean" in run.metrics else run.evaluate(sessions, split="test")
    # The cost sweeps build models for other population sizes: outside the memory measurement.
    net = run.model
    if (settings.device or "auto") != "cpu":
        try:
            net = net.to(select_device(settings.device or "auto"))
        except Exception:
            net = net.cpu()
    cost = inference_cost(net, sessions[0], lengths=settings.cost_lengths, fractions=settings.cost_fractions,
                          units=settings.cost_units, n_windows=settings.cost_windows, repeats=settings.cost_repeats,
                          seed=settings.seed, build_config=model_class.recipe_config(settings.profile, recipe))
    training = run.metrics.get("training", {})
    judged = model_class.JUDGED_ON or ("co_bps" if "rates" in net.predicts else "vel_r2")
    row = {"model": model, "recipe": run.config.get("recipe", "default"), "label": label, "status": "ok",
           "token": model_class.TOKEN, "predicts": sorted(net.predicts),
           "judged_on": judged, "scored_by": SCORED_BY[judged], **{m: scores["mean"].get(m) for m in METRICS},
           "extra_scores": {k: v for k, v in scores["mean"].items() if k not in METRICS},
           "sessions": scores["sessions"], "params": int(scores["params"]),
           "train_seconds": training.get("train_seconds"), "samples_per_second": training.get("samples_per_second"),
           "steps": int(run.config["model_config"]["max_steps"]) if gradient else None, "budget": budget,
           "eval_seconds": eval_seconds, "peak_memory_mb": memory.peak_mb, "memory_kind": memory.kind,
           "process_peak_rss_mb": memory.process_peak_mb, "cost": cost, "run": str(out), "resumed": resumed,
           "device": str(next((p.device for p in net.parameters()), "cpu")), "wall_seconds": time.perf_counter() - started,
           "key": key}
    return row


def error_row(label: str, error: str, detail: str = "", key: str = "") -> dict:
    """A row for a cell that could not be imported, trained or scored: no scores, the reason."""
    model, recipe = split_label(label)
    model_class = _model_class_or_none(model)
    return {"model": model, "recipe": recipe, "label": label, "status": "error", "error": error, "detail": detail,
            "token": model_class.TOKEN if model_class else "",
            "judged_on": model_class.JUDGED_ON or None if model_class else None, **{m: None for m in METRICS},
            "key": key}


def _model_class_or_none(model: str):
    """The class of ``model``, or None when it cannot be imported (an error row says why)."""
    try:
        return get_model(model)
    except (RunError, ImportError):
        return None


# ================================================================================================
# Running rows, resumably

def _compute_in_process(label: str, settings: BenchmarkSettings, progress: bool) -> dict:
    key = settings.row_key(label)
    return Cells(settings.work).compute(label, key, lambda: model_row(label, settings, progress=progress),
                                        lambda error, detail: error_row(label, error, detail, key))


def _compute_in_subprocess(label: str, settings: BenchmarkSettings, progress: bool) -> dict:
    """Run :func:`model_row` in a fresh Python process; its log goes to ``<work>/logs/<label>.log``."""
    cells, key = Cells(settings.work), settings.row_key(label)
    settings_path = cells.work / "rows" / f".{label}.settings.json"
    settings_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings.to_dict()))
    log_path = cells.work / "logs" / f"{label}.log"
    code = run_python_module(__name__, ["_row", label, str(settings_path), *(["--progress"] if progress else [])],
                             log_path, settings.threads)
    row = cells.read(label)
    if row is not None and row.get("key") == key:
        return row
    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:] if log_path.exists() else []
    row = error_row(label, f"the process training {label!r} exited with code {code} without writing its row "
                           f"(killed, out of memory, or crashed); see {log_path}", "\n".join(tail), key)
    cells.save(label, row)
    return row


def _row_main(argv: list[str]) -> int:
    """``python -m mini_decoders.experiments.benchmark _row LABEL SETTINGS.json [--progress]``: one row, saved."""
    label, settings_path = argv[0], argv[1]
    settings = BenchmarkSettings.from_dict(json.loads(Path(settings_path).read_text()))
    row = _compute_in_process(label, settings, progress="--progress" in argv)
    if row["status"] != "ok":
        print(row["detail"] or row["error"], file=sys.stderr)
    return 0


# ================================================================================================
# The benchmark

def default_work(json_path: str | Path) -> Path:
    """``B.json`` -> ``B.work`` beside it."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + ".work")


def parse_models(models: str | Sequence[str] | None) -> list[str]:
    """``"ridge, ndt1"`` or a list -> known names in order, without repeats.

    Raises:
        RunError: an unknown name (the message lists the valid ones) or an empty list.
    """
    if models is None:
        return list(MODELS)
    names = [m.strip().lower() for m in (models.split(",") if isinstance(models, str) else models)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise RunError(f"benchmark --models: unknown model(s) {unknown}; expected names from {', '.join(MODELS)}")
    if not names:
        raise RunError(f"benchmark --models: no model given; expected names from {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def make_settings(data: Sequence[str | Path] | None, profile: str | None, work: Path, *, seed: int = 0,
                  max_steps: int | None = None, budget_seconds: float | str | None = "auto",
                  device: str | None = None, threads: int | None = None, costs: bool = True) -> BenchmarkSettings:
    """Resolve the profile's defaults, check the arguments, and write simulated data when none is given.

    ``costs=False`` leaves the inference-cost sweeps out (empty sweeps in every row).
    """
    profile = resolve_profile(profile)
    defaults = PROFILE_DEFAULTS[profile]
    if max_steps is not None and int(max_steps) < 1:
        raise RunError(f"benchmark: --max-steps must be >= 1, got {max_steps}")
    if budget_seconds == "auto":
        budget_seconds = None if max_steps is not None else defaults["budget_seconds"]
    elif budget_seconds is not None:
        budget_seconds = float(budget_seconds)
        if budget_seconds < 0 or not math.isfinite(budget_seconds):
            raise RunError(f"benchmark: --budget-seconds must be >= 0 (0: each model's own recipe), got {budget_seconds}")
        if max_steps is not None and budget_seconds > 0:
            raise RunError("benchmark: give --max-steps (same steps) or --budget-seconds (same wall-clock), not both")
        budget_seconds = budget_seconds or None
    if threads is not None and int(threads) < 1:
        raise RunError(f"benchmark: --threads must be >= 1, got {threads}")
    if data:
        paths = [Path(p).resolve() for p in data]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"benchmark --data: file(s) not found: {missing}")
    else:
        folder = work / "data"
        paths = sorted(folder.glob("*.nwb"))
        if not paths:
            paths = [p.resolve() for p in write_synthetic(folder, seed=seed, **defaults["synth"])]
    return BenchmarkSettings(data=[str(p) for p in paths], profile=profile, seed=int(seed),
                             max_steps=None if max_steps is None else int(max_steps), budget_seconds=budget_seconds,
                             device=device, cost_lengths=tuple(defaults["cost_lengths"]) if costs else (),
                             cost_fractions=tuple(defaults["cost_fractions"]) if costs else (),
                             cost_units=tuple(defaults["cost_units"]) if costs else (),
                             cost_windows=int(defaults["cost_windows"]), cost_repeats=int(defaults["cost_repeats"]),
                             threads=threads, work=str(work.resolve()))


def run_benchmark(data: Sequence[str | Path] | None = None, models: str | Sequence[str] | None = None,
                  profile: str | None = None, json_path: str | Path | None = None, plot_path: str | Path | None = None,
                  *, work: str | Path | None = None, seed: int = 0, max_steps: int | None = None,
                  budget_seconds: float | str | None = "auto", device: str | None = None, threads: int | None = None,
                  isolate: bool = True, transfer: bool | dict = False, costs: bool = True, progress: bool = False,
                  recipe: str | None = None, ladder: bool = False, command: str | None = None,
                  log: Callable[[str], None] | None = print) -> dict:
    """Train and score ``models`` side by side; write the JSON table (and the plot).

    Args:
        data: NWB files (all models train on all of them). None: simulated sessions are written
            to ``<work>/data`` (the profile decides how many).
        models: names or a comma-separated string (default: every model).
        profile: ``tiny`` / ``quick`` / ``full`` / ``auto`` (None: ``MINI_DECODERS_PROFILE`` or auto).
        json_path: where the table goes (written atomically); None: not written.
        plot_path: a PNG of the scores against compute and of the costs; None: no plot.
        work: the work folder (default ``<json_path>.work``; required when ``json_path`` is None).
        seed: the seed of every model.
        max_steps: the same number of steps for every gradient model.
        budget_seconds: the same wall-clock budget for every gradient model (``"auto"``: the
            profile's; None or 0: each model's own recipe).
        device, threads: training device; torch/BLAS threads per model.
        isolate: run each model in its own process (honest peak memory; a crash is an error row).
        transfer: also run the transfer experiment on the adaptable models among ``models``
            (True, or a dict of :func:`mini_decoders.experiments.transfer.transfer_experiment` arguments);
            ``"only"``: the transfer experiment alone (no model rows; the classic baselines of the
            transfer experiment still run).
        costs: measure the inference-cost sweeps (False: leave them out; on a small recording they
            can take longer than the training).
        recipe: the recipe of every model that has one (``"paper"``; None: the default). Rows of
            another recipe are named ``model@recipe``.
        ladder: every step of each model's recipe ladder instead (the paper's recipe, the paper's
            plus each of our changes alone, the default): what each change buys, one row each.
        command: the command line that asked for the table, kept in it as ``command`` so that a
            page showing the saved table can say how it was made
            (:func:`~mini_decoders.experiments.report.table_provenance`); None: not recorded.
        log: where progress lines go (None: silent).

    Returns:
        The table: ``{"format", "package_version", "created", "command", "profile", "settings", "budget",
        "data", "rows": [...], "oracle", "summary", "transfer"?}``; each row as described in the module docstring.
    """
    say = log or (lambda message: None)
    if work is None:
        if json_path is None:
            raise RunError("run_benchmark: give json_path or work (the folder that keeps the rows)")
        work = default_work(json_path)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    names = parse_models(models)
    labels = recipe_labels(names, recipe, ladder)
    settings = make_settings(data, profile, work, seed=seed, max_steps=max_steps, budget_seconds=budget_seconds,
                             device=device, threads=threads, costs=costs)
    key = settings.key()
    started = time.perf_counter()
    sessions = as_sessions(settings.data)
    say(f"benchmark: {len(labels)} row(s) on {len(sessions)} session(s), profile {settings.profile}, "
        f"budget {settings.budget}, work folder {work}")

    cells = Cells(work)
    oracle = cells.read("oracle")
    if oracle is None or oracle.get("key") != key:
        oracle = oracle_row(settings.data, sessions)
        if oracle is not None:
            oracle["key"] = key
            cells.save("oracle", oracle)
    rows = []
    transfer_only = transfer == "only" or (isinstance(transfer, dict) and bool(transfer.get("only")))
    for index, label in enumerate([] if transfer_only else labels, 1):
        row = cells.done(label, settings.row_key(label))
        if row is not None:
            say(f"[{index}/{len(labels)}] {label}: done before, reused ({cells.row_path(label)})")
        else:
            say(f"[{index}/{len(labels)}] {label}: training" + (f" (log: {work / 'logs' / (label + '.log')})" if isolate else ""))
            row = (_compute_in_subprocess if isolate else _compute_in_process)(label, settings, progress)
        say(f"    {_row_line(row)}")
        rows.append(row)
    table = build_table(rows, oracle, settings, sessions)
    table["command"] = command
    table["seconds"] = time.perf_counter() - started
    if transfer:
        options = dict(transfer) if isinstance(transfer, dict) else {}
        options.pop("only", None)
        options.setdefault("models", [m for m in names if get_model(m).ADAPTS])
        if options["models"]:
            table["transfer"] = transfer_experiment(settings.data, profile=settings.profile, work=work / "transfer",
                                                    seed=seed, device=device, threads=threads, progress=False,
                                                    log=log, **options)
        else:
            say(f"transfer: skipped, none of {names} adapts to new sessions "
                f"(those that do: {', '.join(adaptable_models())})")
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, table)
    if plot_path is not None:
        import matplotlib.pyplot as plt  # only when a picture is asked for (see experiments.report)

        plot_path = Path(plot_path)
        if rows:
            plt.close(plot_benchmark(table, plot_path))
        if table.get("transfer"):
            target = plot_path.with_name(plot_path.stem + "_transfer" + plot_path.suffix) if rows else plot_path
            plt.close(plot_transfer(table["transfer"], target))
    return table


def _row_line(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row_label(row)}: ERROR {row.get('error', '')}"[:400]
    parts = [f"{m}={row[m]:.3f}" for m in METRICS if row.get(m) is not None]
    if row.get("train_seconds") is not None:
        parts.append(f"train {row['train_seconds']:.0f} s")
    if row.get("peak_memory_mb") is not None:
        parts.append(f"peak {row['peak_memory_mb']:.0f} MB")
    return f"{row_label(row)}: " + ", ".join(parts)


def judge_score(score: float, baseline_score: float | None, oracle_score: float | None = None,
                bar: float = 1.0) -> dict[str, float | bool | None]:
    """How one judged score compares with its classic baseline and with the oracle (a table row's verdict).

    Args:
        score: the model's score on the metric it is judged on (co-bps or velocity R²; higher is better).
        baseline_score: the classic baseline's score on that metric (None: no baseline to compare with).
        oracle_score: the true rates' score (None: real data, no oracle).
        bar: the ratio to the baseline the model's own chapter asks for (1.0: "beat it"; VQ: 0.9).

    Returns:
        ``beats_baseline``: ``score > baseline_score``; ``ratio_to_baseline``: ``score / baseline_score``,
        None unless the baseline is positive (a ratio to a score at or below zero means nothing);
        ``meets_model_bar``: ``beats_baseline`` when ``bar`` is 1, else ``score >= bar * baseline_score``;
        ``fraction_of_oracle``: ``score / oracle_score``, None unless the oracle is positive. Every
        entry is None when its reference (baseline or oracle) is None.
    """
    verdict: dict[str, float | bool | None] = {"beats_baseline": None, "ratio_to_baseline": None,
                                               "meets_model_bar": None, "fraction_of_oracle": None}
    if baseline_score is not None:
        verdict["beats_baseline"] = bool(score > baseline_score)
        verdict["ratio_to_baseline"] = score / baseline_score if baseline_score > 0 else None
        verdict["meets_model_bar"] = (verdict["beats_baseline"] if bar == 1.0
                                      else bool(score >= bar * baseline_score))
    if oracle_score is not None:
        verdict["fraction_of_oracle"] = score / oracle_score if oracle_score > 0 else None
    return verdict


def build_table(rows: list[dict], oracle: dict | None, settings: BenchmarkSettings, sessions) -> dict:
    """The JSON table: rows with their baseline comparison, the oracle, the data, a summary."""
    by_name = {row_label(row): row for row in rows}
    for row in rows:
        judged = row.get("judged_on")
        model_class = _model_class_or_none(row["model"])
        baseline = model_class.BASELINE if judged and model_class else None
        row["baseline"] = baseline
        row["baseline_score"] = row["ratio_to_baseline"] = row["beats_baseline"] = row["meets_model_bar"] = None
        row["model_bar"] = model_class.MODEL_BAR if baseline else None
        base = by_name.get(baseline) if row["baseline"] else None
        if base is not None and base.get(judged) is not None and row.get(judged) is not None:
            row["baseline_score"] = base[judged]
            verdict = judge_score(row[judged], base[judged], None, row["model_bar"])
            for key in ("beats_baseline", "ratio_to_baseline", "meets_model_bar"):
                row[key] = verdict[key]
        if oracle is not None and judged and oracle.get(judged) is not None and row.get(judged) is not None:
            row["fraction_of_oracle"] = judge_score(row[judged], None, oracle[judged])["fraction_of_oracle"]
    ok = [row for row in rows if row.get("status") == "ok"]
    transformers = [row for row in ok if not get_model(row["model"]).CLASSIC]
    summary = {
        "models": [row_label(row) for row in rows],
        "failed": {row_label(row): row.get("error") for row in rows if row.get("status") != "ok"},
        "every_row_finite": bool(rows) and all(_row_finite(row) for row in rows),
        "transformers_beat_baselines": (all(row.get("beats_baseline") for row in transformers)
                                        if transformers and all(row.get("beats_baseline") is not None
                                                                for row in transformers) else None),
        "beats_baseline": {row_label(row): row.get("beats_baseline") for row in transformers},
        "transformers_meet_model_bars": (all(row.get("meets_model_bar") for row in transformers)
                                         if transformers and all(row.get("meets_model_bar") is not None
                                                                 for row in transformers) else None),
    }
    return {"format": FORMAT, "package_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "profile": settings.profile, "seed": settings.seed, "budget": settings.budget, "settings": settings.to_dict(),
            "data": [_describe(path, session) for path, session in zip(settings.data, sessions)],
            "rows": rows, "oracle": oracle, "summary": summary}


def _row_finite(row: dict) -> bool:
    """A row that ran, whose judged metric exists, and whose every score is a finite number."""
    if row.get("status") != "ok" or row.get(row.get("judged_on") or "", None) is None:
        return False
    return all(row.get(m) is None or math.isfinite(row[m]) for m in METRICS)


def _describe(path: str, session) -> dict:
    split = np.asarray(session.trials.split)
    duration = float(np.sum(session.trials.duration))
    return {"path": str(path), "session": session.id, "units": int(session.n_units),
            "heldout_units": int(session.units.heldout.sum()), "regions": session.units.regions,
            "trials": {name: int((split == name).sum()) for name in ("train", "val", "test")},
            "spikes": int(session.n_spikes), "trial_seconds": duration,
            "mean_rate_hz": float(session.n_spikes / max(session.stop_time - session.start_time, 1e-9) / max(session.n_units, 1))}


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "_row":
        sys.exit(_row_main(sys.argv[2:]))
    print("usage: mini-decoders benchmark --help", file=sys.stderr)
    sys.exit(2)
