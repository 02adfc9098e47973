"""The MtM evaluations: what the model may see, what it is scored on, and the scores.

MtM (Zhang et al. 2024) asks one model four questions about a test trial, and co-smoothing comes
in two forms here (NLB's and the paper's). Each question is defined by the entries the input
*hides* and the entries that are *scored*; nothing scored is ever visible:

- ``co_smoothing``: nothing is hidden; score the held-out neurons (never an input; NLB co-bps).
- ``heldin_co_smoothing``: the paper's co-smoothing. Every held-in neuron in turn is left out
  of the input (zero in every bin) and predicted from all the others, one pass per neuron; score
  those neurons. (``leave_out_folds=K`` leaves out a K-th at a time instead: K passes, cheaper.)
  NLB's held-out neurons are scored in every training batch of a masked model, so
  ``co_smoothing`` is practised by any masking scheme; this question is practised only by a
  scheme that hides whole neurons.
- ``forward_prediction``: hide the last ``forward_bins`` bins (200 ms) of every held-in neuron;
  score every neuron (held-in and held-out) in those bins.
- ``inter_region``: for each region R in turn, hide every held-in neuron of R in every bin;
  score those neurons. "Predict a brain area from the others."
- ``intra_region``: for each region R and each of ``n_folds`` folds of R's held-in neurons, hide
  every other region and that fold; score the fold. "Predict part of an area from the rest."
- ``intra_region_loo``: the paper's intra-region question. Each held-in neuron of each region R in
  turn is hidden together with every other region, and predicted from the rest of R alone; one
  pass per neuron (the authors' ``co_smoothing_eval``, mode ``intra_region``).

A *pass* is one forward run of the model on a masked input; a task is one or more passes whose
scored entries are disjoint, so each entry is scored exactly once. Per task:

- ``bps``: bits per spike of the scored entries, pooled over units (NLB definition, null = each
  neuron's mean over the scored entries);
- ``neuron_bps``: the same per unit (each unit's saved bits over its own spikes), then the mean
  over units, as the paper's code reports it (``np.nanmean`` over neurons); units without a spike
  in their scored entries have no score and are left out. A quiet neuron weighs as much as a
  busy one here, where in ``bps`` it weighs by its spikes;
- ``psth_r2``: R² of condition-averaged predicted rates against condition-averaged smoothed spikes
  (trials aligned at their first scored bin);
- ``trial_r2``: R² of single-trial predicted rates against the smoothed spikes of that trial
  (smoothing corrected for the trial's edges, see :func:`edge_corrected_smoothing`).

The functions here know nothing about models: :func:`evaluate_tasks` takes a ``predict`` callable,
so the same code scores a model, a baseline, or the simulator's true rates (the oracle).

Shapes: N trials, T bins, U units in the session's unit-table order, ``U_in`` held-in units in
table order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.errors import DataError
from mini_decoders.metrics import ZERO_RATE_FLOOR, bits_per_spike, condition_trials, psth_r2, r2_score, smooth_spikes

TASKS = ("co_smoothing", "forward_prediction", "intra_region", "inter_region")  # the four: they pick the checkpoint
ALL_TASKS = TASKS + ("heldin_co_smoothing", "intra_region_loo")  # + the paper's co-smoothing and intra-region
TASK_KEYS = {"co_smoothing": "cosmooth", "forward_prediction": "forward", "intra_region": "intra",
             "inter_region": "inter", "heldin_co_smoothing": "heldin_cosmooth",
             "intra_region_loo": "intra_loo"}  # eval JSON keys: ``forward_bps``, ``intra_loo_neuron_bps``
SCORES = ("bps", "neuron_bps", "psth_r2", "trial_r2")  # each task's scores (see the module docstring)
FORWARD_BINS = 10  # 200 ms at 20 ms bins, as NLB's forward prediction and MtM
KERN_SD = 0.07  # s, smoothing of the observed spikes for the R² scores (NLB MC_Maze)

Predict = Callable[[np.ndarray, str], np.ndarray]  # (hidden (N, T, U_in) bool, task) -> rates (N, T, U)


@dataclass
class TaskPass:
    """One masked input and what it is scored on.

    Attributes:
        hidden: (N, T, U_in) bool, held-in entries the input hides.
        scored: (N, T, U) bool, entries (all units, table order) scored from this pass.
    """

    hidden: np.ndarray
    scored: np.ndarray


def region_index(regions: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(U,) region names -> ((U,) int64 index into the names, the distinct names in order of appearance).

    ``""`` means unlabelled: such a unit gets -1 and its ``""`` is not a region name.
    """
    regions = np.asarray(regions).astype(str)
    names = list(dict.fromkeys(name for name in regions.tolist() if name))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup.get(str(r), -1) for r in regions], dtype=np.int64), names


def task_passes(task: str, valid: np.ndarray, heldout: np.ndarray, regions: np.ndarray, *,
                forward_bins: int = FORWARD_BINS, n_folds: int = 3,
                leave_out_folds: int | None = None) -> list[TaskPass]:
    """The passes of one evaluation task (all of them, as a list; see :func:`iter_task_passes`)."""
    return list(iter_task_passes(task, valid, heldout, regions, forward_bins=forward_bins, n_folds=n_folds,
                                 leave_out_folds=leave_out_folds))


def iter_task_passes(task: str, valid: np.ndarray, heldout: np.ndarray, regions: np.ndarray, *,
                     forward_bins: int = FORWARD_BINS, n_folds: int = 3,
                     leave_out_folds: int | None = None) -> Iterator[TaskPass]:
    """The passes of one evaluation task, one at a time (held-in co-smoothing has one per neuron).

    Args:
        task: one of ``ALL_TASKS``.
        valid: (N, T) bool, real bins of each trial.
        heldout: (U,) bool, held-out units (never an input).
        regions: (U,) region name of each unit (``""`` = unlabelled: no region task hides or scores it).
        forward_bins: bins at the end of each trial hidden and scored by ``forward_prediction``.
        n_folds: ``intra_region`` hides 1/n_folds of the target region per pass
            (``intra_region_loo``: one neuron per pass, whatever ``n_folds``).
        leave_out_folds: ``heldin_co_smoothing`` hides 1/leave_out_folds of the held-in neurons
            per pass (held-in neuron i is in fold i % leave_out_folds); None: one neuron per
            pass, as the paper.

    Yields:
        :class:`TaskPass`; none when the task is undefined for these data (no held-out units for
        co-smoothing; fewer than two held-in units for held-in co-smoothing; fewer than two
        labelled regions with held-in units for the region tasks: one region, or none, is no
        question about regions). Held-in co-smoothing and ``intra_region_loo`` have one pass per
        held-in neuron, made when needed.
    """
    if task not in ALL_TASKS:
        raise DataError(f"evaluation task must be one of {ALL_TASKS}, got {task!r}")
    valid = np.asarray(valid, dtype=bool)
    heldout = np.asarray(heldout, dtype=bool)
    if len(regions) != len(heldout):
        raise DataError(f"`regions` has {len(regions)} entries but there are {len(heldout)} units")
    n_trials, n_bins = valid.shape
    heldin_index = np.flatnonzero(~heldout)
    n_in, n_units = len(heldin_index), len(heldout)
    nothing = np.zeros((n_trials, n_bins, n_in), dtype=bool)
    unit_region, names = region_index(np.asarray(regions)[heldin_index]) if n_in else (np.zeros(0, np.int64), [])

    def full_units(hidden_units: np.ndarray) -> np.ndarray:  # (U_in,) bool -> (N, T, U_in) on real bins
        return valid[:, :, None] & hidden_units[None, None, :]

    def scored_heldin(hidden: np.ndarray) -> np.ndarray:  # (N, T, U_in) -> (N, T, U) in table order
        scored = np.zeros((n_trials, n_bins, n_units), dtype=bool)
        scored[..., heldin_index] = hidden
        return scored

    if task == "co_smoothing":
        if heldout.any():
            yield TaskPass(nothing, valid[:, :, None] & heldout[None, None, :])
        return
    if task == "forward_prediction":
        if forward_bins < 1:
            raise DataError(f"forward_bins must be >= 1, got {forward_bins}")
        lengths = valid.sum(1)
        if (lengths <= forward_bins).any():
            raise DataError(f"forward prediction hides the last {forward_bins} bins, but a trial has only "
                            f"{int(lengths.min())} bins: nothing would be left to predict from")
        late = valid & (np.arange(n_bins)[None, :] >= (lengths - forward_bins)[:, None])  # (N, T)
        yield TaskPass(np.repeat(late[:, :, None], n_in, axis=2), np.repeat(late[:, :, None], n_units, axis=2))
        return
    if task == "heldin_co_smoothing":
        if leave_out_folds is not None and leave_out_folds < 2:
            raise DataError(f"leave_out_folds must be >= 2 (a fold hidden, the rest visible) or None (one neuron "
                            f"at a time), got {leave_out_folds}")
        if n_in < 2:
            return
        folds = n_in if leave_out_folds is None else min(leave_out_folds, n_in)
        fold_of = np.arange(n_in) % folds
        for fold in range(folds):  # one per held-in neuron by default: made when needed, not all at once
            hidden = full_units(fold_of == fold)
            yield TaskPass(hidden, scored_heldin(hidden))
        return
    if len(names) < 2:
        return
    for r in range(len(names)):  # a handful of regions: one pass (or n_folds, or one per neuron) each
        members = np.flatnonzero(unit_region == r)
        if task == "inter_region":
            hidden = full_units(unit_region == r)
            yield TaskPass(hidden, scored_heldin(hidden))
            continue
        others = (unit_region != r) & (unit_region >= 0)
        if task == "intra_region_loo":
            for neuron in members:
                target = full_units(np.arange(n_in) == neuron)
                yield TaskPass(full_units(others) | target, scored_heldin(target))
            continue
        fold_of = np.full(n_in, -1)
        fold_of[members] = np.arange(len(members)) % n_folds
        for fold in range(min(n_folds, len(members))):
            target = full_units(fold_of == fold)
            yield TaskPass(full_units(others) | target, scored_heldin(target))


def predict_task(predict: Predict, task: str, passes: Iterable[TaskPass]) -> tuple[np.ndarray, np.ndarray] | None:
    """Run every pass and keep each pass's scored entries.

    Returns:
        rates: (N, T, U) float64, predictions on scored entries, NaN elsewhere.
        scored: (N, T, U) bool, the union of the passes' scored entries.
        None when there are no passes (the task is undefined).
    """
    rates = scored = None
    for one in passes:
        if rates is None:
            rates, scored = np.full(one.scored.shape, np.nan), np.zeros(one.scored.shape, dtype=bool)
        predicted = np.asarray(predict(one.hidden, task), dtype=np.float64)
        if predicted.shape != one.scored.shape:
            raise DataError(f"predict returned shape {predicted.shape} for task {task!r}, expected "
                            f"(N, T, U) = {one.scored.shape}")
        np.copyto(rates, predicted, where=one.scored)
        scored |= one.scored
    return None if rates is None else (rates, scored)


def score_task(rates: np.ndarray, counts: np.ndarray, scored: np.ndarray, conditions: np.ndarray | None,
               bin_size: float, kern_sd: float = KERN_SD) -> dict[str, float | None]:
    """Bits/spike, PSTH R² and single-trial R² of the scored entries.

    Args:
        rates: (N, T, U) predicted expected counts per bin (only scored entries are read).
        counts: (N, T, U) observed counts; NaN = padding.
        scored: (N, T, U) bool.
        conditions: (N,) condition labels (PSTH R² needs two or more), or None.
        bin_size, kern_sd: seconds; the observed spikes are Gaussian-smoothed (sd ``kern_sd``) over
            each whole trial, edge-corrected, before the R² scores.

    Returns:
        ``{"bps", "neuron_bps", "psth_r2", "trial_r2"}`` (``SCORES``); None where a score is undefined.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if not scored.any():
        return dict.fromkeys(SCORES)
    if np.isnan(rates[scored]).any():
        raise DataError("score_task: `rates` has NaN on scored entries")
    spikes = np.where(scored, counts, np.nan)
    per_unit = unit_bits_per_spike(rates, counts, scored)  # (U,), NaN for units with no score
    per_unit = per_unit[~np.isnan(per_unit)]
    out: dict[str, float | None] = {"bps": _finite(bits_per_spike(np.where(scored, rates, 1.0), spikes)),
                                    "neuron_bps": _finite(per_unit.mean()) if len(per_unit) else None}
    columns = scored.any(axis=(0, 1))  # units scored anywhere
    smoothed = np.where(scored, edge_corrected_smoothing(counts, bin_size, kern_sd), np.nan)[..., columns]
    predicted = np.where(scored, rates, 0.0)[..., columns]
    rows = scored[..., columns].all(-1)  # bins where every scored unit is scored
    out["trial_r2"] = _finite(r2_score(predicted[rows], smoothed[rows])) if rows.sum() >= 2 else None
    out["psth_r2"] = None
    if conditions is not None and len(set(np.asarray(conditions).astype(str).tolist()) - {""}) >= 2:
        # Align trials at their first scored bin and keep the bins every trial has.
        n_common = int(rows.sum(1).min())
        if n_common >= 2:
            first = np.argsort(~rows, axis=1, kind="stable")[:, :n_common]  # (N, K) scored bins in time order
            take = first[:, :, None]
            aligned_rates = np.take_along_axis(predicted, take, axis=1)
            aligned_smooth = np.take_along_axis(smoothed, take, axis=1)
            _, trial_indices = condition_trials(np.asarray(conditions).astype(str))
            true_psth = np.stack([aligned_smooth[trials].mean(0) for trials in trial_indices])
            out["psth_r2"] = _finite(psth_r2(aligned_rates, true_psth, trial_indices))
    return out


def unit_bits_per_spike(rates: np.ndarray, counts: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Bits/spike of each unit over its own scored entries (the paper's per-neuron score).

    ``bps_u = (NLL(mean_u) - NLL(rates_u)) / (spikes_u ln 2)`` over unit ``u``'s scored entries,
    with ``mean_u`` its mean count over those entries; the ``ln y!`` terms cancel.

    Args:
        rates: (N, T, U) predicted expected counts per bin (only scored entries are read; a rate
            of 0 counts as :data:`~mini_decoders.metrics.ZERO_RATE_FLOOR`, as in the pooled score).
        counts: (N, T, U) observed counts.
        scored: (N, T, U) bool.

    Returns:
        (U,) float64; NaN for a unit with no scored entry or no spike in them (its score would
        divide by zero: the authors' code turns it into NaN and averages with ``np.nanmean``).
    """
    scored = np.asarray(scored, dtype=bool)
    spikes = np.where(scored, np.asarray(counts, dtype=np.float64), 0.0)
    rates = np.where(scored, np.asarray(rates, dtype=np.float64), 1.0)
    rates = np.maximum(rates, ZERO_RATE_FLOOR)
    n_scored = scored.sum((0, 1))  # (U,)
    total = spikes.sum((0, 1))  # (U,)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n_scored  # (U,) the null model's rate per unit
        nll_model = (np.where(scored, rates, 0.0) - spikes * np.log(rates)).sum((0, 1))
        nll_null = n_scored * mean - total * np.log(np.maximum(mean, ZERO_RATE_FLOOR))
        per_unit = (nll_null - nll_model) / (total * np.log(2))
    return np.where(total > 0, per_unit, np.nan)


def edge_corrected_smoothing(counts: np.ndarray, bin_size: float, kern_sd: float) -> np.ndarray:
    """Gaussian-smoothed counts, divided by the kernel mass that fell inside the trial.

    Plain smoothing (:func:`~mini_decoders.metrics.smooth_spikes`) treats the world outside a trial
    as silent, so the last bins of a trial — exactly the ones forward prediction scores — come out
    too low. Dividing by the smoothed indicator of real bins removes that bias.

    Args:
        counts: (N, T, U) counts, NaN on padding.

    Returns:
        (N, T, U) float64, NaN on padding.
    """
    inside = np.where(np.isnan(counts), np.nan, 1.0)
    return smooth_spikes(counts, bin_size, kern_sd) / smooth_spikes(inside, bin_size, kern_sd)


def evaluate_tasks(predict: Predict, binned: BinnedTrials, heldout: np.ndarray, regions: np.ndarray, *,
                   tasks: tuple[str, ...] = ALL_TASKS, forward_bins: int = FORWARD_BINS, n_folds: int = 3,
                   leave_out_folds: int | None = None, kern_sd: float = KERN_SD
                   ) -> dict[str, dict[str, float | None]]:
    """Score ``predict`` on every task.

    Args:
        predict: ``predict(hidden, task) -> rates``: hidden (N, T, U_in) bool (held-in entries to
            zero in the input), the task name (so a model can choose its prompt); returns
            (N, T, U) expected counts per bin for every unit, in unit-table order.
        binned: the trials to evaluate (e.g. the test split).
        heldout: (U,) bool; regions: (U,) region names.

    Returns:
        task -> ``{"bps", "neuron_bps", "psth_r2", "trial_r2"}`` (None for an undefined task or score).
    """
    counts = np.where(binned.mask[:, :, None], binned.counts.astype(np.float64), np.nan)
    results = {}
    for task in tasks:
        passes = iter_task_passes(task, binned.mask, heldout, regions, forward_bins=forward_bins, n_folds=n_folds,
                                  leave_out_folds=leave_out_folds)
        predicted = predict_task(predict, task, passes)
        if predicted is None:
            results[task] = dict.fromkeys(SCORES)
            continue
        rates, scored = predicted
        results[task] = score_task(rates, counts, scored, binned.condition, binned.bin_size, kern_sd)
    return results


def flat_task_scores(results: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """``{task: {score: v}}`` -> ``{"cosmooth_bps": v, "forward_psth_r2": v, ...}`` (eval JSON keys)."""
    return {f"{TASK_KEYS[task]}_{score}": value for task, scores in results.items() for score, value in scores.items()}


def oracle_task_scores(session, truth, split: str = "test", bin_size: float = 0.02, *,
                       tasks: tuple[str, ...] = ALL_TASKS, forward_bins: int = FORWARD_BINS, n_folds: int = 3,
                       leave_out_folds: int | None = None, kern_sd: float = KERN_SD
                       ) -> dict[str, dict[str, float | None]]:
    """The scores of the simulator's true rates on every task: the best any model can do there, in expectation.

    Args:
        session: the :class:`~mini_decoders.data.session.Session` (from ``simulate`` or ``read_nwb``).
        truth: its :class:`~mini_decoders.data.simulate.TrueRates` (``dataset.truth[id]``, or
            ``TrueRates.load("<id>_truth.h5")`` next to a file written by ``mini-decoders data synth``).
        split, bin_size: which trials, binned how.
    """
    if [str(u) for u in truth.unit_ids] != [str(u) for u in session.units.ids]:
        raise DataError(f"oracle_task_scores: the true rates ({truth.session_id!r}) are for other units than "
                        f"session {session.id!r}; pass the truth file written next to this session")
    binned = bin_trials(session, bin_size, split=split, behavior=())
    expected = truth.expected_counts(binned.starts, binned.lengths, bin_size)  # (N, T, U), NaN past each trial
    return evaluate_tasks(lambda hidden, task: expected, binned, session.units.heldout, session.units.region,
                          tasks=tasks, forward_bins=forward_bins, n_folds=n_folds, leave_out_folds=leave_out_folds,
                          kern_sd=kern_sd)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
