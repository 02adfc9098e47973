"""The book's pictures report the numbers they claim (token counts) and label their axes."""

import matplotlib

matplotlib.use("Agg")
import numpy as np

from mini_decoders.data.session import Session, Trials
from mini_decoders.viz import plot_raster, plot_token_views, token_counts, trial_spikes


def small_session():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, (200, 40))
    return Session.from_binned(counts, 0.02, id="v", trials=Trials([0.0, 1.0, 2.0], [1.0, 2.0, 3.0]),
                               heldout=np.arange(40) % 4 == 0)


def test_token_views_titles_match_the_counts():
    s = small_session()
    fig = plot_token_views(s, 1, bin_size=0.02, neurons_per_token=32)
    titles = [ax.get_title() for ax in fig.axes]
    n_spikes = len(trial_spikes(s, 1)[0])
    assert f"{n_spikes} tokens" in titles[0]
    assert "50 tokens of 40 counts" in titles[1]
    assert "100 tokens of 32 counts" in titles[2]  # 50 bins x ceil(40 / 32) patches
    assert all(ax.get_xlabel() == "time (ms)" for ax in fig.axes[:3])


def test_token_counts_per_second():
    s = small_session()
    rates = token_counts(s, 0.02, 32)
    assert np.isclose(rates["spike tokens / s"], s.n_spikes / (s.stop_time - s.start_time))
    assert rates["bin tokens / s"] == 50 and rates["patch tokens / s"] == 100


def test_raster_draws_every_spike_of_the_trial():
    s = small_session()
    ax = plot_raster(s, 2)
    offsets = ax.collections[0].get_offsets()
    times, _ = trial_spikes(s, 2)
    assert len(offsets) == len(times) and ax.get_ylabel() == "unit"
