"""Score plots draw exactly the numbers they are given, with the oracle line, and refuse
mismatched inputs with a message."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from mini_decoders.errors import DataError
from mini_decoders.viz_scores import plot_score_curve, plot_scores, plot_velocity_traces


def oracle_lines(ax):
    return [line for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_bars_have_the_given_heights_missing_scores_say_na_and_the_oracle_is_a_line():
    ax = plot_scores({"ridge": 0.61, "gru": 0.72, "smoothing": None}, oracle=0.9, ylabel="vel R²")
    heights = [patch.get_height() for patch in ax.patches]
    assert np.allclose(heights, [0.61, 0.72])
    (not_available,) = [text for text in ax.texts if text.get_text() == "n/a"]
    assert ax.get_xlim()[0] < not_available.get_position()[0] - 0.3 < ax.get_xlim()[1], "n/a must sit in its slot"
    (line,) = oracle_lines(ax)
    assert np.allclose(line.get_ydata(), 0.9)
    assert ax.get_ylim()[1] > 0.9, "the oracle line must be inside the axes"
    assert [label.get_text() for label in ax.get_xticklabels()] == ["ridge", "gru", "smoothing"]
    assert ax.get_ylabel() == "vel R²"
    plt.close("all")


def test_negative_scores_are_visible():
    ax = plot_scores({"bad": -0.2, "good": 0.3})
    assert ax.get_ylim()[0] < -0.2 and not oracle_lines(ax)
    plt.close("all")


def test_bad_score_inputs_raise_data_error():
    with pytest.raises(DataError, match="empty"):
        plot_scores({})
    with pytest.raises(DataError, match="2 colours for 3 bars"):
        plot_scores({"a": 1, "b": 2, "c": 3}, colors=["r", "g"])
    plt.close("all")


def test_score_curve_plots_each_model_over_the_sweep():
    x = [20, 40, 80]
    ax = plot_score_curve(x, {"wiener": [0.3, 0.5, 0.6]}, oracle=0.8, xlabel="history (ms)", ylabel="R²")
    curve = [line for line in ax.get_lines() if line.get_label() == "wiener"][0]
    assert np.allclose(curve.get_xdata(), x) and np.allclose(curve.get_ydata(), [0.3, 0.5, 0.6])
    assert np.allclose(oracle_lines(ax)[0].get_ydata(), 0.8)
    with pytest.raises(DataError, match=r"scores\['w'\] has shape \(2,\), expected \(3,\)"):
        plot_score_curve(x, {"w": [0.1, 0.2]})
    plt.close("all")


def test_velocity_traces_put_time_in_ms_at_bin_centres_and_draw_every_model():
    true = np.stack([np.linspace(-100, 100, 5), np.zeros(5)], axis=1)  # (T, 2) mm/s
    axes = plot_velocity_traces(true, {"ridge": true + 1.0, "gru": true - 1.0}, bin_size=0.02)
    assert len(axes) == 2
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert np.allclose(lines["true"].get_xdata(), [10, 30, 50, 70, 90])
    assert np.allclose(lines["ridge"].get_ydata(), true[:, 0] + 1.0)
    assert np.allclose(lines["gru"].get_ydata(), true[:, 0] - 1.0)
    assert "mm/s" in axes[1].get_ylabel() and "ms" in axes[0].get_xlabel()
    plt.close("all")


def test_velocity_traces_refuse_mismatched_shapes():
    true = np.zeros((5, 2))
    with pytest.raises(DataError, match=r"predictions\['ridge'\] has shape \(4, 2\), expected \(5, 2\)"):
        plot_velocity_traces(true, {"ridge": np.zeros((4, 2))}, bin_size=0.02)
    with pytest.raises(DataError, match="must be \\(T, D\\)"):
        plot_velocity_traces(np.zeros(5), {}, bin_size=0.02)
    plt.close("all")
