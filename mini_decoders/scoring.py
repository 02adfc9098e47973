"""Scoring: a model's predictions of some trials, against what was recorded in them.

One place says how every score of a run is computed, so that a model (``Run.evaluate``), the
simulator's true rates (the oracle row of :mod:`mini_decoders.experiments.oracle`) and anything
else scored side by side are scored the same way, on the same bins:

- ``co_bps``: bits/spike of the held-out units (:func:`heldout_bps`);
- ``fp_bps``: bits/spike of every unit in the bins after each trial's end (:func:`forward_bps`);
- ``vel_r2``: R² of decoded velocity, or NLB's ridge from the rates of every unit (:func:`velocity_r2`);
- ``psth_r2``: R² of condition-averaged rates against the smoothed spikes' PSTH (:func:`psth_r2`).

The metrics themselves (NLB definitions) are in :mod:`mini_decoders.metrics`; this module
chooses the units, trials and bins they are computed on. Every score is a float or None (a score
that cannot be computed, e.g. co-bps without held-out units, or that is not finite: JSON has no NaN).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from mini_decoders.data.binning import BinnedTrials, bin_intervals
from mini_decoders.data.session import Session
from mini_decoders.metrics import (bits_per_spike, psth_r2_from_spikes, r2_score, smooth_spikes,
                                   velocity_r2_from_rates)

PSTH_KERN_SD = 0.07  # s; NLB smooths MC_Maze / DMFC true PSTHs with 70 ms
BEHAVIOR = "hand_vel"


def finite_or_none(value: float | None) -> float | None:
    """A score as it is written: a float, or None where it could not be computed (JSON has no NaN)."""
    return float(value) if value is not None and np.isfinite(value) else None


def mean_scores(per_session: dict[str, dict], keys: Iterable[str] | None = None) -> dict[str, float | None]:
    """The mean over sessions of each score (of ``keys``, default every score any session has);
    sessions without a score are left out of its mean, None when no session has it."""
    keys = dict.fromkeys(k for scores in per_session.values() for k in scores) if keys is None else keys
    means = {}
    for key in keys:
        values = [scores[key] for scores in per_session.values() if scores.get(key) is not None]
        means[key] = finite_or_none(float(np.mean(values))) if values else None
    return means


def observed_counts(binned: BinnedTrials) -> np.ndarray:
    """(N, T, U) float64 recorded counts of every unit, NaN in the padding past each trial's end."""
    return np.where(binned.mask[:, :, None], binned.counts.astype(np.float64), np.nan)


def all_unit_rates(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """(N, T, U_in + U_out) held-in rates then held-out rates, the unit order NLB scores in."""
    parts = [predictions[key] for key in ("rates_heldin", "rates_heldout") if key in predictions]
    return np.concatenate(parts, axis=-1)


# ================================================================================================
# One score each

def heldout_bps(rates_heldout: np.ndarray, counts: np.ndarray, heldout_index: np.ndarray) -> float | None:
    """co-bps: bits/spike of ``rates_heldout`` (N, T, U_out) against the held-out columns of ``counts`` (N, T, U)."""
    return finite_or_none(bits_per_spike(rates_heldout, counts[..., heldout_index]))


def forward_bps(session: Session, forward_rates: np.ndarray, stops: np.ndarray, bin_size: float,
                unit_order: np.ndarray) -> float | None:
    """fp-bps: bits/spike of ``forward_rates`` (N, T_fp, U) for the ``T_fp`` bins after each trial's
    ``stops`` (s), against the spikes recorded there (units in ``unit_order``: held-in, then held-out)."""
    future = bin_intervals(session.spike_times, session.spike_units, session.n_units, stops, forward_rates.shape[1],
                           bin_size).astype(np.float64)  # (N, T_fp, U)
    return finite_or_none(bits_per_spike(forward_rates, future[..., unit_order]))


def velocity_r2(predictions: dict[str, np.ndarray], velocity: np.ndarray, evaluated: np.ndarray,
                train: np.ndarray) -> float | None:
    """vel_r2 of the ``evaluated`` trials: R² of the ``hand_vel`` predictions of a decoder; for a rate
    model NLB's ridge from the rates of every unit to velocity, fitted on the ``train`` trials."""
    if BEHAVIOR in predictions:
        return finite_or_none(r2_score(predictions[BEHAVIOR][evaluated], velocity[evaluated]))
    rates = all_unit_rates(predictions)
    return finite_or_none(velocity_r2_from_rates(rates[train], velocity[train], rates[evaluated], velocity[evaluated]))


def has_conditions(conditions: np.ndarray) -> bool:
    """Whether trials carry at least two condition labels: what a PSTH score needs."""
    return len(set(conditions.tolist()) - {""}) >= 2


def psth_r2(rates: np.ndarray, counts: np.ndarray, conditions: np.ndarray, lengths: np.ndarray, bin_size: float,
            smooth_rates: bool = False) -> float | None:
    """psth_r2: R² of the condition-averaged ``rates`` (N, T, U) against the PSTH of the smoothed ``counts``.

    The average over a condition's trials has no NaN handling, so both are cut to the bins every
    trial has (NLB's aligned windows have equal lengths anyway). With ``smooth_rates`` the rates
    (true expected counts) are smoothed by the kernel that smooths the target first: the best
    prediction of a smoothed-spike PSTH. Needs trials of two conditions or more (:func:`has_conditions`).
    """
    common = int(lengths.min())
    rates = rates[:, :common].astype(np.float64)
    if smooth_rates:
        rates = smooth_spikes(rates, bin_size, PSTH_KERN_SD)
    return finite_or_none(psth_r2_from_spikes(rates, counts[:, :common], conditions, bin_size, PSTH_KERN_SD))


# ================================================================================================
# Every score of one session

def score_trials(session: Session, binned: BinnedTrials, predictions: dict[str, np.ndarray], evaluated: np.ndarray,
                 heldin_index: np.ndarray, heldout_index: np.ndarray) -> dict[str, float | None]:
    """The scores of a model's ``predictions`` for the ``evaluated`` trials of ``binned``.

    Args:
        session: the recording (``fp_bps`` bins its spikes after each trial's end).
        binned: every trial of the session, binned with behaviour at the model's lag.
        predictions: the model's outputs for every trial of ``binned`` (NaN in padding):
            ``rates_heldin`` / ``rates_heldout`` (N, T, U_in / U_out), ``rates_forward``
            (N, T_fp, U_in + U_out), ``hand_vel`` (N, T, 2), any of them.
        evaluated: positions of the trials to score (e.g. the test trials).
        heldin_index, heldout_index: the columns of the held-in and held-out units in the session.

    Returns:
        ``co_bps`` (with held-out units), ``fp_bps`` (models that forecast), ``vel_r2`` (sessions
        with behaviour), ``psth_r2`` (rate models, trials with 2+ condition labels), where they apply.
    """
    counts = observed_counts(binned)
    order = np.concatenate([heldin_index, heldout_index])
    scores: dict[str, float | None] = {}
    if "rates_heldout" in predictions and len(heldout_index):
        scores["co_bps"] = heldout_bps(predictions["rates_heldout"][evaluated], counts[evaluated], heldout_index)
    if "rates_forward" in predictions:  # models that forecast the bins after each trial's end
        stops = binned.starts[evaluated] + binned.lengths[evaluated] * binned.bin_size
        scores["fp_bps"] = forward_bps(session, predictions["rates_forward"][evaluated], stops, binned.bin_size, order)
    velocity = binned.behavior.get(BEHAVIOR)  # (N, T, D), NaN in padding
    if velocity is not None and np.isfinite(velocity[evaluated]).any():
        train = np.flatnonzero(binned.split == "train")
        if BEHAVIOR in predictions or ("rates_heldin" in predictions and len(train)):
            scores["vel_r2"] = velocity_r2(predictions, velocity, evaluated, train)
    if "rates_heldin" in predictions and has_conditions(binned.condition[evaluated]):
        scores["psth_r2"] = psth_r2(all_unit_rates(predictions)[evaluated], counts[evaluated][..., order],
                                    binned.condition[evaluated], binned.lengths[evaluated], binned.bin_size)
    return scores
