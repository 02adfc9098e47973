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
  baseline of that metric (:data:`JUDGED_ON`, :data:`BASELINE_OF`): rate models by bits/spike
  against NLB's smoothing, decoders by R² against the Wiener filter (``ridge``);
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
row is one JSON file in ``rows/``, written atomically (temp file + rename) when the row is done;
a rerun skips the rows that are there and were made with the same data and settings, and resumes
a model whose training was interrupted from its RUN folder's checkpoint. Rows that ended in an
error are retried. By default each model runs in its own Python process: a crash, even a hard one,
becomes an error row, and peak memory is that model's alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

FORMAT = "mini_decoders.benchmark/1"
MODELS = ("ridge", "gru", "smoothing", "ndt1", "ndt2", "mtm", "poyo", "vq")
CLASSIC = ("ridge", "gru", "smoothing")
ADAPTABLE = ("poyo", "ndt2", "mtm")  # models with a recipe for new units (see mini_decoders.transfer)
METRICS = ("co_bps", "fp_bps", "vel_r2", "psth_r2")
METRIC_LABELS = {"co_bps": "co-bps (bits/spike)", "fp_bps": "fp-bps (bits/spike)", "vel_r2": "velocity R²",
                 "psth_r2": "PSTH R²"}
# The metric each model is judged on (its model issue's acceptance), and the classic baseline of
# each metric: NLB's smoothing for bits/spike, the Wiener filter for velocity R².
JUDGED_ON = {"ridge": "vel_r2", "gru": "vel_r2", "smoothing": "co_bps", "ndt1": "co_bps", "ndt2": "co_bps",
             "mtm": "co_bps", "poyo": "vel_r2", "vq": "vel_r2"}
BASELINE_OF = {"co_bps": "smoothing", "vel_r2": "ridge"}
# The bar each model's own issue sets, as a ratio to its baseline: "beat" it (> 1) unless said
# otherwise. VQ decodes from codes that keep 1/20 of the bits of the counts the Wiener filter
# reads; its issue asks for 0.9x the Wiener filter's R², not more.
MODEL_BAR = {"vq": 0.9}
SCORED_BY = {"co_bps": "NLB bits/spike (held-out neurons)", "vel_r2": "R² (hand velocity)"}
TOKENS = {"ridge": "160 ms of counts (no token)", "gru": "one bin (recurrent)", "smoothing": "smoothed counts (no token)",
          "ndt1": "time bin", "ndt2": "bin x neuron patch", "mtm": "time bin + task prompt", "poyo": "spike",
          "vq": "learned code"}

# Per profile: the training budget and the size of the cost sweeps.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(budget_seconds=None, cost_lengths=(0.5, 1.0), cost_fractions=(0.5, 1.0), cost_units=(16, 32),
                 cost_windows=4, cost_repeats=1, synth=dict(n_sessions=3, n_trials=40, n_units=30)),
    # 270 s: under DESIGN's "<= 5 minutes of training per model on 2 cores" (six gradient models,
    # plus probes, evaluation and cost sweeps, in 40 minutes); a recipe that fits is not cut.
    "quick": dict(budget_seconds=270.0, cost_lengths=(0.25, 0.5, 1.0, 2.0), cost_fractions=(0.25, 0.5, 1.0),
                  cost_units=(32, 64, 128, 256), cost_windows=16, cost_repeats=3, synth=dict(n_sessions=3)),
    "full": dict(budget_seconds=None, cost_lengths=(0.25, 0.5, 1.0, 2.0, 4.0), cost_fractions=(0.125, 0.25, 0.5, 1.0),
                 cost_units=(64, 128, 256, 512, 1024), cost_windows=64, cost_repeats=5, synth=dict(n_sessions=4)),
}
PROBE_STEPS = (3, 23)  # two short runs: their difference is the time of 20 steps, the rest is fixed cost


# ================================================================================================
# Settings

@dataclass
class BenchmarkSettings:
    """Everything that decides a row's result (and so whether a saved row can be reused).

    Attributes:
        data: absolute paths of the NWB files, in order.
        profile: ``tiny`` / ``quick`` / ``full``.
        seed: seed of every model.
        max_steps: same optimiser steps for every gradient model (None: see ``budget_seconds``).
        budget_seconds: same wall-clock training time for every gradient model (None: each
            model's profile recipe).
        device: training device (None: auto).
        cost_*: the inference-cost sweeps (see :func:`inference_cost`).
        threads: torch / BLAS threads of each model's process (None: leave as is); not part of the key.
        work: the work folder; not part of the key.
    """

    data: list[str]
    profile: str
    seed: int = 0
    max_steps: int | None = None
    budget_seconds: float | None = None
    device: str | None = None
    cost_lengths: tuple[float, ...] = ()
    cost_fractions: tuple[float, ...] = ()
    cost_units: tuple[int, ...] = ()
    cost_windows: int = 4
    cost_repeats: int = 1
    threads: int | None = None
    work: str = ""

    def key(self) -> str:
        """A digest of the settings and of the data files (path, size, modification time)."""
        stamp = asdict(self)
        stamp.pop("threads"), stamp.pop("work")
        stamp["files"] = [_file_stamp(path) for path in self.data]
        stamp["format"] = FORMAT
        return hashlib.sha256(json.dumps(stamp, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def row_key(self, label: str) -> str:
        """:meth:`key` plus the config of the row's model and recipe in this profile (``label`` is
        ``"ndt1"`` or ``"ndt1@paper"``, see :func:`cell_label`): a row trained before the config
        changed (another version of the package) is not reused. ``finetune_*`` keys are left out:
        a row never fine-tunes (the transfer cells, which do, hash the whole recipe)."""
        from mini_decoders.models.registry import get_model

        model, recipe = split_label(label)
        config = {k: v for k, v in get_model(model).recipe_config(self.profile, recipe).items()
                  if not k.startswith("finetune")}
        if config.get("recipe") == "default":
            config.pop("recipe")  # rows saved before recipes existed stay valid
        stamp = json.dumps([self.key(), model, config], sort_keys=True, default=str)
        return hashlib.sha256(stamp.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=list))

    @classmethod
    def from_dict(cls, data: dict) -> "BenchmarkSettings":
        data = dict(data)
        for name in ("cost_lengths", "cost_fractions", "cost_units"):
            data[name] = tuple(data.get(name, ()))
        return cls(**data)

    @property
    def budget(self) -> dict:
        if self.max_steps is not None:
            return {"kind": "steps", "steps": int(self.max_steps), "seconds": None}
        if self.budget_seconds is not None:
            return {"kind": "seconds", "steps": None, "seconds": float(self.budget_seconds)}
        return {"kind": "profile", "steps": None, "seconds": None}


def _file_stamp(path: str) -> list:
    stat = Path(path).stat()
    return [str(path), int(stat.st_size), int(stat.st_mtime_ns)]


# ================================================================================================
# Memory

def _proc_status(field_name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of one stretch of work.

    On a CUDA device: ``torch.cuda.max_memory_allocated`` after a reset. On a CPU: the growth of
    the process's peak resident set (``VmHWM``), which Linux resets when ``5`` is written to
    ``/proc/self/clear_refs``; where that is not possible, ``resource.getrusage`` ``ru_maxrss``
    (the peak of the whole process so far: an upper bound).
    """

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def __enter__(self) -> "PeakMemory":
        import torch

        self.cuda = bool(self.device and str(self.device).startswith("cuda") and torch.cuda.is_available())
        if self.device in (None, "auto") and torch.cuda.is_available():
            self.cuda = True
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            with open("/proc/self/clear_refs", "w") as file:
                file.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        self.start_rss = _proc_status("VmRSS") or 0
        return self

    def __exit__(self, *exc) -> None:
        import resource

        import torch

        hwm = _proc_status("VmHWM") if self.resettable else None
        if hwm is None:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        self.process_peak_mb = hwm / 2**20
        self.cpu_growth_mb = max(hwm - self.start_rss, 0) / 2**20 if self.resettable else None
        if self.cuda:
            self.peak_mb, self.kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_memory_allocated"
        elif self.resettable:
            self.peak_mb, self.kind = self.cpu_growth_mb, "cpu_peak_rss_growth"
        else:
            self.peak_mb, self.kind = self.process_peak_mb, "cpu_process_peak_rss"


# ================================================================================================
# Same budget

def is_gradient_model(model: str, profile: str) -> bool:
    """Whether ``model`` trains by optimiser steps (its profile config has ``max_steps``)."""
    from mini_decoders.models.registry import get_model
    from mini_decoders.train.profiles import config_for

    return "max_steps" in config_for(get_model(model).CONFIGS, profile)


def steps_for_budget(model: str, sessions, profile: str, seconds: float, *, seed: int = 0, device: str | None = None,
                     probe_steps: tuple[int, int] = PROBE_STEPS, recipe: str | None = None) -> dict:
    """How many optimiser steps of ``model`` fit in ``seconds`` of training on this machine.

    Two short fits (``probe_steps`` steps each, no checkpoints, validation only at the end) give
    the seconds per step (their difference) and the fixed cost of a fit (data preparation, the
    final validation). The answer is capped at the profile's ``max_steps``.

    Returns:
        ``{"steps", "recipe_steps", "seconds_per_step", "fixed_seconds", "probe_seconds"}``.
    """
    import torch

    from mini_decoders.models.registry import get_model

    model_class = get_model(model)
    base = model_class.recipe_config(profile, recipe)
    recipe_steps = int(base["max_steps"])
    small, large = probe_steps
    timings, loop_seconds = [], None
    started = time.perf_counter()
    for steps in (1, small, large):  # the first, untimed fit pays the process's one-time costs
        config = {**base, "max_steps": steps, "val_every": None, "checkpoint_every": None, "seed": seed,
                  "warmup_steps": min(int(base.get("warmup_steps", 1) or 1), steps)}
        if device is not None:
            config["device"] = device
        torch.manual_seed(seed)
        net = model_class.build(sessions, config)
        tick = time.perf_counter()
        history = net.fit(sessions, config, out_dir=None, progress=False)
        timings.append(time.perf_counter() - tick)
        loop_seconds = history.get("seconds") if isinstance(history, dict) else None
    return {**steps_from_probes(timings[1:], probe_steps, seconds, recipe_steps, loop_seconds=loop_seconds),
            "probe_seconds": time.perf_counter() - started}


def steps_from_probes(timings: Sequence[float], probe_steps: tuple[int, int], seconds: float, recipe_steps: int,
                      loop_seconds: float | None = None) -> dict:
    """Steps that fit ``seconds``, from the wall-clock ``timings`` of two fits of ``probe_steps`` steps.

    Seconds per step = the difference of the two timings over the difference of steps; the rest
    of the short fit is the fixed cost. When noise (another job on the machine) makes the
    difference not positive, the long fit's own training loop is used instead: ``loop_seconds``
    (what the model's ``fit`` reports for its optimiser loop, final validation included) over its
    steps, the rest of its wall-clock being the fixed cost; without ``loop_seconds``, its whole
    wall-clock per step (an over-estimate, so the budget is still kept).

    Returns:
        ``{"steps", "recipe_steps", "seconds_per_step", "fixed_seconds"}``.
    """
    (short, long), (small, large) = timings, probe_steps
    per_step = (long - short) / (large - small)
    if per_step <= 0 and loop_seconds is not None and 0 < loop_seconds <= long:
        per_step, fixed = loop_seconds / large, long - loop_seconds
    elif per_step <= 0:
        per_step, fixed = long / large, 0.0
    else:
        fixed = max(short - small * per_step, 0.0)
    steps = int(max(1, min(recipe_steps, math.floor((seconds - fixed) / per_step))))
    return {"steps": steps, "recipe_steps": recipe_steps, "seconds_per_step": per_step, "fixed_seconds": fixed}


# ================================================================================================
# Cost of inference against the amount of work

def _view(session, spike_times: np.ndarray, spike_units: np.ndarray, starts: np.ndarray, length: float):
    """``session`` with other spikes and a trial table of windows ``[start, start + length)`` (all "test")."""
    from mini_decoders.data.session import Session, Trials

    trials = Trials(starts, starts + length, np.full(len(starts), "test"))
    return Session(session.id, spike_times, spike_units, session.units, dict(session.behavior), trials,
                   session.subject, session.task, session.source)


def _time_predict(model, view, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``model.predict_trials`` on every trial of ``view`` (after one warm-up call)."""
    import torch

    from mini_decoders.data.binning import bin_trials

    binned = bin_trials(view, model.bin_size, split=None, behavior=())
    cuda = any(p.is_cuda for p in model.parameters())
    best = math.inf
    model.eval()
    with torch.no_grad():
        model.predict_trials(view, binned)  # first calls pay for allocations and kernel choices
        for _ in range(max(1, repeats)):
            if cuda:
                torch.cuda.synchronize()
            tick = time.perf_counter()
            model.predict_trials(view, binned)
            if cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - tick)
    return best


def _heldin_spikes_per_window(session, spike_times: np.ndarray, spike_units: np.ndarray, starts: np.ndarray,
                              length: float) -> float:
    """Mean number of held-in spikes (what a model reads) in the windows."""
    times = spike_times[~session.units.heldout[spike_units]]
    return float(np.mean(np.searchsorted(times, starts + length) - np.searchsorted(times, starts)))


def inference_cost(model, session, *, lengths: Sequence[float], fractions: Sequence[float], units: Sequence[int],
                   n_windows: int, repeats: int, seed: int = 0, build_config: dict | None = None) -> dict:
    """Inference time of a trained model against the work it is given.

    Three sweeps, each timing ``model.predict_trials`` (forward passes only, best of ``repeats``)
    on ``n_windows`` windows spread over ``session``:

    - ``length``: windows of each length in ``lengths`` (s): more bins *and* more spikes;
    - ``spikes``: 1 s windows (or the longest length below 1 s) with each spike kept with
      probability ``fraction``: fewer spikes, the same bins;
    - ``units``: a fresh, untrained model of the same class built with ``build_config`` (default:
      the trained model's config) for a simulated population of ``U`` neurons (``U`` in
      ``units``): more neurons, the same time span. A model that cannot predict before ``fit``
      (it learns its session context or closed-form weights there) gets one step of ``fit`` first.

    A point the model cannot do (a window longer than its position table, a closed-form model
    that has no weights before fitting) is ``None``, with the first error message kept.

    Returns:
        ``{"length": {"x": lengths_s, "spikes": [...], "seconds": [...]}, "spikes": {"fraction", "x":
        spikes per window, "seconds"}, "units": {"x": units, "spikes", "seconds"}, "errors": [...]}``;
        ``seconds`` are per window.
    """
    from mini_decoders.data.simulate import simulate

    errors: list[str] = []
    t0, t1 = float(session.start_time), float(session.stop_time)

    def starts_for(length: float) -> np.ndarray:
        return np.linspace(t0, max(t0, t1 - length - 1e-6), n_windows)

    def point(net, view, count: int) -> float | None:
        try:
            return _time_predict(net, view, repeats) / count
        except Exception as error:  # a point the model cannot do is reported, not fatal
            errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:300])
            return None

    result: dict[str, Any] = {"length": {"x": [], "spikes": [], "seconds": []},
                              "spikes": {"fraction": [], "x": [], "seconds": []},
                              "units": {"x": [], "spikes": [], "seconds": []}, "errors": errors}
    for length in lengths:
        starts = starts_for(length)
        view = _view(session, session.spike_times, session.spike_units, starts, float(length))
        result["length"]["x"].append(float(length))
        result["length"]["spikes"].append(_heldin_spikes_per_window(session, session.spike_times,
                                                                    session.spike_units, starts, float(length)))
        result["length"]["seconds"].append(point(model, view, n_windows))

    fixed_length = max([x for x in lengths if x <= 1.0] or [min(lengths, default=1.0)])
    starts = starts_for(fixed_length)
    rng = np.random.default_rng(seed)
    for fraction in fractions:
        keep = rng.random(session.n_spikes) < fraction
        times, spike_units = session.spike_times[keep], session.spike_units[keep]
        view = _view(session, times, spike_units, starts, fixed_length)
        result["spikes"]["fraction"].append(float(fraction))
        result["spikes"]["x"].append(_heldin_spikes_per_window(session, times, spike_units, starts, fixed_length))
        result["spikes"]["seconds"].append(point(model, view, n_windows))
    result["spikes"]["length_s"] = fixed_length

    device = next((p.device for p in model.parameters()), None)
    for n_units in units:
        simulated = simulate(n_sessions=1, n_trials=max(n_windows, 10), n_units=int(n_units), seed=seed).sessions[0]
        view = _view(simulated, simulated.spike_times, simulated.spike_units, simulated.trials.start[:n_windows],
                     fixed_length)
        try:
            fresh = type(model).build([simulated], dict(build_config if build_config is not None else model.config))
            fresh = fresh.to(device) if device is not None else fresh
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:300])
            fresh = None
        result["units"]["x"].append(int(n_units))
        result["units"]["spikes"].append(_heldin_spikes_per_window(simulated, simulated.spike_times,
                                                                   simulated.spike_units, view.trials.start,
                                                                   fixed_length))
        seconds = None if fresh is None else point(fresh, view, len(view.trials))
        if fresh is not None and seconds is None:
            # Some models learn what they need to predict at all (context rows, closed-form
            # weights) only in fit: one step of it, and time again.
            errors.pop()
            try:
                config = {**fresh.config, "max_steps": 1, "warmup_steps": 1, "val_every": None, "checkpoint_every": None}
                fresh.fit([simulated], config, out_dir=None, progress=False)
                seconds = point(fresh, view, len(view.trials))
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:300])
        result["units"]["seconds"].append(seconds)
    # keep only distinct messages
    result["errors"] = list(dict.fromkeys(errors))
    return result


# ================================================================================================
# The oracle

def oracle_row(paths: Sequence[str | Path], sessions=None, bin_size: float = 0.02) -> dict | None:
    """The scores of the simulator's true rates, with the metrics and trials every model gets.

    ``co_bps`` as :meth:`mini_decoders.run.Run.evaluate` computes it, from the exact expected
    counts; ``psth_r2`` likewise, from the expected counts smoothed with the kernel that smooths
    the target PSTH (the best prediction of a smoothed-spike PSTH); ``fp_bps`` from the expected
    counts in the 200 ms after each test trial;
    ``vel_r2`` is NLB's ridge from the true rates to hand velocity at the simulator's lag
    (``simulation.json``; 0.1 s when absent). Sessions without a ``<id>_truth.h5`` beside them
    are left out; None when no session has one (real data).
    """
    from mini_decoders.data.binning import bin_intervals, bin_trials
    from mini_decoders.data.simulate import TrueRates
    from mini_decoders.metrics import bits_per_spike, psth_r2_from_spikes, smooth_spikes, velocity_r2_from_rates
    from mini_decoders.run import PSTH_KERN_SD, as_sessions

    paths = [Path(p) for p in paths]
    sessions = as_sessions(sessions if sessions is not None else paths)
    per_session = {}
    for path, session in zip(paths, sessions):
        truth_path = path.with_name(f"{session.id}_truth.h5")
        if not truth_path.is_file():
            continue
        truth = TrueRates.load(truth_path)
        if [str(u) for u in truth.unit_ids] != [str(u) for u in session.units.ids]:
            continue  # a truth file for other units is not this session's oracle
        lag = _simulator_lag(path.parent)
        binned = bin_trials(session, bin_size, split=None, behavior=("hand_vel",) if "hand_vel" in session.behavior
                            else (), lag=lag)
        expected = truth.expected_counts(binned.starts, binned.lengths, bin_size)  # (N, T, U), NaN padding
        counts = np.where(binned.mask[:, :, None], binned.counts.astype(np.float64), np.nan)
        test = np.flatnonzero(binned.split == "test")
        train = np.flatnonzero(binned.split == "train")
        units = session.units
        order = np.concatenate([units.heldin_index, units.heldout_index])
        scores: dict[str, float | None] = {}
        if len(units.heldout_index) and len(test):
            scores["co_bps"] = bits_per_spike(expected[test][..., units.heldout_index],
                                              counts[test][..., units.heldout_index])
        if len(test):
            fp_bins = int(round(0.2 / bin_size))
            stops = binned.starts[test] + binned.lengths[test] * bin_size
            inside = stops + fp_bins * bin_size <= truth.stop_time
            if inside.any():
                future = bin_intervals(session.spike_times, session.spike_units, session.n_units, stops[inside],
                                       fp_bins, bin_size).astype(np.float64)
                forecast = truth.expected_counts(stops[inside], fp_bins, bin_size)
                scores["fp_bps"] = bits_per_spike(forecast[..., order], future[..., order])
        velocity = binned.behavior.get("hand_vel")
        if velocity is not None and len(train) and len(test):
            rates = np.nan_to_num(expected[..., order])
            scores["vel_r2"] = velocity_r2_from_rates(rates[train], velocity[train], rates[test], velocity[test])
        conditions = binned.condition[test]
        if len(set(conditions.tolist()) - {""}) >= 2:
            # The PSTH target is trial-averaged *smoothed* spikes, so its best prediction is the true
            # rates smoothed by the same kernel (raw true rates would score below a smooth model).
            common = int(binned.lengths[test].min())
            smoothed = smooth_spikes(expected[test, :common][..., order], bin_size, PSTH_KERN_SD)
            scores["psth_r2"] = psth_r2_from_spikes(smoothed, counts[test, :common][..., order], conditions,
                                                    bin_size, PSTH_KERN_SD)
        per_session[session.id] = {k: _finite(v) for k, v in scores.items()}
    if not per_session:
        return None
    row = {"model": "oracle", "status": "ok", "token": "true rates", "judged_on": None,
           "note": ("the simulator's true rates scored like a model: the best any model can do on these trials "
                    "(co-bps, fp-bps, velocity R²); not for PSTH R², whose target is the smoothed spikes of the "
                    "very trials whose held-in spikes the models read"),
           "sessions": per_session}
    row.update(_mean_scores(per_session))
    return row


def _simulator_lag(folder: Path, default: float = 0.1) -> float:
    config = folder / "simulation.json"
    try:
        return float(json.loads(config.read_text()).get("lag", default))
    except (OSError, ValueError, AttributeError):
        return default


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _mean_scores(per_session: dict[str, dict]) -> dict[str, float | None]:
    means = {}
    for metric in METRICS:
        values = [s[metric] for s in per_session.values() if s.get(metric) is not None]
        means[metric] = float(np.mean(values)) if values else None
    return means


# ================================================================================================
# Cells: a model and a recipe

def cell_label(model: str, recipe: str | None = None) -> str:
    """``("ndt1", "paper")`` -> ``"ndt1@paper"``; the default recipe is the model's name alone."""
    return model if recipe in (None, "", "default") else f"{model}@{recipe}"


def split_label(label: str) -> tuple[str, str]:
    """``"ndt1@paper+kernel"`` -> ``("ndt1", "paper+kernel")``; ``"ndt1"`` -> ``("ndt1", "default")``."""
    model, _, recipe = label.partition("@")
    return model, recipe or "default"


def recipe_labels(names: Sequence[str], recipe: str | None = None, ladder: bool = False) -> list[str]:
    """The cells to run: each model with ``recipe``, or (``ladder``) every step of its recipe ladder.

    Models whose default recipe *is* their published method (the classic baselines, with no
    departures) always run their default. With ``ladder`` the paper's recipe, the paper's plus
    each departure alone, and the default are run (:func:`mini_decoders.models.recipes.ladder`).

    Raises:
        RunError: an unknown recipe or change for one of the models.
    """
    from mini_decoders.models.recipes import ladder as recipe_ladder
    from mini_decoders.models.registry import get_model

    labels = []
    for model in names:
        model_class = get_model(model)
        if not model_class.DEPARTURES:
            labels.append(model)
        elif ladder:
            labels += [cell_label(model, r) for r in recipe_ladder(model_class.DEPARTURES)]
        else:
            labels.append(cell_label(model, model_class.recipe_config("tiny", recipe)["recipe"]))
    return list(dict.fromkeys(labels))


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
    import torch

    from mini_decoders.models.registry import get_model
    from mini_decoders.run import as_sessions, load_run, train, write_json_atomic

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
        from mini_decoders.train.trainer import select_device

        try:
            net = net.to(select_device(settings.device or "auto"))
        except Exception:
            net = net.cpu()
    cost = inference_cost(net, sessions[0], lengths=settings.cost_lengths, fractions=settings.cost_fractions,
                          units=settings.cost_units, n_windows=settings.cost_windows, repeats=settings.cost_repeats,
                          seed=settings.seed, build_config=model_class.recipe_config(settings.profile, recipe))
    training = run.metrics.get("training", {})
    judged = JUDGED_ON.get(model) or ("co_bps" if "rates" in net.predicts else "vel_r2")
    row = {"model": model, "recipe": run.config.get("recipe", "default"), "label": label, "status": "ok",
           "token": TOKENS.get(model, ""), "predicts": sorted(net.predicts),
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
    return {"model": model, "recipe": recipe, "label": label, "status": "error", "error": error, "detail": detail,
            "token": TOKENS.get(model, ""), "judged_on": JUDGED_ON.get(model), **{m: None for m in METRICS},
            "key": key}


def row_label(row: dict) -> str:
    """The cell a row belongs to (rows saved before recipes existed have no ``label``)."""
    return row.get("label") or row["model"]


# ================================================================================================
# Running rows, resumably

def _row_path(work: Path, label: str) -> Path:
    return work / "rows" / f"{label}.json"


def load_row(work: Path, label: str, key: str) -> dict | None:
    """The saved row of the cell ``label`` if it is complete, made with ``key`` and not an error; else None."""
    path = _row_path(work, label)
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("key") != key or row.get("status") != "ok":
        return None
    return row


def _save_row(work: Path, row: dict) -> None:
    from mini_decoders.run import write_json_atomic

    path = _row_path(work, row_label(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, row)


def _compute_in_process(label: str, settings: BenchmarkSettings, progress: bool) -> dict:
    try:
        return model_row(label, settings, progress=progress)
    except KeyboardInterrupt:
        raise
    except Exception as error:
        lines = traceback.format_exc().strip().splitlines()
        return error_row(label, f"{type(error).__name__}: {error}", "\n".join(lines[-12:]), settings.row_key(label))


def _compute_in_subprocess(label: str, settings: BenchmarkSettings, progress: bool) -> dict:
    """Run :func:`model_row` in a fresh Python process; its log goes to ``<work>/logs/<label>.log``."""
    work = Path(settings.work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    settings_path = work / "rows" / f".{label}.settings.json"
    settings_path.parent.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings.to_dict()))
    log_path = work / "logs" / f"{label}.log"
    env = dict(os.environ)
    if settings.threads:
        env.update(OMP_NUM_THREADS=str(settings.threads), MKL_NUM_THREADS=str(settings.threads),
                   OPENBLAS_NUM_THREADS=str(settings.threads))
    command = [sys.executable, "-m", "mini_decoders.benchmark", "_row", label, str(settings_path)]
    if progress:
        command.append("--progress")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    row = _read_json(_row_path(work, label))
    if row is not None and row.get("key") == settings.row_key(label):
        return row
    tail = log_path.read_text(errors="replace").strip().splitlines()[-12:] if log_path.exists() else []
    return error_row(label, f"the process training {label!r} exited with code {code} without writing its row "
                            f"(killed, out of memory, or crashed); see {log_path}", "\n".join(tail), settings.row_key(label))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _row_main(argv: list[str]) -> int:
    """``python -m mini_decoders.benchmark _row LABEL SETTINGS.json [--progress]``: one row, written atomically."""
    label, settings_path = argv[0], argv[1]
    settings = BenchmarkSettings.from_dict(json.loads(Path(settings_path).read_text()))
    row = _compute_in_process(label, settings, progress="--progress" in argv)
    _save_row(Path(settings.work), row)
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
    from mini_decoders.errors import RunError

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
    from mini_decoders.errors import DataError, RunError
    from mini_decoders.train.profiles import resolve_profile

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
        from mini_decoders.data.synth import write_synthetic

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
                  recipe: str | None = None, ladder: bool = False, log: Callable[[str], None] | None = print) -> dict:
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
            (True, or a dict of :func:`mini_decoders.transfer.transfer_experiment` arguments);
            ``"only"``: the transfer experiment alone (no model rows; the classic baselines of the
            transfer experiment still run).
        costs: measure the inference-cost sweeps (False: leave them out; on a small recording they
            can take longer than the training).
        recipe: the recipe of every model that has one (``"paper"``; None: the default). Rows of
            another recipe are named ``model@recipe``.
        ladder: every step of each model's recipe ladder instead (the paper's recipe, the paper's
            plus each of our changes alone, the default): what each change buys, one row each.
        log: where progress lines go (None: silent).

    Returns:
        The table: ``{"format", "profile", "settings", "budget", "data", "rows": [...], "oracle",
        "summary", "transfer"?}``; each row as described in the module docstring.
    """
    from mini_decoders.errors import RunError
    from mini_decoders.run import as_sessions, write_json_atomic

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

    oracle = _read_json(_row_path(work, "oracle"))
    if oracle is None or oracle.get("key") != key:
        oracle = oracle_row(settings.data, sessions)
        if oracle is not None:
            oracle["key"] = key
            _save_row(work, oracle)
    rows = []
    transfer_only = transfer == "only" or (isinstance(transfer, dict) and bool(transfer.get("only")))
    for index, label in enumerate([] if transfer_only else labels, 1):
        row = load_row(work, label, settings.row_key(label))
        if row is not None:
            say(f"[{index}/{len(labels)}] {label}: done before, reused ({_row_path(work, label)})")
        else:
            say(f"[{index}/{len(labels)}] {label}: training" + (f" (log: {work / 'logs' / (label + '.log')})" if isolate else ""))
            row = (_compute_in_subprocess if isolate else _compute_in_process)(label, settings, progress)
            _save_row(work, row)
        say(f"    {_row_line(row)}")
        rows.append(row)
    table = build_table(rows, oracle, settings, sessions)
    table["seconds"] = time.perf_counter() - started
    if transfer:
        from mini_decoders.transfer import transfer_experiment

        options = dict(transfer) if isinstance(transfer, dict) else {}
        options.pop("only", None)
        options.setdefault("models", [m for m in names if m in ADAPTABLE])
        if options["models"]:
            table["transfer"] = transfer_experiment(settings.data, profile=settings.profile, work=work / "transfer",
                                                    seed=seed, device=device, threads=threads, progress=False,
                                                    log=log, **options)
        else:
            say(f"transfer: skipped, none of {names} adapts to new sessions (those that do: {', '.join(ADAPTABLE)})")
    if json_path is not None:
        json_path = Path(json_path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, table)
    if plot_path is not None:
        import matplotlib.pyplot as plt

        plot_path = Path(plot_path)
        if rows:
            plt.close(plot_benchmark(table, plot_path))
        if table.get("transfer"):
            from mini_decoders.transfer import plot_transfer

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
    import mini_decoders

    by_name = {row_label(row): row for row in rows}
    for row in rows:
        judged = row.get("judged_on")
        baseline = BASELINE_OF.get(judged) if judged else None
        row["baseline"] = baseline if baseline != row["model"] else None
        row["baseline_score"] = row["ratio_to_baseline"] = row["beats_baseline"] = row["meets_model_bar"] = None
        row["model_bar"] = MODEL_BAR.get(row["model"], 1.0) if row["baseline"] else None
        base = by_name.get(baseline) if row["baseline"] else None
        if base is not None and base.get(judged) is not None and row.get(judged) is not None:
            row["baseline_score"] = base[judged]
            verdict = judge_score(row[judged], base[judged], None, row["model_bar"])
            for key in ("beats_baseline", "ratio_to_baseline", "meets_model_bar"):
                row[key] = verdict[key]
        if oracle is not None and judged and oracle.get(judged) is not None and row.get(judged) is not None:
            row["fraction_of_oracle"] = judge_score(row[judged], None, oracle[judged])["fraction_of_oracle"]
    ok = [row for row in rows if row.get("status") == "ok"]
    transformers = [row for row in ok if row["model"] not in CLASSIC]
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
    return {"format": FORMAT, "package_version": mini_decoders.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
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


# ================================================================================================
# Text and pictures

def format_table(table: dict) -> str:
    """The table as aligned text (what the command prints)."""
    width = max([10] + [len(row_label(row)) for row in table["rows"] if row.get("model")])
    columns = [("model", width, "s"), ("token", 24, "s"), ("co_bps", 7, ".3f"), ("fp_bps", 7, ".3f"),
               ("vel_r2", 7, ".3f"), ("psth_r2", 7, ".3f"), ("params", 9, ",d"), ("train_seconds", 8, ".1f"),
               ("samples_per_second", 9, ".0f"), ("peak_memory_mb", 8, ".0f"), ("beats_baseline", 8, "s")]
    heads = {"train_seconds": "train s", "samples_per_second": "samples/s", "peak_memory_mb": "peak MB",
             "beats_baseline": "beats"}
    lines = ["  ".join(f"{heads.get(name, name):>{width}}" for name, width, _ in columns)]
    for row in table["rows"] + ([table["oracle"]] if table.get("oracle") else []):
        cells = []
        for name, width, spec in columns:
            value = row_label(row) if name == "model" and row.get("model") else row.get(name)
            if row.get("status") == "error" and name in METRICS:
                text = "error" if name == "co_bps" else ""
            elif value is None:
                text = "-"
            elif spec == "s":
                text = str(value)[:width]
            else:
                text = format(value, spec)
            cells.append(f"{text:>{width}}")
        lines.append("  ".join(cells))
    for name, error in table["summary"]["failed"].items():
        lines.append(f"{name}: {error}"[:300])
    summary = table["summary"]
    lines.append(f"every row finite: {summary['every_row_finite']}; every transformer beats its baseline: "
                 f"{summary['transformers_beat_baselines']}; meets its model issue's bar "
                 f"({', '.join(f'{m} {b}x' for m, b in MODEL_BAR.items())}, else > 1x): "
                 f"{summary.get('transformers_meet_model_bars')}")
    return "\n".join(lines)


def plot_benchmark(table: dict, path: str | Path | None = None, axes=None):
    """Scores against training time, peak memory, and inference cost against the work.

    Top row: co-bps and velocity R² against training seconds (log scale; one point per model,
    the oracle as a dashed line), peak memory per model. Bottom row: inference seconds per window
    against window length, held-in spikes per window, and neurons (log-log).

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt  # only when plotting: importing the package must not need a display

    from mini_decoders.viz_scores import ORACLE_STYLE

    if axes is None:
        fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    else:
        fig = np.ravel(axes)[0].figure
    axes = np.asarray(axes).reshape(2, 3)
    rows = [row for row in table["rows"] if row.get("status") == "ok"]
    colors = {name: f"C{i % 10}" for i, name in enumerate(MODELS)}
    oracle = table.get("oracle") or {}
    for ax, metric in zip(axes[0, :2], ("co_bps", "vel_r2")):
        drawn = False
        for row in rows:
            if row.get(metric) is None:
                continue
            seconds = max(row.get("train_seconds") or 0.0, 1e-2)
            ax.scatter(seconds, row[metric], color=colors.get(row["model"], "0.3"), s=40, zorder=3)
            ax.annotate(row_label(row), (seconds, row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            drawn = True
        if oracle.get(metric) is not None:
            ax.axhline(oracle[metric], label=f"oracle ({oracle[metric]:.3f})", **ORACLE_STYLE)
            ax.legend(frameon=False, fontsize=8, loc="best")  # clear of the points
        if drawn:
            _plain_log_axis(ax, "x")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(f"{METRIC_LABELS[metric]} vs compute", fontsize=10)
    ax = axes[0, 2]
    memory = [(row_label(row), row.get("peak_memory_mb")) for row in rows if row.get("peak_memory_mb") is not None]
    if memory:
        ax.bar(range(len(memory)), [m for _, m in memory], color=[colors.get(n, "0.3") for n, _ in memory])
        ax.set_xticks(range(len(memory)), [n for n, _ in memory], rotation=30)
    kinds = {row.get("memory_kind") for row in rows}
    ax.set_ylabel("peak memory (MB)")
    ax.set_title("peak memory" + (" (GPU allocated)" if "cuda_max_memory_allocated" in kinds else
                                  " (growth of peak RSS)"), fontsize=10)
    sweeps = (("length", "window length (s)"), ("spikes", "held-in spikes per window"), ("units", "neurons"))
    for ax, (sweep, label) in zip(axes[1], sweeps):
        drawn = False
        for row in rows:
            data = (row.get("cost") or {}).get(sweep) or {}
            points = [(x, s) for x, s in zip(data.get("x", []), data.get("seconds", [])) if x and s]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, np.array(ys) * 1000, marker="o", color=colors.get(row["model"], "0.3"), label=row_label(row))
                drawn = True
        if drawn:
            _plain_log_axis(ax, "x")
            _plain_log_axis(ax, "y")
            ax.legend(frameon=False, fontsize=7, ncol=2)
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("inference time per window (ms)")
        ax.set_title(f"cost vs {sweep}", fontsize=10)
    fig.suptitle(f"side by side: profile {table.get('profile')}, budget {table.get('budget', {}).get('kind')}, "
                 f"{len(table.get('data', []))} session(s)", fontsize=11)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(temp, dpi=120)
        os.replace(temp, path)
    return fig


def _plain_log_axis(ax, which: str = "x") -> None:
    """Log scale with tick labels written as plain numbers (0.5, 1, 2) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def scaling_exponent(x: Sequence[float], seconds: Sequence[float | None]) -> float | None:
    """Slope of log(seconds) against log(x): cost grows like ``x ** slope``. None with < 2 points."""
    pairs = [(float(a), float(b)) for a, b in zip(x, seconds) if a and b and a > 0 and b > 0]
    if len(pairs) < 2:
        return None
    xs, ys = np.log(np.array(pairs)).T
    return float(np.polyfit(xs, ys, 1)[0])


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "_row":
        sys.exit(_row_main(sys.argv[2:]))
    print("usage: mini-decoders benchmark --help", file=sys.stderr)
    sys.exit(2)
