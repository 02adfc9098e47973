"""VQ tokens: the quantiser's gradient, EMA, restarts and perplexity; the tokenizer; the model end to end."""

import copy
import math

import numpy as np
import pytest
import torch

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.nn.quantize import VectorQuantizer, kmeans, perplexity
from mini_decoders.tokenizers.vq import VQTokenizer, split_windows, window_mask

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# The vector quantiser

def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 4)
    quantizer = VectorQuantizer(8, 4, ema_decay=0.99).eval()
    x = torch.randn(32, 6)
    out = quantizer(encoder(x))
    target = torch.randn(32, 4)
    ((out.quantized - target) ** 2).sum().backward()
    # Identity backward: the encoder output's gradient is the loss gradient at the quantised value.
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    z = encoder(x).detach().requires_grad_(True)
    out = quantizer(z)
    ((out.quantized - target) ** 2).sum().backward()
    torch.testing.assert_close(z.grad, 2 * (out.quantized.detach() - target))


def test_commitment_loss_pulls_the_encoder_towards_its_code():
    quantizer = VectorQuantizer(4, 2, beta=0.25).eval()
    z = torch.tensor([[0.3, -0.2]], requires_grad=True)
    out = quantizer(z)
    out.commitment_loss.backward()
    code = quantizer.codebook[out.codes[0]]
    torch.testing.assert_close(out.commitment_loss, 0.25 * ((z.detach() - code) ** 2).mean())
    # The gradient points from the code to z: a step against it moves z towards the code.
    torch.testing.assert_close(z.grad[0], 0.25 * 2 * (z.detach()[0] - code) / 2)


@pytest.mark.parametrize("cosine", [False, True])
def test_quantised_output_is_always_a_codebook_row(cosine):
    torch.manual_seed(1)
    quantizer = VectorQuantizer(16, 5, cosine=cosine)
    quantizer(torch.randn(40, 5))  # the first training call initialises the codebook by k-means
    for training in (True, False):
        quantizer.train(training)
        z = torch.randn(3, 7, 5) * 3 + 1
        rows = quantizer.codebook.detach().clone()  # training moves the codebook *after* choosing
        out = quantizer(z)
        assert out.quantized.shape == z.shape and out.codes.shape == (3, 7)
        # Every output vector equals one row *exactly*, and it is the nearest one to the input.
        exact = (out.quantized.reshape(-1, 1, 5) == rows[None]).all(-1)  # (21, K)
        assert exact.any(1).all()
        torch.testing.assert_close(out.quantized.detach(), rows[out.codes])
        prepared = torch.nn.functional.normalize(z, dim=-1) if cosine else z
        distances = ((prepared.reshape(-1, 1, 5) - rows[None]) ** 2).sum(-1)
        assert torch.equal(out.codes.reshape(-1), distances.argmin(1))
        if cosine:
            torch.testing.assert_close(rows.norm(dim=-1), torch.ones(16))


def test_ema_update_moves_a_code_toward_its_assigned_inputs():
    quantizer = VectorQuantizer(2, 2, ema_decay=0.9, restart_threshold=0.0)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
        quantizer.ema_sum_stat.copy_(quantizer.codebook * 1.0)
        quantizer.ema_count_stat.fill_(1.0)
    quantizer.initialized.fill_(1)
    quantizer.train()
    inputs = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 2.0]])  # all nearest to code 0, mean (5/3, 2)
    before = quantizer.codebook.clone()
    quantizer(inputs)
    after = quantizer.codebook
    # Closer to the inputs' mean than before, by the EMA's rule (decay 0.9).
    mean = inputs.mean(0)
    assert (after[0] - mean).norm() < (before[0] - mean).norm()
    count = 0.9 * 1.0 + 0.1 * 3
    expected = (0.9 * before[0] + 0.1 * inputs.sum(0)) / count
    torch.testing.assert_close(after[0], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after[1], before[1], atol=1e-4, rtol=1e-4)  # no inputs: stays put
    # Repeated updates converge on the mean of the assigned inputs (online k-means).
    for _ in range(200):
        quantizer(inputs)
    torch.testing.assert_close(quantizer.codebook[0], mean, atol=1e-3, rtol=1e-3)
    # In eval mode the codebook never moves.
    quantizer.eval()
    frozen = quantizer.codebook.clone()
    quantizer(inputs + 5)
    assert torch.equal(quantizer.codebook, frozen)


def test_dead_codes_are_restarted_on_inputs():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, 3, ema_decay=0.9, restart_threshold=0.5, usage_decay=0.5)
    data = torch.randn(200, 3) * 0.1 + torch.tensor([5.0, 5.0, 5.0])
    with torch.no_grad():  # every code but one far from the data: collapse
        quantizer.codebook.copy_(torch.full((8, 3), -50.0))
        quantizer.codebook[0] = torch.tensor([5.0, 5.0, 5.0])
    quantizer.initialized.fill_(1)
    quantizer.train()
    for _ in range(5):
        out = quantizer(data)
    assert int(out.codes.unique().numel()) == 1 and float(out.perplexity) == pytest.approx(1.0)
    dead = quantizer.dead_codes()
    assert dead.sum() == 7 and not dead[0]
    restarted = quantizer.restart_dead_codes(data, torch.Generator().manual_seed(0))
    assert restarted == 7
    # Restarted codes sit on (jittered) data points and are no longer dead.
    nearest = torch.cdist(quantizer.codebook, data).min(1).values
    assert (nearest[dead] < 0.01).all()
    torch.testing.assert_close(quantizer.codebook[0], torch.full((3,), 5.0), atol=0.05, rtol=0)  # the live one stays
    assert not quantizer.dead_codes().any()
    assert quantizer(data).codes.unique().numel() > 1
    assert quantizer.restart_dead_codes(data) == 0


def test_perplexity_equals_codebook_size_for_uniform_usage():
    for k in (2, 7, 256):
        assert float(perplexity(torch.full((k,), 3.0))) == pytest.approx(k, rel=1e-5)
    assert float(perplexity(torch.tensor([10.0, 0.0, 0.0]))) == pytest.approx(1.0)
    counts = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = counts / counts.sum()
    assert float(perplexity(counts)) == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)
    quantizer = VectorQuantizer(5, 2)
    assert quantizer.usage_perplexity() == pytest.approx(5, rel=1e-5)  # starts uniform


def test_kmeans_init_puts_one_code_on_each_cluster():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    data = (centres[:, None] + 0.1 * torch.randn(4, 50, 2)).reshape(-1, 2)
    found, sizes = kmeans(data, 4, iters=20, generator=torch.Generator().manual_seed(3))
    assert torch.cdist(centres, found).min(1).values.max() < 0.2
    assert sizes.sum() == 200
    quantizer = VectorQuantizer(4, 2)
    quantizer.kmeans_init(data, generator=torch.Generator().manual_seed(3))
    assert int(quantizer.initialized) == 1
    assert quantizer.eval()(data).perplexity > 3.9


def test_codebook_without_ema_learns_by_gradient():
    quantizer = VectorQuantizer(3, 2, ema_decay=None)
    assert isinstance(quantizer.codebook, torch.nn.Parameter)
    z = torch.randn(10, 2)
    out = quantizer(z)
    out.loss.backward()
    assert quantizer.codebook.grad is not None and quantizer.codebook.grad.abs().sum() > 0


@pytest.mark.parametrize("ema_decay", [0.9, None])
def test_padded_vectors_change_neither_the_codebook_nor_the_losses(ema_decay):
    torch.manual_seed(0)
    z = torch.randn(3, 7, 4)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 4:] = False
    valid[2, 2:] = False  # 9 of 21 vectors are padding
    padded = VectorQuantizer(6, 4, ema_decay=ema_decay, usage_decay=0.5).train()
    alone = copy.deepcopy(padded)
    for padding_value in (5.0, -3.0):  # padding far from the data: it would grab (and drag) a code
        z_padded = torch.where(valid[..., None], z, torch.full_like(z, padding_value))
        # The first call starts the codebook by k-means (random draws: same seed), the second is an EMA step.
        for _ in range(2):
            torch.manual_seed(1)
            with_padding = padded(z_padded, valid=valid)
            torch.manual_seed(1)
            real_only = alone(z[valid])
            assert with_padding.commitment_loss.item() == pytest.approx(real_only.commitment_loss.item(), rel=1e-6)
            assert with_padding.codebook_loss.item() == pytest.approx(real_only.codebook_loss.item(), rel=1e-6)
            assert with_padding.perplexity.item() == pytest.approx(real_only.perplexity.item(), rel=1e-6)
            assert torch.equal(with_padding.codes[valid], real_only.codes)
            for name, value in alone.state_dict().items():
                torch.testing.assert_close(padded.state_dict()[name], value, rtol=1e-6, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------------
# The tokenizer

def test_windows_and_codes_per_window():
    values = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    windows = split_windows(values, 2)
    assert windows.shape == (2, 3, 2, 3)
    torch.testing.assert_close(windows[:, :2].reshape(2, 4, 3), values[:, :4])
    assert (windows[:, 2, 1] == 0).all()  # the last window is zero-padded
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    assert window_mask(valid, 2).tolist() == [[True, True, True], [True, True, False]]

    torch.manual_seed(0)
    tokenizer = VQTokenizer([6, 4], [2, 3], window=2, dim=16, code_dim=4, num_codes=8, decoder_layers=1, heads=2,
                            max_bins=16).eval()
    counts = torch.poisson(torch.full((2, 5, 6), 1.0))
    counts[1, :, 4:] = 0  # session 1 has only 4 held-in units
    session = torch.tensor([0, 1])
    log_rates, quantized, z = tokenizer(counts, session, valid)
    assert log_rates.shape == (2, 6, 6 + 3) and quantized.codes.shape == (2, 3) and z.shape == (2, 3, 4)
    assert torch.equal(tokenizer.tokenize(counts, session, valid), quantized.codes)
    # A window's code depends on its own window only (no encoder context here).
    changed = counts.clone()
    changed[0, 4] += 3
    codes = tokenizer.tokenize(changed, session, valid)
    assert torch.equal(codes[:, :2], quantized.codes[:, :2])
    # Padded bins are read as silence: changing them changes nothing.
    padded = counts.clone()
    padded[1, 3:] += 7
    torch.testing.assert_close(tokenizer.encode(padded, session, valid), z)


# ------------------------------------------------------------------------------------------------
# The model

@pytest.fixture(scope="module")
def dataset():
    # Two sessions with different unit counts: one codebook for both.
    return simulate(n_sessions=2, n_trials=50, n_units=(30, 24), seed=5)


def _config(**overrides):
    from mini_decoders.models.vq import VQ

    return dict(VQ.CONFIGS["tiny"], seed=0, device="cpu", precision="fp32", **overrides)


def test_masked_code_loss_scores_only_hidden_tokens(dataset):
    from mini_decoders.models.code_transformer import collate_codes, random_window_mask
    from mini_decoders.models.vq import VQ

    torch.manual_seed(0)
    model = VQ.build(dataset.sessions, _config()).eval()
    items = model._code_items(dataset.sessions, "train", with_behavior=False)[:6]
    batch = collate_codes(items)
    hidden = random_window_mask(batch["window_valid"], 0.4, torch.Generator().manual_seed(0))
    assert hidden.any(1).all() and not (hidden & ~batch["window_valid"]).any()

    def loss(b):
        return model.code_loss(b, torch.Generator().manual_seed(0))[0].item()

    reference = loss(batch)
    visible_changed = dict(batch, codes=torch.where(hidden, batch["codes"], (batch["codes"] + 1) % model.tokenizer.num_codes))
    hidden_changed = dict(batch, codes=torch.where(hidden, (batch["codes"] + 1) % model.tokenizer.num_codes, batch["codes"]))
    # Visible tokens are inputs (the loss changes through the context), hidden ones are the targets:
    # with the inputs fixed, changing the hidden targets changes the loss.
    assert loss(hidden_changed) != pytest.approx(reference, rel=1e-4)
    assert loss(visible_changed) != pytest.approx(reference, rel=1e-6)


def test_model_trains_predicts_and_compresses(dataset, tmp_path):
    from mini_decoders.models.vq import PAD_CODE, VQ
    from mini_decoders.run import load_run, train

    run = train("vq", dataset.sessions, profile="tiny", out=tmp_path / "run", progress=False)
    model = run.model
    records = run.metrics["training"]["history"]
    assert records["stage_steps"] == model.stage_steps()
    session = dataset.sessions[1]
    binned = bin_trials(session, 0.02, split="test", behavior=("hand_vel",))
    predicted = model.predict_trials(session, binned)
    n, t = binned.counts.shape[:2]
    assert predicted["rates_heldin"].shape == (n, t, session.units.heldin_index.size)
    assert predicted["rates_heldout"].shape == (n, t, session.units.heldout_index.size)
    assert predicted["hand_vel"].shape == (n, t, 2)
    assert np.isfinite(predicted["rates_heldin"]).all() and (predicted["rates_heldin"] > 0).all()
    codes, z = model.encode_trials(session, binned)
    assert codes.shape == (n, -(-t // model.window)) and ((codes >= 0) & (codes < model.tokenizer.num_codes) |
                                                           (codes == PAD_CODE)).all()
    scores = run.metrics["sessions"][session.id]
    assert {"co_bps", "vel_r2"} <= set(scores)
    masked = model.masked_code_scores(session, binned)
    assert 0 <= masked["accuracy"] <= 1 and masked["bits"] > 0
    assert masked["unigram_bits"] <= math.log2(model.tokenizer.num_codes) + 1e-9
    # Compression: log2(K) bits per code, one code per window of 20 ms bins.
    assert model.codes_per_second() == pytest.approx(1 / (model.window * 0.02))
    assert model.bits_per_second() == pytest.approx(math.log2(model.tokenizer.num_codes) * model.codes_per_second())
    assert model.bits_per_second(codes) <= model.bits_per_second() + 1e-9
    # The run folder loads back to the same predictions (codebook and velocity statistics included).
    loaded = load_run(tmp_path / "run")
    again = loaded.model.predict_trials(session, binned)
    for key in predicted:
        np.testing.assert_allclose(again[key], predicted[key], rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.model, VQ)


def test_tokenizer_learns_and_codebook_stays_in_use(dataset):
    from mini_decoders.metrics import bits_per_spike
    from mini_decoders.models.vq import VQ

    session = dataset.sessions[0]
    torch.manual_seed(0)
    config = _config(max_steps=150, stage_fractions=[1.0, 0.0, 0.0], num_codes=16, restart_every=10, lr=5e-3)
    model = VQ.build([session], config)
    history = model.fit([session], config, progress=False)
    losses = [r["loss"] for r in history["records"] if "loss" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    binned = bin_trials(session, 0.02, split="test")
    predicted = model.predict_trials(session, binned)
    observed = np.where(binned.mask[..., None], binned.counts, np.nan)[..., session.units.heldin_index]
    assert bits_per_spike(predicted["rates_heldin"], observed) > 0.05
    codes, _ = model.encode_trials(session, binned)
    used = perplexity(torch.from_numpy(np.bincount(codes[codes >= 0], minlength=16)))
    assert used > 0.5 * 16


def test_no_restarts_collapse_with_bad_initialisation(dataset):
    """Without k-means init and with a codebook far from the data, only dead-code restarts recover."""
    from mini_decoders.models.vq import VQ

    session = dataset.sessions[0]
    usage = {}
    for restart_every in (0, 5):
        torch.manual_seed(0)
        config = _config(max_steps=40, stage_fractions=[1.0, 0.0, 0.0], num_codes=16, kmeans_init=False,
                         restart_every=restart_every)
        model = VQ.build([session], config)
        with torch.no_grad():
            model.tokenizer.quantizer.codebook.add_(20.0)
            model.tokenizer.quantizer.ema_sum_stat.copy_(model.tokenizer.quantizer.codebook)
        model.tokenizer.quantizer.initialized.fill_(1)
        model.fit([session], config, progress=False)
        codes, _ = model.encode_trials(session, bin_trials(session, 0.02, split="train"))
        usage[restart_every] = len(np.unique(codes[codes >= 0]))
    assert usage[0] <= 2 < 8 <= usage[5]


def test_session_without_heldin_units_is_refused(dataset):
    from mini_decoders.errors import DataError
    from mini_decoders.models.base import SessionSpec
    from mini_decoders.models.vq import VQ

    spec = SessionSpec("s", ["a", "b"], [True, True], {"hand_vel": 2})
    with pytest.raises(DataError, match="held-in"):
        VQ([spec], _config())
    with pytest.raises(Exception, match="stage_fractions"):
        VQ.build(dataset.sessions, _config(stage_fractions=[1.0, 0.0]))


def test_predictions_are_a_function_of_the_codes_only(dataset, monkeypatch):
    """Rates and velocity come from the codes: other spikes with the same codes predict the same."""
    from mini_decoders.models.vq import VQ

    session = dataset.sessions[0]
    torch.manual_seed(0)
    model = VQ.build([session], _config(behavior_reads_decoder=True)).eval()
    binned = bin_trials(session, 0.02, split="test", behavior=("hand_vel",))
    codes, z = model.encode_trials(session, binned)
    first = model.predict_trials(session, binned)
    shuffled = binned.subset(np.arange(len(binned.starts)))
    shuffled.counts = np.random.default_rng(0).poisson(2.0, size=binned.counts.shape).astype(np.float32)
    assert not np.array_equal(model.encode_trials(session, shuffled)[0], codes)
    monkeypatch.setattr(model, "encode_trials", lambda s, b: (codes, z))
    second = model.predict_trials(session, shuffled)
    for key in first:
        np.testing.assert_allclose(second[key], first[key], rtol=1e-6, atol=1e-6)


def test_cli_trains_vq_and_writes_predictions(tmp_path):
    import h5py

    from mini_decoders.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "data"), "--sessions", "1", "--trials", "30"]) == 0
    nwb = str(next((tmp_path / "data").glob("*.nwb")))
    assert main(["train", "vq", "--data", nwb, "--profile", "tiny", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["predict", str(tmp_path / "run"), "--data", nwb, "--out", str(tmp_path / "pred.h5")]) == 0
    with h5py.File(tmp_path / "pred.h5", "r") as file:
        group = file[next(iter(file))]
        assert {"rates_heldin", "rates_heldout", "hand_vel"} <= set(group)
        assert group["hand_vel"].shape[-1] == 2 and group["rates_heldin"].shape[0] == 30


def test_tied_code_head_scores_codes_by_distance_in_codebook_space():
    from mini_decoders.models.code_transformer import CodeTransformer

    torch.manual_seed(0)
    model = CodeTransformer(4, 10, 1, 8, 1, 2, 0.0, 16, 2, per_code_embedding=False, tied_head=True)
    codebook = torch.randn(10, 4)
    with torch.no_grad():  # every input predicts the point codebook[3]
        model.code_query.weight.zero_()
        model.code_query.bias.copy_(codebook[3])
    logits = model.code_logits(torch.randn(5, 8), codebook)
    assert (logits.argmax(1) == 3).all()
    expected = -0.5 * ((codebook[3] - codebook) ** 2).sum(1)  # up to a constant per row
    torch.testing.assert_close(logits - logits[:, :1], (expected - expected[0]).expand(5, -1), rtol=1e-5, atol=1e-5)


def test_behaviour_stage_starts_from_the_code_model_and_leaves_tokenizer_and_code_model_intact(dataset):
    from mini_decoders.models.vq import VQ

    session = dataset.sessions[0]
    torch.manual_seed(0)
    config = _config(stage_fractions=[1.0, 1.0, 0.0], max_steps=40)
    model = VQ.build([session], config)
    model.fit([session], config, progress=False)
    frozen = {f"{name}.{k}": v.clone() for name in ("code_model", "tokenizer")
              for k, v in getattr(model, name).state_dict().items()}
    model._fit_stage("behavior", [session], 10, out_dir=None, resume=False, progress=False)
    for name in ("code_model", "tokenizer"):  # the codebook too: codes must not move under the decoder
        for k, v in getattr(model, name).state_dict().items():
            assert torch.equal(v, frozen[f"{name}.{k}"]), f"{name}.{k} changed"
    changed = [k for k, v in model.behavior_model.state_dict().items()
               if not torch.equal(v, frozen.get(f"code_model.{k}", v))]
    assert any(k.startswith("blocks.") for k in changed) and "behavior_head.weight" in changed


# ------------------------------------------------------------------------------------------------
# The paper's recipe (LaBraM's): count tokens, codes only as targets, symmetric masking

def _count_batch(dataset, **overrides):
    from mini_decoders.models.code_transformer import collate_codes
    from mini_decoders.models.vq import VQ

    torch.manual_seed(0)
    config = {**VQ.recipe_config("tiny", "paper"), "seed": 0, "device": "cpu", "precision": "fp32", **overrides}
    model = VQ.build(dataset.sessions, config).eval()
    batch = collate_codes(model._code_items(dataset.sessions, "train", with_behavior=False)[:6])
    return model, batch


def test_count_tokens_of_hidden_windows_never_reach_the_code_model(dataset):
    from mini_decoders.models.code_transformer import random_window_mask

    model, batch = _count_batch(dataset)
    assert model.reads_counts and batch["windows"].shape[:2] == batch["codes"].shape
    hidden = random_window_mask(batch["window_valid"], 0.5, torch.Generator().manual_seed(0))

    def outputs(windows):
        x = model.code_model(batch["session"], batch["window_valid"], hidden, windows=windows)
        return model.code_model.code_logits(x[batch["window_valid"]], model.tokenizer.quantizer.codebook)

    reference = outputs(batch["windows"])
    # Any counts in the hidden windows: every logit of every window is the same.
    noise = torch.poisson(torch.full_like(batch["windows"], 3.0))
    torch.testing.assert_close(outputs(torch.where(hidden[..., None, None], noise, batch["windows"])), reference,
                               rtol=0, atol=0)
    # Visible windows are the input: changing them changes the predictions.
    assert not torch.allclose(outputs(torch.where(hidden[..., None, None], batch["windows"], noise)), reference)


def test_masked_code_loss_scores_each_pass_on_its_hidden_windows(dataset):
    from mini_decoders.models.code_transformer import random_window_mask

    model, batch = _count_batch(dataset)
    hidden = random_window_mask(batch["window_valid"], 0.5, torch.Generator().manual_seed(0))
    complement = batch["window_valid"] & ~hidden
    other = (batch["codes"] + 1) % model.tokenizer.num_codes
    for mask in (hidden, complement):
        loss = model.masked_pass(batch, mask)[0].item()
        # The codes are targets only: changing those outside the hidden windows changes nothing ...
        assert model.masked_pass(dict(batch, codes=torch.where(mask, batch["codes"], other)), mask)[0].item() == loss
        # ... and those inside change the loss.
        assert model.masked_pass(dict(batch, codes=torch.where(mask, other, batch["codes"])), mask)[0].item() != \
            pytest.approx(loss, rel=1e-4)
    # LaBraM's Eq. 12: the loss of the drawn mask plus the loss of its complement.
    total = model.code_loss(batch, torch.Generator().manual_seed(0))[0].item()
    assert total == pytest.approx(model.masked_pass(batch, hidden)[0].item()
                                  + model.masked_pass(batch, complement)[0].item(), rel=1e-6)
    one_pass, _ = _count_batch(dataset, symmetric_mask=False)
    assert one_pass.code_loss(batch, torch.Generator().manual_seed(0))[0].item() == \
        pytest.approx(one_pass.masked_pass(batch, hidden)[0].item(), rel=1e-6)


def test_paper_recipe_decodes_velocity_from_counts_and_rates_from_codes(dataset, tmp_path, monkeypatch):
    from mini_decoders.errors import RunError
    from mini_decoders.models.vq import VQ
    from mini_decoders.run import train

    session = dataset.sessions[0]
    run = train("vq", [session], profile="tiny", recipe="paper", out=tmp_path / "paper", max_steps=30, progress=False)
    model = run.model.eval()
    assert model.reads_counts and model.tokenizer.quantizer.cosine and {"co_bps", "vel_r2"} <= set(
        run.metrics["sessions"][session.id])
    binned = bin_trials(session, 0.02, split="test", behavior=("hand_vel",))
    codes, z = model.encode_trials(session, binned)
    first = model.predict_trials(session, binned)
    changed = binned.subset(np.arange(len(binned.starts)))
    changed.counts = np.random.default_rng(0).poisson(2.0, size=binned.counts.shape).astype(np.float32)
    monkeypatch.setattr(model, "encode_trials", lambda s, b: (codes, z))  # the same codes, other counts
    second = model.predict_trials(session, changed)
    np.testing.assert_allclose(second["rates_heldout"], first["rates_heldout"], rtol=1e-6)  # from the codes
    assert not np.allclose(second["hand_vel"], first["hand_vel"])  # from the counts
    with pytest.raises(RunError, match="code_input"):
        VQ.build([session], _config(code_input="bins"))


def test_tokenizer_loss_and_codebook_ignore_windows_past_a_trials_end(dataset):
    from mini_decoders.data.batching import collate_binned
    from mini_decoders.models.vq import VQ

    torch.manual_seed(0)
    model = VQ.build(dataset.sessions, _config()).train()
    items = model._count_items(dataset.sessions[:1], "train")[:4]
    # A short trial of 21 bins: 11 real windows of 2 bins (the last one half real), 14 past its end.
    items[1] = {**items[1], "heldin": items[1]["heldin"][:21], "heldout": items[1]["heldout"][:21]}
    batch = collate_binned(items)
    quantizer = model.tokenizer.quantizer
    with torch.no_grad():
        z = model.tokenizer.encode(batch["heldin"], batch["session_index"], batch["time_mask"])  # (B, N, C)
    real = window_mask(batch["time_mask"], model.window)
    assert int((~real).sum()) == 14 and int(real[1].sum()) == 11
    quantizer.kmeans_init(z[real], generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(quantizer)
    _, logs = model.tokenizer_loss(batch)  # training mode: EMA and usage updates happen here
    expected = reference(z[real], update=True)  # the same step on the real windows alone
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(quantizer.state_dict()[name], value, rtol=1e-6, atol=1e-6, msg=name)
    assert logs["commitment"] == pytest.approx(float(expected.commitment_loss), rel=1e-5)
    assert logs["perplexity"] == pytest.approx(float(expected.perplexity), rel=1e-5)
