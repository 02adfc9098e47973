"""MtM: causal attention never reads the future, the prompt matters, the loss scores only targets,
the four evaluations hide what they score, adaptation to a new session leaves the old one intact."""

import numpy as np
import pytest
import torch

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import oracle_bits_per_spike, simulate
from mini_decoders.errors import DataError, RunError
from mini_decoders.evaluation import ALL_TASKS, TASKS, evaluate_tasks, oracle_task_scores, task_passes
from mini_decoders.data.session import Session, Units
from mini_decoders.masking import REGION_SCHEMES, mask_counts, select_masks
from mini_decoders.metrics import bits_per_spike
from mini_decoders.models.mtm import BASELINE_RECIPE, MASK_MODES, PAPER_RECIPE, PROMPTS, RECIPE, MtM
from mini_decoders.models.ndt1 import collate_trials
from mini_decoders.run import Run, load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(MtM.CONFIGS["tiny"], dim=16, layers=2, heads=2, ffn_dim=32, dropout=0.0, embed_dropout=0.0,
             rate_dropout=0.0, max_bins=64, seed=0, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def dataset():
    # Two sessions with different unit counts (padding of units), two regions each.
    return simulate(n_sessions=2, n_trials=60, n_units=(30, 24), seed=3)


def _model(dataset, **overrides) -> MtM:
    torch.manual_seed(0)
    return MtM.build(dataset.sessions, {**SMALL, **overrides})


def _batch(model: MtM, dataset, n_per_session: int = 4) -> dict:
    items = []
    for session in dataset.sessions:
        items += model._trial_items(session, "train")[:n_per_session]
    return collate_trials(items)


def test_causal_prompt_never_reads_the_future(dataset):
    model = _model(dataset).eval()
    batch = _batch(model, dataset)
    t = 20
    changed = batch["heldin"].clone()
    changed[:, t + 1:] += 3.0
    with torch.no_grad():
        out = model(batch["heldin"], batch["session"], batch["valid"], prompt="causal")
        out_changed = model(changed, batch["session"], batch["valid"], prompt="causal")
        full = model(batch["heldin"], batch["session"], batch["valid"], prompt="neuron")
        full_changed = model(changed, batch["session"], batch["valid"], prompt="neuron")
    torch.testing.assert_close(out_changed[:, :t + 1], out[:, :t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(out_changed[:, t + 1:], out[:, t + 1:])
    assert not torch.allclose(full_changed[:, :t + 1], full[:, :t + 1])  # without it, the past does see the future
    # With a limited backward window the causal mask is explicit; still nothing from the future.
    windowed = _model(dataset, context_backward=4).eval()
    with torch.no_grad():
        a = windowed(batch["heldin"], batch["session"], batch["valid"], prompt="causal")
        b = windowed(changed, batch["session"], batch["valid"], prompt="causal")
    torch.testing.assert_close(b[:, :t + 1], a[:, :t + 1], rtol=0, atol=1e-6)


def test_the_prompt_changes_the_output_and_names_the_scheme(dataset):
    model = _model(dataset).eval()
    batch = _batch(model, dataset)
    with torch.no_grad():
        outputs = {p: model(batch["heldin"], batch["session"], batch["valid"], prompt=p) for p in PROMPTS}
    for a in ("neuron", "intra_region", "inter_region", "temporal"):
        for b in ("neuron", "intra_region", "inter_region", "temporal"):
            if a != b:
                assert not torch.allclose(outputs[a], outputs[b])
    assert model.prompt_for("inter_region") == "inter_region"
    temporal = _model(dataset, **BASELINE_RECIPE)
    assert {temporal.prompt_for(task) for task in TASKS} == {"temporal"}
    assert {temporal.draw_scheme(torch.Generator().manual_seed(s)) for s in range(20)} == {"temporal"}
    paper = _model(dataset, **PAPER_RECIPE)
    drawn = {paper.draw_scheme(torch.Generator().manual_seed(s)) for s in range(60)}
    assert drawn == set(MASK_MODES["all"])
    assert {task: paper.prompt_for(task) for task in TASKS} == {task: model.prompt_for(task) for task in TASKS}
    with pytest.raises(DataError, match="prompt"):
        model(batch["heldin"], batch["session"], prompt="diagonal")
    with pytest.raises(RunError, match="mask_mode"):
        _model(dataset, mask_mode="everything")


@pytest.mark.parametrize("scheme", ["neuron", "causal", "intra_region", "inter_region", "temporal"])
def test_loss_scores_only_the_schemes_targets_and_the_heldout_units(dataset, monkeypatch, scheme):
    model = _model(dataset).eval()
    batch = _batch(model, dataset)
    # A fixed answer (log-rates around 1), so the loss depends only on which targets it scores.
    fixed = 1.0 + torch.randn(batch["heldin"].shape[:2] + (model.max_heldin + model.max_heldout,)) * 0.3
    prompts = []
    monkeypatch.setattr(model, "forward", lambda *args, prompt=None, **kwargs: prompts.append(prompt) or fixed)

    def loss_of(b: dict) -> float:
        return model.masked_loss(b, generator=torch.Generator().manual_seed(7), scheme=scheme)[0].item()

    units = model.unit_valid(batch["session"])
    heldin_valid = batch["valid"][:, :, None] & units[:, None, :model.max_heldin]
    _, loss_mask = mask_counts(batch["heldin"], model.scheme_config(scheme), heldin_valid,
                               generator=torch.Generator().manual_seed(7), regions=model.region_table(batch["session"]))
    reference = loss_of(batch)
    assert prompts[-1] == scheme
    assert loss_mask.any()
    not_scored = dict(batch, heldin=torch.where(loss_mask, batch["heldin"], batch["heldin"] + 5.0))
    assert loss_of(not_scored) == pytest.approx(reference, rel=1e-6)
    scored = dict(batch, heldin=torch.where(loss_mask, batch["heldin"] + 5.0, batch["heldin"]))
    assert loss_of(scored) != pytest.approx(reference, rel=1e-3)
    assert loss_of(dict(batch, heldout=batch["heldout"] + 5.0)) != pytest.approx(reference, rel=1e-3)


def test_scheme_weights_set_how_often_each_scheme_is_drawn(dataset):
    uniform = _model(dataset, mask_mode="all_temporal", scheme_weights=None)
    weighted = _model(dataset, mask_mode="all_temporal",
                      scheme_weights={"temporal": 0.7, "neuron": 0.1, "causal": 0.1, "inter_region": 0.1})
    generator = torch.Generator().manual_seed(0)
    draws = [weighted.draw_scheme(generator) for _ in range(4000)]
    assert abs(draws.count("temporal") / 4000 - 0.7) < 0.03
    assert draws.count("intra_region") == 0 and abs(draws.count("neuron") / 4000 - 0.1) < 0.02
    uniform_draws = [uniform.draw_scheme(generator) for _ in range(4000)]
    assert all(abs(uniform_draws.count(s) / 4000 - 0.2) < 0.03 for s in MASK_MODES["all_temporal"])
    with pytest.raises(RunError, match="scheme_weights"):
        _model(dataset, mask_mode="all", scheme_weights={"temporal": 1.0})  # not a scheme of "all"
    with pytest.raises(RunError, match="scheme_weights"):
        _model(dataset, mask_mode="all", scheme_weights={"neuron": 0.0})
    with pytest.raises(RunError, match="None for uniform"):
        _model(dataset, mask_mode="all")  # the profile's weights name "temporal", which "all" lacks


def test_the_default_recipe_adds_temporal_masks_to_the_papers_four(dataset):
    model = _model(dataset)  # the profile's recipe
    assert model.schemes == MASK_MODES["all"] + ("temporal",)
    for profile in MtM.CONFIGS:
        assert {k: MtM.CONFIGS[profile][k] for k in RECIPE} == RECIPE
    generator = torch.Generator().manual_seed(1)
    draws = [model.draw_scheme(generator) for _ in range(4000)]
    assert abs(draws.count("temporal") / 4000 - 0.7) < 0.03
    assert all(abs(draws.count(s) / 4000 - 0.075) < 0.015 for s in MASK_MODES["all"])
    # Each question is still answered with its own prompt, not with the most trained one.
    assert [model.prompt_for(task) for task in TASKS] == ["neuron", "causal", "intra_region", "inter_region"]


def test_region_schemes_mask_by_the_units_regions(dataset):
    model = _model(dataset)
    batch = _batch(model, dataset)
    regions = model.region_table(batch["session"])
    for row, session in zip(regions, batch["session"]):
        spec = model.specs[int(session)]
        names = dataset.sessions[int(session)].units.region[spec.heldin_index]
        assert [model.region_names[r] for r in row[:spec.n_heldin].tolist()] == names.tolist()
        assert (row[spec.n_heldin:] == -1).all()


def _relabelled(session: Session, regions) -> Session:
    """``session`` with other region labels (None: every unit unlabelled, as data without locations)."""
    units = Units(session.units.ids, regions, session.units.heldout)
    return Session(session.id, session.spike_times, session.spike_units, units, dict(session.behavior),
                   session.trials, session.subject, session.task, session.source)


def _region_masks_hide(model: MtM, batch: dict, scheme: str) -> torch.Tensor:
    """(B,) how many held-in entries ``scheme`` hides in each sample."""
    shape = tuple(batch["heldin"].shape)
    hidden, _ = select_masks(shape, model.scheme_config(scheme), regions=model.region_table(batch["session"]),
                             generator=torch.Generator().manual_seed(0))
    return (hidden & batch["valid"][:, :, None]).sum((1, 2))


def test_without_two_labelled_regions_the_region_schemes_are_dropped_with_a_warning(dataset):
    one_region = _relabelled(dataset.sessions[0], ["M1"] * dataset.sessions[0].n_units)
    unlabelled = _relabelled(dataset.sessions[1], None)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"no session has held-in units in two or more labelled regions.*"
                                         r"without intra_region and inter_region"):
        model = MtM.build([one_region, unlabelled], SMALL)
    # Before: every unit was in one (fake) region, so inter-region hid everything and intra-region
    # was neuron masking. Now no unit has a region: those masks hide nothing ...
    batch = _batch(model, dataset)
    for scheme in REGION_SCHEMES:
        assert (_region_masks_hide(model, batch, scheme) == 0).all()
    # ... and training never draws them; the rest of the default mix keeps its relative weights.
    generator = torch.Generator().manual_seed(0)
    drawn = [model.draw_scheme(generator) for _ in range(300)]
    assert not set(drawn) & set(REGION_SCHEMES)
    assert drawn.count("temporal") / len(drawn) == pytest.approx(0.7 / 0.85, abs=0.07)
    # The region evaluations are absent, not computed on one region.
    binned = bin_trials(unlabelled, 0.02, split="test", behavior=())
    scores = model.evaluate_tasks(unlabelled, binned, tasks=("intra_region", "inter_region", "forward_prediction"))
    assert scores["intra_region"]["bps"] is None and scores["inter_region"]["bps"] is None
    assert scores["forward_prediction"]["bps"] is not None


def test_a_mask_mode_of_region_schemes_only_needs_region_labels(dataset):
    unlabelled = [_relabelled(session, None) for session in dataset.sessions]
    for mode, weights in (("inter_region", None), ("all", {"intra_region": 1.0, "inter_region": 1.0})):
        with pytest.raises(RunError, match="labelled regions") as error:
            MtM.build(unlabelled, {**SMALL, "mask_mode": mode, "scheme_weights": weights})
        assert "\n" not in str(error.value) and "units.region" in str(error.value)
    MtM.build(unlabelled, {**SMALL, **BASELINE_RECIPE})  # no region scheme asked for: no warning, no error


def test_a_session_without_region_labels_next_to_one_with_them(dataset):
    labelled, unlabelled = dataset.sessions[0], _relabelled(dataset.sessions[1], None)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"\['sim_s1'\] have held-in units in fewer than two labelled regions"):
        model = MtM.build([labelled, unlabelled], SMALL)
    assert model.drawn_schemes()[0] == model.schemes  # the labelled session practises every scheme
    batch = _batch(model, dataset)
    for scheme in REGION_SCHEMES:
        hidden = _region_masks_hide(model, batch, scheme)
        assert (hidden[batch["session"] == 0] > 0).all() and (hidden[batch["session"] == 1] == 0).all()
    for session, defined in ((labelled, True), (unlabelled, False)):
        binned = bin_trials(session, 0.02, split="test", behavior=())
        scores = model.evaluate_tasks(session, binned, tasks=("inter_region",))
        assert (scores["inter_region"]["bps"] is not None) == defined


def test_region_tasks_need_two_labelled_regions_and_skip_unlabelled_units():
    valid = np.ones((2, 12), dtype=bool)
    heldout = np.zeros(6, dtype=bool)
    # One labelled region (the rest unlabelled) is no question about regions.
    for task in ("inter_region", "intra_region"):
        assert task_passes(task, valid, heldout, np.array(["A"] * 3 + [""] * 3)) == []
    # Two regions and two unlabelled units: those are never hidden by a region pass, never scored.
    regions = np.array(["A", "A", "B", "B", "", ""])
    for task in ("inter_region", "intra_region"):
        passes = task_passes(task, valid, heldout, regions, n_folds=2)
        assert passes
        for one in passes:
            assert not one.hidden[..., 4:].any() and not one.scored[..., 4:].any()


def test_evaluation_passes_hide_everything_they_score():
    valid = np.ones((5, 30), dtype=bool)
    valid[2, 24:] = False  # a shorter trial
    heldout = np.array([False] * 8 + [True] * 3)
    regions = np.array(["A"] * 5 + ["B"] * 3 + ["A", "B", "B"])
    heldin = np.flatnonzero(~heldout)
    for task in ALL_TASKS:
        passes = task_passes(task, valid, heldout, regions, forward_bins=10, n_folds=2, leave_out_folds=3)
        assert passes
        total = np.zeros((5, 30, 11), dtype=int)
        for one in passes:
            total += one.scored
            hidden_full = np.zeros((5, 30, 11), dtype=bool)
            hidden_full[..., heldin] = one.hidden
            visible = ~hidden_full & ~heldout[None, None, :]
            assert not (one.scored & visible).any()  # nothing scored is ever an input
            assert not (one.scored & ~valid[:, :, None]).any()
        assert total.max() == 1  # every entry scored at most once
        if task == "co_smoothing":
            assert np.array_equal(total.astype(bool), valid[:, :, None] & heldout)
        if task == "forward_prediction":
            assert total.sum(axis=(1, 2)).tolist() == [10 * 11] * 5
            assert total[2, 14:24].all() and not total[2, :14].any()
        if task == "inter_region":
            assert len(passes) == 2
            for one, members in zip(passes, (np.arange(5), np.arange(5, 8))):
                assert np.array_equal(one.hidden.any((0, 1)), np.isin(np.arange(8), members))
        if task in ("inter_region", "intra_region", "heldin_co_smoothing"):
            assert np.array_equal(total.astype(bool), valid[:, :, None] & ~heldout)  # each held-in unit once
        if task == "heldin_co_smoothing":  # held-in unit i left out in pass i % 3, in every real bin
            assert len(passes) == 3
            for fold, one in enumerate(passes):
                assert np.array_equal(one.hidden, valid[:, :, None] & (np.arange(8) % 3 == fold))
        if task == "intra_region":
            for one in passes:
                target_units = one.scored.any((0, 1))[heldin]
                target_region = set(regions[heldin][target_units])
                assert len(target_region) == 1
                others = regions[heldin] != target_region.pop()
                assert one.hidden[valid][:, others].all()  # the other region is hidden completely
    assert task_passes("inter_region", valid, heldout, np.array(["A"] * 11)) == []  # one region: undefined
    one_each = task_passes("heldin_co_smoothing", valid, heldout, regions)  # the paper's: one neuron per pass
    assert [np.flatnonzero(one.hidden.any((0, 1))).tolist() for one in one_each] == [[i] for i in range(8)]
    one_heldin = np.array([False] + [True] * 10)
    assert task_passes("heldin_co_smoothing", valid, one_heldin, regions) == []  # nothing to predict it from
    with pytest.raises(DataError, match="leave_out_folds"):
        task_passes("heldin_co_smoothing", valid, heldout, regions, leave_out_folds=1)
    with pytest.raises(DataError, match="task"):
        task_passes("telepathy", valid, heldout, regions)


def test_oracle_scores_match_the_simulators_oracle_and_beat_the_null(dataset):
    session = dataset.sessions[0]
    oracle = oracle_task_scores(session, dataset.truth[session.id], "test")
    assert oracle["co_smoothing"]["bps"] == pytest.approx(oracle_bits_per_spike(dataset, session.id, "test"), rel=1e-9)
    binned = bin_trials(session, 0.02, split="test", behavior=())
    counts = binned.counts.astype(np.float64)
    mean = np.broadcast_to(counts[binned.mask].mean(0), counts.shape)  # each neuron's mean rate
    null = evaluate_tasks(lambda hidden, task: mean, binned, session.units.heldout, session.units.region)
    # Held-in co-smoothing scores every held-in entry once: the oracle's is bits/spike of the true
    # rates on the held-in units, computed here in one call.
    expected = dataset.truth[session.id].expected_counts(binned.starts, binned.lengths, 0.02)
    heldin = ~session.units.heldout
    observed = np.where(binned.mask[:, :, None], counts, np.nan)
    assert oracle["heldin_co_smoothing"]["bps"] == pytest.approx(
        bits_per_spike(expected[..., heldin], observed[..., heldin]), rel=1e-9)
    for task in ALL_TASKS:
        assert oracle[task]["bps"] > null[task]["bps"] + 0.05, task
        assert oracle[task]["trial_r2"] > null[task]["trial_r2"], task


def test_trained_mtm_learns_every_task_and_writes_them_to_eval_json(tmp_path):
    dataset = simulate(n_sessions=1, n_trials=80, n_units=60, seed=5)
    config_keys = dict(dim=32, layers=1, heads=2, ffn_dim=64, max_steps=200, batch_size=16, lr=3e-3, warmup_steps=10,
                       val_every=50, dropout=0.0, embed_dropout=0.1, rate_dropout=0.0)
    with _override_profile(tiny=config_keys):
        run = train("mtm", dataset.sessions, profile="tiny", out=tmp_path / "run", progress=False)
    mean = run.metrics["mean"]
    for key in ("cosmooth_bps", "forward_bps", "intra_bps", "inter_bps", "heldin_cosmooth_bps", "cosmooth_psth_r2",
                "inter_trial_r2"):
        assert key in mean
    assert mean["cosmooth_bps"] == pytest.approx(mean["co_bps"], rel=1e-6)  # the neuron prompt is the default
    # Each task moved well up from where the untrained model (read-out bias at mean rates) starts.
    untrained = MtM.build(dataset.sessions, run.model.config)
    untrained._init_read_out_bias(untrained._trial_items(dataset.sessions[0], "train"))
    test = bin_trials(dataset.sessions[0], 0.02, split="test", behavior=())
    before = untrained.evaluate_tasks(dataset.sessions[0], test)
    for task, key in (("co_smoothing", "cosmooth_bps"), ("forward_prediction", "forward_bps"),
                      ("intra_region", "intra_bps"), ("inter_region", "inter_bps"),
                      ("heldin_co_smoothing", "heldin_cosmooth_bps")):
        assert mean[key] > before[task]["bps"] + 0.02, task
    assert mean["cosmooth_bps"] > 0.05 and mean["intra_bps"] > 0.05  # better than each neuron's mean rate
    # The checkpoint is chosen on the four questions only (the held-in co-smoothing is reported).
    validation = run.model._validation(dataset.sessions)(run.model)
    assert set(validation) == {"val_cosmooth_bps", "val_forward_bps", "val_intra_bps", "val_inter_bps",
                               "val_tasks_bps", "val_co_bps"}
    loaded = load_run(tmp_path / "run")
    assert loaded.model.unit_regions == run.model.unit_regions
    again = loaded.evaluate(dataset.sessions)["mean"]
    assert again["inter_bps"] == pytest.approx(mean["inter_bps"], rel=1e-5)


def _override_profile(**profiles):
    import contextlib

    @contextlib.contextmanager
    def manager():
        saved = {name: dict(MtM.CONFIGS[name]) for name in profiles}
        for name, keys in profiles.items():
            MtM.CONFIGS[name].update(keys)
        try:
            yield
        finally:
            for name, config in saved.items():
                MtM.CONFIGS[name].clear()
                MtM.CONFIGS[name].update(config)

    return manager()


def test_units_finetune_learns_a_new_session_and_leaves_everything_else_bit_identical(tmp_path):
    data = simulate(n_sessions=3, n_trials=40, n_units=(24, 20, 34), seed=8)  # the new one has the most units
    old, new = data.sessions[:2], data.sessions[2]
    torch.manual_seed(0)
    config = {**SMALL, "max_steps": 20, "finetune_steps": 25, "val_every": None}
    model = MtM.build(old, config)
    model.fit(old, config, progress=False)
    binned_old = bin_trials(old[0], 0.02, split="test", behavior=())
    before = model.predict_masked(old[0], binned_old, prompt="inter_region")
    shared = {k: v.clone() for k, v in model.state_dict().items()
              if not k.startswith(("tokenizer.read_in", "read_out", "session_embedding"))}
    rows = {"in": model.tokenizer.read_in_weight.detach().clone(), "out": model.read_out_weight.detach().clone(),
            "session": model.session_embedding.weight.detach().clone()}
    run = Run(tmp_path / "pre", model, {"model": "mtm", "bin_size": 0.02, "sessions": [s.to_dict() for s in model.specs],
                                        "model_config": model.config, "format_version": 1})
    adapted = run.finetune([new], mode="units", out=tmp_path / "adapted", progress=False)
    tuned = adapted.model
    assert [s.id for s in tuned.specs] == [s.id for s in old] + [new.id]
    for key, value in shared.items():
        assert torch.equal(tuned.state_dict()[key], value), key
    assert torch.equal(tuned.session_embedding.weight[:2], rows["session"])
    assert torch.equal(tuned.tokenizer.read_in_weight[:2, :rows["in"].shape[1]], rows["in"])
    np.testing.assert_array_equal(tuned.predict_masked(old[0], binned_old, prompt="inter_region"), before)
    assert not torch.equal(tuned.session_embedding.weight[2], torch.zeros(SMALL["dim"]))
    binned_new = bin_trials(new, 0.02, split="test", behavior=())
    assert np.isfinite(tuned.predict_masked(new, binned_new)).all()
    assert "inter_bps" in adapted.metrics["mean"]
    reloaded = load_run(tmp_path / "adapted")  # config.json lists three sessions; shapes must match
    np.testing.assert_allclose(reloaded.model.predict_masked(new, binned_new), tuned.predict_masked(new, binned_new),
                               rtol=1e-5)
    full = MtM.build(old, config)
    full.fit(old, config, progress=False)
    shared_before = full.blocks[0].attention.to_out.weight.detach().clone()
    history = full.finetune([new], "full", {"finetune_steps": 5}, progress=False)
    assert history["steps"] == 5
    assert not torch.equal(full.blocks[0].attention.to_out.weight, shared_before)


def test_attention_maps_follow_the_prompts_mask(dataset):
    model = _model(dataset).eval()
    session = dataset.sessions[0]
    binned = bin_trials(session, model.bin_size, split="train", behavior=())
    n_bins = binned.counts.shape[1]
    full = model.attention_maps(session, binned, trials=[0, 1], layer=1, prompt="neuron")
    causal = model.attention_maps(session, binned, trials=[0, 1], layer=1, prompt="causal")
    assert full.shape == causal.shape == (2, 2, 2 + n_bins, 2 + n_bins)  # prompt + session token + bins
    np.testing.assert_allclose(full.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((2 + n_bins, 2 + n_bins), dtype=bool), k=1)
    assert np.abs(causal[..., future]).max() < 1e-6  # nobody attends to a later token
    assert full[..., future].max() > 1e-3
