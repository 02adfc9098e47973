"""Checks of the graded assignments (``coursework/``); each item carries its rubric points.

Same rules as the chapters' checks: fresh inputs on every call, comparison with the package,
messages that locate the error without showing the answer.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed
from mini_decoders.course.registry import exercise

A1, A2, A3 = "assignment_1_tokenizers", "assignment_2_adaptation", "assignment_3_masking"


def _name(function) -> str:
    return getattr(function, "__name__", "your function")


def _pair(result, what: str, name: str):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise CheckFailed(f"`{name}` should return two values ({what}), got {type(result).__name__}")
    return result


# ================================================================================================
# Assignment 1: tokenizers side by side

@exercise(function="bin_tokens", source=A1, reference="mini_decoders.tokenizers.bins.BinTokenizer", assignment=1,
          points=30, title="bin tokens: log(1 + counts) · read-in + bias + position (NDT1)")
def check_bin_tokens(student_fn) -> None:
    """Bin tokens of one trial, as NDT1's tokenizer makes them."""
    from mini_decoders.tokenizers.bins import BinTokenizer

    seed = fresh_seed()
    torch.manual_seed(seed)
    cases = [(f"{t} bins x {u} neurons -> dim {d}, seed {seed}", t, u, d)
             for t, u, d in ((30, 12, 16), (1, 5, 4), (50, 40, 8))]
    for case, n_bins, n_units, dim in cases:
        tokenizer = BinTokenizer([n_units], dim, max_bins=64).eval()
        with torch.no_grad():
            tokenizer.read_in_bias.normal_()  # zero at initialisation: make it matter
        counts = torch.poisson(torch.full((n_bins, n_units), 1.3))
        weight = tokenizer.read_in_weight[0].detach().clone()  # (U, D)
        bias = tokenizer.read_in_bias[0].detach().clone()  # (D,)
        positions = tokenizer.positions.table.detach().clone()  # (max_bins, D)
        with torch.no_grad():
            expected = tokenizer(counts[None], torch.zeros(1, dtype=torch.long))[0]
        got = call_student(student_fn, (counts, weight, bias, positions), case=case)
        compare(got, expected, what="the bin tokens", case=case, atol=1e-5,
                hint="compress the counts with log(1 + y) first, then (T, U) @ (U, D) + bias, then add the first T "
                     "rows of the position table")
    passed(_name(student_fn), "BinTokenizer", len(cases))


@exercise(function="patch_grid", source=A1, reference="mini_decoders.tokenizers.patches.group_into_patches",
          assignment=1, points=20, title="patch grid: (T, U) -> (T, P, n) patches and a real-neuron mask (NDT2)")
def check_patch_grid(student_fn) -> None:
    """Cut the neuron axis into patches of n neurons, padding the last one."""
    from mini_decoders.tokenizers.patches import group_into_patches

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"{t} bins x {u} neurons, {n} per patch, seed {seed}", rng.poisson(1.0, size=(t, u)), n)
             for t, u, n in ((10, 70, 32), (4, 64, 32), (3, 5, 8), (6, 7, 1))]
    for case, counts, per_patch in cases:
        expected_patches, expected_mask = group_into_patches(counts, per_patch)
        got = _pair(call_student(student_fn, (counts, per_patch), case=case), "patches and the channel mask",
                    _name(student_fn))
        compare(got[0], expected_patches, what="the patches", case=case, exact=True, kind="array",
                hint="P = ceil(U / n); pad the neurons with zero counts to P·n, then reshape (T, P·n) -> (T, P, n)")
        compare(got[1], expected_mask, what="the channel mask", case=case, kind="array",
                hint="(P, n) booleans, True for real neurons and False for the padding")
    passed(_name(student_fn), "mini_decoders.tokenizers.patches.group_into_patches", len(cases))


@exercise(function="spike_tokens", source=A1, reference="mini_decoders.tokenizers.spikes.add_start_end_tokens",
          assignment=1, points=30, title="spike tokens with a start and an end token per unit (POYO)")
def check_spike_tokens(student_fn) -> None:
    """POYO's tokens of one window: spikes in time order, then start tokens, then end tokens."""
    from mini_decoders.data.batching import SpikeWindows
    from mini_decoders.tokenizers.spikes import add_start_end_tokens, decode_token_codes

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n_units, n_spikes, length in ((5, 40, 1.0), (12, 200, 0.5), (3, 0, 1.0)):
        times = np.sort(rng.uniform(0, length, n_spikes))
        units = rng.integers(0, max(n_units - 1, 1), n_spikes)  # the last unit is silent: it still gets markers
        cases.append((f"{n_units} units, {n_spikes} spikes, {length} s window, seed {seed}", times, units, n_units, length))
    for case, times, units, n_units, length in cases:
        windows = SpikeWindows(times.astype(np.float32), units.astype(np.int64), np.array([0, len(times)]),
                               np.array([0.0]), length)
        tokens = add_start_end_tokens(windows, unit_rows=np.arange(n_units))
        rows, types = (t.numpy() for t in decode_token_codes(torch.from_numpy(tokens.units)))
        got = call_student(student_fn, (times, units, n_units, length), case=case)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailed(f"`{_name(student_fn)}` should return three arrays (times, units, types), got "
                              f"{type(got).__name__}")
        hint = ("the spikes first (in time order, type 0), then one start token per unit at time 0 (type 1, units "
                "0..U-1), then one end token per unit at the window's end (type 2)")
        compare(np.asarray(got[2]), types, what="the token types", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[1]), rows, what="the token units", case=case, exact=True, kind="array", hint=hint)
        compare(np.asarray(got[0], dtype=np.float64), tokens.times.astype(np.float64), what="the token times",
                case=case, atol=1e-6, kind="array", hint=hint)
    passed(_name(student_fn), "mini_decoders.tokenizers.spikes.add_start_end_tokens", len(cases))


@exercise(function="tokens_per_second", source=A1, reference="mini_decoders.viz.token_counts", assignment=1,
          points=20, title="tokens per second of recording under each view")
def check_tokens_per_second(student_fn) -> None:
    """Sequence length per second: spike, bin and patch tokens."""
    from mini_decoders.viz import token_counts

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"seed {seed}", int(rng.integers(1000, 100000)), float(rng.uniform(5, 600)), int(rng.integers(1, 300)),
              bin_size, per_patch) for bin_size, per_patch in ((0.02, 32), (0.01, 8), (0.05, 64))]
    cases.append(("units an exact multiple of the patch size", 5000, 10.0, 64, 0.02, 32))
    for case, n_spikes, duration, n_units, bin_size, per_patch in cases:
        recording = SimpleNamespace(n_spikes=n_spikes, start_time=0.0, stop_time=duration, n_units=n_units)
        expected = token_counts(recording, bin_size, per_patch)
        got = call_student(student_fn, (n_spikes, duration, n_units, bin_size, per_patch), case=case)
        if not isinstance(got, dict) or set(got) != {"spike", "bin", "patch"}:
            raise CheckFailed(f"`{_name(student_fn)}` should return a dict with the keys 'spike', 'bin' and 'patch', "
                              f"got {got if not isinstance(got, dict) else sorted(got)}")
        for key in ("spike", "bin", "patch"):
            compare(got[key], expected[f"{key} tokens / s"], what=f"{key} tokens per second", case=case, rtol=1e-9,
                    hint="spikes: one token per spike; bins: one per bin; patches: one per bin and group of "
                         "neurons (round the number of groups up)")
    passed(_name(student_fn), "mini_decoders.viz.token_counts", len(cases))


# ================================================================================================
# Assignment 2: adapt a pretrained model to a new session

@exercise(function="layer_lr_multipliers", source=A2, reference="mini_decoders.models.ndt2.NDT2.lr_multipliers",
          assignment=2, points=30, title="layer-wise learning-rate decay for fine-tuning (NDT2, MAE recipe)")
def check_layer_lr_multipliers(student_fn) -> None:
    """Learning-rate multiplier per layer: the deeper, the closer to 1."""
    from mini_decoders.models.ndt2 import NDT2

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    random_decay = float(np.round(rng.uniform(0.3, 0.95), 3))
    cases = [(f"{n} layers, decay {d}", n, d) for n, d in ((4, 0.75), (1, 0.5), (6, random_decay))]
    for case, n_layers, decay in cases:
        stand_in = SimpleNamespace(config={"layer_decay": decay, "new_param_lr_mult": 10.0, "finetune_lr_scale": 0.5,
                                           "finetune_pooled_lr_mult": 0.1},
                                   encoder=[None] * n_layers)
        rules = NDT2.lr_multipliers(stand_in)
        expected = {key: value for key, value in rules.items() if key == "tokenizer." or key.startswith("encoder.")}
        got = call_student(student_fn, (n_layers, decay), case=case)
        if not isinstance(got, dict) or set(got) != set(expected):
            shown = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) should return a dict with the keys "
                              f"{sorted(expected)}, got {shown}")
        for key in expected:
            compare(got[key], expected[key], what=f"the multiplier of {key!r}", case=case, rtol=1e-9,
                    hint="encoder layer i of L gets decay ** (L - i): the last layer decay ** 1, the first decay ** L; "
                         "the tokenizer sits below layer 0 and gets decay ** (L + 1)")
    passed(_name(student_fn), "NDT2.lr_multipliers", len(cases))


def _tiny_poyo(seed: int):
    """A small POYO built on one simulated session, plus a second session it has never seen."""
    from mini_decoders.data.simulate import simulate
    from mini_decoders.models.poyo import POYO

    data = simulate(n_sessions=2, n_trials=16, n_units=10, seed=seed % 1000)
    torch.manual_seed(seed)
    model = POYO.build(data.sessions[:1], POYO.CONFIGS["tiny"])
    return model, data.sessions


@exercise(function="unit_id_parameter_count", source=A2, reference="mini_decoders.models.poyo.POYO.finetune",
          assignment=2, points=30, title="how many numbers unit identification learns")
def check_unit_id_parameter_count(student_fn) -> None:
    """The number of values unit identification trains: one embedding per new unit and new session."""
    from mini_decoders.models.base import SessionSpec

    seed = fresh_seed()
    model, sessions = _tiny_poyo(seed)
    dim = int(model.config["dim"])
    cases = []
    for case, session in (("the session the model was trained on", sessions[0]), ("a new session", sessions[1])):
        known_units = set(model.tokenizer.unit_vocab.ids)
        new_units = [u for u in SessionSpec.of(session).unit_ids if u not in known_units]
        new_sessions = int(session.id not in model.session_vocab.ids)
        cases.append((case, session, (len(new_units) + new_sessions) * dim))
    for case, session, expected in cases:
        sizes = (len(model.tokenizer.unit_vocab), len(model.session_vocab))
        got = call_student(student_fn, (model, session), case=case)
        if (len(model.tokenizer.unit_vocab), len(model.session_vocab)) != sizes:
            raise CheckFailed(f"`{_name(student_fn)}` changed the model (its vocabularies grew): only count, "
                              f"do not adapt")
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, (int, np.integer)) and not (isinstance(got, float) and got.is_integer()):
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) should return a whole number, got {got!r}")
        if int(got) != expected:
            raise CheckFailed(f"`{_name(student_fn)}` ({case}) returned {int(got)}, expected {expected}\n  hint: a unit "
                              f"the model already knows needs nothing; each unknown unit and an unknown session get one "
                              f"embedding row of model.config['dim'] numbers; nothing else learns")
    passed(_name(student_fn), "the rows POYO.finetune(mode='units') adds", len(cases))


@exercise(function="adapt_units", source=A2, reference="mini_decoders.models.poyo.POYO.finetune", assignment=2,
          points=40, title="unit identification of a pretrained POYO on a new session")
def check_adapt_units(student_fn) -> None:
    """Adapt a POYO to a new session: new embeddings learn, every trained number stays bit-identical."""
    from mini_decoders.data.binning import bin_trials

    seed = fresh_seed()
    model, sessions = _tiny_poyo(seed)
    new_session = sessions[1]
    before = {name: value.detach().clone() for name, value in model.state_dict().items()
              if isinstance(value, torch.Tensor) and not name.endswith("_extra_state")}  # extra state: vocab ids
    n_units, n_sessions = len(model.tokenizer.unit_vocab), len(model.session_vocab)
    working = copy.deepcopy(model)
    result = call_student(student_fn, (working, new_session, 3), case=f"tiny POYO, a new session of "
                          f"{new_session.n_units} units, 3 steps, seed {seed}")
    adapted = result if isinstance(result, type(model)) else working
    try:
        adapted.spec_for(new_session)
    except Exception as error:  # the model still refuses the session: it was not adapted
        raise CheckFailed(f"the returned model still refuses the new session ({type(error).__name__}: "
                          f"{str(error)[:120]}...)\n  hint: the model must learn embeddings for the session's units; "
                          f"look at POYO.finetune") from None
    if len(adapted.tokenizer.unit_vocab) != n_units + new_session.n_units or len(adapted.session_vocab) != n_sessions + 1:
        raise CheckFailed(f"expected {new_session.n_units} new unit rows and 1 new session row, found "
                          f"{len(adapted.tokenizer.unit_vocab) - n_units} and {len(adapted.session_vocab) - n_sessions}")
    after = adapted.state_dict()
    growing = {"tokenizer.unit_vocab.weight": n_units, "session_vocab.weight": n_sessions}
    for name, old in before.items():
        new = after[name]
        if name in growing:
            new = new[:growing[name]]
        if not torch.equal(new, old):
            raise CheckFailed(f"`{name}` changed during adaptation ({int((new != old).sum())} numbers differ)\n  hint: "
                              f"unit identification freezes the whole trained model; only the *new* rows of the unit "
                              f"and session embeddings may learn (mode='units', not 'full')")
    binned = bin_trials(new_session, 0.02, split="test", behavior=("hand_vel",))
    velocity = adapted.predict_trials(new_session, binned)["hand_vel"]
    if not np.isfinite(velocity[binned.mask]).all():
        raise CheckFailed("the adapted model predicts non-finite velocities on the new session")
    passed(_name(student_fn), "POYO.finetune(mode='units')", 1,
           ": the new session is accepted and every trained number is bit-identical")


# ================================================================================================
# Assignment 3: design a masking scheme

@exercise(function="neuron_mask", source=A3, reference="mini_decoders.masking.mask_counts", assignment=3, points=30,
          title="neuron masking: hide whole neurons (MtM's co-smoothing-like scheme)")
def check_neuron_mask(student_fn) -> None:
    """Hide whole neurons in every bin."""
    from mini_decoders.masking import MaskConfig, mask_counts

    seed = fresh_seed()
    cases = [(f"shape {shape}, ratio {ratio}, seed {seed + i}", shape, ratio, seed + i)
             for i, (shape, ratio) in enumerate((((4, 20, 10), 0.3), ((2, 5, 40), 0.5), ((3, 8, 2), 0.9)))]
    for case, shape, ratio, case_seed in cases:
        counts = torch.poisson(torch.full(shape, 2.0), generator=torch.Generator().manual_seed(case_seed + 1000))
        expected = mask_counts(counts, MaskConfig(scheme="neuron", ratio=ratio),
                               generator=torch.Generator().manual_seed(case_seed))
        got = _pair(call_student(student_fn, (counts, ratio, torch.Generator().manual_seed(case_seed)), case=case),
                    "the masked counts and the loss mask", _name(student_fn))
        hint = ("draw torch.rand((B, U), generator=generator) once and hide neuron u of sample b when its number is < "
                "ratio; a hidden neuron is hidden in every bin and its counts become 0")
        compare(got[1], expected[1], what="the loss mask", case=case, hint=hint)
        compare(got[0], expected[0], what="the masked counts", case=case, hint=hint)
    passed(_name(student_fn), "mini_decoders.masking.mask_counts (scheme='neuron')", len(cases))


@exercise(function="span_selection", source=A3, reference="mini_decoders.masking.temporal_selection", assignment=3,
          points=40, title="span masking without a loop over bins")
def check_span_selection(student_fn) -> None:
    """Hide spans of 1..max_span consecutive bins."""
    from mini_decoders.masking import temporal_selection

    seed = fresh_seed()
    cases = [(f"{b} x {t} bins, ratio {r}, spans up to {s}, seed {seed + i}", b, t, r, s, seed + i)
             for i, (b, t, r, s) in enumerate(((4, 50, 0.25, 3), (2, 30, 0.4, 6), (3, 20, 0.2, 1), (1, 5, 0.9, 4)))]
    for case, batch, n_bins, ratio, max_span, case_seed in cases:
        expected = temporal_selection(batch, n_bins, ratio, max_span, generator=torch.Generator().manual_seed(case_seed))
        got = call_student(student_fn, (batch, n_bins, ratio, max_span, torch.Generator().manual_seed(case_seed)),
                           case=case)
        compare(got, expected, what="the hidden bins", case=case,
                hint="max_span 1: one draw, hidden where < ratio. Otherwise: span starts where a first draw < ratio / "
                     "mean span, lengths from torch.randint(1, max_span + 1, ...) (second draw); a bin is hidden when "
                     "the running maximum (cummax) of the span ends up to it lies beyond it")
    passed(_name(student_fn), "mini_decoders.masking.temporal_selection", len(cases))


@exercise(function="region_mask", source=A3, reference="(MtM inter-region masking, re-derived in the assignment)",
          assignment=3, points=30, title="inter-region masking: hide every neuron of one brain region")
def check_region_mask(student_fn) -> None:
    """Hide all neurons of one region per sample (MtM's inter-region scheme)."""
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for i, (batch, n_bins, names) in enumerate(((6, 10, ("M1", "PMd")), (8, 4, ("M1", "PMd", "S1")), (2, 3, ("V1",)))):
        regions = np.array(names)[rng.integers(0, len(names), 12)]
        regions[: len(names)] = names  # every region has at least one neuron
        cases.append((f"{batch} samples, regions {sorted(set(regions))}, seed {seed + i}", batch, n_bins, regions, seed + i))
    for case, batch, n_bins, regions, case_seed in cases:
        counts = torch.poisson(torch.full((batch, n_bins, len(regions)), 2.0)) + 1.0  # no zeros: hiding is visible
        got = _pair(call_student(student_fn, (counts, regions, torch.Generator().manual_seed(case_seed)), case=case),
                    "the masked counts and the loss mask", _name(student_fn))
        masked, loss_mask = got
        if not isinstance(loss_mask, torch.Tensor) or loss_mask.shape != counts.shape or loss_mask.dtype != torch.bool:
            raise CheckFailed(f"the loss mask ({case}) should be a bool tensor of shape {tuple(counts.shape)}, got "
                              f"{type(loss_mask).__name__} {getattr(loss_mask, 'shape', '')} "
                              f"{getattr(loss_mask, 'dtype', '')}")
        if not (loss_mask == loss_mask[:, :1]).all():
            raise CheckFailed(f"the loss mask ({case}) changes over time: a region is hidden in every bin")
        names = sorted(set(regions))
        for b in range(batch):
            hidden_units = set(np.flatnonzero(loss_mask[b, 0].numpy()))
            region_sets = [set(np.flatnonzero(regions == name)) for name in names]
            if hidden_units not in region_sets:
                raise CheckFailed(f"sample {b} ({case}) hides units {sorted(hidden_units)}, which is not exactly one "
                                  f"region\n  hint: hide every neuron whose region is the chosen one, and nothing else")
        chosen = torch.randint(len(names), (batch,), generator=torch.Generator().manual_seed(case_seed))
        expected_mask = torch.from_numpy(np.array(names)[chosen.numpy()][:, None] == regions[None, :])  # (B, U)
        expected_mask = expected_mask[:, None, :].expand(counts.shape)
        compare(loss_mask, expected_mask, what="the loss mask", case=case,
                hint="draw the region of each sample with torch.randint(len(names), (B,), generator=generator), "
                     "where names = sorted(set(regions))")
        compare(masked, torch.where(expected_mask, torch.zeros_like(counts), counts), what="the masked counts",
                case=case, hint="hidden entries become 0, the rest are unchanged")
    passed(_name(student_fn), "inter-region masking (one region hidden per sample)", len(cases))
