"""The paper's way of scoring MtM: bits/spike per neuron then averaged, and intra-region prediction
as leave-one-neuron-out with every other region hidden."""

import inspect

import numpy as np
import pytest
from scipy.stats import poisson

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.evaluation import (ALL_TASKS, SCORES, TASKS, flat_task_scores, iter_task_passes, oracle_task_scores,
                                      score_task, task_passes)
from mini_decoders.models.mtm import MtM

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_neuron_bps(rates, counts, scored):
    """Per unit, with scipy's Poisson log-pmf: bits saved over the unit's mean, per spike; then the mean."""
    per_unit = []
    for u in range(counts.shape[-1]):
        y, lam = counts[..., u][scored[..., u]], np.maximum(rates[..., u][scored[..., u]], 1e-9)
        if y.sum() == 0:  # no spike, no score (the authors' nanmean drops it)
            continue
        saved = poisson.logpmf(y, lam).sum() - poisson.logpmf(y, y.mean()).sum()
        per_unit.append(saved / (y.sum() * np.log(2)))
    return float(np.mean(per_unit))


def test_neuron_bps_is_the_mean_of_each_units_own_bits_per_spike():
    rng = np.random.default_rng(0)
    n_trials, n_bins, n_units = 6, 20, 5
    truth = rng.gamma(2.0, 0.3, size=(1, 1, n_units)) * rng.uniform(0.5, 1.5, size=(n_trials, n_bins, 1))
    counts = rng.poisson(truth).astype(np.float64)  # (N, T, U)
    counts[..., 0] *= 4  # a busy unit: it dominates the pooled score, not the per-neuron one
    scored = rng.random((n_trials, n_bins, n_units)) < 0.6
    scored[..., 3] = False  # a unit never scored
    scored[..., 4] &= counts[..., 4] == 0  # a unit scored only where it is silent: no score
    assert scored[..., 4].any() and counts[..., 4].sum() > 0  # it does spike, but not where it is scored
    rates = np.where(scored, truth * rng.uniform(0.7, 1.3, size=counts.shape), np.nan)
    rates[..., 0] = np.where(scored[..., 0], counts[..., 0] + 0.5, np.nan)  # near-perfect on the busy unit
    # Unscored counts are changed wildly: they must not move the score (nor the null model's mean).
    shown = np.where(scored, counts, counts + 50.0)
    scores = score_task(rates, shown, scored, None, 0.02)
    expected = _reference_neuron_bps(rates, counts, scored)
    assert scores["neuron_bps"] == pytest.approx(expected, rel=1e-9)
    assert abs(scores["neuron_bps"] - scores["bps"]) > 0.05  # not the pooled score under another name
    # Rates equal to each unit's own mean over its scored entries save nothing.
    means = np.nansum(np.where(scored, counts, np.nan), (0, 1)) / np.maximum(scored.sum((0, 1)), 1)
    assert score_task(np.where(scored, means, np.nan), counts, scored, None, 0.02)["neuron_bps"] == \
        pytest.approx(0.0, abs=1e-12)
    silent = np.zeros_like(scored)
    silent[..., 4] = scored[..., 4]
    assert score_task(rates, counts, silent, None, 0.02)["neuron_bps"] is None  # no unit has a score


def test_intra_region_loo_hides_one_neuron_and_every_other_region_per_pass():
    valid = np.ones((4, 25), dtype=bool)
    valid[1, 18:] = False  # a shorter trial
    heldout = np.array([False] * 9 + [True] * 3)
    regions = np.array(["A", "B", "A", "C", "B", "A", "B", "B", "A", "A", "B", "C"])  # C has one held-in neuron
    heldin_regions = regions[~heldout]
    passes = iter_task_passes("intra_region_loo", valid, heldout, regions)
    assert inspect.isgenerator(passes)  # made when needed, one per neuron, as held-in co-smoothing
    passes = list(passes)
    assert len(passes) == 9  # one per held-in neuron
    total = np.zeros((4, 25, 12), dtype=int)
    for one in passes:
        (neuron,) = np.flatnonzero(one.scored.any((0, 1)))  # one scored unit per pass
        assert not heldout[neuron]
        position = int(np.flatnonzero(np.flatnonzero(~heldout) == neuron)[0])
        hidden_units = (heldin_regions != heldin_regions[position]) | (np.arange(9) == position)
        assert np.array_equal(one.hidden, valid[:, :, None] & hidden_units)  # that neuron and the other regions
        assert np.array_equal(one.scored[..., neuron], valid)
        total += one.scored
    assert total.max() == 1  # each entry scored once
    assert np.array_equal(total.astype(bool), valid[:, :, None] & ~heldout)  # every held-in entry
    scored_order = [np.flatnonzero(one.scored.any((0, 1)))[0] for one in passes]
    assert [regions[u] for u in scored_order] == ["A"] * 4 + ["B"] * 4 + ["C"]  # region by region
    assert task_passes("intra_region_loo", valid, heldout, np.array(["A"] * 12)) == []  # one region: undefined


def test_every_task_has_the_pooled_and_per_neuron_scores_for_model_and_oracle(monkeypatch):
    dataset = simulate(n_sessions=1, n_trials=30, n_units=24, seed=2)
    session = dataset.sessions[0]
    binned = bin_trials(session, 0.02, split="test", behavior=())
    model = MtM.build(dataset.sessions, dict(MtM.CONFIGS["tiny"], seed=0, device="cpu", precision="fp32"))
    assert "intra_region_loo" in ALL_TASKS and "intra_region_loo" not in TASKS  # reported, not for the checkpoint
    assert model.prompt_for("intra_region_loo") == "intra_region"
    prompts = []
    original = model.predict_masked
    monkeypatch.setattr(model, "predict_masked",
                        lambda s, b, hidden=None, prompt=None: prompts.append(prompt) or original(s, b, hidden, prompt))
    ours = model.evaluate_tasks(session, binned, tasks=("intra_region_loo",))
    assert set(prompts) == {"intra_region"} and len(prompts) == int((~session.units.heldout).sum())
    oracle = oracle_task_scores(session, dataset.truth[session.id], "test")
    assert set(oracle) == set(ALL_TASKS) and all(set(scores) == set(SCORES) for scores in oracle.values())
    assert set(ours["intra_region_loo"]) == set(SCORES)
    flat = flat_task_scores(oracle)
    for key in ("intra_loo_bps", "intra_loo_neuron_bps", "heldin_cosmooth_neuron_bps", "cosmooth_neuron_bps"):
        assert flat[key] is not None, key
    assert oracle["intra_region_loo"]["neuron_bps"] > 0.05  # the true rates beat each neuron's mean
