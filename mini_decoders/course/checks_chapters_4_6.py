"""Checks of chapters 4-6's exercises (POYO, NDT2, MtM): each re-derives one piece of the package.

Every check takes the student's function, runs it on fresh random inputs plus fixed edge cases,
and compares it with the package's implementation (see :mod:`mini_decoders.course.checking`).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.course.checking import (CheckFailed, call_student, compare, describe, fresh_seed, passed,
                                           student_name, tuple_of)
from mini_decoders.course.registry import exercise
from mini_decoders.evaluation import score_task
from mini_decoders.masking import inter_region_selection, intra_region_selection, region_targets
from mini_decoders.metrics import bits_per_spike
from mini_decoders.models.ndt2 import NDT2, random_visible
from mini_decoders.nn.attention import CrossAttention
from mini_decoders.nn.rotary import RotaryTimeEmbedding, apply_rotary
from mini_decoders.nn.vocab import GrowingVocabEmbedding
from mini_decoders.tokenizers.patches import PatchTokenizer, PatchTokens


CH4, CH5 = "04_poyo_spike_tokens", "05_ndt2_multicontext"

# ================================================================================================
# Chapter 4: POYO

@exercise(function="rotate_by_time", source=CH4, reference="mini_decoders.nn.rotary.RotaryTimeEmbedding")
def check_rotate_by_time(student_fn) -> None:
    """Rotary time embedding: turn each pair of dimensions by omega · t."""
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
    passed(student_name(student_fn), "the package's rotary embedding (RotaryTimeEmbedding)", len(cases) + 1)


@exercise(function="my_keep_new_rows", source=CH4, reference="mini_decoders.models.poyo.POYO.finetune")
def check_keep_new_rows(student_fn) -> None:
    """Unit identification's gradient mask: old embedding rows get exactly zero gradient."""
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
            raise CheckFailed(f"`{student_name(student_fn)}` changed the gradient it was given in place ({case}); a tensor "
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
    passed(student_name(student_fn), "POYO's unit identification (old rows frozen, new rows learn)", len(cases) + 1)


# ================================================================================================
# Chapter 5: NDT2

@exercise(function="my_patch_embedding", source=CH5, reference="mini_decoders.tokenizers.patches.PatchTokenizer")
def check_patch_embedding(student_fn) -> None:
    """NDT2's patch token: per-neuron count embeddings side by side."""
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
    passed(student_name(student_fn), "PatchTokenizer.embed_counts", len(cases))


@exercise(function="my_mae_visible", source=CH5, reference="mini_decoders.models.ndt2.random_visible")
def check_mae_visible(student_fn) -> None:
    """The MAE shuffle: which tokens the encoder sees, from one uniform draw per token."""
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
    passed(student_name(student_fn), "mini_decoders.models.ndt2.random_visible", len(cases))


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
    passed(student_name(student_fn), "mini_decoders.nn.attention.CrossAttention (POYO's encoder, one head)", len(cases))


def _poisson_terms(log_rates: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_rates) - counts * log_rates


@exercise(function="my_mae_loss", source=CH5, reference="mini_decoders.models.ndt2.NDT2.masked_poisson_loss")
def check_mae_loss(student_fn) -> None:
    """NDT2's MAE loss: Poisson NLL over the real neurons of the hidden tokens only."""
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
    passed(student_name(student_fn), "NDT2.masked_poisson_loss", len(cases), " (value, gradient, visible targets ignored)")


@exercise(function="my_inter_region_mask", source=CH6, reference="mini_decoders.masking.inter_region_selection")
def check_inter_region_mask(student_fn) -> None:
    """MtM's inter-region mask: hide every unit of each sample's target region."""
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
    passed(student_name(student_fn), "mini_decoders.masking.inter_region_selection", len(cases))


@exercise(function="my_intra_region_mask", source=CH6, reference="mini_decoders.masking.intra_region_selection")
def check_intra_region_mask(student_fn) -> None:
    """MtM's intra-region mask: hide the other regions and part of the target; score only that part."""
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
        got = tuple_of(call_student(student_fn, (regions, target, noise, ratio), case=case), 2,
                        "the hidden and the scored units", student_name(student_fn))
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
    passed(student_name(student_fn), "mini_decoders.masking.intra_region_selection", len(cases))


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
    passed(student_name(student_fn), "score_task's neuron_bps (the paper's per-neuron score)", len(cases))
