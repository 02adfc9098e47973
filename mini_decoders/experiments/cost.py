"""What a model costs: peak memory of a stretch of work, and inference time against the work given.

- :class:`PeakMemory`: the peak memory of one benchmark row (GPU allocation, or the growth of the
  process's peak resident set on a CPU).
- :func:`inference_cost`: forward-pass time per window against window length, spikes per window
  and neurons; :func:`scaling_exponent` reads the slope of such a sweep (cost grows like ``x**k``).
- :func:`window_view` and :func:`heldin_spikes_per_window`: the windows a sweep times, and the
  spikes in them (the token lab's training-cost sweep cuts its windows with them too).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Sequence

import numpy as np
import torch

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.session import Session, Trials
from mini_decoders.data.simulate import simulate


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
        hwm = _proc_status("VmHWM") if self.resettable else None
        if hwm is None:
            import resource  # POSIX only: imported here so the module still loads on Windows

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
# Cost of inference against the amount of work

def window_view(session: Session, spike_times: np.ndarray, spike_units: np.ndarray, starts: np.ndarray,
                length: float) -> Session:
    """``session`` with other spikes and a trial table of windows ``[start, start + length)`` (all "test")."""
    trials = Trials(starts, starts + length, np.full(len(starts), "test"))
    return Session(session.id, spike_times, spike_units, session.units, dict(session.behavior), trials,
                   session.subject, session.task, session.source)


def _time_predict(model, view: Session, repeats: int) -> float:
    """Best-of-``repeats`` seconds of ``model.predict_trials`` on every trial of ``view`` (after one warm-up call)."""
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


def heldin_spikes_per_window(session: Session, spike_times: np.ndarray, spike_units: np.ndarray, starts: np.ndarray,
                             length: float) -> float:
    """Mean number of held-in spikes (what a model reads) in the windows."""
    times = spike_times[~session.units.heldout[spike_units]]
    return float(np.mean(np.searchsorted(times, starts + length) - np.searchsorted(times, starts)))


def inference_cost(model, session: Session, *, lengths: Sequence[float], fractions: Sequence[float],
                   units: Sequence[int], n_windows: int, repeats: int, seed: int = 0,
                   build_config: dict | None = None) -> dict:
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
        view = window_view(session, session.spike_times, session.spike_units, starts, float(length))
        result["length"]["x"].append(float(length))
        result["length"]["spikes"].append(heldin_spikes_per_window(session, session.spike_times,
                                                                   session.spike_units, starts, float(length)))
        result["length"]["seconds"].append(point(model, view, n_windows))

    fixed_length = max([x for x in lengths if x <= 1.0] or [min(lengths, default=1.0)])
    starts = starts_for(fixed_length)
    rng = np.random.default_rng(seed)
    for fraction in fractions:
        keep = rng.random(session.n_spikes) < fraction
        times, spike_units = session.spike_times[keep], session.spike_units[keep]
        view = window_view(session, times, spike_units, starts, fixed_length)
        result["spikes"]["fraction"].append(float(fraction))
        result["spikes"]["x"].append(heldin_spikes_per_window(session, times, spike_units, starts, fixed_length))
        result["spikes"]["seconds"].append(point(model, view, n_windows))
    result["spikes"]["length_s"] = fixed_length

    device = next((p.device for p in model.parameters()), None)
    for n_units in units:
        simulated = simulate(n_sessions=1, n_trials=max(n_windows, 10), n_units=int(n_units), seed=seed).sessions[0]
        view = window_view(simulated, simulated.spike_times, simulated.spike_units, simulated.trials.start[:n_windows],
                           fixed_length)
        try:
            fresh = type(model).build([simulated], dict(build_config if build_config is not None else model.config))
            fresh = fresh.to(device) if device is not None else fresh
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:300])
            fresh = None
        result["units"]["x"].append(int(n_units))
        result["units"]["spikes"].append(heldin_spikes_per_window(simulated, simulated.spike_times,
                                                                  simulated.spike_units, view.trials.start,
                                                                  fixed_length))
        seconds = None if fresh is None else point(fresh, view, len(view.trials))
        if fresh is not None and seconds is None:
            # Some models learn what they need to predict at all (context rows, closed-form
            # weights) only in fit: one step of it, and time again.
            errors.pop()
            try:
                config = {**fresh.config, "max_steps": 1, "warmup_steps": 1, "val_every": None, "checkpoint_every": None}
                # Most models train with the config they were built with (self.config), not fit's
                # argument: without this NDT2 ran its whole recipe here (800 steps, ~60 s per point).
                fresh.config = config
                fresh.fit([simulated], config, out_dir=None, progress=False)
                seconds = point(fresh, view, len(view.trials))
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}".splitlines()[0][:300])
        result["units"]["seconds"].append(seconds)
    # keep only distinct messages
    result["errors"] = list(dict.fromkeys(errors))
    return result


def scaling_exponent(x: Sequence[float], seconds: Sequence[float | None]) -> float | None:
    """Slope of log(seconds) against log(x): cost grows like ``x ** slope``. None with < 2 points."""
    pairs = [(float(a), float(b)) for a, b in zip(x, seconds) if a and b and a > 0 and b > 0]
    if len(pairs) < 2:
        return None
    xs, ys = np.log(np.array(pairs)).T
    return float(np.polyfit(xs, ys, 1)[0])
