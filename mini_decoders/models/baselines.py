"""Classic baselines: the numbers every transformer in the book has to beat.

- :class:`RidgeDecoder` (``ridge``): the Wiener filter. Hand velocity is a linear function of the
  last 160 ms of spike counts of every observed unit, fitted in closed form.
- :class:`GRUDecoder` (``gru``): a recurrent network from held-in counts to velocity.
- :class:`SmoothingModel` (``smoothing``): NLB's co-smoothing baseline. Held-in spikes are
  Gaussian-smoothed, and one Poisson GLM per held-out neuron maps them to that neuron's rate.

The closed-form models fit one set of weights per session (no parameter is shared between
sessions, so there is nothing to gain from pooling); weights live in buffers named
``<what>_<session index>`` so the ``state_dict`` holds them and checkpoints stay plain tensors.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError
from mini_decoders.metrics import bits_per_spike, r2_score, smooth_spikes
from mini_decoders.models.base import Decoder, SessionSpec
from mini_decoders.training.profiles import CHECKPOINT_SECONDS
from mini_decoders.training.trainer import TrainConfig, Trainer

BEHAVIOR = "hand_vel"  # what the decoders predict; PRED.h5 and the metrics use this name


# ================================================================================================
# Shared helpers

def fit_and_tune_positions(split: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the trials to fit on and the trials to choose hyperparameters on.

    The val split when there is one; otherwise the last fifth of the train trials (in table order,
    so neighbouring trials do not leak into each other more than they must).

    Args:
        split: (N,) split label of each trial, only ``"train"`` / ``"val"``.
    """
    fit = np.flatnonzero(split == "train")
    tune = np.flatnonzero(split == "val")
    if len(tune) == 0:
        n_tune = max(1, len(fit) // 5)
        fit, tune = fit[:-n_tune], fit[-n_tune:]
    if len(fit) == 0 or len(tune) == 0:
        raise DataError(f"need train trials to fit and val (or more train) trials to tune: at least 2 in all, "
                        f"found {int((split == 'train').sum())} train and {int((split == 'val').sum())} val trials")
    return fit, tune


def require_behavior(spec: SessionSpec, model: str, name: str = BEHAVIOR) -> int:
    """Number of channels of behaviour ``name`` in a training session, or a DataError."""
    if name not in spec.behavior_dims:
        found = sorted(spec.behavior_dims)
        if found:  # the velocity may well be there under another name (Golub's BCI data: cursor_vel)
            how = (f"if one of them is the signal to decode, rename it first (e.g. session.behavior[{name!r}] = "
                   f"session.behavior.pop({found[0]!r})); otherwise train a rate model (smoothing, ndt1, ...)")
        else:
            how = "train a rate model (smoothing, ndt1, ...) on data without behaviour"
        raise DataError(f"{model} decodes behavior {name!r}, but session {spec.id!r} has {found or 'no behavior'}; "
                        f"{how}")
    return spec.behavior_dims[name]


def counts_with_nan_padding(binned: BinnedTrials) -> np.ndarray:
    """(N, T, U) float64 counts with NaN in padded bins (so smoothing and metrics skip them)."""
    return np.where(binned.mask[:, :, None], binned.counts.astype(np.float64), np.nan)


# ================================================================================================
# Ridge (Wiener filter)

def causal_history(counts: np.ndarray, history_bins: int) -> np.ndarray:
    """Stack each bin's recent past into one feature vector.

    Args:
        counts: (N, T, U) spike counts.
        history_bins: H, number of bins including the current one.

    Returns:
        (N, T, U*H) features; feature ``u*H + k`` of bin ``t`` is the count of unit ``u`` in bin
        ``t - k`` (zero before the trial starts). Only the past and present are used, so a
        decoder built on it is causal and could run online.
    """
    n_trials, n_bins, n_units = counts.shape
    padded = np.concatenate([np.zeros((n_trials, history_bins - 1, n_units), counts.dtype), counts], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, history_bins, axis=1)  # (N, T, U, H), oldest first
    return windows[..., ::-1].reshape(n_trials, n_bins, n_units * history_bins)


def ridge_path(features: np.ndarray, targets: np.ndarray, alphas: list[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge regression with an unpenalised intercept, for many penalties from one decomposition.

    Solves ``min_w ||y_c − X_c w||² + α||w||²`` on centred data (what ``sklearn.linear_model.Ridge``
    does with ``fit_intercept=True``): with ``X_cᵀX_c = V diag(s) Vᵀ``,
    ``w(α) = V diag(1/(s+α)) Vᵀ X_cᵀ y_c``, and the intercept is ``ȳ − x̄ᵀw``.

    Args:
        features: (M, F) rows.
        targets: (M, D).
        alphas: penalties.

    Returns:
        One ``(weights (F, D), intercept (D,))`` pair per alpha, float64.
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    feature_mean, target_mean = features.mean(0), targets.mean(0)
    centred = features - feature_mean
    gram = centred.T @ centred  # (F, F)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # round-off can make a zero eigenvalue slightly negative
    projected = eigenvectors.T @ (centred.T @ (targets - target_mean))  # (F, D)
    path = []
    for alpha in alphas:
        weights = eigenvectors @ (projected / (eigenvalues + alpha)[:, None])
        path.append((weights, target_mean - feature_mean @ weights))
    return path


RIDGE_RECIPE = dict(bin_size=0.02, history_bins=8, lag=0.0, alphas=[float(a) for a in np.logspace(-1, 5, 13)])


class ClosedFormDecoder(Decoder):
    """A decoder solved in closed form, one session at a time (the Wiener filter, smoothing + GLM).

    :meth:`fit` solves each session with the subclass's :meth:`fit_session`, which keeps the
    solution in the session's buffers (:meth:`keep`: ``weights_<i>``, ``intercept_<i>`` and one
    ``<name>_<i>_stat`` per chosen hyperparameter) and says what it chose. Nothing to resume: a
    fit takes seconds.
    """

    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        records, samples = [], 0
        for session in sessions:
            index, spec = self.spec_for(session)
            record, n_trials, summary = self.fit_session(session, index, spec)
            records.append({"session": session.id, **record})
            samples += n_trials
            if progress:
                print(f"{self.name} {session.id}: {summary}")
        return {"samples": samples, "records": records}

    def fit_session(self, session: Session, index: int, spec: SessionSpec) -> tuple[dict, int, str]:
        """Solve session ``index``; returns (what was chosen, trials fitted, a line for the progress log)."""
        raise NotImplementedError

    def keep(self, index: int, weights: np.ndarray, intercept: np.ndarray, **stats: float) -> None:
        """Store session ``index``'s solution in its buffers; ``stats``: the hyperparameters chosen."""
        getattr(self, f"weights_{index}").copy_(torch.from_numpy(weights))
        getattr(self, f"intercept_{index}").copy_(torch.from_numpy(intercept))
        for name, value in stats.items():
            getattr(self, f"{name}_{index}_stat").fill_(value)

    def solution(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Session ``index``'s weights and intercept."""
        return getattr(self, f"weights_{index}").cpu().numpy(), getattr(self, f"intercept_{index}").cpu().numpy()


class RidgeDecoder(ClosedFormDecoder):
    """Wiener filter: hand velocity from the causal spike-count history of all observed units.

    Per session, velocity at bin ``t`` is ``W · [counts(t), counts(t−1), ..., counts(t−H+1)] + b``
    over held-in *and* held-out units (as NLB's Wiener baseline, which sees the full population),
    fitted by ridge regression in closed form. The penalty is picked from ``alphas`` by R² on the
    val trials, then the filter is refitted on train + val.

    Config: ``history_bins`` (8 = 160 ms at 20 ms), ``lag`` (s; velocity read ``lag`` after each
    bin; 0 by default because the simulator's velocity already lags its neural activity, whereas
    NLB's MC_Maze uses 0.1), ``alphas``.
    """

    name = "ridge"
    predicts = {"hand_vel"}
    TOKEN, JUDGED_ON, CLASSIC = "160 ms of counts (no token)", "vel_r2", True
    CONFIGS = {profile: dict(RIDGE_RECIPE) for profile in ("tiny", "quick", "full")}  # closed form: one recipe

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        history = int(self.config["history_bins"])
        for i, spec in enumerate(self.specs):
            dims = require_behavior(spec, self.name)
            self.register_buffer(f"weights_{i}", torch.zeros(len(spec.unit_ids) * history, dims, dtype=torch.float64))
            self.register_buffer(f"intercept_{i}", torch.zeros(dims, dtype=torch.float64))
            self.register_buffer(f"alpha_{i}_stat", torch.zeros((), dtype=torch.float64))

    def features(self, binned: BinnedTrials) -> np.ndarray:
        """(N, T, U*H) causal history of all units' counts."""
        return causal_history(binned.counts.astype(np.float64), int(self.config["history_bins"]))

    def fit_session(self, session: Session, index: int, spec: SessionSpec) -> tuple[dict, int, str]:
        binned = bin_trials(session, self.bin_size, split=("train", "val"), behavior=(BEHAVIOR,),
                            lag=float(self.config["lag"]))
        features, velocity = self.features(binned), binned.behavior[BEHAVIOR].astype(np.float64)
        scored = binned.mask & np.isfinite(velocity).all(-1)  # (N, T)
        fit, tune = fit_and_tune_positions(binned.split)
        alphas = [float(a) for a in self.config["alphas"]]
        path = ridge_path(features[fit][scored[fit]], velocity[fit][scored[fit]], alphas)
        tune_x, tune_y = features[tune][scored[tune]], velocity[tune][scored[tune]]
        scores = [r2_score(tune_x @ w + b, tune_y) for w, b in path]
        best = int(np.argmax(scores))
        (weights, intercept), = ridge_path(features[scored], velocity[scored], [alphas[best]])
        self.keep(index, weights, intercept, alpha=alphas[best])
        return ({"alpha": alphas[best], "val_r2": float(scores[best])}, len(binned.trial_index),
                f"alpha={alphas[best]:.3g} val R2={scores[best]:.3f}")

    @torch.no_grad()
    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        weights, intercept = self.solution(self.spec_for(session)[0])
        return {"hand_vel": self.features(binned) @ weights + intercept}  # (N, T, D)


# ================================================================================================
# Smoothing + Poisson GLM (NLB co-smoothing baseline)

def fit_poisson_glm(features: np.ndarray, targets: np.ndarray, alpha: float, max_iter: int = 100,
                    tol: float = 1e-7, init: tuple[np.ndarray, np.ndarray] | None = None,
                    prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit one L2-penalised Poisson GLM (log link) per target column, all columns at once.

    Minimises, for each column k independently,
    ``mean_rows(exp(η_k) − y_k η_k) + α/2 ||w_k − w0_k||²`` with ``η_k = X w_k + b_k``: with the
    prior ``w0 = 0`` the objective of ``sklearn.linear_model.PoissonRegressor(alpha=α)`` (intercept
    not penalised). A non-zero ``prior`` shrinks towards known weights instead of zero. Newton's method
    with a step-halving line search per column; the K Hessians (F+1 × F+1) are built and solved
    as one batch, so there is no loop over neurons.

    Args:
        features: (M, F) inputs.
        targets: (M, K) counts.
        alpha: L2 penalty.
        init: (weights, intercept) to start from, e.g. the fit at a neighbouring ``alpha``
            (each Newton step costs K Hessians, so a warm start saves most of the time).
        prior: (F, K) weights the penalty pulls towards; None = zeros.

    Returns:
        weights (F, K) and intercept (K,), float64.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(targets, dtype=torch.float64)
    n_rows, n_features = x.shape
    x = torch.cat([x, torch.ones(n_rows, 1, dtype=torch.float64)], dim=1)  # (M, F+1): last column = intercept
    penalty = torch.full((n_features + 1,), float(alpha), dtype=torch.float64)
    penalty[-1] = 0.0
    centre = torch.zeros(n_features + 1, y.shape[1], dtype=torch.float64)  # (F+1, K): what the penalty pulls to
    if prior is not None:
        centre[:-1] = torch.as_tensor(prior, dtype=torch.float64)
    theta = centre.clone()  # (F+1, K)
    theta[-1] = torch.log(y.mean(0).clamp_min(1e-8))
    if init is not None:
        theta[:-1], theta[-1] = torch.as_tensor(init[0]), torch.as_tensor(init[1])

    def objective(theta: torch.Tensor) -> torch.Tensor:  # (K,)
        eta = (x @ theta).clamp(max=30.0)  # exp(30) counts per bin is already absurd; avoids inf
        return (eta.exp() - y * eta).mean(0) + 0.5 * (penalty[:, None] * (theta - centre) ** 2).sum(0)

    current = objective(theta)
    for _ in range(max_iter):
        rate = (x @ theta).clamp(max=30.0).exp()  # (M, K)
        gradient = x.T @ (rate - y) / n_rows + penalty[:, None] * (theta - centre)  # (F+1, K)
        hessian = torch.einsum("mf,mk,mg->kfg", x, rate, x) / n_rows + torch.diag(penalty + 1e-10)  # (K, F+1, F+1)
        step = torch.linalg.solve(hessian, gradient.T.unsqueeze(-1)).squeeze(-1).T  # (F+1, K)
        step_size = torch.ones(y.shape[1], dtype=torch.float64)
        accepted = torch.zeros(y.shape[1], dtype=torch.bool)
        for _ in range(30):  # halve the step of each column until its objective does not increase
            candidate = theta - step_size * step
            value = objective(candidate)
            ok = (value <= current + 1e-12) & ~accepted
            theta = torch.where(ok, candidate, theta)
            current = torch.where(ok, value, current)
            accepted |= ok
            if accepted.all():
                break
            step_size = torch.where(accepted, step_size, step_size / 2)
        if (step_size * step).abs().max() < tol:
            break
    return theta[:-1].numpy(), theta[-1].numpy()



def poisson_glm_path(fit_x: np.ndarray, fit_y: np.ndarray, tune_x: np.ndarray | None, tune_y: np.ndarray | None,
                     alphas, prior: np.ndarray | None = None) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """:func:`fit_poisson_glm` at each penalty, strong to weak, each fit warm-started from the last.

    Args:
        fit_x, fit_y: (M, F) features and (M, K) counts to fit.
        tune_x, tune_y: rows to score each fit on (bits/spike); None = no scoring (score NaN).
        alphas: penalties, in any order.
        prior: (F, K) weights every penalty pulls towards (:func:`fit_poisson_glm`); None = zeros.

    Returns:
        ``(score, alpha, weights (F, K), intercept (K,))`` per penalty, strongest first.
    """
    path, previous = [], None
    for alpha in sorted((float(a) for a in alphas), reverse=True):
        weights, intercept = previous = fit_poisson_glm(fit_x, fit_y, alpha, init=previous, prior=prior)
        score = float("nan")
        if tune_x is not None:
            score = bits_per_spike(np.exp(np.clip(tune_x @ weights + intercept, None, 30.0)), tune_y)
        path.append((score, alpha, weights, intercept))
    return path


def best_on_path(path: list[tuple]) -> tuple:
    """The entry of :func:`poisson_glm_path` with the highest score (NaN scores last; first of ties)."""
    return max(path, key=lambda entry: -np.inf if np.isnan(entry[0]) else entry[0])


class SmoothingModel(ClosedFormDecoder):
    """NLB's smoothing baseline for co-smoothing.

    Held-in spike counts are smoothed with a Gaussian kernel (sd ``kern_sd``, 50 ms in NLB); the
    smoothed held-in counts are the held-in rates, and one Poisson GLM per held-out neuron maps
    them to that neuron's expected count per bin. ``kern_sd`` and the GLM penalty are chosen by
    co-bps on the val trials from ``kern_sds`` x ``alphas``, then the GLMs are refitted on
    train + val.
    """

    name = "smoothing"
    predicts = {"rates"}
    TOKEN, JUDGED_ON, CLASSIC = "smoothed counts (no token)", "co_bps", True
    CONFIGS = {
        "tiny": dict(bin_size=0.02, kern_sds=[0.05], alphas=[1e-3, 1e-2]),
        "quick": dict(bin_size=0.02, kern_sds=[0.03, 0.05, 0.08], alphas=[1e-4, 1e-3, 1e-2]),
        "full": dict(bin_size=0.02, kern_sds=[0.02, 0.03, 0.05, 0.08, 0.12], alphas=[1e-5, 1e-4, 1e-3, 1e-2, 1e-1]),
    }

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        for i, spec in enumerate(self.specs):
            if spec.n_heldout == 0 or spec.n_heldin == 0:
                raise DataError(f"smoothing predicts held-out units from held-in ones, but session {spec.id!r} has "
                                f"{spec.n_heldin} held-in and {spec.n_heldout} held-out units; mark some units "
                                "`heldout` in the units table")
            self.register_buffer(f"weights_{i}", torch.zeros(spec.n_heldin, spec.n_heldout, dtype=torch.float64))
            self.register_buffer(f"intercept_{i}", torch.zeros(spec.n_heldout, dtype=torch.float64))
            self.register_buffer(f"kern_sd_{i}_stat", torch.tensor(0.05, dtype=torch.float64))
            self.register_buffer(f"alpha_{i}_stat", torch.zeros((), dtype=torch.float64))

    def smoothed_heldin(self, binned: BinnedTrials, spec: SessionSpec, kern_sd: float) -> np.ndarray:
        """(N, T, U_in) smoothed held-in counts per bin; NaN in padded bins."""
        return smooth_spikes(counts_with_nan_padding(binned)[..., spec.heldin_index], binned.bin_size, kern_sd)

    def fit_session(self, session: Session, index: int, spec: SessionSpec) -> tuple[dict, int, str]:
        binned = bin_trials(session, self.bin_size, split=("train", "val"), behavior=())
        heldout = binned.counts.astype(np.float64)[..., spec.heldout_index]  # (N, T, U_out)
        fit, tune = fit_and_tune_positions(binned.split)
        results = []  # (val co-bps, kern_sd, alpha)
        for kern_sd in self.config["kern_sds"]:
            smoothed = self.smoothed_heldin(binned, spec, float(kern_sd))
            fit_x, fit_y = smoothed[fit][binned.mask[fit]], heldout[fit][binned.mask[fit]]
            tune_x, tune_y = smoothed[tune][binned.mask[tune]], heldout[tune][binned.mask[tune]]
            results += [(score, float(kern_sd), alpha)
                        for score, alpha, _, _ in poisson_glm_path(fit_x, fit_y, tune_x, tune_y, self.config["alphas"])]
        score, kern_sd, alpha = best_on_path(results)
        smoothed = self.smoothed_heldin(binned, spec, kern_sd)
        weights, intercept = fit_poisson_glm(smoothed[binned.mask], heldout[binned.mask], alpha)
        self.keep(index, weights, intercept, kern_sd=kern_sd, alpha=alpha)
        return ({"kern_sd": kern_sd, "alpha": alpha, "val_co_bps": float(score)}, len(binned.trial_index),
                f"kern_sd={kern_sd:g}s alpha={alpha:g} val co-bps={score:.3f}")

    @torch.no_grad()
    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        index, spec = self.spec_for(session)
        smoothed = self.smoothed_heldin(binned, spec, float(getattr(self, f"kern_sd_{index}_stat")))
        weights, intercept = self.solution(index)
        heldout = np.exp(np.clip(np.nan_to_num(smoothed) @ weights + intercept, None, 30.0))
        return {"rates_heldin": np.nan_to_num(smoothed), "rates_heldout": heldout}


# ================================================================================================
# GRU decoder

def transform_counts(counts: np.ndarray, transform: str) -> np.ndarray:
    """Compress spike counts before a network sees them (bursts would otherwise dominate)."""
    if transform == "log1p":
        return np.log1p(counts)
    if transform == "sqrt":
        return np.sqrt(counts)
    raise DataError(f"gru: config 'transform' must be 'log1p' or 'sqrt', got {transform!r}")


def collate_trials(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of trials to the longest one.

    Returns:
        ``inputs`` (B, T, U_max) float32, ``session`` (B,) int64, ``target`` (B, T, D) float32
        (0 where not scored), ``scored`` (B, T) bool.
    """
    n_bins = max(len(item["inputs"]) for item in items)
    batch = {"session": torch.tensor([item["session"] for item in items], dtype=torch.int64)}
    for key in ("inputs", "target", "scored"):
        first = items[0][key]
        padded = np.zeros((len(items), n_bins) + first.shape[1:], dtype=first.dtype)
        for row, item in enumerate(items):  # a loop per trial, not per bin
            padded[row, :len(item[key])] = item[key]
        batch[key] = torch.from_numpy(padded)
    return batch


GRU_COMMON = dict(bin_size=0.02, lag=0.0, transform="log1p", weight_decay=0.01, min_lr_ratio=0.1, grad_clip=1.0,
                  precision="auto", device="auto", log_every=10, checkpoint_every=None, checkpoint_seconds=None,
                  num_workers=0)


class GRUDecoder(Decoder):
    """A GRU from held-in spike counts to hand velocity, one network shared by all sessions.

    Each session has its own linear read-in (U_in -> hidden), because sessions record different
    neurons; the GRU and the velocity readout are shared. Counts are ``log1p``- (or ``sqrt``-)
    transformed; velocity is standardised per session during training (stored in buffers) so every
    session weighs the same in the MSE. The GRU runs forward in time only, so the decoder is causal.
    Trained with the package's Trainer; the checkpoint kept is the one with the best val R².
    """

    name = "gru"
    predicts = {"hand_vel"}
    TOKEN, JUDGED_ON, BASELINE, CLASSIC = "one bin (recurrent)", "vel_r2", "ridge", True
    CONFIGS = {
        "tiny": dict(GRU_COMMON, hidden_size=32, num_layers=1, dropout=0.0, max_steps=40, batch_size=16, lr=5e-3,
                     warmup_steps=5, val_every=20, early_stopping_patience=None),
        "quick": dict(GRU_COMMON, checkpoint_seconds=CHECKPOINT_SECONDS["quick"],
                      hidden_size=128, num_layers=1, dropout=0.1, max_steps=1500, batch_size=32, lr=3e-3,
                      warmup_steps=100, val_every=100, early_stopping_patience=5),
        "full": dict(GRU_COMMON, checkpoint_seconds=CHECKPOINT_SECONDS["full"],
                     hidden_size=256, num_layers=2, dropout=0.2, max_steps=6000, batch_size=64, lr=2e-3,
                     warmup_steps=300, val_every=200, early_stopping_patience=8, checkpoint_every=1000),
    }

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        dims = {require_behavior(spec, self.name) for spec in self.specs}
        if len(dims) != 1:
            raise DataError(f"gru: sessions have {BEHAVIOR!r} with different numbers of channels {sorted(dims)}; "
                            "one shared readout needs the same")
        self.n_outputs = dims.pop()
        hidden = int(self.config["hidden_size"])
        self.max_heldin = max(spec.n_heldin for spec in self.specs)
        n_sessions = len(self.specs)
        # (S, U_max, H): sessions with fewer units use the first rows; their inputs are zero-padded.
        self.read_in_weight = nn.Parameter(torch.randn(n_sessions, self.max_heldin, hidden) / np.sqrt(self.max_heldin))
        self.read_in_bias = nn.Parameter(torch.zeros(n_sessions, hidden))
        self.input_dropout = nn.Dropout(float(self.config["dropout"]))
        self.gru = nn.GRU(hidden, hidden, num_layers=int(self.config["num_layers"]), batch_first=True,
                          dropout=float(self.config["dropout"]) if int(self.config["num_layers"]) > 1 else 0.0)
        self.readout = nn.Linear(hidden, self.n_outputs)
        self.register_buffer("velocity_mean_stat", torch.zeros(n_sessions, self.n_outputs))
        self.register_buffer("velocity_std_stat", torch.ones(n_sessions, self.n_outputs))

    def forward(self, inputs: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
        """(B, T, U_max) transformed counts, (B,) session index -> (B, T, D) standardised velocity."""
        hidden = torch.einsum("btu,buh->bth", inputs, self.read_in_weight[session]) + self.read_in_bias[session][:, None]
        hidden, _ = self.gru(self.input_dropout(hidden))  # (B, T, H)
        return self.readout(hidden)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE on standardised velocity, over real (non-padded, non-NaN) bins only."""
        prediction = self(batch["inputs"], batch["session"])
        scored = batch["scored"].unsqueeze(-1).to(prediction.dtype)  # (B, T, 1)
        squared_error = (prediction.float() - batch["target"]) ** 2 * scored
        return squared_error.sum() / (scored.sum() * self.n_outputs).clamp_min(1.0)

    def _inputs(self, binned: BinnedTrials, spec: SessionSpec) -> np.ndarray:
        """(N, T, U_max) float32 transformed held-in counts, zero-padded to U_max units."""
        heldin = transform_counts(binned.counts[..., spec.heldin_index], str(self.config["transform"]))
        padded = np.zeros(heldin.shape[:2] + (self.max_heldin,), dtype=np.float32)
        padded[..., :spec.n_heldin] = heldin
        return padded

    def _trial_items(self, session: Session, split: str) -> tuple[list[dict], BinnedTrials]:
        index, spec = self.spec_for(session)
        binned = bin_trials(session, self.bin_size, split=split, behavior=(BEHAVIOR,), lag=float(self.config["lag"]))
        inputs = self._inputs(binned, spec)
        velocity = binned.behavior[BEHAVIOR]  # (N, T, D)
        scored = binned.mask & np.isfinite(velocity).all(-1)
        mean = self.velocity_mean_stat[index].numpy()
        std = self.velocity_std_stat[index].numpy()
        target = np.where(scored[..., None], (velocity - mean) / std, 0.0).astype(np.float32)
        lengths = binned.lengths
        items = [{"session": index, "inputs": inputs[i, :lengths[i]], "target": target[i, :lengths[i]],
                  "scored": scored[i, :lengths[i]]} for i in range(len(lengths))]
        return items, binned

    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        for session in sessions:  # standardisation statistics from the train trials
            index, _ = self.spec_for(session)
            velocity = bin_trials(session, self.bin_size, split="train", behavior=(BEHAVIOR,),
                                  lag=float(self.config["lag"])).behavior[BEHAVIOR].reshape(-1, self.n_outputs)
            velocity = velocity[np.isfinite(velocity).all(1)]
            if len(velocity) < 2:
                raise DataError(f"gru: session {session.id!r} has no train trials with {BEHAVIOR!r}")
            self.velocity_mean_stat[index] = torch.from_numpy(velocity.mean(0))
            self.velocity_std_stat[index] = torch.from_numpy(velocity.std(0).clip(1e-6))
        train_items = [item for session in sessions for item in self._trial_items(session, "train")[0]]
        val_sets = [(session, self._trial_items(session, "val")[1]) for session in sessions
                    if "val" in session.trials.split]

        def validate(model: "GRUDecoder") -> dict[str, float]:
            scores = []
            for session, binned in val_sets:
                predicted = model.predict_trials(session, binned)[BEHAVIOR]
                scores.append(r2_score(predicted, binned.behavior[BEHAVIOR]))
            return {"val_r2": float(np.mean(scores))}

        train_config = TrainConfig.from_model_config(
            self.config,
            batch_size=min(int(self.config["batch_size"]), len(train_items)),
            monitor="val_r2", monitor_mode="max")
        trainer = Trainer(self, train_items, collate_trials, train_config, out_dir=out_dir,
                          val_fn=validate if val_sets else None, progress=progress,
                          run_config={"model": self.name})
        started = time.perf_counter()
        history = trainer.fit(resume=resume)
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    @torch.no_grad()
    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        index, spec = self.spec_for(session)
        device = self.readout.weight.device
        inputs = torch.from_numpy(self._inputs(binned, spec))
        outputs = []
        for chunk in torch.split(inputs, 256):  # bounded memory on long recordings
            sessions = torch.full((len(chunk),), index, dtype=torch.int64, device=device)
            outputs.append(self(chunk.to(device), sessions).float().cpu())
        standardised = torch.cat(outputs).numpy() if outputs else np.zeros(inputs.shape[:2] + (self.n_outputs,))
        velocity = standardised * self.velocity_std_stat[index].cpu().numpy() + self.velocity_mean_stat[index].cpu().numpy()
        return {"hand_vel": velocity}
