"""NLB'21 metrics: Poisson NLL, bits per spike (co-bps, fp-bps), velocity R² and PSTH R².

Every number here is defined exactly as in the Neural Latents Benchmark's
``nlb_tools.evaluation`` (tests check agreement to 1e-6), re-implemented in plain numpy so the
book can show the maths on one page:

    NLL(λ, y)  = Σ [ λ − y·ln λ + ln Γ(y + 1) ]                     (Poisson, summed over entries)
    bps        = ( NLL(λ_null, y) − NLL(λ̂, y) ) / ( Σ y · ln 2 )    (λ_null = per-neuron mean count)
    R²         = mean over outputs of 1 − SS_res / SS_tot            (sklearn's 'uniform_average')

Shapes: rates and spikes are expected counts / observed counts *per bin*, either trialised
``(N, T, U)`` (trials, time bins, units) or already flattened ``(N*T, U)``. The last axis is
always the unit (or behaviour output) axis. Torch tensors are accepted and converted to float64
numpy arrays, so a model's output can be scored without ``.numpy()`` at the call site.

NaN conventions follow NLB: a NaN *target* (spike count, velocity sample, PSTH bin) marks data
that is not scored and is dropped together with the matching prediction; a NaN *prediction*
where a target exists is an error.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from scipy import signal
from scipy.special import gammaln

from mini_decoders.errors import DataError

ZERO_RATE_FLOOR = 1e-9  # NLB replaces λ = 0 by this so ln λ is finite (a zero rate with a spike costs ~20.7 nats)
NLB_RIDGE_ALPHAS = np.logspace(-4, 0, 9)  # the alpha grid nlb_tools searches for the velocity decoder
# The four scores of a run (see mini_decoders.run.Run.evaluate), how tables label them, and how the
# metric a model is judged on is scored.
METRICS = ("co_bps", "fp_bps", "vel_r2", "psth_r2")
METRIC_LABELS = {"co_bps": "co-bps (bits/spike)", "fp_bps": "fp-bps (bits/spike)", "vel_r2": "velocity R²",
                 "psth_r2": "PSTH R²"}
SCORED_BY = {"co_bps": "NLB bits/spike (held-out neurons)", "vel_r2": "R² (hand velocity)"}


# ------------------------------------------------------------------------------------------------
# Input handling

def _as_float_array(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a float64 numpy array; torch tensors are detached and moved to CPU."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"`{name}` must be a numeric array, got {type(values).__name__}: {error}") from None


def _check_same_shape(prediction: np.ndarray, target: np.ndarray, prediction_name: str,
                      target_name: str) -> None:
    if prediction.shape != target.shape:
        raise DataError(f"`{prediction_name}` and `{target_name}` must have the same shape, "
                        f"got {prediction.shape} and {target.shape}")


def _flatten_to_rows(values: np.ndarray, name: str) -> np.ndarray:
    """(N, T, D) or (M, D) -> (M, D) rows; a 1-D (M,) array becomes a single output column."""
    if values.ndim == 1:
        return values[:, None]
    if values.ndim == 2:
        return values
    if values.ndim == 3:
        return values.reshape(-1, values.shape[-1])
    raise DataError(f"`{name}` must be 1-D (M,), 2-D (M, D) or 3-D (N, T, D), got shape {values.shape}")


# ------------------------------------------------------------------------------------------------
# Poisson likelihood and bits per spike

def poisson_nll(rates: Any, spikes: Any) -> float:
    """Poisson negative log-likelihood (nats), summed over every scored entry.

    ``NLL = Σ λ − y·ln λ + ln Γ(y+1)``, the full likelihood including the ``ln y!`` term, as NLB
    computes it (the term cancels in bits per spike but not in the NLL itself).

    Args:
        rates: (..., U) predicted expected counts per bin, λ ≥ 0. Zeros are replaced by 1e-9.
        spikes: (..., U) observed counts, same shape. NaN entries are not scored (they and the
            matching rates are dropped).

    Returns:
        The summed NLL as a Python float.

    Raises:
        DataError: shapes differ, a rate is negative, or a rate is NaN where a spike count exists.
    """
    rates = _as_float_array(rates, "rates")
    spikes = _as_float_array(spikes, "spikes")
    _check_same_shape(rates, spikes, "rates", "spikes")
    scored = ~np.isnan(spikes)
    rates, spikes = rates[scored], spikes[scored]  # (S,) scored entries
    if np.isnan(rates).any():
        raise DataError(f"`rates` has {int(np.isnan(rates).sum())} NaN value(s) where `spikes` is "
                        f"observed; expected a finite rate for every scored bin")
    if (rates < 0).any():
        raise DataError(f"`rates` must be non-negative expected counts; found {int((rates < 0).sum())} "
                        f"negative value(s), minimum {rates.min():.6g}")
    rates = np.where(rates == 0, ZERO_RATE_FLOOR, rates)
    return float(np.sum(rates - spikes * np.log(rates) + gammaln(spikes + 1.0)))


def bits_per_spike(rates: Any, spikes: Any) -> float:
    """Bits per spike of ``rates`` against a per-neuron mean-rate null model (NLB definition).

    ``bps = (NLL(λ_null, y) − NLL(λ̂, y)) / (Σ y · ln 2)``: how many bits per observed spike the
    model's rates save over knowing only each neuron's mean count. 0 means no better than the
    mean; negative means worse. λ_null for neuron u is the mean count of u over *all trials and
    bins of the data being scored* (NaNs ignored), which is what NLB uses, not a training-set mean.

    Args:
        rates: (N, T, U) or (N*T, U) predicted expected counts per bin.
        spikes: same shape, observed counts; NaN entries are not scored.

    Returns:
        Bits per spike as a float; NaN if there are no spikes to score (NLB would divide by 0).
    """
    rates = _as_float_array(rates, "rates")
    spikes = _as_float_array(spikes, "spikes")
    _check_same_shape(rates, spikes, "rates", "spikes")
    if spikes.ndim < 2:
        raise DataError(f"`spikes` must be (N, T, U) or (N*T, U) with units last, got shape {spikes.shape}")
    total_spikes = np.nansum(spikes)
    if total_spikes == 0:
        return float("nan")
    nll_model = poisson_nll(rates, spikes)
    with warnings.catch_warnings():  # an all-NaN neuron has a NaN mean; its entries are dropped anyway
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_count = np.nanmean(spikes.reshape(-1, spikes.shape[-1]), axis=0)  # (U,)
    null_rates = np.broadcast_to(mean_count, spikes.shape)
    nll_null = poisson_nll(null_rates, spikes)
    return float((nll_null - nll_model) / (total_spikes * np.log(2)))


def co_bps(heldout_rates: Any, heldout_spikes: Any) -> float:
    """Co-smoothing bits per spike: bps of the *held-out* neurons on the evaluation trials.

    The model sees only held-in neurons and must predict the rates of neurons it never observed
    in those trials; NLB's headline metric. Shapes as :func:`bits_per_spike`, with U = held-out units.
    """
    return bits_per_spike(heldout_rates, heldout_spikes)


def fp_bps(fp_rates: Any, fp_spikes: Any) -> float:
    """Forward-prediction bits per spike: bps on the bins *after* each evaluation trial ends.

    NLB scores the next 200 ms (10 bins at 20 ms) for held-in and held-out neurons together, so
    pass ``(N, T_fp, U_heldin + U_heldout)`` arrays concatenated along units. Shapes as
    :func:`bits_per_spike`.
    """
    return bits_per_spike(fp_rates, fp_spikes)


# ------------------------------------------------------------------------------------------------
# R² and behaviour decoding

def r2_score(pred: Any, true: Any) -> float:
    """Coefficient of determination, averaged uniformly over output dimensions.

    Note the argument order: *prediction first*, target second (sklearn's is the reverse).
    Trials and time are flattened, rows with a NaN target are dropped, and per output d,
    ``R²_d = 1 − Σ(true − pred)² / Σ(true − mean(true))²``; a constant target scores 1 if
    predicted exactly, else 0 (sklearn's ``force_finite`` rule). Equals
    ``sklearn.metrics.r2_score(true, pred, multioutput='uniform_average')`` on the kept rows.

    Args:
        pred: (N, T, D), (M, D) or (M,) predictions.
        true: same shape, targets; rows with any NaN are not scored.
    """
    pred = _as_float_array(pred, "pred")
    true = _as_float_array(true, "true")
    _check_same_shape(pred, true, "pred", "true")
    pred, true = _flatten_to_rows(pred, "pred"), _flatten_to_rows(true, "true")  # (M, D)
    scored = ~np.isnan(true).any(axis=1)
    pred, true = pred[scored], true[scored]
    if len(true) < 2:
        raise DataError(f"r2_score needs at least 2 rows with a finite target, found {len(true)}")
    if np.isnan(pred).any():
        raise DataError(f"`pred` has NaN value(s) in {int(np.isnan(pred).any(axis=1).sum())} row(s) "
                        f"where `true` is observed; expected finite predictions")
    residual_ss = np.sum((true - pred) ** 2, axis=0)  # (D,)
    total_ss = np.sum((true - true.mean(axis=0)) ** 2, axis=0)  # (D,)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_output = np.where(total_ss > 0, 1.0 - residual_ss / total_ss,
                              np.where(residual_ss == 0, 1.0, 0.0))
    return float(per_output.mean())


def velocity_r2_from_rates(train_rates: Any, train_vel: Any, eval_rates: Any, eval_vel: Any,
                           alphas: Sequence[float] | np.ndarray = NLB_RIDGE_ALPHAS) -> float:
    """NLB velocity R²: decode behaviour linearly from predicted rates, score on held-out trials.

    A ridge regression from rates to velocity is fitted on the training trials, its penalty
    chosen by 5-fold cross-validation over ``alphas`` (``GridSearchCV(Ridge())``, unshuffled
    folds, as nlb_tools), and scored with :func:`r2_score` on the evaluation trials. This measures
    how much behaviour is *linearly* readable from a model's rates (for SSL models; decoders that
    output velocity directly are scored with :func:`r2_score` alone). Datasets with several decode
    masks (Area2_Bump: active vs passive) call this once per mask and average.

    Args:
        train_rates: (N, T, U) or (M, U) predicted rates of the training trials (held-in and
            held-out units concatenated, as NLB does).
        train_vel: (N, T, D) or (M, D) behaviour aligned to ``train_rates``; NaN rows dropped.
        eval_rates: (N', T', U) or (M', U) rates of the evaluation trials.
        eval_vel: (N', T', D) or (M', D) behaviour; NaN rows dropped.
        alphas: ridge penalties to search.

    Returns:
        R² on the evaluation rows, uniform over the D outputs.
    """
    # scikit-learn takes about a second to import; only this decoder needs it
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV

    train_x, train_y = _decoding_rows(train_rates, train_vel, "train_rates", "train_vel")
    eval_x, eval_y = _decoding_rows(eval_rates, eval_vel, "eval_rates", "eval_vel")
    if train_x.shape[1] != eval_x.shape[1]:
        raise DataError(f"`train_rates` and `eval_rates` must have the same number of units, "
                        f"got {train_x.shape[1]} and {eval_x.shape[1]}")
    decoder = GridSearchCV(Ridge(), {"alpha": np.asarray(alphas, dtype=np.float64)})
    decoder.fit(train_x, train_y)
    return r2_score(decoder.predict(eval_x), eval_y)


def _decoding_rows(rates: Any, behavior: Any, rates_name: str,
                   behavior_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten rates (·, U) and behaviour (·, D) to aligned rows, dropping rows with NaN behaviour."""
    rates = _flatten_to_rows(_as_float_array(rates, rates_name), rates_name)  # (M, U)
    behavior = _flatten_to_rows(_as_float_array(behavior, behavior_name), behavior_name)  # (M, D)
    if len(rates) != len(behavior):
        raise DataError(f"`{rates_name}` and `{behavior_name}` must cover the same trials and bins, "
                        f"got {len(rates)} and {len(behavior)} rows after flattening")
    observed = ~np.isnan(behavior).any(axis=1)
    rates, behavior = rates[observed], behavior[observed]
    if np.isnan(rates).any():
        raise DataError(f"`{rates_name}` has NaN values in rows where `{behavior_name}` is observed; "
                        f"expected rates for every scored bin")
    return rates, behavior


# ------------------------------------------------------------------------------------------------
# Smoothing and PSTHs

def smooth_spikes(counts: Any, bin_size: float, kern_sd: float) -> np.ndarray:
    """Gaussian-smooth spike counts along time, with the kernel nlb_tools uses.

    The kernel has standard deviation ``kern_sd / bin_size`` bins, ``int(6·sd)`` taps (±3 sd),
    sums to 1 (so counts stay counts per bin), and is applied as a 'same' convolution with zeros
    beyond each trial's edges, exactly like nlb_tools' ``smooth_column``. NaN bins (padding of
    unequal trials) stay NaN and contribute nothing to their neighbours, which matches nlb_tools'
    NaN-segment smoothing when the NaNs are at the ends of a trial.

    Note that NLB builds its PSTHs by smoothing 1 ms counts and then summing to 20 ms; smoothing
    20 ms counts directly (what this function does when ``bin_size=0.02``) is close but not equal.

    Args:
        counts: (N, T, U) trials of counts, or (T, U) one continuous recording.
        bin_size: bin width in seconds.
        kern_sd: kernel standard deviation in seconds (NLB: 0.07 for MC_Maze, 0.04 for Area2_Bump).

    Returns:
        float64 array of the same shape, smoothed along the T axis.
    """
    counts = _as_float_array(counts, "counts")
    if counts.ndim not in (2, 3):
        raise DataError(f"`counts` must be (N, T, U) or (T, U), got shape {counts.shape}")
    if not (bin_size > 0 and kern_sd > 0):
        raise DataError(f"bin_size and kern_sd must be positive seconds, got {bin_size} and {kern_sd}")
    sd_in_bins = kern_sd / bin_size
    n_taps = int(6 * sd_in_bins)
    if n_taps < 1:
        return counts.copy()  # a kernel narrower than a bin leaves the counts unchanged
    kernel = signal.windows.gaussian(n_taps, sd_in_bins, sym=True)
    kernel /= kernel.sum()
    time_axis = counts.ndim - 2
    kernel_shape = [1] * counts.ndim
    kernel_shape[time_axis] = n_taps
    missing = np.isnan(counts)
    smoothed = signal.convolve(np.where(missing, 0.0, counts), kernel.reshape(kernel_shape), mode="same")
    # FFT convolution can leave tiny negative values where the counts are zero; counts are never negative
    smoothed = np.maximum(smoothed, 0.0)
    smoothed[missing] = np.nan
    return smoothed


def condition_trials(conditions: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """Group trial indices by condition label.

    Args:
        conditions: (N,) one label per trial (int, str, ...).

    Returns:
        ``(labels, trial_indices)``: the sorted unique labels (C,) and, for each, the (n_c,) int
        indices of its trials — the ``eval_cond_idx`` structure :func:`psth_r2` takes.
    """
    conditions = np.asarray(conditions)
    if conditions.ndim != 1:
        raise DataError(f"`conditions` must be 1-D (one label per trial), got shape {conditions.shape}")
    labels, condition_of_trial = np.unique(conditions, return_inverse=True)
    order = np.argsort(condition_of_trial, kind="stable")
    boundaries = np.cumsum(np.bincount(condition_of_trial, minlength=len(labels)))[:-1]
    return labels, np.split(order, boundaries)


def psth_r2(eval_rates: Any, true_psth: Any, trial_indices: Sequence[Any]) -> float:
    """NLB PSTH R²: do condition-averaged predicted rates match the true PSTHs?

    For each condition c, the predicted PSTH is the mean of ``eval_rates`` over that condition's
    trials; time bins where the true PSTH is NaN (conditions shorter than the longest) are
    dropped; all conditions are stacked along time and scored with :func:`r2_score`, uniform over
    neurons. Conditions with no evaluation trials are skipped. NLB additionally undoes a per-trial
    time jitter before averaging; our data are not jittered, so that correction is not applied.

    Args:
        eval_rates: (N, T, U) predicted rates of the evaluation trials.
        true_psth: (C, T, U) true PSTH per condition (NLB: Gaussian-smoothed, trial-averaged
            counts; see :func:`psth_r2_from_spikes`).
        trial_indices: C arrays of indices into the N evaluation trials, one per condition in
            the order of ``true_psth`` (NLB's ``eval_cond_idx``; see :func:`condition_trials`).
    """
    eval_rates = _as_float_array(eval_rates, "eval_rates")
    true_psth = _as_float_array(true_psth, "true_psth")
    if eval_rates.ndim != 3 or true_psth.ndim != 3:
        raise DataError(f"`eval_rates` must be (N, T, U) and `true_psth` (C, T, U), got shapes "
                        f"{eval_rates.shape} and {true_psth.shape}")
    if eval_rates.shape[1:] != true_psth.shape[1:]:
        raise DataError(f"`eval_rates` (N, T, U) = {eval_rates.shape} and `true_psth` (C, T, U) = "
                        f"{true_psth.shape} must agree in T and U")
    if len(trial_indices) != len(true_psth):
        raise DataError(f"`trial_indices` must hold one index array per condition of `true_psth` "
                        f"({len(true_psth)}), got {len(trial_indices)}")
    true_rows, predicted_rows = [], []
    for condition, trials in enumerate(trial_indices):
        trials = np.asarray(trials, dtype=np.int64)
        if trials.size == 0:
            continue
        predicted = eval_rates[trials].mean(axis=0)  # (T, U)
        # NaN rows mark time bins the condition does not reach
        defined = ~np.isnan(true_psth[condition]).any(axis=1)
        true_rows.append(true_psth[condition][defined])
        predicted_rows.append(predicted[defined])
    if not true_rows:
        raise DataError("psth_r2: no condition in `trial_indices` has any evaluation trial")
    return r2_score(np.concatenate(predicted_rows), np.concatenate(true_rows))


def psth_r2_from_spikes(eval_rates: Any, eval_spikes: Any, conditions: Any, bin_size: float,
                        kern_sd: float) -> float:
    """PSTH R² with the true PSTH built from the evaluation trials' own spikes.

    True PSTH of condition c = mean over its trials of :func:`smooth_spikes` counts (NaN padding
    ignored), then :func:`psth_r2`. NLB averages over all trials of a condition (train and test)
    from 1 ms data; with simulated data, pass the true rates' PSTH to :func:`psth_r2` instead.

    Args:
        eval_rates: (N, T, U) predicted rates.
        eval_spikes: (N, T, U) observed counts of the same trials (NaN = padding).
        conditions: (N,) condition label per trial.
        bin_size: bin width in seconds.
        kern_sd: smoothing kernel standard deviation in seconds.
    """
    eval_spikes = _as_float_array(eval_spikes, "eval_spikes")
    if eval_spikes.ndim != 3:
        raise DataError(f"`eval_spikes` must be (N, T, U), got shape {eval_spikes.shape}")
    conditions = np.asarray(conditions)
    if conditions.shape != (len(eval_spikes),):
        raise DataError(f"`conditions` must have one label per trial ({len(eval_spikes)}), "
                        f"got shape {conditions.shape}")
    smoothed = smooth_spikes(eval_spikes, bin_size, kern_sd)  # (N, T, U)
    _, trial_indices = condition_trials(conditions)
    with warnings.catch_warnings():  # bins padded in every trial of a condition stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        true_psth = np.stack([np.nanmean(smoothed[trials], axis=0) for trials in trial_indices])
    return psth_r2(eval_rates, true_psth, trial_indices)
