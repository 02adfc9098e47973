"""Checks of the chapters' exercises: each re-derives one piece of the package.

Every check takes the student's function, runs it on fresh random inputs plus fixed edge cases,
and compares it with the package's implementation (see :mod:`mini_decoders.course.checking`).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.course.checking import CheckFailed, call_student, compare, fresh_seed, passed
from mini_decoders.course.registry import exercise

CH1, CH2, CH3, CH4 = ("01_neural_data_and_tokens", "02_classic_decoders", "03_ndt1_masked_modelling",
                      "04_poyo_spike_tokens")
CH5 = "05_ndt2_multicontext"


def _name(function) -> str:
    return getattr(function, "__name__", "your function")


def _tuple_of(result, n: int, what: str, name: str):
    if not isinstance(result, (tuple, list)) or len(result) != n:
        raise CheckFailed(f"`{name}` should return {n} values ({what}), got {type(result).__name__}"
                          + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else ""))
    return result


# ================================================================================================
# Chapter 1: neural data and tokens

@exercise(function="my_bits_per_spike", source=CH1, reference="mini_decoders.metrics.bits_per_spike")
def check_bits_per_spike(student_fn) -> None:
    """Bits per spike against a per-neuron mean-rate null."""
    from mini_decoders.metrics import bits_per_spike

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n, t, u in ((20, 30, 8), (1, 50, 5), (7, 12, 30)):
        rates = rng.gamma(2.0, 0.4, size=(n, t, u))
        cases.append((f"random rates, shape {(n, t, u)}, seed {seed}", rates, rng.poisson(rates).astype(float)))
    rates = rng.gamma(2.0, 0.4, size=(10, 20, 6))
    spikes = rng.poisson(rates).astype(float)
    spikes[:, :, 2] = 0.0  # a neuron that never fires: its null rate is 0
    cases.append((f"neuron 2 never spikes, seed {seed}", rates, spikes))
    null = np.broadcast_to(spikes.mean((0, 1), keepdims=True), spikes.shape).copy()
    cases.append(("rates equal to the null model (the answer is 0)", np.maximum(null, 1e-9), spikes))
    for case, rates, spikes in cases:
        got = call_student(student_fn, (rates, spikes), case=case)
        expected = bits_per_spike(rates, spikes)
        hint = ("the null predicts each neuron's mean count over all trials and bins; "
                "bps = (NLL_null - NLL_model) / (ln 2 · total spikes)")
        try:
            value = float(got)
        except (TypeError, ValueError):
            value = None
        if value is not None and expected != 0 and np.isfinite(value):
            if np.isclose(value, -expected, rtol=1e-6):
                hint = "the sign is flipped: it is NLL(null) minus NLL(model), so better models score higher"
            elif np.isclose(value, expected * np.log(2), rtol=1e-6) or np.isclose(value, expected / np.log(2), rtol=1e-6):
                hint = "off by a factor ln 2: divide the nats by ln 2 exactly once to get bits"
        compare(got, expected, what="bits per spike", case=case, hint=hint, atol=1e-8, rtol=1e-6)
    passed(_name(student_fn), "mini_decoders.metrics.bits_per_spike", len(cases))


@exercise(function="my_bin_spikes", source=CH1, reference="mini_decoders.data.binning.bin_intervals")
def check_bin_spikes(student_fn) -> None:
    """Count one interval's spikes in bins: (T, U) counts."""
    from mini_decoders.data.binning import bin_intervals

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n_units, n_bins, bin_size, start in ((6, 25, 0.02, 1.3), (3, 40, 0.01, 0.0), (12, 8, 0.05, 10.0)):
        n_spikes = int(rng.integers(50, 300))
        # Spike positions in bins, kept away from bin edges (an edge is a floating-point coin toss);
        # some spikes fall before the start or after the end and must not be counted.
        position = rng.integers(-3, n_bins + 3, n_spikes) + rng.uniform(0.01, 0.99, n_spikes)
        times = np.sort(start + position * bin_size)
        units = rng.integers(0, n_units - 1, n_spikes)  # the last unit never fires
        cases.append((f"{n_units} units, {n_bins} bins of {bin_size * 1000:g} ms from t={start} s, seed {seed}",
                      (times, units, n_units, start, n_bins, bin_size)))
    cases.append(("a spike exactly at the start goes to bin 0", (np.array([2.0, 2.05]), np.array([1, 0]), 2, 2.0, 5, 0.02)))
    cases.append(("no spikes at all", (np.zeros(0), np.zeros(0, dtype=np.int64), 4, 0.0, 10, 0.02)))
    for case, args in cases:
        times, units, n_units, start, n_bins, bin_size = args
        got = call_student(student_fn, args, case=case)
        expected = bin_intervals(times, units, n_units, np.array([start]), n_bins, bin_size)[0]
        compare(got, expected, what="the counts", case=case, exact=True, kind="array",
                hint="bin t covers [start + t·bin_size, start + (t+1)·bin_size); spikes outside the interval are "
                     "dropped; the result is (n_bins, n_units) with every unit a column, even silent ones")
    passed(_name(student_fn), "the package's binning (bin_intervals)", len(cases))


# ================================================================================================
# Chapter 2: classic decoders

@exercise(function="my_causal_history", source=CH2, reference="mini_decoders.models.baselines.causal_history")
def check_causal_history(student_fn) -> None:
    """Lagged spike counts for the Wiener filter: (N, T, U·H)."""
    from mini_decoders.models.baselines import causal_history

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"shape {shape}, {lags} lags, seed {seed}", rng.poisson(1.0, size=shape).astype(float), lags)
             for shape, lags in (((3, 10, 4), 3), ((2, 15, 7), 8), ((4, 6, 3), 1))]
    cases.append(("more lags than bins", rng.poisson(1.0, size=(2, 3, 2)).astype(float), 5))
    for case, counts, lags in cases:
        got = call_student(student_fn, (counts, lags), case=case)
        compare(got, causal_history(counts, lags), what="the lagged features", case=case, kind="array",
                hint="feature u*H + k of bin t is unit u's count in bin t - k (k = 0 is the current bin), and 0 "
                     "before the trial starts; reshape (N, T, U, H) -> (N, T, U*H)")
    passed(_name(student_fn), "mini_decoders.models.baselines.causal_history", len(cases))


@exercise(function="my_smooth", source=CH2, reference="mini_decoders.metrics.smooth_spikes")
def check_smooth(student_fn) -> None:
    """Gaussian smoothing of counts along time, NLB's kernel."""
    from mini_decoders.metrics import smooth_spikes

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for kern_sd in (0.03, 0.05, 0.07, float(np.round(rng.uniform(0.02, 0.12), 3))):
        cases.append((f"kern_sd {kern_sd} s, 20 ms bins, seed {seed}", rng.poisson(0.8, size=(4, 40, 5)).astype(float),
                      0.02, kern_sd))
    cases.append(("10 ms bins, an odd number of taps", rng.poisson(0.5, size=(2, 60, 3)).astype(float), 0.01, 0.055))
    for case, counts, bin_size, kern_sd in cases:
        got = call_student(student_fn, (counts, bin_size, kern_sd), case=case)
        compare(got, smooth_spikes(counts, bin_size, kern_sd), what="the smoothed counts", case=case, atol=1e-9,
                kind="array", hint="sd = kern_sd / bin_size bins, int(6·sd) taps centred on the bin, weights summing "
                                   "to 1, a 'same' convolution along time only (axis 1)")
    passed(_name(student_fn), "mini_decoders.metrics.smooth_spikes", len(cases))


@exercise(function="my_r2", source=CH2, reference="mini_decoders.metrics.r2_score")
def check_r2(student_fn) -> None:
    """Velocity R², per output dimension, then averaged."""
    from mini_decoders.metrics import r2_score

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for m, d, noise in ((200, 2, 0.5), (50, 3, 2.0), (80, 1, 0.1)):
        true = rng.normal(size=(m, d)) * rng.uniform(0.5, 20.0, size=d) + rng.normal(size=d) * 5
        pred = true + noise * rng.normal(size=(m, d)) * true.std(0)
        cases.append((f"{m} bins, {d} outputs, noise {noise}, seed {seed}", pred, true))
    true = rng.normal(size=(100, 2)) * np.array([1.0, 50.0])
    cases.append(("outputs on very different scales", true + rng.normal(size=(100, 2)) * 0.8 * true.std(0), true))
    cases.append(("predicting the mean scores 0", np.broadcast_to(true.mean(0), true.shape).copy(), true))
    for case, pred, true in cases:
        got = call_student(student_fn, (pred, true), case=case)
        expected = r2_score(pred, true)
        hint = "R²_d = 1 - Σ(v - v̂)² / Σ(v - mean v)² for each output column d, then the mean over columns"
        try:
            value = float(got)
            pooled = 1 - np.sum((true - pred) ** 2) / np.sum((true - true.mean(0)) ** 2)
            if true.shape[1] > 1 and not np.isclose(pooled, expected) and np.isclose(value, pooled):
                hint = "you pooled the columns: compute one R² per output column, then average them"
            swapped = r2_score(true, pred)
            if not np.isclose(swapped, expected) and np.isclose(value, swapped):
                hint = "the arguments are swapped: the denominator uses the variance of the *true* values"
        except (TypeError, ValueError):
            pass
        compare(got, expected, what="R²", case=case, hint=hint, atol=1e-9, rtol=1e-7)
    passed(_name(student_fn), "mini_decoders.metrics.r2_score", len(cases))


# ================================================================================================
# Chapter 3: NDT1

@exercise(function="my_temporal_mask", source=CH3, reference="mini_decoders.masking.mask_counts")
def check_temporal_mask(student_fn) -> None:
    """Temporal masking: hide whole bins, score only them."""
    from mini_decoders.masking import MaskConfig, mask_counts, temporal_selection

    seed = fresh_seed()
    cases = []
    for offset, (shape, ratio) in enumerate((((4, 30, 10), 0.3), ((2, 50, 7), 0.2), ((1, 5, 3), 0.9))):
        cases.append((f"shape {shape}, ratio {ratio}, seed {seed + offset}", shape, ratio, seed + offset))
    for case, shape, ratio, case_seed in cases:
        counts = torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(case_seed))
        expected = mask_counts(counts, MaskConfig(scheme="temporal", ratio=ratio),
                               generator=torch.Generator().manual_seed(case_seed + 1))
        hidden = temporal_selection(shape[0], shape[1], ratio, generator=torch.Generator().manual_seed(case_seed + 1))
        got = _tuple_of(call_student(student_fn, (counts, hidden), case=case), 2,
                        "the masked input and the loss mask", _name(student_fn))
        compare(got[1], expected[1], what="the loss mask", case=case,
                hint="True for every neuron of a hidden bin: expand the (B, T) `hidden` over the neurons")
        compare(got[0], expected[0], what="the masked input", case=case,
                hint="hidden bins are 0 for every neuron; every other count is unchanged")
    passed(_name(student_fn), "mini_decoders.masking.mask_counts (scheme='temporal')", len(cases))


@exercise(function="my_masked_poisson_loss", source=CH3, reference="mini_decoders.models.ndt1.poisson_nll_terms")
def check_masked_poisson_loss(student_fn) -> None:
    """Mean Poisson NLL over the scored entries only."""
    from mini_decoders.models.ndt1 import poisson_nll_terms

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, ratio in (((4, 30, 10), 0.3), ((2, 7, 3), 0.5), ((3, 20, 5), 0.05)):
        scored = torch.rand(shape, generator=generator) < ratio
        scored[0, 0, 0] = True  # at least one scored entry
        cases.append((f"shape {shape}, {int(scored.sum())} scored entries, seed {seed}",
                      torch.randn(shape, generator=generator) * 0.5,
                      torch.poisson(torch.full(shape, 1.2), generator=generator), scored))
    for case, log_rates, targets, scored in cases:
        reference = (poisson_nll_terms(log_rates, targets) * scored).sum() / scored.sum()
        leaf = log_rates.clone().requires_grad_(True)
        got = call_student(student_fn, (leaf, targets, scored), case=case)
        compare(got, reference, what="the loss", case=case, atol=1e-5, kind="number",
                hint="the mean of exp(log λ) - y·log λ over the scored entries only (divide by their number, not "
                     "by all entries)")
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise CheckFailed(f"the loss ({case}) must be a torch scalar that carries gradients back to `log_rates`; "
                              f"got {type(got).__name__}. Stay in torch (no .item(), no numpy) so training can call "
                              f".backward() on it")
        got.backward()
        reference_leaf = log_rates.clone().requires_grad_(True)
        ((poisson_nll_terms(reference_leaf, targets) * scored).sum() / scored.sum()).backward()
        compare(leaf.grad, reference_leaf.grad, what="the gradient of the loss w.r.t. log_rates", case=case, atol=1e-6,
                hint="entries that are not scored must get exactly zero gradient")
        changed = torch.where(scored, targets, targets + 7)
        again = call_student(student_fn, (log_rates, changed, scored), case=case)
        compare(again, reference, what="the loss after changing only *unscored* targets", case=case, atol=1e-5,
                kind="number", hint="targets outside `scored` must not affect the loss")
    passed(_name(student_fn), "the masked mean of mini_decoders.models.ndt1.poisson_nll_terms", len(cases),
           " (value and gradient)")


# ================================================================================================
# Chapter 4: POYO

@exercise(function="rotate_by_time", source=CH4, reference="mini_decoders.nn.rotary.RotaryTimeEmbedding")
def check_rotate_by_time(student_fn) -> None:
    """Rotary time embedding: turn each pair of dimensions by omega · t."""
    from mini_decoders.nn.rotary import RotaryTimeEmbedding, apply_rotary

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    rotary = RotaryTimeEmbedding(dim_head=16)
    cases.append((f"POYO's angular speeds (dim_head 16), seed {seed}", torch.randn(5, 16, generator=generator,
                  dtype=torch.float64), torch.rand(5, generator=generator, dtype=torch.float64),
                  rotary.omega(torch.device("cpu"), torch.float64)))
    cases.append((f"random speeds, 8 dims, times up to 3 s, seed {seed}",
                  torch.randn(7, 8, generator=generator, dtype=torch.float64),
                  3 * torch.rand(7, generator=generator, dtype=torch.float64),
                  10 * torch.rand(4, generator=generator, dtype=torch.float64)))
    cases.append(("time 0 leaves x unchanged", torch.randn(3, 6, generator=generator, dtype=torch.float64),
                  torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)))
    for case, x, times, omega in cases:
        angles = (times[:, None] * omega[None, :]).repeat_interleave(2, dim=-1)  # (N, D)
        expected = apply_rotary(x, angles.cos(), angles.sin())
        got = call_student(student_fn, (x, times, omega), case=case)
        compare(got, expected, what="the rotated x", case=case, atol=1e-9,
                hint="pair k is (x[:, 2k], x[:, 2k+1]) and turns by omega[k]·t: "
                     "(a, b) -> (a·cos - b·sin, a·sin + b·cos)")
    # The property rotary embeddings exist for: scores depend on time differences only.
    x = torch.randn(2, 16, generator=generator, dtype=torch.float64)
    omega = rotary.omega(torch.device("cpu"), torch.float64)
    shift = float(torch.rand(1, generator=generator)) + 0.1
    times = torch.tensor([0.2, 0.55], dtype=torch.float64)
    first = call_student(student_fn, (x, times, omega))
    second = call_student(student_fn, (x, times + shift, omega))
    compare(first[0] @ first[1], second[0] @ second[1], what="q·k after shifting both times by the same amount",
            kind="number", atol=1e-8, hint="a rotation by ω·t_q against one by ω·t_k depends on t_k - t_q only")
    passed(_name(student_fn), "the package's rotary embedding (RotaryTimeEmbedding)", len(cases) + 1)


@exercise(function="my_keep_new_rows", source=CH4, reference="mini_decoders.models.poyo.POYO.finetune")
def check_keep_new_rows(student_fn) -> None:
    """Unit identification's gradient mask: old embedding rows get exactly zero gradient."""
    from mini_decoders.nn.vocab import GrowingVocabEmbedding

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(f"{n} rows, {n_old} old, seed {seed}", torch.randn(n, 4, generator=generator), n_old)
             for n, n_old in ((10, 6), (5, 0), (5, 5), (1, 0))]
    for case, grad, n_old in cases:
        expected = grad * (torch.arange(grad.shape[0]) >= n_old)[:, None]
        got = call_student(student_fn, (grad, n_old), case=case)
        compare(got, expected, what="the masked gradient", case=case, exact=True,
                hint="rows 0..n_old-1 are the units the model already knows: their gradient becomes exactly 0; "
                     "rows from n_old on are new units and keep their gradient")
        original = grad.clone()
        student_fn(grad, n_old)
        if not torch.equal(grad, original):
            raise CheckFailed(f"`{_name(student_fn)}` changed the gradient it was given in place ({case}); a tensor "
                              f"hook must return a new tensor (e.g. grad * mask) and leave its argument alone")
    # Used as the hook it is: one Adam step must leave every old row bit-identical.
    table = GrowingVocabEmbedding(8)
    table.extend([f"old/{i}" for i in range(6)])
    before = table.weight.detach().clone()
    table.extend([f"new/{i}" for i in range(3)])
    new_before = table.weight.detach()[6:].clone()
    hook = table.weight.register_hook(lambda grad: student_fn(grad, 6))
    optimizer = torch.optim.Adam([table.weight], lr=0.1)
    try:
        loss = (table(torch.arange(9)) ** 2).sum() + table(torch.arange(9)).sum()
        loss.backward()
        optimizer.step()
    finally:
        hook.remove()
    compare(table.weight.detach()[:6], before, what="the old rows after an Adam step with your hook", exact=True,
            case="6 old units, 3 new ones", hint="unit identification must not move a single number of the trained model")
    if torch.equal(table.weight.detach()[6:], new_before):
        raise CheckFailed("the new rows did not learn: their gradient must pass through unchanged")
    passed(_name(student_fn), "POYO's unit identification (old rows frozen, new rows learn)", len(cases) + 1)


# ================================================================================================
# Chapter 5: NDT2

@exercise(function="my_patch_embedding", source=CH5, reference="mini_decoders.tokenizers.patches.PatchTokenizer")
def check_patch_embedding(student_fn) -> None:
    """NDT2's patch token: per-neuron count embeddings side by side."""
    from mini_decoders.tokenizers.patches import PatchTokenizer

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = [(f"{t} bins x {u} neurons, {n} per token, counts up to {mc}, seed {seed}", t, u, n, mc, d)
             for t, u, n, mc, d in ((12, 70, 32, 20, 2), (5, 16, 8, 3, 3), (4, 5, 8, 6, 1), (6, 9, 3, 4, 2))]
    for case, n_bins, n_units, per_token, max_count, d in cases:
        counts = rng.poisson(2.0, size=(n_bins, n_units)).astype(float)
        counts[0, 0] = max_count + 5  # clamped to max_count
        torch.manual_seed(int(rng.integers(1 << 30)))
        tokenizer = PatchTokenizer(dim=per_token * d, neurons_per_token=per_token, max_count=max_count)
        table = tokenizer.count_embedding.weight.detach().numpy().astype(np.float64)
        batch = torch.as_tensor(counts)[None]
        tokens = tokenizer.tokenize(batch, torch.ones(1, n_units, dtype=torch.bool), torch.ones(1, n_bins, dtype=torch.bool))
        expected = tokenizer.embed_counts(tokens.counts, tokens.channel_mask)[0].detach().numpy()
        got = call_student(student_fn, (counts, table, per_token, max_count), case=case)
        compare(got, expected, what="the patch tokens", case=case, atol=1e-6, kind="array",
                hint="clamp counts to [0, max_count], pad the neurons to a multiple of neurons_per_token with zero "
                     "vectors (not table[0]), and order the tokens time-major: token t·P + p")
    passed(_name(student_fn), "PatchTokenizer.embed_counts", len(cases))


@exercise(function="my_mae_visible", source=CH5, reference="mini_decoders.models.ndt2.random_visible")
def check_mae_visible(student_fn) -> None:
    """The MAE shuffle: which tokens the encoder sees, from one uniform draw per token."""
    from mini_decoders.models.ndt2 import random_visible

    seed = fresh_seed()
    cases = []
    for offset, (shape, ratio, p_real) in enumerate((((4, 40), 0.5, 0.8), ((3, 25), 0.75, 0.5), ((2, 10), 0.9, 1.0))):
        real = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 100 + offset)) < p_real
        cases.append((f"shape {shape}, mask ratio {ratio}, seed {seed + offset}", real, ratio, seed + offset))
    edge = torch.zeros(3, 6, dtype=torch.bool)
    edge[1, 2] = True  # one real token: it stays visible
    edge[2, :3] = True  # three tokens at ratio 0.9: floor gives 0, at least one stays visible
    cases.append(("a row without real tokens, a row with one, a row with three", edge, 0.9, seed + 7))
    for case, real, ratio, case_seed in cases:
        noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(case_seed))
        expected = random_visible(real, ratio, torch.Generator().manual_seed(case_seed))
        got = call_student(student_fn, (noise, real, ratio), case=case)
        compare(got, expected, what="the visible tokens", case=case,
                hint="per row: rank the real tokens by their noise (smallest first), keep the first "
                     "max(1, floor((1 - mask_ratio) · n_real)); padding is never visible")
    passed(_name(student_fn), "mini_decoders.models.ndt2.random_visible", len(cases))


# ================================================================================================
# Chapters 4-6 (issue 20): POYO's spike -> latent cross-attention, NDT2's MAE loss, MtM's region
# masks and the paper's per-neuron bits/spike. One block, so that it merges apart from 7-9.

CH6 = "06_mtm_universal_translator"


def _cross_attention_variant(latents, spikes, spike_mask, latent_times, spike_times, w_q, w_k, w_v, rotate, *,
                             scale=True, mask=True, rotate_values=True, rotate_back=True, softmax_dim=-1):
    """One head of rotary cross-attention, written out; the flags reproduce typical mistakes for hints."""
    q = rotate(latents @ w_q, latent_times)
    k = rotate(spikes @ w_k, spike_times)
    v = spikes @ w_v
    if rotate_values:
        v = rotate(v, spike_times)
    scores = q @ k.T
    if scale:
        scores = scores / q.shape[-1] ** 0.5
    if mask:
        scores = scores.masked_fill(~spike_mask[None, :], float("-inf"))
    out = scores.softmax(dim=softmax_dim) @ v
    return rotate(out, latent_times, invert=True) if rotate_values and rotate_back else out


def _matches(got, candidate) -> bool:
    try:
        got = torch.as_tensor(got, dtype=candidate.dtype)
    except (TypeError, ValueError, RuntimeError):
        return False
    return got.shape == candidate.shape and bool(torch.allclose(got, candidate, atol=1e-8, rtol=1e-6))


@exercise(function="my_latent_cross_attention", source=CH4, reference="mini_decoders.nn.attention.CrossAttention")
def check_latent_cross_attention(student_fn) -> None:
    """POYO's encoder: one head of latents reading spike tokens, with rotary time."""
    from mini_decoders.course.checking import describe
    from mini_decoders.nn.attention import CrossAttention
    from mini_decoders.nn.rotary import RotaryTimeEmbedding

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n_latents, n_spikes, n_padding, dim, dim_head, rotate_fraction in (
            (8, 30, 0, 16, 8, 0.5), (6, 25, 7, 12, 16, 0.5), (4, 9, 3, 10, 6, 1.0), (1, 1, 0, 4, 2, 1.0)):
        cases.append((f"{n_latents} latents, {n_spikes} spike tokens ({n_padding} of them padding), dim {dim}, "
                      f"head {dim_head}, seed {seed}", n_latents, n_spikes, n_padding, dim, dim_head, rotate_fraction))
    for case, n_latents, n_spikes, n_padding, dim, dim_head, rotate_fraction in cases:
        attention = CrossAttention(dim, heads=1, dim_head=dim_head).double().eval()
        with torch.no_grad():
            for layer in (attention.to_q, attention.to_kv):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64))
        rotary = RotaryTimeEmbedding(dim_head, rotate_fraction=rotate_fraction)
        latents = torch.randn(n_latents, dim, generator=generator, dtype=torch.float64)
        spikes = torch.randn(n_spikes, dim, generator=generator, dtype=torch.float64)
        spike_mask = torch.ones(n_spikes, dtype=torch.bool)
        if n_padding:
            spike_mask[-n_padding:] = False
            spikes[-n_padding:] = 5.0  # padding tokens hold junk that must not reach any latent
        latent_times = (torch.arange(n_latents, dtype=torch.float64) + 0.5) / n_latents  # in a 1 s window
        spike_times = torch.rand(n_spikes, generator=generator, dtype=torch.float64)

        def rotate(x, times, invert=False, rotary=rotary):
            """Turn the rows of x (M, d) by their times (M,) s (the package's RotaryTimeEmbedding)."""
            if not isinstance(x, torch.Tensor) or x.ndim != 2 or not isinstance(times, torch.Tensor) \
                    or times.shape != x.shape[:1]:
                raise ValueError(f"rotate(x, times) takes x of shape (M, {rotary.dim_head}) and times of shape (M,); "
                                 f"got {describe(x)} and {describe(times)}: rotate q by the latent times, k and v by "
                                 f"the spike times")
            return rotary.rotate(x[None, None], times[None], invert=invert)[0, 0]

        captured = []
        hook = attention.to_out.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
        try:
            with torch.no_grad():
                attention(latents[None], spikes[None], context_mask=spike_mask[None], query_time=latent_times[None],
                          context_time=spike_times[None], rotary=rotary, rotate_value=True)
        finally:
            hook.remove()
        expected = captured[0][0]  # (N, dim_head): the head's output, before the output projection
        w_q = attention.to_q.weight.detach().T.clone()  # (D, d)
        w_k, w_v = (part.T.clone() for part in attention.to_kv.weight.detach().chunk(2, dim=0))
        args = (latents, spikes, spike_mask, latent_times, spike_times, w_q, w_k, w_v, rotate)
        got = call_student(student_fn, args, case=case)
        hint = ("q = latents @ w_q rotated by the latent times; k and v = spikes @ w_k, spikes @ w_v rotated by the "
                "spike times; softmax(q kᵀ / √d) over the real spikes, times v; rotate the result back by the latent "
                "times (invert=True)")
        mistakes = (({"scale": False}, "the scores are not scaled: divide q kᵀ by √d (d = the head size, w_q.shape[1])"),
                    ({"mask": False}, "padding spike tokens were attended to: set their scores to -inf before the "
                                      "softmax (spike_mask is True for real tokens)"),
                    ({"rotate_values": False}, "POYO's encoder also rotates the values by the spike times, and turns "
                                               "the result back by the latent times (rotate(..., invert=True))"),
                    ({"rotate_back": False}, "turn the attention output back by the latent times, "
                                             "rotate(out, latent_times, invert=True): each latent then holds *when*, "
                                             "relative to itself, the spikes it read happened"),
                    ({"softmax_dim": 0}, "the softmax runs over the spikes (the last axis): each latent's weights over "
                                         "the spike tokens sum to 1"))
        for flags, message in mistakes:
            if _matches(got, _cross_attention_variant(*args, **flags)) and not _matches(got, expected):
                hint = message
                break
        compare(got, expected, what="the latents' attention output", case=case, atol=1e-8, kind="tensor", hint=hint)
    passed(_name(student_fn), "mini_decoders.nn.attention.CrossAttention (POYO's encoder, one head)", len(cases))


def _poisson_terms(log_rates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_rates) - counts * log_rates


@exercise(function="my_mae_loss", source=CH5, reference="mini_decoders.models.ndt2.NDT2.masked_poisson_loss")
def check_mae_loss(student_fn) -> None:
    """NDT2's MAE loss: Poisson NLL over the real neurons of the hidden tokens only."""
    from mini_decoders.models.ndt2 import NDT2
    from mini_decoders.tokenizers.patches import PatchTokens

    def reference(log_rates, counts, hidden, channel_mask):
        batch, length = hidden.shape
        zeros = torch.zeros(batch, length, dtype=torch.int64)
        tokens = PatchTokens(counts, channel_mask, zeros, zeros, torch.ones_like(hidden))
        # masked_poisson_loss reads only its `out` dict, so it runs without a built model.
        return NDT2.masked_poisson_loss(None, {"tokens": tokens, "log_rates": log_rates, "hidden": hidden})

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, n_bins, n_patches, per_token, n_padded, ratio in ((3, 10, 3, 8, 5, 0.5), (2, 6, 2, 4, 0, 0.75),
                                                                 (4, 5, 4, 3, 2, 0.25)):
        length = n_bins * n_patches
        channel_mask = torch.ones(batch, length, per_token, dtype=torch.bool)
        last_patch = torch.arange(length) % n_patches == n_patches - 1
        if n_padded:
            channel_mask[:, last_patch, per_token - n_padded:] = False  # the last patch of each bin is padded
        counts = torch.poisson(torch.full((batch, length, per_token), 1.3), generator=generator)
        counts = torch.where(channel_mask, counts, torch.full_like(counts, 9.0))  # junk in the padding
        hidden = torch.rand(batch, length, generator=generator) < ratio
        hidden[:, 0] = True
        cases.append((f"{batch} samples, {length} tokens of {per_token} neurons ({n_padded} padded in the last patch "
                       f"of each bin), mask ratio {ratio}, seed {seed}",
                       torch.randn(batch, length, per_token, generator=generator) * 0.5, counts, hidden, channel_mask))
    channel_mask = torch.ones(2, 4, 3, dtype=torch.bool)
    cases.append(("nothing hidden: the loss is 0 (not NaN)", torch.randn(2, 4, 3, generator=generator),
                  torch.ones(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool), channel_mask))
    for case, log_rates, counts, hidden, channel_mask in cases:
        expected = reference(log_rates, counts, hidden, channel_mask)
        leaf = log_rates.clone().requires_grad_(True)
        got = call_student(student_fn, (leaf, counts, hidden, channel_mask), case=case)
        hint = ("score entry (b, l, j) when token l is hidden AND neuron j is real: the sum of exp(log λ) - y·log λ "
                "over those entries, divided by their number (at least 1)")
        try:
            value = float(got.detach() if isinstance(got, torch.Tensor) else got)
        except (TypeError, ValueError, RuntimeError):
            value = None
        terms = _poisson_terms(log_rates, counts)
        scored = hidden[..., None] & channel_mask
        if value is not None and scored.any():
            hidden_all = hidden[..., None].expand_as(counts)
            if np.isclose(value, float(terms[hidden_all].mean()), atol=1e-5) and not channel_mask.all():
                hint = "padded neurons (channel_mask False) were scored: they are not neurons, leave them out"
            elif np.isclose(value, float((terms * scored).sum() / hidden.sum()), atol=1e-5):
                hint = "divide by the number of scored neurons (hidden token x real neuron), not of hidden tokens"
            elif np.isclose(value, float(terms[channel_mask].mean()), atol=1e-5):
                hint = "visible tokens were scored too: the MAE loss scores only the hidden tokens the decoder infilled"
        elif value is not None and not np.isfinite(value):
            hint = "with nothing hidden there is nothing to score: divide by max(1, number of scored entries)"
        compare(got, expected, what="the MAE loss", case=case, atol=1e-5, kind="number", hint=hint)
        if not isinstance(got, torch.Tensor) or not got.requires_grad:
            raise CheckFailed(f"the loss ({case}) must be a torch scalar that carries gradients back to `log_rates`; "
                              f"got {type(got).__name__}. Stay in torch (no .item(), no numpy)")
        if scored.any():
            got.backward()
            reference_leaf = log_rates.clone().requires_grad_(True)
            reference(reference_leaf, counts, hidden, channel_mask).backward()
            compare(leaf.grad, reference_leaf.grad, what="the gradient of the loss w.r.t. log_rates", case=case,
                    atol=1e-6, hint="visible tokens and padded neurons must get exactly zero gradient")
        # What the encoder saw, and padding, must not matter: change their targets and nothing moves.
        changed = torch.where(scored, counts, counts + 5.0)
        again = call_student(student_fn, (log_rates, changed, hidden, channel_mask), case=case)
        compare(again, expected, what="the loss after changing only the visible tokens' and the padding's counts",
                case=case, atol=1e-5, kind="number",
                hint="a visible token's counts were the encoder's input: predicting them teaches copying, so they "
                     "must not enter the loss; neither must padding")
    passed(_name(student_fn), "NDT2.masked_poisson_loss", len(cases), " (value, gradient, visible targets ignored)")


@exercise(function="my_inter_region_mask", source=CH6, reference="mini_decoders.masking.inter_region_selection")
def check_inter_region_mask(student_fn) -> None:
    """MtM's inter-region mask: hide every unit of each sample's target region."""
    from mini_decoders.masking import inter_region_selection, region_targets

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, n_units, n_regions in ((6, 12, 2), (4, 20, 3), (3, 5, 1)):
        regions = torch.randint(n_regions, (batch, n_units), generator=generator)
        regions[:, -2:] = -1  # padding units of no region: never hidden
        cases.append((f"{batch} samples, {n_units} units in {n_regions} region(s), seed {seed}", regions))
    empty = torch.tensor([[0, 1, 1, -1], [-1, -1, -1, -1]])
    cases.append(("a sample with no region at all (target -1)", empty))
    for offset, (case, regions) in enumerate(cases):
        target = region_targets(regions, generator=torch.Generator().manual_seed(seed + offset))
        expected = inter_region_selection(regions, generator=torch.Generator().manual_seed(seed + offset))
        got = call_student(student_fn, (regions, target), case=case)
        compare(got, expected, what="the hidden units", case=case,
                hint="hide unit u of sample b when regions[b, u] == target[b]; padding (-1) is never hidden, "
                     "not even when the target is -1")
    passed(_name(student_fn), "mini_decoders.masking.inter_region_selection", len(cases))


@exercise(function="my_intra_region_mask", source=CH6, reference="mini_decoders.masking.intra_region_selection")
def check_intra_region_mask(student_fn) -> None:
    """MtM's intra-region mask: hide the other regions and part of the target; score only that part."""
    from mini_decoders.masking import intra_region_selection, region_targets

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch, n_units, n_regions, ratio in ((6, 14, 2, 0.3), (4, 20, 3, 0.5), (3, 6, 1, 0.6), (2, 9, 3, 1.0)):
        regions = torch.randint(n_regions, (batch, n_units), generator=generator)
        regions[:, -2:] = -1
        cases.append((f"{batch} samples, {n_units} units in {n_regions} region(s), ratio {ratio}, seed {seed}",
                      regions, ratio))
    cases.append(("a sample with no region at all (target -1)", torch.tensor([[0, 1, 1, -1], [-1, -1, -1, -1]]), 0.5))
    for offset, (case, regions, ratio) in enumerate(cases):
        draws = torch.Generator().manual_seed(seed + offset)  # the package's draws, in its order
        target = region_targets(regions, generator=draws)
        noise = torch.rand(regions.shape, generator=draws)
        hidden, scored = intra_region_selection(regions, ratio, generator=torch.Generator().manual_seed(seed + offset))
        got = _tuple_of(call_student(student_fn, (regions, target, noise, ratio), case=case), 2,
                        "the hidden and the scored units", _name(student_fn))
        in_target = (regions == target[:, None]) & (regions >= 0)
        hint = "scored: units of the target region whose noise is below `ratio`; padding (-1) is never scored"
        if isinstance(got[1], torch.Tensor) and got[1].shape == hidden.shape and torch.equal(got[1].bool(), hidden):
            hint = ("the other regions are hidden but *not* scored (the paper's hatched areas): score only the "
                    "target region's hidden units")
        elif isinstance(got[1], torch.Tensor) and got[1].shape == hidden.shape \
                and torch.equal(got[1].bool(), in_target & (noise >= ratio)):
            hint = "hide the units whose noise is *below* ratio (noise < ratio), so that about `ratio` of them are hidden"
        compare(got[1], scored, what="the scored units", case=case, hint=hint)
        compare(got[0], hidden, what="the hidden units", case=case,
                hint="hidden = every real unit of the *other* regions, plus the scored units of the target; padding "
                     "(-1) is never hidden")
    passed(_name(student_fn), "mini_decoders.masking.intra_region_selection", len(cases))


def _neuron_bps_null_from_all(rates, counts, scored) -> float:
    """The per-neuron score with the typical mistake of a null rate from every entry, scored or not."""
    spikes = np.where(scored, counts, 0.0)
    lam = np.where(scored, rates, 1.0)
    n_scored, total = scored.sum((0, 1)), spikes.sum((0, 1))
    mean = np.maximum(counts.mean((0, 1)), 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_unit = (n_scored * mean - total * np.log(mean) - (np.where(scored, lam, 0.0) - spikes * np.log(lam))
                    .sum((0, 1))) / (total * np.log(2))
    per_unit = per_unit[total > 0]
    return float(per_unit.mean()) if len(per_unit) else float("nan")


@exercise(function="my_neuron_bps", source=CH6, reference="mini_decoders.evaluation.score_task")
def check_neuron_bps(student_fn) -> None:
    """The paper's per-neuron bits/spike: one score per neuron, then the mean over neurons."""
    from mini_decoders.evaluation import score_task
    from mini_decoders.metrics import bits_per_spike

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n, t, u, p_scored in ((6, 20, 8, 0.5), (3, 40, 5, 1.0), (10, 8, 12, 0.3)):
        true = rng.gamma(1.5, 0.5, size=(n, t, u)) * rng.uniform(0.2, 3.0, size=u)  # busy and quiet neurons
        counts = rng.poisson(true).astype(float)
        rates = true * rng.uniform(0.6, 1.4, size=true.shape)
        scored = rng.random((n, t, u)) < p_scored
        scored[0, 0] = True  # every neuron has at least one scored entry
        cases.append((f"{n} trials x {t} bins x {u} neurons, {p_scored:.0%} of entries scored, seed {seed}",
                      rates, counts, scored))
    rates, counts, scored = (c.copy() for c in cases[0][1:])
    counts[:, :, 1] = np.where(scored[:, :, 1], 0.0, counts[:, :, 1] + 4)  # neuron 1: no spike where it is scored
    scored[:, :, 2] = False  # neuron 2: never scored
    counts[:, :, 3] = np.where(scored[:, :, 3], counts[:, :, 3], 30.0)  # neuron 3: busy only where not scored
    cases.append(("neuron 1 never spikes on its scored entries, neuron 2 is never scored", rates, counts, scored))
    for case, rates, counts, scored in cases:
        expected = score_task(rates, counts, scored, None, 0.02)["neuron_bps"]
        got = call_student(student_fn, (rates, counts, scored), case=case)
        hint = ("for each neuron, over its scored entries only: (NLL of its mean count there - NLL of the rates) / "
                "(its spikes there · ln 2); leave out neurons with no spike there; then the mean over neurons")
        try:
            value = float(got)
        except (TypeError, ValueError):
            value = None
        if value is not None and np.isfinite(value) and np.isclose(value, _neuron_bps_null_from_all(rates, counts, scored),
                                                                   rtol=1e-6):
            hint = ("the null model of a neuron is its mean count over its *scored* entries, not over all of them: "
                    "the score asks what the model adds on the entries it is asked about")
        elif value is not None and not np.isfinite(value):
            hint = ("a neuron with no spike on its scored entries (or none scored) divides by zero: leave it out of "
                    "the mean (np.nanmean)")
        elif value is not None:
            pooled = bits_per_spike(np.where(scored, rates, 1.0), np.where(scored, counts, np.nan))
            if np.isclose(value, pooled, rtol=1e-6) and not np.isclose(pooled, expected, rtol=1e-6):
                hint = ("you pooled the neurons (NLB's bits/spike): compute one score per neuron, then average, "
                        "so that every neuron weighs the same")
        compare(got, expected, what="the per-neuron bits/spike", case=case, hint=hint, atol=1e-8, rtol=1e-6)
    passed(_name(student_fn), "score_task's neuron_bps (the paper's per-neuron score)", len(cases))


# ================================================================================================
# Chapters 7-9 (VQ tokens, side by side, real data)

CH7, CH8, CH9 = "07_vq_tokens", "08_side_by_side", "09_real_data"


@exercise(function="my_quantise", source=CH7, reference="mini_decoders.nn.quantize.VectorQuantizer")
def check_vq_quantise(student_fn) -> None:
    """VQ: nearest codebook row, with a straight-through gradient."""
    from mini_decoders.nn.quantize import VectorQuantizer

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = [(f"{n} vectors of size {c}, {k} codes, seed {seed}", n, c, k, False)
             for n, c, k in ((20, 4, 8), (7, 16, 32), (1, 2, 3))]
    cases.append((f"codes of very different lengths, seed {seed}", 40, 3, 6, True))
    for case, n, c, k, spread in cases:
        quantizer = VectorQuantizer(k, c, ema_decay=None).eval()
        codebook = torch.randn(k, c, generator=generator)
        if spread:  # lengths from 0.1 to 10: the largest dot product is rarely the nearest row
            codebook = codebook * torch.logspace(-1, 1, k)[:, None]
        with torch.no_grad():
            quantizer.codebook.copy_(codebook)
        z = torch.randn(n, c, generator=generator)
        expected = quantizer(z, update=False)
        leaf = z.clone().requires_grad_(True)
        got = _tuple_of(call_student(student_fn, (leaf, codebook.clone()), case=case), 2,
                        "the quantised vectors and the codes", _name(student_fn))
        if isinstance(got[0], torch.Tensor) and got[0].ndim == 1 and not got[0].is_floating_point():
            raise CheckFailed(f"`{_name(student_fn)}` returned the codes first ({case}): return (z_q, codes), the "
                              f"quantised vectors (N, C) and then the (N,) code indices")
        if isinstance(got[1], torch.Tensor) and got[1].is_floating_point():
            raise CheckFailed(f"the codes ({case}) should be integer indices (torch.long, as argmin returns them), "
                              f"got dtype {str(got[1].dtype).replace('torch.', '')}")
        hint = "the code of z is the index of the codebook row with the smallest squared distance ||z - e_k||²"
        if isinstance(got[1], torch.Tensor) and got[1].shape == expected.codes.shape:
            by_dot = (z @ codebook.t()).argmax(1)
            if torch.equal(got[1], by_dot) and not torch.equal(by_dot, expected.codes):
                hint = ("you picked the largest dot product z·e_k; that is the nearest row only when every row has "
                        "the same length. ||z - e_k||² = ||z||² - 2 z·e_k + ||e_k||²: keep the ||e_k||² term")
        compare(got[1], expected.codes, what="the codes", case=case, exact=True, hint=hint)
        compare(got[0], expected.quantized.detach(), what="the quantised vectors", case=case, atol=1e-5,
                hint="each vector is replaced by its nearest codebook row, codebook[codes]")
        if not isinstance(got[0], torch.Tensor) or not got[0].requires_grad:
            raise CheckFailed(f"the quantised vectors ({case}) carry no gradient back to z: use the straight-through "
                              f"trick, z + (z_q - z).detach()")
        weights = torch.randn(n, c, generator=generator)
        (got[0] * weights).sum().backward()
        compare(leaf.grad, weights, what="the gradient reaching z", case=case, atol=1e-6,
                hint="straight-through: the backward pass treats quantisation as the identity, so dL/dz = dL/dz_q "
                     "(z + (z_q - z).detach(); without .detach() the gradient cancels to 0)")
    passed(_name(student_fn), "VectorQuantizer's lookup and straight-through gradient", len(cases))


@exercise(function="my_ema_update", source=CH7, reference="mini_decoders.nn.quantize.VectorQuantizer")
def check_ema_update(student_fn) -> None:
    """The EMA codebook update: each code moves to the running mean of the vectors assigned to it."""
    from mini_decoders.nn.quantize import VectorQuantizer, squared_distances

    seed = fresh_seed()
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for n, c, k, decay in ((64, 4, 8, 0.99), (10, 3, 16, 0.9), (30, 8, 5, 0.5)):
        cases.append((f"{n} vectors of size {c}, {k} codes, decay {decay}, seed {seed}", n, c, k, decay, False))
    cases.append((f"code 0 has almost no mass left and gets no vector, seed {seed}", 20, 2, 4, 0.99, True))
    for case, n, c, k, decay, starved in cases:
        codebook = torch.randn(k, c, generator=generator)
        ema_count = 5 * torch.rand(k, generator=generator) + 0.5
        # a history: the sums are the codes times their counts, plus some drift
        ema_sum = (codebook + 0.3 * torch.randn(k, c, generator=generator)) * ema_count[:, None]
        z = torch.randn(n, c, generator=generator)
        codes = squared_distances(z, codebook).argmin(1)
        if starved:  # its statistics decayed for ages: tiny, and their ratio drifted off its row
            ema_sum[0] = ema_sum[0] / ema_count[0] * 1e-7
            ema_count[0] = 1e-7
            codes = torch.where(codes == 0, torch.ones_like(codes), codes)
        quantizer = VectorQuantizer(k, c, ema_decay=decay)
        quantizer.codebook.copy_(codebook)
        quantizer.ema_count_stat.copy_(ema_count)
        quantizer.ema_sum_stat.copy_(ema_sum)
        quantizer._ema_update(z, codes, torch.bincount(codes, minlength=k).float())
        expected = (quantizer.codebook, quantizer.ema_count_stat, quantizer.ema_sum_stat)
        got = _tuple_of(call_student(student_fn, (z, codes, codebook, ema_count, ema_sum, decay), case=case), 3,
                        "the new codebook, ema_count and ema_sum", _name(student_fn))
        batch_count = torch.bincount(codes, minlength=k).float()
        hint = ("ema_count <- decay · ema_count + (1 - decay) · (how many vectors each code got in this batch, "
                "torch.bincount(codes, minlength=K))")
        if isinstance(got[1], torch.Tensor) and got[1].shape == ema_count.shape and torch.allclose(
                got[1].float(), (1 - decay) * ema_count + decay * batch_count, atol=1e-5):
            hint = "decay weighs the *old* statistics: decay · ema_count + (1 - decay) · batch count, not the reverse"
        compare(got[1], expected[1], what="the new ema_count", case=case, atol=1e-5, hint=hint)
        compare(got[2], expected[2], what="the new ema_sum", case=case, atol=1e-5,
                hint="ema_sum <- decay · ema_sum + (1 - decay) · (the sum of the vectors assigned to each code, "
                     "e.g. torch.zeros(K, C).index_add_(0, codes, z))")
        hint = ("every code becomes ema_sum / ema_count of the *new* statistics, also a code that got no vector in "
                "this batch (its sum and count decay alike)")
        if starved:
            hint = ("a code whose new ema_count is at most eps has (almost) no data behind it: it keeps its old row "
                    "(dividing by a clamped count would fling it far away)")
        compare(got[0], expected[0], what="the new codebook", case=case, atol=1e-5, rtol=1e-4, hint=hint)
    passed(_name(student_fn), "VectorQuantizer's EMA codebook update", len(cases))


@exercise(function="my_scaling_exponent", source=CH8, reference="mini_decoders.experiments.cost.scaling_exponent")
def check_scaling_exponent(student_fn) -> None:
    """The exponent of a cost: the slope of log(seconds) against log(work)."""
    from mini_decoders.experiments.cost import scaling_exponent

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    exponent = float(np.round(rng.uniform(0.3, 2.5), 2))
    work = [100.0, 200.0, 400.0, 800.0]
    lengths = [0.25, 0.5, 1.0, 2.0, 4.0]
    noisy = [float(2e-3 * x ** 1.1 * np.exp(rng.normal(0, 0.1))) for x in lengths]
    cases = [(f"an exact power law, seconds = c · work^{exponent}", work, [3e-5 * x ** exponent for x in work]),
             (f"noisy timings against window length, seed {seed}", lengths, noisy),
             ("a missing time (None: a length the model could not do)", lengths, [*noisy[:2], None, *noisy[3:]]),
             ("a time of 0 s (below the timer's resolution) is not a measurement", lengths, [0.0, *noisy[1:]]),
             ("only one measured point: no slope", work, [None, 0.01, None, None])]
    for case, x, seconds in cases:
        got = call_student(student_fn, (list(x), list(seconds)), case=case)
        expected = scaling_exponent(x, seconds)
        if expected is None:
            if got is not None:
                raise CheckFailed(f"the exponent ({case}) should be None: fewer than two points have a measured "
                                  f"time, so there is no slope; got {got!r}")
            continue
        if got is None:
            raise CheckFailed(f"`{_name(student_fn)}` returned None ({case}), expected {expected:.6g}: there are "
                              f"at least two measured points")
        hint = ("fit a straight line to (log x, log seconds) over the points whose time is a positive number "
                "(np.polyfit(log_x, log_t, 1)[0]); skip None and times <= 0")
        try:
            kept = [(a, b) for a, b in zip(x, seconds) if b is not None and b > 0]
            log_x, log_t = np.log(np.array(kept)).T
            if np.isclose(float(got), np.polyfit(log_t, log_x, 1)[0]) and not np.isclose(float(got), expected):
                hint = "the axes are swapped: the slope of log(seconds) (y) against log(x) (x)"
        except (TypeError, ValueError):
            pass
        compare(got, expected, what="the exponent", case=case, kind="number", atol=1e-8, rtol=1e-6, hint=hint)
    passed(_name(student_fn), "mini_decoders.experiments.cost.scaling_exponent", len(cases))


VERDICT_HINTS = {
    "beats_baseline": "score > baseline_score, strictly: a tie does not beat the baseline",
    "ratio_to_baseline": "score / baseline_score, and None when the baseline is at or below 0 (a ratio to a "
                         "negative R² means nothing)",
    "meets_model_bar": "with bar 1 it is beats_baseline; with another bar (VQ: 0.9) it is score >= bar · baseline_score",
    "fraction_of_oracle": "score / oracle_score, and None when there is no oracle or it is at or below 0",
}


@exercise(function="my_judge", source=CH8, reference="mini_decoders.experiments.benchmark.judge_score")
def check_judge(student_fn) -> None:
    """A table row's verdict: against the classic baseline, the model's own bar, and the oracle."""
    from mini_decoders.experiments.benchmark import judge_score

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    base, oracle = float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.5, 0.8))
    cases = [(f"a random row, seed {seed}", float(rng.uniform(0.05, 0.5)), base, oracle, 1.0),
             ("VQ's bar 0.9: below the baseline, above 0.9 x it", 0.95 * base, base, oracle, 0.9),
             ("VQ's bar 0.9: below 0.9 x the baseline", 0.8 * base, base, oracle, 0.9),
             ("a tie with the baseline", base, base, oracle, 1.0),
             ("a negative baseline (an R² below 0)", 0.2, -0.1, oracle, 1.0),
             ("no baseline (a classic model is its own baseline)", 0.3, None, oracle, 1.0),
             ("no oracle (real data)", 0.3, base, None, 1.0),
             ("an oracle at 0", 0.3, base, 0.0, 1.0)]
    for case, score, baseline_score, oracle_score, bar in cases:
        got = call_student(student_fn, (score, baseline_score, oracle_score, bar), case=case)
        expected = judge_score(score, baseline_score, oracle_score, bar)
        if not isinstance(got, dict):
            raise CheckFailed(f"`{_name(student_fn)}` should return a dict with the keys {list(expected)} ({case}), "
                              f"got {type(got).__name__}")
        for key, want in expected.items():
            if key not in got:
                raise CheckFailed(f"the verdict ({case}) should have the key {key!r}; it has {sorted(got)}")
            have, tail = got[key], f"\n  hint: {VERDICT_HINTS[key]}"
            if want is None:
                if have is not None:
                    raise CheckFailed(f"{key} ({case}) should be None, got {have!r}{tail}")
            elif isinstance(want, bool):
                if not isinstance(have, (bool, np.bool_)):
                    raise CheckFailed(f"{key} ({case}) should be True or False, got {have!r}{tail}")
                if bool(have) != want:
                    raise CheckFailed(f"{key} ({case}) is {bool(have)}, expected {want}{tail}")
            else:
                if have is None:
                    raise CheckFailed(f"{key} ({case}) is None, expected {want:.6g}{tail}")
                compare(have, want, what=key, case=case, kind="number", atol=1e-9, hint=VERDICT_HINTS[key])
    passed(_name(student_fn), "mini_decoders.experiments.benchmark.judge_score", len(cases))


@exercise(function="my_spikes_from_counts", source=CH9, reference="mini_decoders.data.session.Session.from_binned")
def check_spikes_from_counts(student_fn) -> None:
    """Spike times from binned counts, evenly spaced inside each bin (Session.from_binned)."""
    from mini_decoders.data.session import Session

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    start = float(np.round(rng.uniform(0, 100), 3))
    cases = [(f"69 steps of 45 ms x 10 units from t={start} s, seed {seed}", rng.poisson(1.5, size=(69, 10)), 0.045,
              start)]
    counts = rng.poisson(0.8, size=(30, 6))
    counts[3, 2], counts[:, 5] = 6, 0  # a busy bin, a silent unit
    cases.append((f"30 bins of 20 ms, one silent unit, seed {seed}", counts, 0.02, 0.0))
    cases.append(("one bin with 3 spikes", np.array([[3]]), 0.1, 2.0))
    cases.append(("no spikes at all", np.zeros((5, 3), dtype=np.int64), 0.02, 0.0))
    for case, counts, bin_size, t_start in cases:
        reference = Session.from_binned(counts, bin_size, t_start=t_start)
        got = _tuple_of(call_student(student_fn, (counts, bin_size, t_start), case=case), 2,
                        "the spike times and the spike units", _name(student_fn))
        times, units = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in got)
        if times.shape != reference.spike_times.shape or units.shape != reference.spike_units.shape:
            raise CheckFailed(f"the spike times and units ({case}) should both have shape "
                              f"{reference.spike_times.shape} (one entry per spike: counts.sum() = "
                              f"{int(counts.sum())}), got {times.shape} and {units.shape}")
        if len(times) and np.any(np.diff(times.astype(np.float64)) < 0):
            raise CheckFailed(f"the spike times ({case}) should be sorted in time, as a recording's are: reorder "
                              f"times and units together with np.argsort(times, kind='stable')")
        hint = ("spike k (k = 0 .. n-1) of the n spikes in bin t sits at t_start + (t + (k + 0.5) / n) · bin_size: "
                "evenly spaced inside its bin, never on an edge")
        bins = np.floor((times - t_start) / bin_size).astype(np.int64)
        if len(times) and np.allclose(times, t_start + (bins + 0.5) * bin_size) and counts.max() > 1:
            hint = "you put every spike at its bin's centre: spread the n spikes of a bin evenly, at (k + 0.5) / n"
        order, expected_order = np.lexsort((units, times)), np.lexsort((reference.spike_units, reference.spike_times))
        compare(units[order], reference.spike_units[expected_order], what="the spike units (in time order)",
                case=case, exact=True, kind="array", hint=hint)
        compare(times[order], reference.spike_times[expected_order], what="the spike times (in time order)",
                case=case, atol=1e-9, rtol=0, kind="array", hint=hint)
    passed(_name(student_fn), "Session.from_binned", len(cases), " (spike times and units)")


SPLITS = ("train", "val", "test")


@exercise(function="my_stratified_splits", source=CH9, reference="mini_decoders.data.realdata.stratified_splits")
def check_stratified_splits(student_fn) -> None:
    """Train/val/test per trial, in the given proportions within every condition."""
    from mini_decoders.data.realdata import stratified_splits

    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    # Condition sizes that never put round() on a tie (n·fraction = k + 0.5): the rounding rule is not the point.
    sizes = [n for n in range(1, 40) if n % 10 != 5]
    cases = [(f"7 targets x 30 trials in random order, seed {seed}", rng.permutation(np.repeat(np.arange(7), 30)),
              (0.7, 0.1, 0.2), seed),
             ("8 directions x 3 trials", np.repeat([f"dir{d}" for d in range(8)], 3), (0.7, 0.1, 0.2), seed + 1),
             (f"conditions of uneven sizes, seed {seed}",
              rng.permutation(np.concatenate([np.full(int(n), f"c{i}") for i, n in enumerate(rng.choice(sizes, 6))])),
              (0.7, 0.1, 0.2), seed + 2),
             ("fractions (0.6, 0.2, 0.2), one condition", np.full(23, "all"), (0.6, 0.2, 0.2), seed + 3)]
    for case, condition, fractions, case_seed in cases:
        got = np.asarray(call_student(student_fn, (condition, fractions, case_seed), case=case))
        expected = stratified_splits(condition, fractions, seed=case_seed)
        if got.shape != expected.shape:
            raise CheckFailed(f"the splits ({case}) should have shape {expected.shape} (one label per trial), "
                              f"got {got.shape}")
        labels = got.astype(str)
        unknown = np.flatnonzero(~np.isin(labels, SPLITS))
        if len(unknown):
            raise CheckFailed(f"the splits ({case}): entry {int(unknown[0])} is {str(labels[unknown[0]])!r}, it should be "
                              f"'train', 'val' or 'test'")
        label_of = np.asarray(condition).astype(str)
        overall_right = all((labels == s).sum() == (expected == s).sum() for s in SPLITS)
        for value in np.unique(label_of):
            mine = labels[label_of == value]
            want = [int((expected[label_of == value] == s).sum()) for s in SPLITS]
            have = [int((mine == s).sum()) for s in SPLITS]
            if have != want:
                hint = ("split the trials of every condition on their own, so that each target is in every split"
                        if overall_right else
                        "n_train = round(fractions[0] · n) and n_val = round(fractions[1] · n) trials of each "
                        "condition's n, the rest test")
                raise CheckFailed(f"the splits ({case}): condition {str(value)!r} ({len(mine)} trials) should have "
                                  f"{want[0]} train / {want[1]} val / {want[2]} test trials, like the package's; yours "
                                  f"has {have[0]} / {have[1]} / {have[2]}\n  hint: {hint}")
        again = np.asarray(call_student(student_fn, (condition, fractions, case_seed), case=case)).astype(str)
        if not np.array_equal(again, labels):
            raise CheckFailed(f"the splits ({case}) changed between two calls with the same seed: draw the shuffle "
                              f"from np.random.default_rng(seed), not from the global random state")
    condition, fractions, first_seed = cases[0][1:]
    first = np.asarray(call_student(student_fn, (condition, fractions, first_seed))).astype(str)
    other = np.asarray(call_student(student_fn, (condition, fractions, first_seed + 1))).astype(str)
    if np.array_equal(first, other):
        raise CheckFailed(f"the splits of {cases[0][0]} are the same for seeds {first_seed} and {first_seed + 1}: "
                          f"shuffle each condition's trials with np.random.default_rng(seed) before cutting them "
                          f"(recordings drift, so the first trials must not always be the training ones)")
    passed(_name(student_fn), "mini_decoders.data.realdata.stratified_splits", len(cases) + 1,
           " (the size of every split in every condition)")
