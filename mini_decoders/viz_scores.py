"""Pictures of scores: bars with the oracle line, score curves over a sweep, decoded vs true traces.

Every chapter that compares models draws the same three plots, so they live here. Each takes an
``ax`` (or ``axes``) to compose into a larger figure, labels its axes with units, and returns what
it drew on. The oracle (the score of the simulator's true rates) is a black dashed line: a model
can approach it but, up to noise, not cross it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mini_decoders.errors import DataError

ORACLE_STYLE = dict(color="k", linestyle="--", linewidth=1.2)


def _axes(ax, figsize: tuple[float, float] = (5.0, 3.2)):
    import matplotlib.pyplot as plt  # only notebooks plot; importing the package must not need a display

    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_scores(scores: Mapping[str, float | None], oracle: float | None = None, ax=None, ylabel: str = "score",
                title: str | None = None, colors: Sequence[str] | None = None):
    """Bar plot of one score per model, with the oracle as a dashed horizontal line.

    Args:
        scores: model name -> score; None (or NaN) draws no bar and writes "n/a" (a model that
            does not produce what the score needs, e.g. a velocity decoder scored on co-bps).
        oracle: the oracle's score; None draws no line.
        ylabel: what the bars measure, with units (e.g. ``"co-bps (bits/spike)"``).
        colors: one matplotlib colour per bar (default: the colour cycle).

    Returns:
        The axes.
    """
    if not scores:
        raise DataError("plot_scores: `scores` is empty; expected at least one model name -> score")
    ax = _axes(ax)
    names = list(scores)
    values = np.array([np.nan if scores[name] is None else float(scores[name]) for name in names])
    colors = list(colors) if colors is not None else [f"C{i % 10}" for i in range(len(names))]
    if len(colors) != len(names):
        raise DataError(f"plot_scores: got {len(colors)} colours for {len(names)} bars")
    positions = np.arange(len(names))
    drawn = np.isfinite(values)
    ax.bar(positions[drawn], values[drawn], color=np.array(colors, dtype=object)[drawn].tolist(), width=0.65)
    for position, value in zip(positions, values):
        if np.isfinite(value):
            ax.text(position, value, f"{value:.3f}", ha="center", va="bottom" if value >= 0 else "top", fontsize=8)
        else:
            ax.text(position, 0.0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
    if oracle is not None:
        ax.axhline(float(oracle), label=f"oracle ({float(oracle):.3f})", **ORACLE_STYLE)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.set_xticks(positions, names)
    ax.set_xlim(-0.6, len(names) - 0.4)  # keep every slot, drawn or n/a, inside the axes
    ax.set_ylabel(ylabel)
    top = np.nanmax(np.append(values[drawn], [oracle if oracle is not None else np.nan, 0.0]))
    ax.set_ylim(min(0.0, float(np.nanmin(np.append(values[drawn], 0.0))) * 1.15), top * 1.15 if top > 0 else 1.0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_score_curve(x: Sequence[float], scores: Mapping[str, Sequence[float]], oracle: float | None = None,
                     ax=None, xlabel: str = "", ylabel: str = "score", title: str | None = None):
    """Scores over a sweep (one line per model), with the oracle as a dashed line.

    Args:
        x: (K,) the swept values (e.g. history length in ms).
        scores: model name -> (K,) scores at ``x``.
        oracle: the oracle's score; None draws no line.

    Returns:
        The axes.
    """
    x = np.asarray(x, dtype=np.float64)
    ax = _axes(ax)
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != x.shape:
            raise DataError(f"plot_score_curve: scores[{name!r}] has shape {values.shape}, expected {x.shape} "
                            "(one score per swept value)")
        ax.plot(x, values, marker="o", label=name)
    if oracle is not None:
        ax.axhline(float(oracle), label=f"oracle ({float(oracle):.3f})", **ORACLE_STYLE)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_velocity_traces(true_velocity: np.ndarray, predictions: Mapping[str, np.ndarray], bin_size: float,
                         axes=None, channel_names: Sequence[str] = ("x", "y"), title: str | None = None):
    """Decoded vs true velocity of one trial: one panel per channel, time in ms.

    Args:
        true_velocity: (T, D) recorded velocity (mm/s); NaN bins (padding) are not drawn.
        predictions: model name -> (T, D) decoded velocity (mm/s).
        bin_size: bin width (s), to put time in ms from the trial start.
        axes: D axes (a new row of panels when None).
        channel_names: one name per channel for the panel labels.

    Returns:
        The D axes.
    """
    true_velocity = np.asarray(true_velocity, dtype=np.float64)
    if true_velocity.ndim != 2:
        raise DataError(f"plot_velocity_traces: `true_velocity` must be (T, D), got shape {true_velocity.shape}")
    n_bins, n_channels = true_velocity.shape
    for name, predicted in predictions.items():
        if np.shape(predicted) != true_velocity.shape:
            raise DataError(f"plot_velocity_traces: predictions[{name!r}] has shape {np.shape(predicted)}, "
                            f"expected {true_velocity.shape} like `true_velocity`")
    if len(channel_names) < n_channels:
        raise DataError(f"plot_velocity_traces: {len(channel_names)} channel names for {n_channels} channels")
    if axes is None:
        import matplotlib.pyplot as plt  # see _axes

        axes = plt.subplots(1, n_channels, figsize=(4.5 * n_channels, 3.0), sharey=True)[1]
    axes = np.atleast_1d(axes)
    if len(axes) != n_channels:
        raise DataError(f"plot_velocity_traces: got {len(axes)} axes for {n_channels} velocity channels")
    time_ms = (np.arange(n_bins) + 0.5) * bin_size * 1000  # bin centres
    for channel, ax in enumerate(axes):
        ax.plot(time_ms, true_velocity[:, channel], color="k", linewidth=2, label="true")
        for index, (name, predicted) in enumerate(predictions.items()):
            ax.plot(time_ms, np.asarray(predicted)[:, channel], color=f"C{index}", linewidth=1.3, label=name)
        ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
        ax.set_xlabel("time from trial start (ms)")
        ax.set_ylabel(f"hand velocity {channel_names[channel]} (mm/s)")
    axes[0].legend(frameon=False, fontsize=8)
    if title:
        axes[0].set_title(title, fontsize=9, loc="left")
    return axes
