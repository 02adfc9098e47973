"""The token lab: one backbone, five tokenizers, matched sizes; only the tokenizer changes.

Tiny sessions, tiny models: every test runs in seconds on one thread.
"""

import numpy as np
import pytest
import torch

from mini_decoders.cli import main
from mini_decoders.data.batching import BinnedTrialDataset
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.models.token_lab import (TOKEN_KINDS, LabUnits, TokenLabConfig, TokenLabModel, collate_for,
                                            matched_models)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def lab():
    """Two simulated sessions, their train trials, and one matched model per tokenizer (no dropout)."""
    sessions = simulate(n_sessions=2, n_trials=16, n_units=20, seed=0).sessions
    binned = [bin_trials(s, 0.02, split="train", behavior=("hand_vel",), lag=0.1) for s in sessions]
    dataset = BinnedTrialDataset(binned, [s.units.heldout for s in sessions], "hand_vel")
    heldin_sessions = [s.select_units(s.units.heldin_index) for s in sessions]
    units = LabUnits([len(s.units.heldin_index) for s in sessions], [len(s.units.heldout_index) for s in sessions],
                     [str(u) for s in heldin_sessions for u in s.units.ids], max(b.counts.shape[1] for b in binned))
    models = matched_models(units, TokenLabConfig(dim=32, layers=1, heads=2, dropout=0.0), seed=0)
    items = [dataset[i] for i in range(len(dataset))][::2]
    batches = {kind: collate_for(model, heldin_sessions)(items) for kind, model in models.items()}
    for model in models.values():
        model.set_targets(torch.full((2, model.rate_bias.shape[1]), 0.3), torch.full((2,), 100.0))
    return models, batches, sessions


def test_the_five_variants_have_parameter_counts_within_10_percent(lab):
    models, _, _ = lab
    assert set(models) == set(TOKEN_KINDS) and len(models) == 5
    totals = [model.parameter_counts()["total"] for model in models.values()]
    assert max(totals) / min(totals) - 1 <= 0.10, totals
    # The tokenizer's own parameters are matched too (not just drowned by the shared backbone).
    own = [model.parameter_counts()["tokenizer"] for model in models.values()]
    assert max(own) / min(own) - 1 <= 0.25, own


def test_the_backbone_is_literally_the_same_and_only_the_tokenizer_differs(lab):
    models, _, _ = lab
    reference = models["bins"]
    shared = {name: p for name, p in reference.shared_parameters()}
    for kind, model in models.items():
        assert type(model) is TokenLabModel
        others = {name: p for name, p in model.shared_parameters()}
        assert {n: p.shape for n, p in others.items()} == {n: p.shape for n, p in shared.items()}, kind
        # Swapping the tokenizer changes only the tokenizer's parameters: the shared ones start equal.
        for name, p in others.items():
            torch.testing.assert_close(p, shared[name], msg=f"{kind}: shared parameter {name} differs")
        different = {name for name in model.state_dict()} - {name for name in reference.state_dict()}
        assert all(name.startswith(("tokenizer.", "adapter.")) for name in different), different


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_the_readout_never_sees_held_out_neurons_as_inputs(kind, lab):
    models, batches, _ = lab
    model, batch = models[kind].eval(), batches[kind]
    loud = dict(batch, heldout=batch["heldout"] + 1000.0, counts=batch["counts"] + 1000.0)
    with torch.no_grad():
        before, after = model(batch), model(loud)
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    if kind == "spikes":  # spike tokens come from the held-in units only
        heldin_ids = {str(u) for s in lab[2] for u in s.units.ids[s.units.heldin_index]}
        assert set(model.tokenizer.unit_vocab.ids) == heldin_ids


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_training_a_few_steps_lowers_the_loss(kind, lab):
    models, batches, _ = lab
    model = matched_models(models[kind].units, models[kind].config, kinds=[kind], seed=0)[kind]
    model.load_state_dict(models[kind].state_dict())
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = model.training_loss(batches[kind])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def test_the_cli_prints_one_row_per_tokenizer(tmp_path, capsys):
    assert main(["benchmark", "--token-lab", "--profile", "tiny", "--work", str(tmp_path / "lab"),
                 "--json", str(tmp_path / "lab.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = next(i for i, line in enumerate(lines) if line.split()[:2] == ["token", "width"])
    assert [line.split()[0] for line in lines[table + 1:table + 7]] == [*TOKEN_KINDS, "oracle"]
    assert "within 10%" in lines[-2]
    header = next(i for i, line in enumerate(lines) if line.startswith("cost per training step"))
    exponents = [line.split() for line in lines[header + 4:header + 4 + len(TOKEN_KINDS)]]
    assert [row[0] for row in exponents] == list(TOKEN_KINDS) and all(len(row) == 10 for row in exponents)


# ------------------------------------------------------------------ how cost scales (issue 24, item 1)
@pytest.fixture(scope="module")
def scaling():
    from mini_decoders.experiments.token_lab import cost_scaling

    return cost_scaling("tiny", seed=0, log=None)


def test_the_cost_sweep_measures_every_tokenizer_on_three_points_of_each_sweep(scaling):
    from mini_decoders.experiments.token_lab import LAB_PROFILES, SWEEPS

    settings = LAB_PROFILES["tiny"]["cost"]
    assert list(scaling) == list(TOKEN_KINDS)
    for kind, entry in scaling.items():
        assert list(entry) == list(SWEEPS)
        for sweep in SWEEPS:
            points = entry[sweep]
            assert len(points["x"]) == 3 and all(len(points[key]) == 3 for key in (
                "tokens", "tokens_per_second", "seconds_per_step", "peak_memory_mb", "saved_mb")), (kind, sweep)
            assert all(t > 0 for t in points["seconds_per_step"]) and all(m > 0 for m in points["saved_mb"])
            assert all(e is not None for e in (points["exponent_tokens"], points["exponent_seconds"],
                                               points["exponent_saved"])), (kind, sweep)
    # the x of each sweep: held-in neurons (a quarter of the units held out), rates that grow, the windows
    assert scaling["bins"]["neurons"]["x"] == [n - n // 4 for n in settings["neurons"]]
    assert scaling["bins"]["window"]["x"] == list(settings["windows"])
    rates = scaling["bins"]["rate"]["x"]
    assert rates[0] < rates[1] < rates[2]


def test_token_counts_match_the_formula_of_each_tokenizer(scaling):
    """Tokens per step are exact: :func:`tokens_per_window` times the windows in the batch. (Spikes: on the
    rate sweep, whose x is the measured held-in rate of those very windows; elsewhere the rate varies.)"""
    from mini_decoders.experiments.token_lab import LAB_PROFILES
    from mini_decoders.models.token_lab import tokens_per_window

    settings = LAB_PROFILES["tiny"]["cost"]
    windows, middle = settings["batch_size"], settings["windows"][1]
    checked = 0
    for kind, entry in scaling.items():
        for sweep, points in entry.items():
            if kind == "spikes" and sweep != "rate":
                continue
            for x, tokens in zip(points["x"], points["tokens"]):
                neurons = x if sweep == "neurons" else entry["neurons"]["x"][1]
                rate = x if sweep == "rate" else 10.0  # only spike tokens depend on the rate
                length = x if sweep == "window" else middle
                assert tokens == pytest.approx(windows * tokens_per_window(kind, int(neurons), rate, length),
                                               rel=1e-9), (kind, sweep, x)
                checked += 1
    assert checked == 3 * (3 * len(TOKEN_KINDS) - 2)


def test_token_exponents_follow_what_each_token_is_made_of(scaling):
    """Spike tokens grow with neurons and firing, patches with neurons, bins, codes and conv with neither;
    every token grows with the window. Token counts are deterministic; timings are not asserted."""
    exponent = {kind: {sweep: entry[sweep]["exponent_tokens"] for sweep in entry} for kind, entry in scaling.items()}
    # spikes: N r T + 2N per window; the start/end tokens make the rate exponent a little below 1
    assert exponent["spikes"]["neurons"] > 0.7 and exponent["spikes"]["rate"] > 0.6, exponent["spikes"]
    assert exponent["spikes"]["window"] > 0.6, exponent["spikes"]
    # patches: T/Δ ceil(N/P), so neurons count (the ceiling rounds small populations up)
    assert exponent["patches"]["neurons"] > 0.7, exponent["patches"]
    for kind in ("bins", "codes", "conv"):
        assert exponent[kind]["neurons"] == pytest.approx(0.0, abs=1e-9), (kind, exponent[kind])
    for kind in ("bins", "patches", "codes", "conv"):
        assert exponent[kind]["rate"] == pytest.approx(0.0, abs=1e-9), (kind, exponent[kind])
        assert exponent[kind]["window"] == pytest.approx(1.0, abs=0.05), (kind, exponent[kind])

