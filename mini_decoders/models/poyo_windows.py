"""POYO's windows: which labels a session's trials carry, how much each bin weighs, where the
evaluation windows lie, and how the windows of several sessions form one batch.

Training draws one jittered window per trial (:class:`~mini_decoders.models.poyo.WindowSampler`);
evaluation covers each trial with overlapping windows (:func:`stitching_windows`) whose
predictions of a bin are averaged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from mini_decoders.data.binning import BinnedTrials
from mini_decoders.data.session import Session

MOVE_COLUMNS = ("move_onset_time", "go_time")  # first one present marks the start of the movement


def condition_labels(sessions: list[Session]) -> list[str]:
    """Sorted condition labels of the sessions whose trials carry at least two labels."""
    labels: set[str] = set()
    for session in sessions:
        present = {str(c) for c in session.trials.condition} - {""}
        if len(present) >= 2:
            labels |= present
    return sorted(labels)


def phase_weights(session: Session, binned: BinnedTrials, move_weight: float, hold_weight: float) -> np.ndarray:
    """(N, T) loss weight of each bin: ``move_weight`` from the movement onset on, else ``hold_weight``.

    The onset is the trial's ``move_onset_time`` (or ``go_time``) column; without one every bin
    weighs 1 (uniform).
    """
    column = next((c for c in MOVE_COLUMNS if c in session.trials.extra), None)
    if column is None:
        return np.ones(binned.mask.shape)
    onset = np.asarray(session.trials.extra[column], dtype=np.float64)[binned.trial_index]  # (N,)
    moving = binned.bin_centres() >= onset[:, None]  # NaN onset -> all False -> hold weight
    return np.where(moving, move_weight, hold_weight)


def stitching_windows(trial_starts: np.ndarray, n_bins: np.ndarray, bin_size: float, length: float,
                      step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows covering every trial: one every ``step`` s, the last one flush with the trial's end.

    Returns:
        window_trial (W,) trial position, window_start (W,) s, first_bin (W,) the trial bin at
        which each window starts. Windows start on bin edges, so each bin centre falls in a window.
    """
    bins_per_window = int(round(length / bin_size))
    bins_per_step = max(1, int(round(step / bin_size)))
    n_bins = np.asarray(n_bins, dtype=np.int64)
    last_first_bin = np.maximum(n_bins - bins_per_window, 0)  # (N,)
    n_windows = -(-last_first_bin // bins_per_step) + 1  # ceil + 1
    window_trial = np.repeat(np.arange(len(n_bins)), n_windows)
    position = np.arange(int(n_windows.sum())) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    first_bin = np.minimum(position * bins_per_step, last_first_bin[window_trial])
    window_start = np.asarray(trial_starts, dtype=np.float64)[window_trial] + first_bin * bin_size
    return window_trial, window_start, first_bin


def merge_batches(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate per-session batches along B, padding the token axis L to the longest."""
    if len(parts) == 1:
        return parts[0]
    longest = max(part["input_mask"].shape[1] for part in parts)
    merged = {}
    for key in parts[0]:
        tensors = []
        for part in parts:
            value = part[key]
            if key.startswith("input_") and value.shape[1] < longest:
                value = F.pad(value, (0, longest - value.shape[1]))  # zeros; False for the mask
            tensors.append(value)
        merged[key] = torch.cat(tensors)
    return merged
