"""Checks of assignment 3 (design a masking scheme); each item carries its rubric points.

Outcome items measure what the student's choice achieves, graded by :mod:`mini_decoders.course.outcomes`.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, pair_of, passed, student_name
from mini_decoders.course.outcomes import grade_outcome, measure_once, outcome_setting
from mini_decoders.course.registry import exercise
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.simulate import simulate
from mini_decoders.evaluation import evaluate_tasks
from mini_decoders.masking import MaskConfig, mask_counts, temporal_selection
from mini_decoders.models.ndt1 import NDT1, poisson_nll_terms


A3 = "assignment_3_masking"
_SESSIONS: dict = {}  # simulated data of each setting, built once per process

# ================================================================================================
# Assignment 3: design a masking scheme

@exercise(function="neuron_mask", source=A3, reference="mini_decoders.masking.mask_counts", assignment=3, points=20,
          title="neuron masking: hide whole neurons (MtM's co-smoothing-like scheme)")
def check_neuron_mask(student_fn) -> None:
    """Hide whole neurons in every bin."""
    seed = fresh_seed()
    cases = [(f"shape {shape}, ratio {ratio}, seed {seed + i}", shape, ratio, seed + i)
             for i, (shape, ratio) in enumerate((((4, 20, 10), 0.3), ((2, 5, 40), 0.5), ((3, 8, 2), 0.9)))]
    for case, shape, ratio, case_seed in cases:
        counts = torch.poisson(torch.full(shape, 2.0), generator=torch.Generator().manual_seed(case_seed + 1000))
        expected = mask_counts(counts, MaskConfig(scheme="neuron", ratio=ratio),
                               generator=torch.Generator().manual_seed(case_seed))
        got = pair_of(call_student(student_fn, (counts, ratio, torch.Generator().manual_seed(case_seed)), case=case),
                      "the masked counts and the loss mask", student_name(student_fn))
        hint = ("draw torch.rand((B, U), generator=generator) once and hide neuron u of sample b when its number is < "
                "ratio; a hidden neuron is hidden in every bin and its counts become 0")
        compare(got[1], expected[1], what="the loss mask", case=case, hint=hint)
        compare(got[0], expected[0], what="the masked counts", case=case, hint=hint)
    passed(student_name(student_fn), "mini_decoders.masking.mask_counts (scheme='neuron')", len(cases))


@exercise(function="span_selection", source=A3, reference="mini_decoders.masking.temporal_selection", assignment=3,
          points=25, title="span masking without a loop over bins")
def check_span_selection(student_fn) -> None:
    """Hide spans of 1..max_span consecutive bins."""
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
    passed(student_name(student_fn), "mini_decoders.masking.temporal_selection", len(cases))


@exercise(function="region_mask", source=A3, reference="(MtM inter-region masking, re-derived in the assignment)",
          assignment=3, points=15, title="inter-region masking: hide every neuron of one brain region")
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
        got = pair_of(call_student(student_fn, (counts, regions, torch.Generator().manual_seed(case_seed)), case=case),
                      "the masked counts and the loss mask", student_name(student_fn))
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
    passed(student_name(student_fn), "inter-region masking (one region hidden per sample)", len(cases))


MASKING_SETUP = {
    "tiny": dict(n_trials=100, n_units=40, seed=5, steps=200, model=dict()),
    "quick": dict(n_trials=200, n_units=80, seed=5, steps=500,
                  model=dict(dim=64, layers=2, heads=4, ffn_dim=128, factors=16, kernel_bins=9, batch_size=32)),
}
MASKING_QUESTIONS = {"co-smoothing bits/spike (test trials)": "heldin_co_smoothing",
                     "inter-region bits/spike (test trials)": "inter_region"}


def masking_problem(setting: str | None = None):
    """Assignment 3 part 4: one simulated session (M1 and PMd, no held-out units), fixed per setting."""
    setting = setting or outcome_setting()
    key = ("masking", setting)
    if key not in _SESSIONS:
        setup = MASKING_SETUP[setting]
        _SESSIONS[key] = simulate(n_sessions=1, n_trials=setup["n_trials"], n_units=setup["n_units"],
                                  seed=setup["seed"], heldout_fraction=0.0).sessions[0]
    return _SESSIONS[key]


def _validate_mask(mask_fn: Callable, counts: torch.Tensor, regions: np.ndarray, case: str) -> None:
    """The scheme's output on one batch: shapes, a bool loss mask, hidden entries zero, the rest untouched."""
    name = student_name(mask_fn)
    masked, loss_mask = pair_of(call_student(mask_fn, (counts, regions, torch.Generator().manual_seed(0)), case=case),
                                "the masked counts and the loss mask", name)
    for what, value in (("the masked counts", masked), ("the loss mask", loss_mask)):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(counts.shape):
            raise CheckFailed(f"{what} ({case}) should be a tensor of shape {tuple(counts.shape)}, got "
                              f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    if loss_mask.dtype != torch.bool:
        raise CheckFailed(f"the loss mask ({case}) should be boolean (True = hidden and scored), got {loss_mask.dtype}")
    leaked = loss_mask & (masked != 0)
    if leaked.any():
        first = tuple(int(i) for i in leaked.nonzero()[0])
        raise CheckFailed(f"the masked counts ({case}): entry {first} is hidden but not 0 ({int(leaked.sum())} hidden "
                          f"entries are visible): hidden entries should be 0 in the input, or the model learns to copy")
    changed = ~loss_mask & (masked != counts)
    if changed.any():
        first = tuple(int(i) for i in changed.nonzero()[0])
        raise CheckFailed(f"the masked counts ({case}): entry {first} is not hidden but changed "
                          f"({int(changed.sum())} entries): entries outside the loss mask should keep their counts")
    if not loss_mask.any():
        raise CheckFailed(f"`{name}` ({case}) hides nothing: the loss mask should select the entries to predict")


def masking_outcome(mask_fn: Callable, setting: str | None = None, *, seed: int = 0) -> dict[str, float]:
    """Train a small NDT1 with ``mask_fn`` for the setting's step budget and score it on the test trials.

    The training loop: batches of train + val trials, ``masked, loss_mask = mask_fn(counts (B, T, U),
    regions (U,) names, generator)``, the Poisson NLL of the ``loss_mask`` entries, AdamW. The
    questions, on the test trials (:mod:`mini_decoders.evaluation`): co-smoothing (each neuron in
    turn hidden in every bin and predicted from the others, the MtM paper's) and inter-region (each
    region hidden and predicted from the other), in bits per spike.

    Returns:
        question -> bits/spike (the keys of :data:`MASKING_QUESTIONS`), plus ``steps`` and ``seconds``.
    """
    setting = setting or outcome_setting()
    setup = MASKING_SETUP[setting]
    session = masking_problem(setting)
    regions = np.asarray(session.units.region).astype(str)
    learn = bin_trials(session, 0.02, split=("train", "val"), behavior=())
    test = bin_trials(session, 0.02, split="test", behavior=())
    counts = torch.from_numpy(learn.counts.astype(np.float32))
    valid = torch.from_numpy(learn.mask)
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = {**NDT1.CONFIGS["tiny"], **setup["model"]}
        model = NDT1.build([session], config)
        empty = np.zeros((counts.shape[1], 0), dtype=np.float32)
        model._init_read_out_bias([{"session": 0, "heldin": learn.counts[i], "heldout": empty}
                                   for i in range(len(counts))])
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                      weight_decay=float(config["weight_decay"]))
        generator = torch.Generator().manual_seed(seed)
        batch_size = min(int(config["batch_size"]), len(counts))
        model.train()
        for step in range(int(setup["steps"])):
            rows = torch.randperm(len(counts), generator=generator)[:batch_size]
            batch, real = counts[rows], valid[rows]
            masked, loss_mask = mask_fn(batch.clone(), regions, generator)
            scored = (loss_mask & real[:, :, None]).float()
            log_rates = model(masked.float(), torch.zeros(len(rows), dtype=torch.int64), real)
            loss = (poisson_nll_terms(log_rates, batch) * scored).sum() / scored.sum().clamp_min(1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_counts, test_valid = test.counts.astype(np.float32), torch.from_numpy(test.mask)

    def predict(hidden: np.ndarray, task: str) -> np.ndarray:
        inputs = torch.from_numpy(np.where(hidden, 0.0, test_counts).astype(np.float32))
        return model._predict_rates(0, inputs, test_valid)

    results = evaluate_tasks(predict, test, np.zeros(session.n_units, dtype=bool), regions,
                             tasks=tuple(MASKING_QUESTIONS.values()))
    scores = {question: results[task]["bps"] for question, task in MASKING_QUESTIONS.items()}
    return {**scores, "steps": int(setup["steps"]), "seconds": time.perf_counter() - started}


@exercise(function="my_masking_scheme", source=A3, reference="mini_decoders.course.assignment_3_checks.masking_outcome",
          assignment=3, points=40, outcome=True,
          title="your masking scheme: measured co-smoothing and inter-region bits/spike on test trials")
def check_my_masking_scheme(student_fn) -> None:
    """Outcome: a small NDT1 trained with the student's scheme, scored on two questions on test trials."""
    setting = outcome_setting()
    session = masking_problem(setting)
    regions = np.asarray(session.units.region).astype(str)
    sample = torch.from_numpy(bin_trials(session, 0.02, split="train", behavior=()).counts[:8].astype(np.float32))
    case = f"{setting} setting: a batch of {tuple(sample.shape)} counts, regions {sorted(set(regions.tolist()))}"
    _validate_mask(student_fn, sample, regions, case)
    name = student_name(student_fn)

    def scheme(counts, regions, generator):
        return call_student(student_fn, (counts, regions, generator), case=case)

    scheme.__name__ = name
    measured = measure_once("my_masking_scheme", setting, student_fn, lambda: masking_outcome(scheme, setting))
    grade_outcome(name, "my_masking_scheme", measured, setting,
                  summary=f"{measured['steps']} training steps, {measured['seconds']:.0f} s",
                  hint="a scheme practises what it hides: the questions hide one neuron in every bin, and one whole "
                       "region; chapter 3's single bins practise neither (compare schemes with masking_outcome)")
