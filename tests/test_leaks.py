"""Leaks: what a model may see, what a loss may score, what an output must depend on.

Each test pins one property by behaviour, not by reading the code: perturb what must not matter
and the output stays bit-identical; perturb what must matter and it moves. Every one of them fails
under a one-line regression that the rest of the suite lets through (recorded with the failing
assertion in the branch's report): NDT1 fed its unmasked input, NDT2 scoring visible tokens,
NDT2 context tokens reading data tokens, MtM's ``predict_masked`` ignoring ``hidden``, a Poisson
loss turned into squared error, POYO's output queries without the session embedding.

Models are tiny, built directly, in eval mode (no dropout) with fixed generators.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mini_decoders.data.batching import collate_binned
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.evaluation import ALL_TASKS, evaluate_tasks
from mini_decoders.masking import mask_counts, select_masks
from mini_decoders.models.mtm import MtM
from mini_decoders.models.ndt1 import NDT1, collate_trials
from mini_decoders.models.ndt2 import NDT2, collate_ndt2, random_visible
from mini_decoders.models.poyo import POYO
from mini_decoders.models.vq import VQ

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

NDT1_SMALL = dict(NDT1.CONFIGS["tiny"], dim=16, layers=2, heads=2, ffn_dim=32, dropout=0.0, embed_dropout=0.0,
                  rate_dropout=0.0, max_bins=64, seed=0, device="cpu", precision="fp32")
MTM_SMALL = dict(MtM.CONFIGS["tiny"], dim=16, layers=2, heads=2, ffn_dim=32, dropout=0.0, embed_dropout=0.0,
                 rate_dropout=0.0, max_bins=64, seed=0, device="cpu", precision="fp32")
NDT2_SMALL = dict(NDT2.CONFIGS["tiny"], dim=32, neurons_per_token=8, layers=2, heads=2, decoder_layers=1,
                  dropout=0.0, seed=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def dataset():
    # Two sessions with different unit counts (units are padded), two regions, held-out units.
    return simulate(n_sessions=2, n_trials=16, n_units=(20, 16), seed=0)


def _trial_batch(model: NDT1, sessions, n_per_session: int = 3) -> dict:
    items = []
    for session in sessions:
        items += model._trial_items(session, "train")[:n_per_session]
    return collate_trials(items)


def _ndt1(dataset, cls=NDT1, **overrides) -> NDT1:
    torch.manual_seed(0)
    return cls.build(dataset.sessions, {**(MTM_SMALL if cls is MtM else NDT1_SMALL), **overrides}).eval()


def _ndt2(dataset, **overrides) -> NDT2:
    torch.manual_seed(0)
    model = NDT2.build(dataset.sessions, {**NDT2_SMALL, **overrides})
    model._register(dataset.sessions, with_velocity=False)
    return model.eval()


def _ndt2_batch(model: NDT2, sessions, n_per_session: int = 3) -> dict:
    binned = [model._binned(s, "train", False) for s in sessions]
    items = model._items(sessions, binned, False)
    per_session = len(items) // len(sessions)
    return collate_ndt2([items[k * per_session + i] for k in range(len(sessions)) for i in range(n_per_session)])


def _ndt2_visible(model: NDT2, batch: dict, seed: int = 0) -> torch.Tensor:
    tokens, is_heldout = model.tokens(batch)
    return random_visible(tokens.real & ~is_heldout, float(model.config["mask_ratio"]),
                          torch.Generator().manual_seed(seed))


def _token_to_neurons(model: NDT2, batch: dict, per_token: torch.Tensor) -> torch.Tensor:
    """(B, L) held-in-first token flags -> (B, T, U_in) flags of each held-in neuron entry.

    Held-in token ``l = t * P + p`` holds neurons ``p * n .. p * n + n - 1`` of bin ``t``.
    """
    batch_size, n_bins, n_units = batch["heldin"].shape
    n = model.neurons_per_token
    n_patches = -(-n_units // n)
    grid = per_token[:, :n_bins * n_patches].reshape(batch_size, n_bins, n_patches)
    return grid.repeat_interleave(n, dim=-1)[..., :n_units]


def _poisson(log_rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Poisson NLL per entry without the log(y!) constant, in float64, written out here on purpose."""
    log_rates, counts = np.asarray(log_rates, np.float64), np.asarray(counts, np.float64)
    return np.exp(log_rates) - counts * log_rates


# ================================================================================================
# 1. NDT1 (and MtM) feed the model the masked input, never the true counts of hidden entries

def _hidden_entries(model: NDT1, batch: dict, seed: int, scheme: str | None = None) -> torch.Tensor:
    """(B, T, U_in) bool: what ``masked_loss`` with ``Generator().manual_seed(seed)`` hides from the input."""
    units = model.unit_valid(batch["session"])
    heldin_valid = batch["valid"][:, :, None] & units[:, None, :model.max_heldin]
    config = model.mask_config if scheme is None else model.scheme_config(scheme)
    regions = model.region_table(batch["session"]) if scheme is not None else None
    hidden, _ = select_masks(tuple(batch["heldin"].shape), config, regions=regions,
                             generator=torch.Generator().manual_seed(seed))
    return hidden & heldin_valid


def _outputs_seen_by_loss(model: NDT1, batch: dict, seed: int, **loss_options) -> torch.Tensor:
    """The log-rates the model produced inside ``masked_loss`` (one forward call)."""
    seen = []
    handle = model.register_forward_hook(lambda module, args, output: seen.append(output.detach().clone()))
    try:
        model.masked_loss(batch, generator=torch.Generator().manual_seed(seed), **loss_options)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def test_ndt1_loss_never_shows_the_model_a_hidden_count(dataset):
    model = _ndt1(dataset)
    batch = _trial_batch(model, dataset.sessions)
    hidden = _hidden_entries(model, batch, seed=7)
    assert hidden.any() and (~hidden & batch["valid"][:, :, None]).any()
    reference = _outputs_seen_by_loss(model, batch, seed=7)
    # New true counts at every hidden entry: the model's output inside the loss must not move.
    changed = dict(batch, heldin=torch.where(hidden, batch["heldin"] + 3.0, batch["heldin"]))
    assert torch.equal(_outputs_seen_by_loss(model, changed, seed=7), reference), \
        "ndt1's output inside the loss moved when only hidden counts changed: the model saw them"
    # ... while a visible count is an input: changing those moves it (the check can see a change).
    visible_changed = dict(batch, heldin=torch.where(hidden, batch["heldin"], batch["heldin"] + 3.0))
    assert not torch.equal(_outputs_seen_by_loss(model, visible_changed, seed=7), reference)


@pytest.mark.parametrize("scheme", ["neuron", "causal", "intra_region", "inter_region", "temporal"])
def test_mtm_loss_never_shows_the_model_a_hidden_count(dataset, scheme):
    model = _ndt1(dataset, MtM)
    batch = _trial_batch(model, dataset.sessions)
    hidden = _hidden_entries(model, batch, seed=3, scheme=scheme)
    assert hidden.any()
    reference = _outputs_seen_by_loss(model, batch, seed=3, scheme=scheme)
    changed = dict(batch, heldin=torch.where(hidden, batch["heldin"] + 3.0, batch["heldin"]))
    assert torch.equal(_outputs_seen_by_loss(model, changed, seed=3, scheme=scheme), reference), \
        f"mtm ({scheme}): the output inside the loss moved when only hidden counts changed"


# ================================================================================================
# 2. NDT2's MAE loss scores hidden tokens (and the always-hidden held-out patches), never visible ones

def test_ndt2_loss_ignores_the_targets_of_visible_tokens(dataset, monkeypatch):
    model = _ndt2(dataset)
    batch = _ndt2_batch(model, dataset.sessions)
    visible = _ndt2_visible(model, batch)
    real_forward = model.forward
    fixed = None

    def forward_with_fixed_answer(b, *args, with_behavior=False, **kwargs):
        # The real forward (so the targets and hidden set come from the batch) with a fixed answer:
        # the loss can then change only through which targets it scores.
        nonlocal fixed
        out = real_forward(b, visible=visible, with_behavior=with_behavior)
        if fixed is None:
            fixed = torch.randn(out["log_rates"].shape, generator=torch.Generator().manual_seed(1)) * 0.5
        return {**out, "log_rates": fixed}

    monkeypatch.setattr(model, "forward", forward_with_fixed_answer)

    def loss_of(b: dict) -> float:
        return model.training_loss(b)[0].item()

    reference = loss_of(batch)
    real = batch["heldin_unit_mask"][:, None, :] & batch["time_mask"][:, :, None]
    shown = _token_to_neurons(model, batch, visible) & real  # (B, T, U_in) entries of visible tokens
    assert shown.any() and (real & ~shown).any()
    visible_changed = dict(batch, heldin=torch.where(shown, batch["heldin"] + 3.0, batch["heldin"]))
    assert loss_of(visible_changed) == reference, "ndt2's loss moved when only the targets of visible tokens changed"
    hidden_changed = dict(batch, heldin=torch.where(real & ~shown, batch["heldin"] + 3.0, batch["heldin"]))
    assert loss_of(hidden_changed) != pytest.approx(reference, rel=1e-4)
    assert loss_of(dict(batch, heldout=batch["heldout"] + 3.0)) != pytest.approx(reference, rel=1e-4)


# ================================================================================================
# 3. NDT2's context tokens attend only among themselves

@pytest.mark.parametrize("causal", [False, True])
def test_ndt2_context_tokens_never_read_the_data_tokens(dataset, causal):
    model = _ndt2(dataset, causal=causal)
    batch = _ndt2_batch(model, dataset.sessions)
    visible = _ndt2_visible(model, batch)
    reference = model.encode(batch, visible)
    other = dict(batch, heldin=torch.flip(batch["heldin"], dims=[1]) + 1.0)  # other data, same layout
    out = model.encode(other, visible)
    assert not torch.allclose(out["encoded"], reference["encoded"])  # the data tokens did change
    # Context tokens see only context tokens, in every layer: their outputs cannot depend on data.
    torch.testing.assert_close(out["context"], reference["context"], rtol=0, atol=1e-6,
                               msg="ndt2's context tokens changed with the data tokens: they attend to them")


# ================================================================================================
# 4. MtM's predict_masked hides what it is asked to hide; the evaluations score only hidden entries

def test_mtm_predictions_ignore_the_counts_they_are_asked_to_hide(dataset):
    model = _ndt1(dataset, MtM)
    session = dataset.sessions[0]
    _, spec = model.spec_for(session)
    binned = bin_trials(session, model.bin_size, split="train", behavior=())
    binned = binned.subset(np.arange(4))
    rng = np.random.default_rng(0)
    hidden = rng.random(binned.counts.shape[:2] + (spec.n_heldin,)) < 0.3  # (N, T, U_in)
    hidden_table = np.zeros(binned.counts.shape, dtype=bool)  # (N, T, U) in unit-table order
    hidden_table[..., spec.heldin_index] = hidden
    reference = model.predict_masked(session, binned, hidden, prompt="neuron")
    changed = replace(binned, counts=np.where(hidden_table, binned.counts + 3, binned.counts))
    assert np.array_equal(model.predict_masked(session, changed, hidden, prompt="neuron"), reference), \
        "predict_masked moved when only the counts it was asked to hide changed"
    heldin_table = np.zeros(binned.counts.shape[-1], dtype=bool)
    heldin_table[spec.heldin_index] = True
    shown = ~hidden_table & heldin_table
    visible_changed = replace(binned, counts=np.where(shown, binned.counts + 3, binned.counts))
    assert not np.array_equal(model.predict_masked(session, visible_changed, hidden, prompt="neuron"), reference)


def test_evaluation_tasks_never_score_an_entry_the_predictor_could_see(dataset):
    # A predictor that copies every count it is shown and says 1.0 elsewhere can only gain from a
    # scored entry that was visible: if none is, it scores exactly as "1.0 everywhere".
    session = dataset.sessions[0]
    binned = bin_trials(session, 0.02, split="test", behavior=())
    heldin = ~session.units.heldout
    counts = binned.counts.astype(np.float64)

    def copy_what_is_shown(hidden: np.ndarray, task: str) -> np.ndarray:
        shown = np.zeros(counts.shape, dtype=bool)
        shown[..., heldin] = ~hidden
        return np.where(shown, counts + 1e-3, 1.0)

    def constant(hidden: np.ndarray, task: str) -> np.ndarray:
        return np.ones(counts.shape)

    cheat = evaluate_tasks(copy_what_is_shown, binned, session.units.heldout, session.units.region, tasks=ALL_TASKS,
                           leave_out_folds=4)
    honest = evaluate_tasks(constant, binned, session.units.heldout, session.units.region, tasks=ALL_TASKS,
                            leave_out_folds=4)
    assert all(cheat[task]["bps"] is not None for task in ALL_TASKS)  # every task is defined on these data
    for task in ALL_TASKS:
        assert cheat[task] == honest[task], f"{task}: a scored entry was visible to the predictor"


# ================================================================================================
# 5. The masked-modelling losses are Poisson NLL: pinned against the closed form

def test_ndt1_loss_is_the_mean_poisson_nll_of_the_scored_entries(dataset, monkeypatch):
    for mask_ratio in (1.0, 0.3):  # everything hidden (no mask needed to know what is scored), then a mask
        model = _ndt1(dataset, mask_ratio=mask_ratio, mask_max_span=1)
        batch = _trial_batch(model, dataset.sessions)
        shape = batch["heldin"].shape[:2] + (model.max_heldin + model.max_heldout,)
        log_rates = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.7
        monkeypatch.setattr(model, "forward", lambda *args, **kwargs: log_rates)
        loss = model.masked_loss(batch, generator=torch.Generator().manual_seed(5))[0].item()
        units = model.unit_valid(batch["session"]).numpy()  # (B, U_in + U_out) real columns
        real = batch["valid"].numpy()[:, :, None] & units[:, None, :]
        if mask_ratio == 1.0:
            scored = real
        else:
            _, loss_mask = mask_counts(batch["heldin"], model.mask_config, torch.from_numpy(real[..., :model.max_heldin]),
                                       generator=torch.Generator().manual_seed(5))
            scored = np.concatenate([loss_mask.numpy(), real[..., model.max_heldin:]], axis=-1)
        targets = np.concatenate([batch["heldin"].numpy(), batch["heldout"].numpy()], axis=-1)
        assert loss == pytest.approx(_poisson(log_rates.numpy(), targets)[scored].mean(), rel=1e-5)


def test_mtm_loss_is_the_mean_poisson_nll_of_the_scored_entries(dataset, monkeypatch):
    model = _ndt1(dataset, MtM, mask_ratio=1.0)
    batch = _trial_batch(model, dataset.sessions)
    shape = batch["heldin"].shape[:2] + (model.max_heldin + model.max_heldout,)
    log_rates = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.7
    monkeypatch.setattr(model, "forward", lambda *args, **kwargs: log_rates)
    loss = model.masked_loss(batch, generator=torch.Generator().manual_seed(5), scheme="neuron")[0].item()
    units = model.unit_valid(batch["session"]).numpy()
    scored = batch["valid"].numpy()[:, :, None] & units[:, None, :]  # ratio 1: every real neuron hidden
    targets = np.concatenate([batch["heldin"].numpy(), batch["heldout"].numpy()], axis=-1)
    assert loss == pytest.approx(_poisson(log_rates.numpy(), targets)[scored].mean(), rel=1e-5)


def test_ndt2_loss_is_the_mean_poisson_nll_of_the_hidden_neurons(dataset, monkeypatch):
    model = _ndt2(dataset)
    batch = _ndt2_batch(model, dataset.sessions)
    visible = _ndt2_visible(model, batch)
    real_forward = model.forward
    tokens, _ = model.tokens(batch)
    log_rates = torch.randn(tokens.counts.shape, generator=torch.Generator().manual_seed(0)) * 0.7  # (B, L, n)

    def forward_with_fixed_answer(b, *args, with_behavior=False, **kwargs):
        return {**real_forward(b, visible=visible, with_behavior=with_behavior), "log_rates": log_rates}

    monkeypatch.setattr(model, "forward", forward_with_fixed_answer)
    loss = model.training_loss(batch)[0].item()
    scored = (tokens.channel_mask & (tokens.real & ~visible)[..., None]).numpy()  # real neurons of hidden tokens
    assert loss == pytest.approx(_poisson(log_rates.numpy(), tokens.counts.numpy())[scored].mean(), rel=1e-5)


def test_vq_reconstruction_loss_is_poisson_nll_plus_commitment(dataset, monkeypatch):
    torch.manual_seed(0)
    model = VQ.build(dataset.sessions, dict(VQ.CONFIGS["tiny"], seed=0, device="cpu", precision="fp32")).eval()
    items = model._count_items(dataset.sessions, "train")
    batch = collate_binned(items[:3] + items[-3:])
    real_forward = model.tokenizer.forward
    shape = batch["heldin"].shape[:2] + (model.max_heldin + model.max_heldout,)
    log_rates = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.7
    commitment = []

    def forward_with_fixed_answer(*args, **kwargs):
        _, quantized, z = real_forward(*args, **kwargs)
        commitment.append(float(quantized.loss.detach()))
        return log_rates, quantized, z

    monkeypatch.setattr(model.tokenizer, "forward", forward_with_fixed_answer)
    loss = model.tokenizer_loss(batch)[0].item()
    units = model.unit_valid(batch["session_index"]).numpy()
    scored = batch["time_mask"].numpy()[:, :, None] & units[:, None, :]
    nll = _poisson(log_rates.numpy(), np.concatenate([batch["heldin"].numpy(), batch["heldout"].numpy()], -1))
    h = model.max_heldin
    expected = nll[..., :h][scored[..., :h]].mean() + float(model.config["heldout_weight"]) * \
        nll[..., h:][scored[..., h:]].mean() + commitment[0]
    assert loss == pytest.approx(expected, rel=1e-5)


# ================================================================================================
# 6. POYO's output queries carry the session embedding of the batch's session

def test_poyo_velocity_depends_on_the_sessions_embedding(dataset):
    torch.manual_seed(0)
    config = dict(POYO.CONFIGS["tiny"], seed=0, dim=16, dim_head=8, self_heads=2, latents_per_step=2, latent_step=0.25)
    model = POYO.build(dataset.sessions, config).eval()
    session = dataset.sessions[0]
    rows = model.session_vocab.index([s.id for s in dataset.sessions])
    starts = session.trials.start[:3]
    batch = model._window_batch(session, int(rows[0]), starts, np.tile(np.linspace(0.05, 0.95, 5), (len(starts), 1)))
    with torch.no_grad():
        reference = model(batch)["hand_vel"]
        # The same spikes read as the other session's: only the session embedding differs.
        as_other = model(dict(batch, session=torch.full_like(batch["session"], int(rows[1]))))["hand_vel"]
        assert (as_other - reference).abs().max() > 1e-4, "the same spikes read as another session gave the same velocity"
        model.session_vocab.weight[int(rows[0])] += 0.5 * torch.randn(model.session_vocab.weight.shape[1],
                                                                      generator=torch.Generator().manual_seed(0))
        moved = model(batch)["hand_vel"]
    assert (moved - reference).abs().max() > 1e-4, "changing the session's embedding left the velocity unchanged"
