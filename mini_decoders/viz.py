"""Pictures used throughout the book: rasters, PSTHs and the token views of one trial.

Every plot labels its axes with units. Functions take an ``ax`` (or ``fig``) so that chapters
can compose them, and return it.
"""

from __future__ import annotations

import numpy as np

from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_intervals, n_full_bins
from mini_decoders.data.session import Session
from mini_decoders.metrics import smooth_spikes
from mini_decoders.tokenizers.patches import group_into_patches

HELDIN_COLOR, HELDOUT_COLOR = "#1f4e79", "#c0504d"


def _axes(ax):
    import matplotlib.pyplot as plt  # only drawing needs it; importing the package must not need a display

    return plt.subplots(figsize=(7, 3.5))[1] if ax is None else ax


def trial_spikes(session: Session, trial: int) -> tuple[np.ndarray, np.ndarray]:
    """Spike times relative to the trial start (s) and unit indices of one trial."""
    start, stop = session.trials.start[trial], session.trials.stop[trial]
    lo, hi = np.searchsorted(session.spike_times, [start, stop])
    return session.spike_times[lo:hi] - start, session.spike_units[lo:hi]


def plot_raster(session: Session, trial: int, ax=None, show_regions: bool = True):
    """Spike raster of one trial: one row per unit, held-out units in red."""
    ax = _axes(ax)
    times, units = trial_spikes(session, trial)
    colors = np.where(session.units.heldout[units], HELDOUT_COLOR, HELDIN_COLOR)
    ax.scatter(times * 1000, units, s=2, c=colors, marker="|", linewidths=0.8)
    ax.set_xlabel("time from trial start (ms)")
    ax.set_ylabel("unit")
    ax.set_ylim(-0.5, session.n_units - 0.5)
    ax.set_xlim(0, session.trials.duration[trial] * 1000)
    if show_regions:
        for region in session.units.regions:
            rows = np.flatnonzero(session.units.region == region)
            if region and len(rows):
                ax.text(1.01, rows.mean() / session.n_units, region, transform=ax.transAxes, va="center", fontsize=8)
    ax.set_title(f"{session.id}, trial {trial} ({session.trials.condition[trial] or 'no condition'}): "
                 f"blue held-in, red held-out", fontsize=9)
    return ax


def plot_psth(binned: BinnedTrials, unit: int, ax=None, conditions: list[str] | None = None,
              smooth_sd: float = 0.03):
    """Trial-averaged firing rate (Hz) of one unit, one line per condition.

    Args:
        smooth_sd: standard deviation (s) of the Gaussian that smooths each PSTH; 0 = none.
    """
    ax = _axes(ax)
    conditions = sorted(set(binned.condition.tolist())) if conditions is None else conditions
    time_ms = (np.arange(binned.counts.shape[1]) + 0.5) * binned.bin_size * 1000
    for condition in conditions:
        rows = binned.condition == condition
        counts = np.where(binned.mask[rows], binned.counts[rows, :, unit], np.nan)
        psth = np.nanmean(counts, 0) / binned.bin_size  # (T,) Hz
        if smooth_sd > 0:
            psth = smooth_spikes(psth[:, None], binned.bin_size, smooth_sd)[:, 0]
        ax.plot(time_ms, psth, label=condition, lw=1.2)
    ax.set_xlabel("time from trial start (ms)")
    ax.set_ylabel("firing rate (Hz)")
    ax.set_title(f"PSTH of unit {unit}", fontsize=9)
    if len(conditions) <= 10:
        ax.legend(fontsize=7, ncol=2, frameon=False, title="condition", title_fontsize=7)
    return ax


def token_counts(session: Session, bin_size: float = DEFAULT_BIN_SIZE, neurons_per_token: int = 32) -> dict[str, float]:
    """Tokens per second of recording under each view (spikes, bins, patches)."""
    span = max(session.stop_time - session.start_time, 1e-9)
    bins_per_second = 1.0 / bin_size
    return {
        "spike tokens / s": session.n_spikes / span,
        "bin tokens / s": bins_per_second,
        "patch tokens / s": bins_per_second * -(-session.n_units // neurons_per_token),
    }


def plot_token_views(session: Session, trial: int, bin_size: float = DEFAULT_BIN_SIZE, neurons_per_token: int = 32,
                     fig=None):
    """The same trial as four kinds of token: spikes, bins, patches and (later) learned codes."""
    import matplotlib.pyplot as plt  # see _axes

    fig = plt.figure(figsize=(13, 3.6)) if fig is None else fig
    axes = fig.subplots(1, 4)
    duration = session.trials.duration[trial]
    n_bins = int(n_full_bins(duration, bin_size))
    counts = bin_intervals(session.spike_times, session.spike_units, session.n_units,
                           session.trials.start[trial:trial + 1], n_bins, bin_size)[0]  # (T, U)
    times, units = trial_spikes(session, trial)

    axes[0].scatter(times * 1000, units, s=3, c=HELDIN_COLOR, marker="|")
    axes[0].set_title(f"spike tokens (POYO)\n{len(times)} tokens", fontsize=9)
    axes[0].set_xlabel("time (ms)")
    axes[0].set_ylabel("unit")

    extent = (0, n_bins * bin_size * 1000, -0.5, session.n_units - 0.5)  # unit 0 at the bottom, as in the raster
    axes[1].imshow(counts.T, aspect="auto", cmap="Greys", extent=extent, origin="lower", interpolation="nearest")
    for edge in np.arange(1, n_bins) * bin_size * 1000:
        axes[1].axvline(edge, color="C1", lw=0.3)
    axes[1].set_title(f"bin tokens (NDT1, MtM)\n{n_bins} tokens of {session.n_units} counts", fontsize=9)
    axes[1].set_xlabel("time (ms)")

    patches, _ = group_into_patches(counts, neurons_per_token)  # (T, P, neurons_per_token)
    n_patches = patches.shape[1]
    axes[2].imshow(counts.T, aspect="auto", cmap="Greys", extent=extent, origin="lower", interpolation="nearest")
    for edge in np.arange(1, n_bins) * bin_size * 1000:
        axes[2].axvline(edge, color="C2", lw=0.3)
    for edge in np.arange(1, n_patches) * neurons_per_token - 0.5:
        axes[2].axhline(edge, color="C2", lw=1.5)
    axes[2].set_title(f"patch tokens (NDT2)\n{n_bins * n_patches} tokens of {neurons_per_token} counts", fontsize=9)
    axes[2].set_xlabel("time (ms)")

    axes[3].axis("off")
    axes[3].text(0.0, 0.5, "learned codes (VQ)\n\nA codebook of K vectors;\neach patch or window is\nreplaced "
                 "by the index of\nits nearest code.\n\nBuilt and trained in the\nVQ-tokens chapter.",
                 fontsize=9, va="center")
    fig.suptitle(f"one trial ({duration * 1000:.0f} ms, {session.n_units} units) as four kinds of token", fontsize=10)
    fig.tight_layout()
    return fig
