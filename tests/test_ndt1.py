"""NDT1: the loss scores only what it should, outputs are per-sample, context limits hold, it learns."""

import numpy as np
import pytest
import torch

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import RunError
from mini_decoders.metrics import bits_per_spike
from mini_decoders.models.ndt1 import NDT1, collate_trials, context_window_mask
from mini_decoders.tokenizers.bins import BinTokenizer

SMALL = dict(NDT1.CONFIGS["tiny"], dim=16, layers=2, heads=2, ffn_dim=32, dropout=0.0, embed_dropout=0.0,
             rate_dropout=0.0, max_bins=64, seed=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def dataset():
    # Two sessions with different unit counts, so padding of units is exercised.
    return simulate(n_sessions=2, n_trials=60, n_units=(30, 24), seed=3)


def _model(dataset, **overrides) -> NDT1:
    torch.manual_seed(0)
    return NDT1.build(dataset.sessions, {**SMALL, **overrides})


def _batch(model: NDT1, dataset, n_per_session: int = 4) -> dict:
    items = []
    for session in dataset.sessions:
        items += model._trial_items(session, "train")[:n_per_session]
    return collate_trials(items)


def test_loss_scores_masked_heldin_and_all_heldout_only(dataset, monkeypatch):
    model = _model(dataset).eval()
    batch = _batch(model, dataset)
    fixed = torch.randn(batch["heldin"].shape[:2] + (model.max_heldin + model.max_heldout,)) * 0.3
    # The network's answer is fixed, so the loss depends only on which targets it scores.
    monkeypatch.setattr(model, "forward", lambda *args, **kwargs: fixed)

    def loss_of(b: dict) -> float:
        return model.masked_loss(b, generator=torch.Generator().manual_seed(7))[0].item()

    from mini_decoders.masking import mask_counts
    units = model.unit_valid(batch["session"])
    heldin_valid = batch["valid"][:, :, None] & units[:, None, :model.max_heldin]
    _, loss_mask = mask_counts(batch["heldin"], model.mask_config, heldin_valid,
                               generator=torch.Generator().manual_seed(7))
    reference = loss_of(batch)
    visible = dict(batch, heldin=torch.where(loss_mask, batch["heldin"], batch["heldin"] + 5.0))
    assert loss_of(visible) == pytest.approx(reference, rel=1e-6)
    hidden = dict(batch, heldin=torch.where(loss_mask, batch["heldin"] + 5.0, batch["heldin"]))
    assert loss_of(hidden) != pytest.approx(reference, rel=1e-3)
    heldout = dict(batch, heldout=batch["heldout"] + 5.0)
    assert loss_of(heldout) != pytest.approx(reference, rel=1e-3)
    # Padded units of the smaller session are never scored.
    padded_units = ~units[:, model.max_heldin:]
    assert padded_units.any()
    bumped = batch["heldout"].clone()
    bumped[padded_units[:, None, :].expand_as(bumped)] += 5.0
    assert loss_of(dict(batch, heldout=bumped)) == pytest.approx(reference, rel=1e-6)


def test_outputs_do_not_depend_on_batch_order(dataset):
    model = _model(dataset).eval()
    batch = _batch(model, dataset)
    with torch.no_grad():
        out = model(batch["heldin"], batch["session"], batch["valid"])
        order = torch.randperm(len(batch["session"]), generator=torch.Generator().manual_seed(0))
        permuted = model(batch["heldin"][order], batch["session"][order], batch["valid"][order])
    torch.testing.assert_close(permuted, out[order], rtol=1e-5, atol=1e-5)


def test_limited_context_ignores_bins_outside_the_window(dataset):
    model = _model(dataset, context_forward=2, context_backward=3, kernel_bins=0).eval()  # attention alone
    batch = _batch(model, dataset, 2)
    t = 20
    changed = batch["heldin"].clone()
    changed[:, :t - 3 * 2] += 3.0   # outside the window even after 2 layers (3 bins back per layer)
    changed[:, t + 2 * 2 + 1:] += 3.0  # and 2 forward per layer
    with torch.no_grad():
        out = model(batch["heldin"], batch["session"])
        out_changed = model(changed, batch["session"])
    torch.testing.assert_close(out_changed[:, t], out[:, t])
    assert not torch.allclose(out_changed[:, t + 10], out[:, t + 10])
    window = context_window_mask(6, 1, 2)
    assert window[3].tolist() == [False, True, True, True, True, False]
    assert context_window_mask(6, None, None) is None


def test_overfits_one_batch(dataset):
    model = _model(dataset, mask_ratio=0.25)
    batch = _batch(model, dataset, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):
        # The same mask every step: the model can memorise this batch, counts and all.
        loss, _ = model.masked_loss(batch, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_bin_tokenizer_uses_each_sessions_read_in():
    tokenizer = BinTokenizer([3, 5], dim=4, max_bins=10, transform="none")
    counts = torch.zeros(2, 6, 5)
    counts[:, :, 0] = 1.0
    tokens = tokenizer(counts, torch.tensor([0, 1]))
    positions = tokenizer.positions(6)
    torch.testing.assert_close(tokens[0] - positions, tokenizer.read_in_weight[0, 0].expand(6, 4))
    torch.testing.assert_close(tokens[1] - positions, tokenizer.read_in_weight[1, 0].expand(6, 4))


def test_trained_model_beats_the_mean_rate_null(tmp_path):
    dataset = simulate(n_sessions=1, n_trials=80, n_units=80, seed=5)
    torch.manual_seed(0)
    config = {**SMALL, "dim": 32, "layers": 1, "max_steps": 150, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10,
              "val_every": 40, "embed_dropout": 0.1}
    model = NDT1.build(dataset.sessions, config)
    history = model.fit(dataset.sessions, config, out_dir=tmp_path, progress=False)
    assert any("val_co_bps" in record for record in history["records"])
    scores = []
    for session in dataset.sessions:
        binned = bin_trials(session, 0.02, split="test", behavior=())
        predicted = model.predict_trials(session, binned)
        heldout_spikes = binned.counts[..., session.units.heldout_index]
        assert predicted["rates_heldout"].shape == heldout_spikes.shape
        assert predicted["rates_heldin"].shape[-1] == len(session.units.heldin_index)
        for rates in predicted.values():
            assert np.isfinite(rates).all() and (rates > 0).all()
        scores.append(bits_per_spike(predicted["rates_heldout"][binned.mask], heldout_spikes[binned.mask]))
    assert np.mean(scores) > 0.02, scores  # the null scores 0


def test_unseen_session_is_refused_with_advice(dataset):
    model = _model(dataset)
    other = simulate(n_sessions=1, n_trials=10, n_units=17, seed=9).sessions[0]
    other.id = "elsewhere"
    binned = bin_trials(other, 0.02, behavior=())
    # NDT1 has no fine-tuning: the advice is to train on the new recording (or use a model that adapts).
    with pytest.raises(RunError, match=r"This ndt1 run cannot be adapted to new units: train one on the new "
                                       r"recording .*or use a model that adapts \(ndt2, poyo, mtm\)"):
        model.predict_trials(other, binned)


def test_temporal_kernel_starts_as_gaussian_smoothing_of_the_read_in():
    torch.manual_seed(0)
    tokenizer = BinTokenizer([5], dim=4, max_bins=20, transform="none", kernel_bins=5, kernel_sd_bins=1.5)
    counts = torch.poisson(torch.full((2, 12, 5), 2.0))
    session = torch.zeros(2, dtype=torch.int64)
    tokens = tokenizer(counts, session) - tokenizer.positions(12)  # (B, T, D)
    read_in = counts @ tokenizer.read_in_weight[0] + tokenizer.read_in_bias[0]  # (B, T, D)
    offsets = torch.arange(5.0) - 2
    weights = torch.exp(-0.5 * (offsets / 1.5) ** 2)
    weights = weights / weights.sum()
    expected = torch.zeros_like(read_in)
    for t in range(12):  # the slow loop: a weighted sum of the neighbouring bins (zeros past the ends)
        for k, offset in enumerate(offsets.long().tolist()):
            if 0 <= t + offset < 12:
                expected[:, t] += weights[k] * read_in[:, t + offset]
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)


def test_temporal_kernel_ignores_padding_and_the_future_when_causal():
    torch.manual_seed(0)
    tokenizer = BinTokenizer([6], dim=8, max_bins=30, kernel_bins=7).eval()
    with torch.no_grad():
        tokenizer.kernel.weight.normal_()  # a trained, asymmetric kernel
    counts = torch.poisson(torch.full((1, 20, 6), 1.0))
    session = torch.zeros(1, dtype=torch.int64)
    valid = torch.ones(1, 20, dtype=torch.bool)
    valid[:, 15:] = False
    changed = counts.clone()
    changed[:, 15:] += 5  # padding only
    torch.testing.assert_close(tokenizer(counts, session, valid)[:, :15], tokenizer(changed, session, valid)[:, :15])
    future = counts.clone()
    future[:, 10:] += 3
    causal_before = tokenizer(counts, session, causal=True)[:, :10]
    torch.testing.assert_close(causal_before, tokenizer(future, session, causal=True)[:, :10])
    assert not torch.allclose(tokenizer(counts, session)[:, :10], tokenizer(future, session)[:, :10])


def test_normalised_temporal_kernel_averages_the_valid_bins_only():
    from mini_decoders.nn.temporal_kernel import TemporalKernel

    kernel = TemporalKernel(3, 5, sd_bins=1.0)
    x = torch.full((2, 16, 3), 4.0)
    valid = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    valid[:, 7] = True
    out = kernel(x, valid, normalise=True)
    # a constant seen through any valid subset is still that constant (plain smoothing would shrink it)
    covered = torch.nn.functional.conv1d(valid[:, None].float(), torch.ones(1, 1, 5), padding=2)[:, 0] > 0
    torch.testing.assert_close(out[covered], torch.full_like(out[covered], 4.0))
    assert kernel(x, valid)[:, 7].max() < 4.0 - 1e-3 or valid.all()
    noisy = x + 100.0 * (~valid)[..., None]  # invalid bins carry anything: they never enter
    torch.testing.assert_close(kernel(noisy, valid, normalise=True), out)
