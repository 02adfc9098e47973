"""POYO and the spike tokenizer: behaviour, not shapes.

Small simulated sessions (24 units, short trials) and the tiny config keep this file fast.
"""

import numpy as np
import pytest
import torch

from mini_decoders.data.batching import spike_windows
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import RunError
from mini_decoders.models.base import SessionSpec
from mini_decoders.models.poyo import POYO, WindowSampler
from mini_decoders.models.poyo_windows import phase_weights, stitching_windows
from mini_decoders.tokenizers.spikes import (END, SPIKE, START, SpikeTokenizer, add_start_end_tokens,
                                             decode_token_codes, encode_token_codes, triangular_unit_counts,
                                             unit_dropout)
from mini_decoders.training import trainer as trainer_module
from mini_decoders.training.lamb import Lamb



pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def dataset():
    return simulate(n_sessions=3, n_trials=20, n_units=24, seed=3)


def tiny_config(**overrides) -> dict:
    config = dict(POYO.CONFIGS["tiny"], seed=0, dim=16, dim_head=8, self_heads=2, latents_per_step=2,
                  latent_step=0.25, progress=False)
    config.update(overrides)
    return config


def one_batch(model: POYO, session, starts, n_queries: int = 5) -> dict:
    row = int(model.session_vocab.index([session.id])[0])
    queries = np.tile(np.linspace(0.05, 0.95, n_queries), (len(starts), 1))
    return model._window_batch(session, row, np.asarray(starts, dtype=np.float64), queries)


# ------------------------------------------------------------------------------ tokenizer

def test_start_end_tokens_for_every_unit_and_codes_round_trip(dataset):
    session = dataset.sessions[0]
    windows = spike_windows(session, session.trials.start[:3], 1.0)
    rows = np.arange(session.n_units) + 100
    tokens = add_start_end_tokens(windows, rows)
    codes = torch.from_numpy(tokens.units)
    token_rows, token_types = decode_token_codes(codes)
    np.testing.assert_array_equal(encode_token_codes(token_rows.numpy(), token_types.numpy()), tokens.units)
    for i in range(3):  # a loop per window, for checking only
        lo, hi = tokens.offsets[i], tokens.offsets[i + 1]
        types, times = token_types[lo:hi].numpy(), tokens.times[lo:hi]
        assert (types == SPIKE).sum() == windows.lengths[i]
        for kind, when in ((START, 0.0), (END, 1.0)):  # silent units too
            assert sorted(token_rows[lo:hi].numpy()[types == kind]) == list(rows)
            assert np.all(times[types == kind] == when)
        np.testing.assert_allclose(np.sort(times[types == SPIKE]), np.sort(windows.sequence(i)[0]))


def test_unit_dropout_removes_spikes_and_markers_of_dropped_units(dataset):
    session = dataset.sessions[0]
    windows = spike_windows(session, session.trials.start[:4], 1.0)
    keep = unit_dropout(4, session.n_units, 10, np.random.default_rng(0))
    assert np.all(keep.sum(1) >= 10) and np.all(keep.sum(1) <= session.n_units)
    tokens = add_start_end_tokens(windows, np.arange(session.n_units), keep)
    rows, types = decode_token_codes(torch.from_numpy(tokens.units))
    window = np.repeat(np.arange(4), tokens.lengths)
    assert keep[window, rows.numpy()].all()
    assert (types.numpy() == START).sum() == keep.sum()


def test_fraction_unit_dropout_keeps_its_draws():
    """The default recipe's unit dropout: same seed, same units kept as before the triangular mode existed."""
    for seed in range(3):
        reference_rng = np.random.default_rng(seed)
        n_keep = reference_rng.integers(7, 25, size=5)
        ranks = reference_rng.random((5, 24)).argsort(axis=1).argsort(axis=1)
        np.testing.assert_array_equal(unit_dropout(5, 24, 7, np.random.default_rng(seed)), ranks < n_keep[:, None])


def authors_density(x: np.ndarray, low=30.0, mode=100.0, high=300.0, peak=4.0) -> np.ndarray:
    """The unnormalised density of the authors' UnitCustomDistribution on [low, high]."""
    rising = 1 + (peak - 1) * (x - low) / (mode - low)
    falling = peak - (peak - 1) * (x - mode) / (high - mode)
    return np.where(x <= mode, rising, falling)


def test_triangular_unit_counts_follow_the_authors_density():
    rng = np.random.default_rng(0)
    counts = triangular_unit_counts(200_000, 1000, 30, 100, 300, 4.0, rng)  # 1000 units: never capped
    assert counts.min() >= 30 and counts.max() <= 299
    grid = np.linspace(30, 300, 27_001)
    density = authors_density(grid)
    mean = np.trapezoid(grid * density, grid) / np.trapezoid(density, grid)
    assert abs(counts.mean() - (mean - 0.5)) < 0.5  # floor() lowers the mean by half a unit
    histogram = np.bincount(counts // 10)[3:30]  # units 30-39, 40-49, ..., 290-299
    assert np.argmax(histogram) + 3 in (9, 10)  # the mode, 100, sits between the 90s and the 100s
    assert 3.0 < histogram[7] / histogram[0] < 4.0  # 100-109 vs 30-39: density ~3.9 vs ~1.2, 270 x 10 draws
    # A session of 120 units: never more than it has; all of them whenever the draw is >= 120.
    capped = triangular_unit_counts(100_000, 120, 30, 100, 300, 4.0, np.random.default_rng(1))
    assert capped.min() >= 30 and capped.max() == 120
    share_all = np.trapezoid(authors_density(grid[grid >= 120]), grid[grid >= 120]) / np.trapezoid(density, grid)
    assert abs(np.mean(capped == 120) - share_all) < 0.01
    # Fewer units than the minimum: keep them all.
    np.testing.assert_array_equal(triangular_unit_counts(4, 20, 30, 100, 300, 4.0, rng), [20] * 4)
    with pytest.raises(Exception, match="min_units <= mode_units"):
        triangular_unit_counts(4, 200, 100, 30, 300, 4.0, rng)


def test_window_sampler_uses_the_configured_unit_dropout(dataset):
    session = dataset.sessions[0]
    triangular = tiny_config(unit_dropout="triangular", unit_dropout_min_units=5, unit_dropout_mode_units=8,
                             unit_dropout_max_units=12)
    model = POYO.build(dataset.sessions[:1], triangular)
    sampler = WindowSampler(model, dataset.sessions[:1], "train", triangular)
    torch.manual_seed(0)
    batch = sampler.collate([sampler[i] for i in range(len(sampler))])
    kept = ((batch["input_types"] == START) & batch["input_mask"]).sum(1).numpy()  # one start token per kept unit
    assert kept.min() >= 5 and kept.max() <= 11 < session.n_units
    with pytest.raises(RunError, match="unit_dropout must be one of"):
        WindowSampler(model, dataset.sessions[:1], "train", tiny_config(unit_dropout="none"))


# ------------------------------------------------------------------------------ invariances

def test_output_invariant_to_spike_order_within_window(dataset):
    session = dataset.sessions[0]
    model = POYO.build(dataset.sessions, tiny_config()).eval()
    batch = one_batch(model, session, session.trials.start[:2])
    with torch.no_grad():
        reference = model(batch)
    n_real = int(batch["input_mask"][0].sum())
    permutation = torch.randperm(n_real, generator=torch.Generator().manual_seed(0))
    shuffled = {k: v.clone() for k, v in batch.items()}
    for key in ("input_times", "input_rows", "input_types"):
        shuffled[key][0, :n_real] = batch[key][0, :n_real][permutation]
    with torch.no_grad():
        output = model(shuffled)
    torch.testing.assert_close(output["hand_vel"], reference["hand_vel"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output["condition_logits"], reference["condition_logits"], rtol=1e-5, atol=1e-6)


def test_rotary_attention_depends_only_on_time_differences(dataset):
    model = POYO.build(dataset.sessions, tiny_config()).double().eval()
    inputs = torch.randn(2, 40, 16, dtype=torch.float64)
    latents = torch.randn(2, 6, 16, dtype=torch.float64)
    input_times = torch.rand(2, 40, dtype=torch.float64)
    latent_times = torch.rand(2, 6, dtype=torch.float64)

    def run(shift: float) -> torch.Tensor:
        with torch.no_grad():
            encoded = model.encoder(latents, inputs, None, latent_times + shift, input_times + shift,
                                    model.rotary, rotate_value=True)
            return model.processor[0](encoded, model.rotary.cos_sin(latent_times + shift))

    torch.testing.assert_close(run(3.7), run(0.0), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(run(0.0), model.processor[0](latents, model.rotary.cos_sin(latent_times)))


def test_padding_never_changes_a_windows_output(dataset):
    session = dataset.sessions[0]
    model = POYO.build(dataset.sessions, tiny_config()).eval()
    starts = session.trials.start[:3]
    alone = one_batch(model, session, starts[:1])
    together = one_batch(model, session, starts)
    assert together["input_mask"].shape[1] >= alone["input_mask"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(model(together)["hand_vel"][:1], model(alone)["hand_vel"], rtol=1e-5, atol=1e-6)


def test_absent_units_get_exactly_zero_gradient(dataset):
    session = dataset.sessions[0]
    model = POYO.build(dataset.sessions, tiny_config())
    rows = model.tokenizer.unit_rows(session.id, [str(u) for u in session.units.ids])
    windows = spike_windows(session, session.trials.start[:2], 1.0)
    keep = np.zeros((2, session.n_units), dtype=bool)
    keep[:, :10] = True  # units 10.. are dropped from both windows
    batch = model.tokenizer.collate(add_start_end_tokens(windows, rows, keep))
    batch.update(query_times=torch.full((2, 3), 0.5), session=torch.zeros(2, dtype=torch.int64))
    model(batch)["hand_vel"].sum().backward()
    gradient = model.tokenizer.unit_vocab.weight.grad
    assert torch.all(gradient[rows[:10]].abs().sum(1) > 0)
    untouched = np.setdiff1d(np.arange(len(gradient)), rows[:10])  # dropped units + other sessions
    assert torch.all(gradient[untouched] == 0)


# ------------------------------------------------------------------------------ stitching

def test_stitching_windows_cover_every_bin_once_or_more():
    trial, start, first = stitching_windows(np.array([0.0, 10.0, 20.0]), np.array([50, 80, 30]), 0.02, 1.0, 0.5)
    np.testing.assert_array_equal(trial, [0, 1, 1, 1, 2])
    np.testing.assert_array_equal(first, [0, 0, 25, 30, 0])  # every 0.5 s, the last flush with the end
    np.testing.assert_allclose(start, [0.0, 10.0, 10.5, 10.6, 20.0])


def test_stitched_predictions_equal_single_windows_without_overlap():
    data = simulate(n_sessions=1, n_trials=8, n_units=16, seed=5, trial_length=2.0)
    session = data.sessions[0]
    model = POYO.build(data.sessions, tiny_config(eval_step=1.0)).eval()
    binned = bin_trials(session, 0.02, split=None, behavior=("hand_vel",))
    stitched = model.predict_trials(session, binned)["hand_vel"]  # (N, 100, 2)
    starts = np.concatenate([binned.starts, binned.starts + 1.0])  # two windows per trial, no overlap
    queries = np.tile((np.arange(50) + 0.5) * 0.02, (len(starts), 1))
    row = int(model.session_vocab.index([session.id])[0])
    with torch.no_grad():
        direct = model(model._window_batch(session, row, starts, queries))["hand_vel"].numpy()
    direct = direct * model.velocity_std_stat.numpy() + model.velocity_mean_stat.numpy()
    n = len(binned.starts)
    np.testing.assert_allclose(stitched[:, :50], direct[:n], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stitched[:, 50:], direct[n:], rtol=1e-4, atol=1e-5)


def test_phase_weights_follow_movement_onset(dataset):
    session = dataset.sessions[0]
    binned = bin_trials(session, 0.02, split=None, behavior=())
    weights = phase_weights(session, binned, 5.0, 1.0)
    onset = session.trials.extra["move_onset_time"][binned.trial_index]
    np.testing.assert_array_equal(weights == 5.0, binned.bin_centres() >= onset[:, None])


# ------------------------------------------------------------------------------ learning

def test_overfits_one_batch(dataset):
    torch.manual_seed(0)
    model = POYO.build(dataset.sessions[:1], tiny_config(unit_dropout_min=1.0, condition_weight=0.0))
    model.velocity_std_stat.fill_(100.0)
    sampler = WindowSampler(model, dataset.sessions[:1], "train", model.config)
    batch = sampler.collate([sampler[i] for i in range(2)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("recipe", ["default", "paper"])
def test_unit_identification_leaves_frozen_parameters_bit_identical(dataset, tmp_path, monkeypatch, recipe):
    built = []  # LAMB optimisers made: the paper recipe's optimiser reaches fine-tuning

    class SpyLamb(Lamb):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setitem(trainer_module.OPTIMIZERS, "lamb", SpyLamb)
    config = tiny_config(**(POYO.PAPER if recipe == "paper" else {}))
    model = POYO.build(dataset.sessions[:2], config)
    model.eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    new = dataset.sessions[2]
    with pytest.raises(RunError, match="--mode units"):
        model.spec_for(new)
    history = model.finetune([new], "units", {"finetune_steps": 6, "batch_size": 4, "log_every": 1},
                             out_dir=tmp_path, progress=False)
    assert bool(built) == (recipe == "paper")
    first_lr = history["records"][0]["lr"]  # flat_cosine starts at the full rate, warm-up below it
    assert (first_lr == config["finetune_lr"]) == (recipe == "paper")
    n_units_before = before["tokenizer.unit_vocab.weight"].shape[0]
    for name, parameter in model.named_parameters():
        old = before[name]
        if name == "tokenizer.unit_vocab.weight":
            assert torch.equal(parameter[:n_units_before], old)
            assert parameter.shape[0] == n_units_before + new.n_units
        elif name == "session_vocab.weight":
            assert torch.equal(parameter[:2], old)
        else:
            assert torch.equal(parameter, old), name
    rows = model.tokenizer.unit_rows(new.id, [str(u) for u in new.units.ids])
    binned = bin_trials(new, 0.02, split="test", behavior=("hand_vel",))
    assert np.isfinite(model.predict_trials(new, binned)["hand_vel"]).all()
    assert len(rows) == new.n_units


def test_train_through_run_api_and_reload(dataset, tmp_path, monkeypatch):
    from mini_decoders.models import registry
    from mini_decoders.run import load_run, train

    monkeypatch.setitem(registry.MODELS, "poyo", POYO)
    run = train("poyo", dataset.sessions[:2], profile="tiny", out=tmp_path / "run", max_steps=4, progress=False)
    assert set(run.metrics["sessions"]) == {s.id for s in dataset.sessions[:2]}
    assert np.isfinite(run.metrics["mean"]["vel_r2"])
    loaded = load_run(tmp_path / "run")
    assert loaded.model.condition_vocab.ids == run.model.condition_vocab.ids
    session = dataset.sessions[0]
    np.testing.assert_allclose(loaded.predict([session])[session.id]["hand_vel"],
                               run.predict([session])[session.id]["hand_vel"], rtol=1e-5, atol=1e-5)
    spec_ids = [SessionSpec.of(s).id for s in dataset.sessions[:2]]
    assert loaded.model.session_vocab.ids == spec_ids


def test_tokenizer_refuses_unknown_units():
    tokenizer = SpikeTokenizer(8)
    tokenizer.add_units(["a/0", "a/1"])
    with pytest.raises(Exception, match="finetune"):
        tokenizer.unit_rows("b", ["b/0"])


def test_full_finetune_with_gradual_unfreezing_updates_the_trunk(dataset):
    model = POYO.build(dataset.sessions[:2], tiny_config())
    encoder_before = model.encoder.attention.to_q.weight.detach().clone()
    history = model.finetune([dataset.sessions[2]], "full",
                             {"finetune_steps": 4, "unfreeze_after": 2, "batch_size": 4}, progress=False)
    assert history["steps"] == 4
    assert not torch.equal(model.encoder.attention.to_q.weight, encoder_before)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(RunError, match="mode"):
        model.finetune([dataset.sessions[2]], "everything", {}, progress=False)
