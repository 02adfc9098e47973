"""NDT2 behaviour: patch tokens, the MAE shuffle, context tokens, fine-tuning."""

import math

import numpy as np
import pytest
import torch

from mini_decoders.data.simulate import simulate
from mini_decoders.models.ndt2 import NDT2, collate_ndt2, random_visible
from mini_decoders.tokenizers.patches import PatchTokenizer

CONFIG = dict(NDT2.CONFIGS["tiny"], dim=32, neurons_per_token=16, layers=3, heads=2, decoder_layers=1, dropout=0.0,
              max_steps=4, batch_size=8, val_every=None, finetune_steps=3, log_every=1)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sessions():
    # Unit counts that do not fill patches of 16, and differ, so units are padded twice over.
    return simulate(n_sessions=3, n_trials=40, n_units=(52, 44, 60), seed=3).sessions


def make_model(sessions, **overrides):
    torch.manual_seed(0)
    model = NDT2.build(sessions, {**CONFIG, **overrides})
    model._register(sessions, with_velocity=True)
    return model.eval()


def make_batch(model, sessions, n_per_session=3):
    binned = [model._binned(s, "train", True) for s in sessions]
    items = model._items(sessions, binned, True)
    per_session = len(items) // len(sessions)
    chosen = [items[k * per_session + i] for k in range(len(sessions)) for i in range(n_per_session)]
    return collate_ndt2(chosen)


def heldin_visible(model, batch, ratio=0.5, seed=0):
    tokens, is_heldout = model.tokens(batch)
    return random_visible(tokens.real & ~is_heldout, ratio, torch.Generator().manual_seed(seed))


def test_patch_embedding_concatenates_per_neuron_rows_and_ignores_padding():
    tokenizer = PatchTokenizer(dim=8, neurons_per_token=4, max_count=3)
    counts = torch.tensor([[[0., 5., 2., 9., 1., 7.]]])  # (B=1, T=1, U=6): 2 patches, 2 padded neurons
    unit_mask = torch.tensor([[True] * 6])
    tokens = tokenizer.tokenize(counts, unit_mask, torch.ones(1, 1, dtype=torch.bool))
    assert tokens.counts.tolist() == [[[0, 3, 2, 3], [1, 3, 0, 0]]]  # clamped to max_count, padded with 0
    assert tokens.channel_mask.tolist() == [[[True] * 4, [True, True, False, False]]]
    embedded = tokenizer.embed_counts(tokens.counts, tokens.channel_mask)  # (1, 2, 8)
    table = tokenizer.count_embedding.weight
    expected = torch.cat([table[1], table[3], torch.zeros(2), torch.zeros(2)])
    torch.testing.assert_close(embedded[0, 1], expected)
    # whatever a padded channel holds, the token does not change
    garbage = tokens.counts.clone()
    garbage[0, 1, 2:] = 2
    torch.testing.assert_close(tokenizer.embed_counts(garbage, tokens.channel_mask), embedded)


def test_padded_channels_never_reach_loss_or_outputs(sessions):
    model = make_model(sessions)
    batch = make_batch(model, sessions)
    visible = heldin_visible(model, batch)
    reference = model(batch, visible=visible)
    assert (~batch["heldin_unit_mask"]).any()  # the batch really has padded units
    noisy = dict(batch)
    noisy["heldin"] = batch["heldin"].clone()
    noisy["heldin"][~batch["heldin_unit_mask"][:, None, :].expand_as(batch["heldin"])] = 7.0
    out = model(noisy, visible=visible)
    torch.testing.assert_close(out["log_rates"], reference["log_rates"])
    assert model.masked_poisson_loss(out) == model.masked_poisson_loss(reference)
    # and the loss counts exactly the real neurons of hidden tokens
    tokens = reference["tokens"]
    n_scored = int((tokens.channel_mask & reference["hidden"][..., None]).sum())
    real_neurons = batch["heldin_unit_mask"].sum(1) + batch["heldout_unit_mask"].sum(1)  # (B,)
    assert n_scored < int((real_neurons * batch["time_mask"].sum(1)).sum())


def test_encoder_sees_only_the_visible_tokens(sessions):
    model = make_model(sessions)
    batch = make_batch(model, sessions)
    lengths = []
    model.encoder[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    model.train()
    out = model(batch)  # the MAE mask drawn inside
    tokens, is_heldout = model.tokens(batch)
    n_heldin = (tokens.real & ~is_heldout).sum(1)
    n_visible = torch.floor(n_heldin * (1 - CONFIG["mask_ratio"])).long()
    assert lengths == [3 + int(n_visible.max())]  # 3 context tokens + the visible tokens, no more
    assert out["encoder_length"] < tokens.real.shape[1] / 2
    # every real held-in token that was not visible is scored, and held-out ones always are
    assert torch.equal(out["hidden"].sum(1), tokens.real.sum(1) - n_visible)
    assert out["hidden"][is_heldout & tokens.real].all()


def test_masked_values_never_leak(sessions):
    model = make_model(sessions)
    batch = make_batch(model, sessions)
    visible = heldin_visible(model, batch)
    reference = model(batch, visible=visible)
    tokens = reference["tokens"]
    # change every hidden held-in count and every held-out count: nothing the model outputs may move
    n_heldin_tokens = model.tokens(batch)[1].logical_not()[0].sum().item()
    hidden_heldin = reference["hidden"][:, :n_heldin_tokens]  # (B, T * P_in)
    n_bins = batch["heldin"].shape[1]
    neuron_hidden = hidden_heldin.reshape(len(visible), n_bins, -1).repeat_interleave(CONFIG["neurons_per_token"], -1)
    changed = dict(batch)
    changed["heldin"] = torch.where(neuron_hidden[..., :batch["heldin"].shape[2]], 3.0, batch["heldin"])
    changed["heldout"] = batch["heldout"] + 2.0
    assert not torch.equal(changed["heldin"], batch["heldin"])
    out = model(changed, visible=visible)
    torch.testing.assert_close(out["log_rates"], reference["log_rates"])
    assert not torch.equal(out["tokens"].counts, tokens.counts)  # the targets did change


def test_context_tokens_change_predictions(sessions):
    model = make_model(sessions)
    batch = make_batch(model, sessions[:1])
    visible = heldin_visible(model, batch)
    as_first = model(batch, visible=visible)["log_rates"]
    other = dict(batch, context=torch.as_tensor(model.context_rows(sessions[1].id)).expand(len(visible), 3))
    as_second = model(other, visible=visible)["log_rates"]
    assert (as_first - as_second).abs().max() > 1e-3


def test_batch_order_does_not_change_per_sample_outputs(sessions):
    model = make_model(sessions)
    batch = make_batch(model, sessions)
    visible = heldin_visible(model, batch)
    reference = model(batch, visible=visible, with_behavior=True)
    permutation = torch.randperm(len(visible), generator=torch.Generator().manual_seed(1))
    permuted = {k: v[permutation] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out = model(permuted, visible=visible[permutation], with_behavior=True)
    torch.testing.assert_close(out["log_rates"], reference["log_rates"][permutation], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["velocity"], reference["velocity"][permutation], atol=1e-5, rtol=1e-5)


def test_overfits_one_batch(sessions):
    model = make_model(sessions[:1], dim=64, layers=2, heads=4)
    batch = make_batch(model, sessions[:1], n_per_session=4)
    visible = heldin_visible(model, batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    losses = []
    for _ in range(120):
        loss = model.masked_poisson_loss(model(batch, visible=visible))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    # the best constant rate per scored neuron: the loss floor of a model that learned nothing
    out = model(batch, visible=visible)
    scored = (out["tokens"].channel_mask & out["hidden"][..., None]).float()
    counts = out["tokens"].counts.float()
    mean = ((counts * scored).sum() / scored.sum()).clamp_min(1e-6)
    constant = float(((mean - counts * torch.log(mean)) * scored).sum() / scored.sum())
    assert losses[-1] < 0.8 * constant and losses[-1] < 0.5 * losses[0]


def test_units_finetuning_changes_only_the_new_context_rows(sessions, tmp_path):
    model = make_model(sessions[:2])
    model.fit(sessions[:2], model.config, out_dir=None, progress=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    n_sessions_before = len(model.session_vocab)
    model.finetune([sessions[2]], "units", {"max_steps": 3}, out_dir=tmp_path, progress=False)
    assert sessions[2].id in model.session_index and len(model.specs) == 3
    for name, param in model.named_parameters():
        if name in ("session_vocab.weight", "unit_bias_vocab.weight", "heldout_weight_vocab.weight",
                    "skip_weight_vocab.weight"):  # per session
            assert torch.equal(param[:n_sessions_before], before[name])  # known sessions: untouched
            assert param.shape[0] == n_sessions_before + 1
        else:
            assert torch.equal(param, before[name]), f"{name} changed in units mode"
    model.eval()
    predictions = model.predict_trials(sessions[2], model._binned(sessions[2], "test", False))
    assert predictions["rates_heldout"].shape[-1] == int(sessions[2].units.heldout.sum())
    assert all(p.requires_grad for p in model.parameters())  # frozen only while fine-tuning


def test_units_finetuning_learns_the_new_session_row(sessions):
    import copy

    model = make_model(sessions[:2])
    twin = copy.deepcopy(model)
    torch.manual_seed(5)
    twin._register([sessions[2]], with_velocity=False)  # draws the new row exactly as finetune will
    initial = twin.session_vocab.weight[-1].detach()
    torch.manual_seed(5)
    model.finetune([sessions[2]], "units", {"max_steps": 3, "lr": 1e-2}, out_dir=None, progress=False)
    assert model.session_vocab.weight.shape[0] == 3
    assert (model.session_vocab.weight[-1] - initial).abs().max() > 1e-4


def test_layer_wise_lr_decay_multipliers(sessions):
    model = make_model(sessions)  # 3 encoder layers
    rules = model.lr_multipliers(new_prefixes=("behavior_",))
    decay = CONFIG["layer_decay"]
    assert rules["encoder.2."] == pytest.approx(decay)
    assert rules["encoder.0."] == pytest.approx(decay ** 3)
    assert rules["tokenizer."] == pytest.approx(decay ** 4)
    assert rules["session_vocab."] == rules["behavior_"] == 10.0
    groups = model.param_groups(rules, 0.01)
    mult_of = {id(p): g["lr_mult"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert mult_of[id(named["encoder.0.attention.to_qkv.weight"])] == pytest.approx(0.421875)
    assert mult_of[id(named["encoder.1.feedforward.proj_in.weight"])] == pytest.approx(0.5625)
    assert mult_of[id(named["tokenizer.count_embedding.weight"])] == pytest.approx(0.31640625)
    assert mult_of[id(named["decoder.0.attention.to_qkv.weight"])] == 1.0
    assert mult_of[id(named["behavior_readout.weight"])] == 10.0
    assert mult_of[id(named["subject_vocab.weight"])] == 10.0
    # a new session's offsets and skip learn at the pretraining rate: fine-tuning lr x 1 / finetune_lr_scale;
    # its pooled read-out slowly (finetune_pooled_lr_mult), so a few trials do not over-fit it
    pretraining_rate = 1.0 / CONFIG["finetune_lr_scale"]
    for name in ("unit_bias_vocab.weight", "skip_weight_vocab.weight"):
        assert mult_of[id(named[name])] == pytest.approx(pretraining_rate), name
    assert mult_of[id(named["heldout_weight_vocab.weight"])] == pytest.approx(CONFIG["finetune_pooled_lr_mult"])
    assert CONFIG["finetune_pooled_lr_mult"] != pretraining_rate  # the two rules are told apart
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(named["session_vocab.weight"])] == 0.0  # context rows are not eroded
    assert decay_of[id(named["encoder.0.attention.to_qkv.weight"])] == 0.01


def test_full_finetuning_decodes_velocity_and_round_trips(sessions, tmp_path):
    model = make_model(sessions[:2])
    model.finetune([sessions[2]], "full", {"max_steps": 3}, out_dir=tmp_path, progress=False)
    assert model.decodes_behavior and model.predicts == {"rates", "hand_vel"}
    binned = model._binned(sessions[2], "test", True)
    predictions = model.predict_trials(sessions[2], binned)
    assert predictions["hand_vel"].shape == binned.behavior["hand_vel"].shape
    assert np.isfinite(predictions["rates_heldin"]).all() and (predictions["rates_heldin"] > 0).all()
    # state_dict + extra_state rebuild the same model from the specs (what load_run does)
    fresh = NDT2(model.specs, model.config)
    fresh.load_state_dict(model.state_dict())
    fresh.load_extra_state(model.extra_state())
    again = fresh.eval().predict_trials(sessions[2], binned)
    for key in predictions:
        np.testing.assert_allclose(again[key], predictions[key], rtol=1e-5, atol=1e-6)


def test_finetuning_validates_often_enough_to_catch_an_early_best_step(sessions):
    schedule = NDT2.finetune_schedule({**CONFIG, "finetune_steps": 200, "val_every": 100, "finetune_validations": 20})
    assert schedule == {"max_steps": 200, "warmup_steps": 20, "val_every": 10}
    assert NDT2.finetune_schedule({**CONFIG, "val_every": None})["val_every"] is None  # the profile never validates
    # a fine-tuning run validates on that grid, not on the pretraining's val_every
    model = make_model(sessions[:2], val_every=1000, finetune_steps=4, finetune_validations=2)
    history = model.finetune([sessions[2]], "full", {}, out_dir=None, progress=False)
    assert [r["step"] for r in history["records"] if "val_co_bps" in r] == [2, 4]


def test_units_unseen_are_refused_with_a_hint(sessions):
    model = make_model(sessions[:1])
    with pytest.raises(Exception, match="finetune"):
        model.predict_trials(sessions[1], model._binned(sessions[1], "test", False))


def test_train_and_load_run_through_the_run_api(sessions, tmp_path, monkeypatch):
    from mini_decoders.models import registry
    from mini_decoders.run import load_run, train

    monkeypatch.setitem(registry.MODELS, "ndt2", NDT2)
    run = train("ndt2", sessions[:2], profile="tiny", out=tmp_path / "run", max_steps=3, progress=False)
    assert run.metrics["mean"]["co_bps"] is not None and np.isfinite(run.metrics["mean"]["co_bps"])
    loaded = load_run(tmp_path / "run")
    first, again = run.predict(sessions[:1]), loaded.predict(sessions[:1])
    for key in ("rates_heldin", "rates_heldout"):
        np.testing.assert_allclose(again[sessions[0].id][key], first[sessions[0].id][key], rtol=1e-5, atol=1e-6)


def test_unit_bias_starts_at_each_neurons_log_mean_count_in_its_patch_slot(sessions):
    from mini_decoders.data.binning import bin_trials

    model = make_model(sessions)
    n = model.neurons_per_token
    for session in sessions:
        spec = model.specs[model.session_index[session.id]]
        binned = bin_trials(session, model.bin_size, split="train", behavior=())
        mean = binned.counts[binned.mask].mean(0)
        row = model.unit_bias_vocab.weight[int(model.unit_bias_vocab.index([session.id])[0])].detach().numpy()
        offset = int(model.config["max_heldin_patches"]) * n
        np.testing.assert_allclose(row[:spec.n_heldin], np.log(np.clip(mean[spec.heldin_index], 1e-3, None)), rtol=1e-5)
        np.testing.assert_allclose(row[offset:offset + spec.n_heldout],
                                   np.log(np.clip(mean[spec.heldout_index], 1e-3, None)), rtol=1e-5)
        assert not row[spec.n_heldin:offset].any()  # empty slots stay 0
    # the offset reaches the log-rates of exactly the tokens of that session, slot by slot
    batch = make_batch(model, sessions)
    with torch.no_grad():
        out = model(batch, visible=heldin_visible(model, batch))
        model.unit_bias_vocab.weight[0] += 1.0  # session 0's row
        bumped = model(batch, visible=heldin_visible(model, batch))
    first = batch["context"][:, 0] == int(model.unit_bias_vocab.index([sessions[0].id])[0])
    torch.testing.assert_close(bumped["log_rates"][first], out["log_rates"][first] + 1.0)
    torch.testing.assert_close(bumped["log_rates"][~first], out["log_rates"][~first])


def test_pooled_heldout_readout_matches_a_slow_loop(sessions):
    model = make_model(sessions, heldout_kernel_bins=3)
    batch = make_batch(model, sessions, n_per_session=2)
    tokens, is_heldout = model.tokens(batch)
    torch.manual_seed(1)
    decoded = torch.randn(*tokens.real.shape, model.config["dim"])
    with torch.no_grad():
        fast = model.pooled_heldout_log_rates(decoded, tokens, is_heldout, tokens.real & ~is_heldout, batch)
    n, offset = model.neurons_per_token, int(model.config["max_heldin_patches"])
    kernel = model.heldout_kernel.weight.detach()[:, 0]  # (D, 3)
    n_bins = batch["time_mask"].shape[1]
    for b in range(len(decoded)):
        weight = model.heldout_weight_vocab(batch["context"][b:b + 1, 0]).detach().view(-1, model.heldout_slots)
        means = torch.zeros(n_bins, decoded.shape[-1])
        for t in range(n_bins):
            chosen = [i for i in range(tokens.real.shape[1])
                      if tokens.real[b, i] and not is_heldout[b, i] and tokens.time[b, i] == t]
            if chosen and batch["time_mask"][b, t]:
                means[t] = decoded[b, chosen].mean(0)
        for i in range(tokens.real.shape[1]):
            if not (tokens.real[b, i] and is_heldout[b, i]):
                continue
            t = int(tokens.time[b, i])
            smoothed = sum(kernel[:, k] * means[t + k - 1] for k in range(3) if 0 <= t + k - 1 < n_bins)
            for j in range(n):
                if tokens.channel_mask[b, i, j]:
                    slot = (int(tokens.space[b, i]) - offset) * n + j
                    assert float(fast[b, i, j]) == pytest.approx(float(smoothed @ weight[:, slot]), abs=1e-4)


def test_heldout_skip_reads_visible_counts_only(sessions):
    model = make_model(sessions, heldout_skip=True)
    with torch.no_grad():
        model.skip_weight_vocab.weight.normal_()  # a trained skip: every held-in slot matters
    batch = make_batch(model, sessions, n_per_session=2)
    tokens, is_heldout = model.tokens(batch)
    visible = random_visible(tokens.real & ~is_heldout, 0.5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model.skip_log_rates(tokens, is_heldout, visible, batch)
        hidden_changed = model.tokens({**batch, "heldin": batch["heldin"] + 3.0})[0]
        hidden_changed.counts = torch.where(visible[..., None], tokens.counts, hidden_changed.counts)
        after = model.skip_log_rates(hidden_changed, is_heldout, visible, batch)
        shown_changed = model.tokens({**batch, "heldin": batch["heldin"] + 3.0})[0]
        changed = model.skip_log_rates(shown_changed, is_heldout, visible, batch)
    torch.testing.assert_close(after, before)  # hidden tokens never reach the held-out rates
    assert not torch.allclose(changed, before)


def test_heldout_skip_is_smoothing_then_a_linear_map_when_all_is_visible(sessions):
    model = make_model(sessions, heldout_skip=True, heldout_kernel_bins=3)
    with torch.no_grad():
        model.skip_weight_vocab.weight.normal_()
    batch = make_batch(model, sessions, n_per_session=1)
    tokens, is_heldout = model.tokens(batch)
    with torch.no_grad():
        fast = model.skip_log_rates(tokens, is_heldout, tokens.real & ~is_heldout, batch)
    kernel = model.skip_kernel.weight.detach()[0, 0]  # (3,)
    for b in range(len(batch["heldin"])):  # the slow loop: per neuron, a weighted mean over real neighbours
        counts, n_bins = batch["heldin"][b].float(), int(batch["time_mask"][b].sum())
        smoothed = torch.zeros_like(counts)
        for t in range(n_bins):
            near = [(k, t + k - 1) for k in range(3) if 0 <= t + k - 1 < n_bins]
            smoothed[t] = sum(kernel[k] * counts[s] for k, s in near) / sum(kernel[k].abs() for k, _ in near)
        weight = model.skip_weight_vocab(batch["context"][b:b + 1, 0]).detach().view(model.heldin_slots, -1)
        expected = smoothed @ weight[:counts.shape[1]]
        torch.testing.assert_close(fast[b, :n_bins], expected[:n_bins], rtol=1e-4, atol=1e-4)


def test_glm_start_puts_the_skip_at_the_poisson_glm_optimum(sessions):
    alpha = 0.01
    model = make_model(sessions, heldout_skip=True, skip_init="glm", skip_glm_alphas=(alpha,))
    session = sessions[0]
    index, spec = model.spec_for(session)
    binned = model._binned(session, "train", False)
    features = torch.from_numpy(model.skip_features(binned, spec)[binned.mask]).double()  # (M, U_in)
    targets = torch.from_numpy(binned.counts[..., spec.heldout_index][binned.mask]).double()  # (M, U_out)
    row = model.skip_weight_vocab.weight[int(model.skip_weight_vocab.index([session.id])[0])].detach()
    weights = row.view(model.heldin_slots, model.heldout_slots)[:spec.n_heldin, :spec.n_heldout].double()
    offset = model.config["max_heldin_patches"] * model.neurons_per_token
    bias_row = model.unit_bias_vocab.weight[int(model.unit_bias_vocab.index([session.id])[0])].detach()
    intercept = bias_row[offset:offset + spec.n_heldout].double()
    # Stationarity of the penalised Poisson GLM: mean gradient of the NLL + alpha W = 0, and the
    # intercepts' gradient (unpenalised) = 0.
    residual = torch.exp(features @ weights + intercept) - targets  # (M, U_out)
    gradient = features.T @ residual / len(features)
    assert weights.abs().max() > 1e-3  # a real fit, not zeros
    torch.testing.assert_close(gradient, -alpha * weights, atol=1e-4, rtol=0)
    torch.testing.assert_close(residual.mean(0), torch.zeros(spec.n_heldout, dtype=torch.float64), atol=1e-4, rtol=0)
    # Untrained, the model's own held-out rates with every token visible are that GLM's: the pooled
    # transformer path starts at zero.
    with torch.no_grad():
        predicted = model.predict_trials(session, binned)["rates_heldout"][binned.mask]
    expected = torch.exp(features @ weights + intercept).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=2e-3, atol=1e-5)


def test_new_session_on_a_known_array_shrinks_its_glm_towards_that_array(sessions):
    """A new session of a known subject with the same unit counts (the same array, another day) offers the
    known session's skip weights as the GLM's centre; val trials choose it when it predicts better."""
    drifted = simulate(n_sessions=3, n_trials=60, n_units=48, seed=4, array_drift=0.1).sessions  # A, B, A again
    model = make_model(drifted[:2], heldout_skip=True, skip_init="glm", skip_glm_alphas=(0.01,))
    new, (_, spec) = drifted[2], model.spec_for(drifted[0])
    model.session_info[new.id] = {"subject": new.subject, "task": new.task}
    priors = model._same_array_priors(new, spec, ["sim_s0", "sim_s1"])
    assert len(priors) == 1  # subject A's array only; B is another subject
    row = model.skip_weight_vocab.weight[int(model.skip_weight_vocab.index(["sim_s0"])[0])].detach()
    np.testing.assert_array_equal(priors[0], row.view(model.heldin_slots, -1)[:spec.n_heldin, :spec.n_heldout].numpy())
    model.config = {**model.config, "finetune_glm_prior": "none"}
    assert model._same_array_priors(new, spec, ["sim_s0", "sim_s1"]) == []
    # A strong penalty: around zero it predicts (nearly) each neuron's mean; around the known array's
    # weights it keeps them, and the val trials prefer that.
    for centre, expected in (("subject", priors[0]), ("none", np.zeros_like(priors[0]))):
        fresh = NDT2.build(drifted[:2], {**CONFIG, "heldout_skip": True, "skip_init": "glm", "skip_glm_alphas": (0.01,),
                                         "finetune_glm_prior": centre})
        fresh._register(drifted[:2], with_velocity=False)
        fresh.skip_weight_vocab.weight.data.copy_(model.skip_weight_vocab.weight.data[:2])  # the same known rows
        fresh.config = {**fresh.config, "skip_glm_alphas": (100.0,)}
        fresh._register([new], with_velocity=False)
        index = int(fresh.skip_weight_vocab.index([new.id])[0])
        weights = fresh.skip_weight_vocab.weight[index].detach().view(fresh.heldin_slots, -1)
        np.testing.assert_allclose(weights[:spec.n_heldin, :spec.n_heldout].numpy(), expected, atol=0.02)


@pytest.mark.parametrize("overrides, message", [
    (dict(skip_init="ridge"), "skip_init must be 'zero' or 'glm', got 'ridge'"),
    (dict(skip_init="zero", skip_learned=False), "skip_learned=False needs skip_init='glm'"),
])
def test_bad_skip_settings_are_one_clear_error(sessions, overrides, message):
    from mini_decoders.errors import RunError

    with pytest.raises(RunError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NDT2.build(sessions, {**CONFIG, "heldout_skip": True, **overrides})
