"""The oracle: the simulator's true rates scored like a model, with the metrics and trials every model gets.

On simulated data (``mini-decoders data synth`` writes ``<id>_truth.h5`` beside each NWB file) the
true expected counts of every bin are known, scored like a model's predictions. For the rate
scores (bits/spike) that is the best any model can do on those trials, in expectation; the velocity
oracle is a ridge decoder of the true rates, a reference each chapter shows next to a model's score
but not a ceiling (another decoder of the true rates could do better). Real data has no truth file
and no oracle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import TrueRates
from mini_decoders.metrics import METRICS
from mini_decoders.run import as_sessions
from mini_decoders.scoring import (BEHAVIOR, forward_bps, has_conditions, heldout_bps, mean_scores, observed_counts,
                                   psth_r2, velocity_r2)


def oracle_row(paths: Sequence[str | Path], sessions=None, bin_size: float = 0.02) -> dict | None:
    """The scores of the simulator's true rates, with the metrics and trials every model gets.

    Each score as :meth:`mini_decoders.run.Run.evaluate` computes it (:mod:`mini_decoders.scoring`):
    ``co_bps`` from the exact expected counts; ``psth_r2`` likewise, from the expected counts
    smoothed with the kernel that smooths the target PSTH (the best prediction of a smoothed-spike
    PSTH); ``fp_bps`` from the expected counts in the 200 ms after each test trial;
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
        binned = bin_trials(session, bin_size, split=None, behavior=(BEHAVIOR,) if BEHAVIOR in session.behavior
                            else (), lag=lag)
        expected = truth.expected_counts(binned.starts, binned.lengths, bin_size)  # (N, T, U), NaN padding
        counts = observed_counts(binned)
        test = np.flatnonzero(binned.split == "test")
        train = np.flatnonzero(binned.split == "train")
        heldin, heldout = session.units.heldin_index, session.units.heldout_index
        order = np.concatenate([heldin, heldout])
        scores: dict[str, float | None] = {}
        if len(heldout) and len(test):
            scores["co_bps"] = heldout_bps(expected[test][..., heldout], counts[test], heldout)
        if len(test):
            fp_bins = int(round(0.2 / bin_size))
            stops = binned.starts[test] + binned.lengths[test] * bin_size
            inside = stops + fp_bins * bin_size <= truth.stop_time  # the truth file ends with the recording
            if inside.any():
                forecast = truth.expected_counts(stops[inside], fp_bins, bin_size)  # (N, T_fp, U)
                scores["fp_bps"] = forward_bps(session, forecast[..., order], stops[inside], bin_size, order)
        velocity = binned.behavior.get(BEHAVIOR)
        if velocity is not None and len(train) and len(test):
            rates = {"rates_heldin": expected[..., heldin], "rates_heldout": expected[..., heldout]}
            scores["vel_r2"] = velocity_r2(rates, velocity, test, train)
        if has_conditions(binned.condition[test]):
            # The PSTH target is trial-averaged *smoothed* spikes, so its best prediction is the true
            # rates smoothed by the same kernel (raw true rates would score below a smooth model).
            scores["psth_r2"] = psth_r2(expected[test][..., order], counts[test][..., order], binned.condition[test],
                                        binned.lengths[test], bin_size, smooth_rates=True)
        per_session[session.id] = scores
    if not per_session:
        return None
    row = {"model": "oracle", "status": "ok", "token": "true rates", "judged_on": None,
           "note": ("the simulator's true rates scored like a model: the best any model can do on these trials "
                    "(co-bps, fp-bps, velocity R²); not for PSTH R², whose target is the smoothed spikes of the "
                    "very trials whose held-in spikes the models read"),
           "sessions": per_session}
    row.update(mean_scores(per_session, METRICS))
    return row


def _simulator_lag(folder: Path, default: float = 0.1) -> float:
    config = folder / "simulation.json"
    try:
        return float(json.loads(config.read_text()).get("lag", default))
    except (OSError, ValueError, AttributeError):
        return default
