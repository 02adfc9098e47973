"""The oracle: the simulator's true rates scored like a model, with the metrics and trials every model gets.

On simulated data (``mini-decoders data synth`` writes ``<id>_truth.h5`` beside each NWB file) the
true expected counts of every bin are known: scored like a model's predictions they give the best
any model can do on those trials, the ceiling each chapter shows next to a model's score. Real data
has no truth file and no oracle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mini_decoders.data.binning import bin_intervals, bin_trials
from mini_decoders.data.simulate import TrueRates
from mini_decoders.metrics import (METRICS, bits_per_spike, psth_r2_from_spikes, smooth_spikes,
                                   velocity_r2_from_rates)
from mini_decoders.run import PSTH_KERN_SD, as_sessions


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
