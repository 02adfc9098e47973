"""Behaviour of the shared transformer blocks in ``mini_decoders.nn``."""

import functools
import io
import math

import pytest
import torch
import torch.nn.functional as F

from mini_decoders.errors import DataError
from mini_decoders.nn.attention import (CrossAttention, SelfAttention, TransformerBlock,
                                        attention_weights, self_attention_mask)
from mini_decoders.nn.feedforward import FeedForward
from mini_decoders.nn.positions import LearnedPositions, sinusoidal_positions
from mini_decoders.nn.rotary import RotaryTimeEmbedding, apply_rotary, rotate_half
from mini_decoders.nn.vocab import GrowingVocabEmbedding

B, T, D, H = 3, 7, 16, 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference_attention(q, k, v, allowed=None):
    """Explicit softmax attention on (B, H, N, d) heads; ``allowed`` bool broadcast to scores."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


def reference_self_attention(layer: SelfAttention, x, allowed=None):
    q, k, v = (t.unflatten(-1, (layer.heads, -1)).transpose(1, 2)
               for t in (x @ layer.to_qkv.weight.T).chunk(3, dim=-1))
    out = reference_attention(q, k, v, allowed)
    return out.transpose(1, 2).flatten(2) @ layer.to_out.weight.T + layer.to_out.bias


def padding_mask(lengths, length=T):
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) True = real


# ---------------------------------------------------------------- self-attention


def test_self_attention_matches_explicit_softmax_with_and_without_masks():
    layer = SelfAttention(D, H).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    real = padding_mask([7, 5, 3])
    window = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= 2  # (T, T)
    per_sample = torch.rand(B, T, T) < 0.7
    per_sample |= torch.eye(T, dtype=torch.bool)  # every row keeps one key
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    torch.testing.assert_close(layer(x), reference_self_attention(layer, x))
    torch.testing.assert_close(layer(x, is_causal=True), reference_self_attention(layer, x, causal))
    torch.testing.assert_close(layer(x, key_padding_mask=real),
                               reference_self_attention(layer, x, real[:, None, None, :]))
    torch.testing.assert_close(layer(x, attn_mask=window),
                               reference_self_attention(layer, x, window))
    torch.testing.assert_close(layer(x, attn_mask=per_sample),
                               reference_self_attention(layer, x, per_sample[:, None]))
    both = real[:, None, None, :] & causal & window
    out = layer(x, key_padding_mask=real, attn_mask=window, is_causal=True)
    # Real queries see at least themselves, so the reference has no empty rows there.
    for sample, length in enumerate([7, 5, 3]):
        expected = reference_self_attention(layer, x[sample:sample + 1], both[sample:sample + 1])
        torch.testing.assert_close(out[sample, :length], expected[0, :length])


def test_mask_is_only_built_when_needed():
    real = padding_mask([7, 5, 0])
    assert self_attention_mask(B, T, torch.device("cpu"), None, None, False) == (None, False)
    assert self_attention_mask(B, T, torch.device("cpu"), None, None, True) == (None, True)
    mask, is_causal = self_attention_mask(B, T, torch.device("cpu"), real, None, False)
    assert mask.shape == (B, 1, 1, T) and mask.dtype == torch.bool and not is_causal
    assert mask[2].all()  # an all-padding sample may look at everything rather than nothing
    with pytest.raises(ValueError, match="must be a bool tensor"):
        SelfAttention(D, H)(torch.randn(B, T, D), key_padding_mask=real.float())
    with pytest.raises(ValueError, match=r"attn_mask.*shape"):
        SelfAttention(D, H)(torch.randn(B, T, D), attn_mask=torch.ones(T, T + 1, dtype=torch.bool))


def test_causal_output_at_t_ignores_the_future():
    layer = SelfAttention(D, H).eval()
    x = torch.randn(B, T, D)
    changed = x.clone()
    changed[:, 4:] = torch.randn(B, T - 4, D) * 10
    for kwargs in (dict(is_causal=True),
                   dict(is_causal=True, key_padding_mask=padding_mask([7, 6, 5]))):
        before, after = layer(x, **kwargs), layer(changed, **kwargs)
        torch.testing.assert_close(before[:, :4], after[:, :4])
        assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("is_causal", [False, True])
def test_padding_values_do_not_leak_and_nothing_is_nan(is_causal):
    layer = TransformerBlock(D, H, dropout=0.0).eval()
    # Sample 1 is left-padded (with causality its first query sees no real key) and sample 2 is
    # all padding: the two ways a softmax row can end up empty.
    real = torch.tensor([[1] * T, [0, 0, 1, 1, 1, 1, 1], [0] * T], dtype=torch.bool)
    x = torch.randn(B, T, D, requires_grad=True)
    noisy = torch.where(real[..., None], x, torch.randn(B, T, D) * 100)
    out, out_noisy = (layer(inp, key_padding_mask=real, is_causal=is_causal) for inp in (x, noisy))
    torch.testing.assert_close(out[real], out_noisy[real])
    assert torch.isfinite(out).all() and torch.isfinite(out_noisy).all()
    out[real].square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[~real] == 0).all()  # padding inputs do not influence real outputs


def test_attention_weights_are_the_probabilities_forward_uses():
    layer = SelfAttention(D, H).eval()
    x = torch.randn(B, T, D)
    real = padding_mask([7, 4, 2])
    weights = attention_weights(layer, x, key_padding_mask=real, is_causal=True)
    assert weights.shape == (B, H, T, T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))
    assert (weights.triu(1) == 0).all()  # causal
    v = (x @ layer.to_qkv.weight.T).chunk(3, -1)[2].unflatten(-1, (H, -1)).transpose(1, 2)
    rebuilt = layer.to_out((weights @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(rebuilt, layer(x, key_padding_mask=real, is_causal=True))


def test_rotary_self_attention_accepts_cos_sin_or_callable_and_is_shift_invariant():
    layer = SelfAttention(D, H).double()
    rotary = RotaryTimeEmbedding(D // H)
    x = torch.randn(B, T, D, dtype=torch.float64)
    times = torch.rand(B, T, dtype=torch.float64)
    by_cos_sin = layer(x, rotary=rotary.cos_sin(times), rotate_value=True)
    by_callable = layer(x, rotary=functools.partial(rotary.rotate, times=times), rotate_value=True)
    shifted = layer(x, rotary=rotary.cos_sin(times + 0.37), rotate_value=True)
    torch.testing.assert_close(by_cos_sin, by_callable)
    torch.testing.assert_close(by_cos_sin, shifted)
    assert not torch.allclose(by_cos_sin, layer(x))  # time does change the result


def test_transformer_block_pre_and_post_norm_compose_as_documented():
    x = torch.randn(B, T, D)
    pre = TransformerBlock(D, H, dropout=0.0, pre_norm=True, activation="relu").eval()
    middle = x + pre.attention(pre.attention_norm(x))
    torch.testing.assert_close(pre(x), middle + pre.feedforward(pre.feedforward_norm(middle)))
    post = TransformerBlock(D, H, dropout=0.0, pre_norm=False).eval()
    middle = post.attention_norm(x + post.attention(x))
    torch.testing.assert_close(post(x), post.feedforward_norm(middle + post.feedforward(middle)))


# ---------------------------------------------------------------- rotary time


def test_rotary_angles_follow_the_log_spaced_periods():
    rotary = RotaryTimeEmbedding(16, t_min=1e-3, t_max=1.0, rotate_fraction=0.5)
    angles = rotary.angles(torch.tensor([[1.0]]))[0, 0]  # (16,) at t = 1 s
    expected = 2 * math.pi / torch.logspace(-3, 0, 4, dtype=torch.float64)
    torch.testing.assert_close(angles[0:8:2].double(), expected)
    torch.testing.assert_close(angles[1:8:2], angles[0:8:2])  # pairs share an angle
    assert (angles[8:] == 0).all()
    x = torch.randn(2, 3, 5, 16)
    rotated = rotary.rotate(x, torch.rand(2, 5) * 3)
    assert torch.equal(rotated[..., 8:], x[..., 8:])  # only the first half turns
    assert not torch.allclose(rotated[..., :8], x[..., :8])


def test_rotation_preserves_norms_and_invert_undoes_it():
    rotary = RotaryTimeEmbedding(32, rotate_fraction=1.0)
    x = torch.randn(2, 4, 9, 32, dtype=torch.float64)
    times = torch.rand(2, 9, dtype=torch.float64)
    rotated = rotary.rotate(x, times)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotary.rotate(rotated, times, invert=True), x)
    assert torch.equal(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])),
                       torch.tensor([-2.0, 1.0, -4.0, 3.0]))


def test_rotary_scores_depend_only_on_time_differences():
    rotary = RotaryTimeEmbedding(64)
    q, k = torch.randn(2, 8, 10, 64, dtype=torch.float64).unbind(0)
    times = torch.rand(1, 10, dtype=torch.float64)

    def scores(shift: float):
        return rotary.rotate(q[None], times + shift) @ rotary.rotate(k[None], times + shift).mT

    torch.testing.assert_close(scores(0.0), scores(12.5))
    # In float32 it holds up to the angle error |t| * omega * 6e-8 rad of the fastest pairs:
    # under 1% of the score scale for window-relative times (here up to 1.5 s).
    q32, k32, t32 = q.float()[None], k.float()[None], times.float()
    plain = rotary.rotate(q32, t32) @ rotary.rotate(k32, t32).mT
    moved = rotary.rotate(q32, t32 + 0.5) @ rotary.rotate(k32, t32 + 0.5).mT
    assert (plain - moved).abs().max() < 1e-2 * plain.abs().max()


def test_rotary_stays_float32_under_bfloat16_autocast():
    rotary = RotaryTimeEmbedding(16)
    times = torch.rand(2, 5) + 0.5
    exact = rotary.angles(times)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        angles = rotary.angles(times)
        cos, sin = rotary.cos_sin(times)
        rotated = rotary.rotate(torch.randn(2, 1, 5, 16, dtype=torch.bfloat16), times)
    assert angles.dtype == cos.dtype == sin.dtype == torch.float32
    torch.testing.assert_close(angles, exact, rtol=0, atol=0)
    assert rotated.dtype == torch.bfloat16  # the heads keep their dtype
    rotary.to(torch.bfloat16)  # no buffer to round: omega stays exact
    torch.testing.assert_close(rotary.angles(times), exact, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dim_head=15), "must be a positive even number"),
    (dict(dim_head=16, t_min=2.0, t_max=1.0), "t_min"),
    (dict(dim_head=16, rotate_fraction=0.3), "must be an even integer"),
])
def test_rotary_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RotaryTimeEmbedding(**kwargs)


# ---------------------------------------------------------------- cross-attention


def test_cross_attention_matches_reference_and_ignores_masked_context():
    layer = CrossAttention(D, context_dim=10, heads=2, dim_head=8).double()
    queries = torch.randn(B, 5, D, dtype=torch.float64)
    context = torch.randn(B, 9, 10, dtype=torch.float64)
    real = padding_mask([9, 4, 1], length=9)
    q = (queries @ layer.to_q.weight.T).unflatten(-1, (2, -1)).transpose(1, 2)
    k, v = ((context @ w.T).unflatten(-1, (2, -1)).transpose(1, 2)
            for w in layer.to_kv.weight.chunk(2, dim=0))
    expected = reference_attention(q, k, v, real[:, None, None, :])
    expected = expected.transpose(1, 2).flatten(2) @ layer.to_out.weight.T + layer.to_out.bias
    out = layer(queries, context, context_mask=real)
    torch.testing.assert_close(out, expected)
    noisy = torch.where(real[..., None], context, torch.randn_like(context) * 100)
    torch.testing.assert_close(layer(queries, noisy, context_mask=real), out)


def test_cross_attention_with_empty_context_returns_bias_not_nan():
    layer = CrossAttention(D, heads=2, dim_head=8)
    real = padding_mask([3, 0, 5])
    out = layer(torch.randn(B, 4, D), torch.randn(B, T, D), context_mask=real)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], layer.to_out.bias.expand(4, D))
    weights = attention_weights(layer, torch.randn(B, 4, D), torch.randn(B, T, D),
                                context_mask=real)
    assert (weights[1] == 0).all() and torch.allclose(weights[0].sum(-1), torch.ones(2, 4))


def test_cross_attention_rotate_value_is_invariant_to_a_common_time_shift():
    layer = CrossAttention(D, heads=2, dim_head=16).double()
    rotary = RotaryTimeEmbedding(16)
    queries = torch.randn(B, 5, D, dtype=torch.float64)
    context = torch.randn(B, T, D, dtype=torch.float64)
    query_time = torch.rand(B, 5, dtype=torch.float64)
    context_time = torch.rand(B, T, dtype=torch.float64)

    def run(shift: float, rotate_value: bool = True):
        return layer(queries, context, query_time=query_time + shift,
                     context_time=context_time + shift, rotary=rotary, rotate_value=rotate_value)

    torch.testing.assert_close(run(0.0), run(3.7))
    torch.testing.assert_close(run(0.0, rotate_value=False), run(3.7, rotate_value=False))
    # Without rotating values the output only depends on times through the weights; with it,
    # moving the queries alone changes the output even where the weights would not.
    assert not torch.allclose(run(0.0), run(0.0, rotate_value=False))
    with pytest.raises(ValueError, match="query_time"):
        layer(queries, context, rotary=rotary)


# ---------------------------------------------------------------- feed-forward


def test_feedforward_geglu_matches_manual_computation():
    block = FeedForward(D, mult=2, activation="geglu")
    x = torch.randn(B, T, D)
    hidden = x @ block.proj_in.weight.T + block.proj_in.bias  # (B, T, 2 * 2D)
    value, gate = hidden[..., :2 * D], hidden[..., 2 * D:]
    expected = (value * F.gelu(gate)) @ block.proj_out.weight.T + block.proj_out.bias
    torch.testing.assert_close(block(x), expected)
    relu = FeedForward(D, activation="relu", hidden_dim=5)
    torch.testing.assert_close(relu(x), relu.proj_out(F.relu(relu.proj_in(x))))
    assert relu.proj_in.out_features == 5
    with pytest.raises(ValueError, match="activation"):
        FeedForward(D, activation="swish")


# ---------------------------------------------------------------- vocabulary


def test_vocab_extend_keeps_rows_and_subset_reorders():
    vocab = GrowingVocabEmbedding(4)
    vocab.extend(["s1/0", "s1/1", "s1/2"])
    before = vocab.weight.detach().clone()
    vocab.extend(["s1/1", "s2/0", "s2/0", "s2/1"])
    assert vocab.ids == ["s1/0", "s1/1", "s1/2", "s2/0", "s2/1"]
    assert torch.equal(vocab.weight[:3], before)  # bitwise
    vocab.extend(["s2/0"])
    assert len(vocab) == 5  # idempotent
    assert 0.005 < vocab.weight[3:].std() < 0.08  # new rows ~ N(0, 0.02)
    rows = vocab(vocab.index(["s2/1", "s1/0"]))
    vocab.subset(["s2/1", "s1/0"])
    assert vocab.ids == ["s2/1", "s1/0"]
    assert torch.equal(vocab.weight.detach(), rows.detach())
    with pytest.raises(TypeError, match="single string"):
        vocab.extend("s3/0")


def test_vocab_unknown_ids_say_how_to_adapt():
    vocab = GrowingVocabEmbedding(4)
    vocab.extend(["a/0", "a/1"])
    with pytest.raises(DataError) as error:
        vocab.index(["a/1"] + [f"new/{i}" for i in range(7)])
    message = str(error.value)
    assert "7 id(s)" in message and "'new/0'" in message and "2 more" in message
    assert "unit identification" in message and "finetune" in message
    with pytest.raises(DataError, match="new/0"):
        vocab.subset(["a/0", "new/0"])


def test_vocab_state_dict_round_trip_into_a_fresh_module():
    model = torch.nn.Module()
    model.units = GrowingVocabEmbedding(6)
    model.units.extend([f"s/{i}" for i in range(5)])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = torch.nn.Module()
    fresh.units = GrowingVocabEmbedding(6)
    fresh.units.extend(["other"])  # a different size than the checkpoint
    fresh.load_state_dict(state)
    assert fresh.units.ids == model.units.ids
    assert torch.equal(fresh.units.weight, model.units.weight)
    torch.testing.assert_close(fresh.units(fresh.units.index(["s/3"])),
                               model.units.weight[3:4])


def test_vocab_gradient_reaches_only_the_rows_used():
    vocab = GrowingVocabEmbedding(4)
    vocab.extend([str(i) for i in range(6)])
    vocab(vocab.index(["4", "1", "4"])).sum().backward()
    used = torch.zeros(6, dtype=torch.bool)
    used[[1, 4]] = True
    assert (vocab.weight.grad[~used] == 0).all()
    torch.testing.assert_close(vocab.weight.grad[4], torch.full((4,), 2.0))


# ---------------------------------------------------------------- positions


def test_learned_positions_lookup_and_error():
    positions = LearnedPositions(10, D)
    assert torch.equal(positions(4), positions.table[:4])
    index = torch.tensor([[3, 0], [9, 9]])
    assert torch.equal(positions(index), positions.table[index])
    with pytest.raises(DataError, match="12 tokens is longer than max_len=10"):
        positions(12)
    with pytest.raises(DataError, match="position index 10 is outside"):
        positions(torch.tensor([2, 10]))


def test_sinusoidal_positions_closed_form():
    table = sinusoidal_positions(50, 8)
    assert table.shape == (50, 8)
    t, i = 17, 2
    assert table[t, 2 * i] == pytest.approx(math.sin(t / 10000 ** (2 * i / 8)), abs=1e-6)
    assert table[t, 2 * i + 1] == pytest.approx(math.cos(t / 10000 ** (2 * i / 8)), abs=1e-6)
    odd = sinusoidal_positions(50, 7)
    assert odd.shape == (50, 7)
    assert odd[t, 6] == pytest.approx(math.sin(t / 10000 ** (6 / 7)), abs=1e-6)


def test_blocks_run_under_bfloat16_autocast():
    rotary = RotaryTimeEmbedding(16)
    cross = CrossAttention(D, heads=2, dim_head=16)
    block = TransformerBlock(D, heads=1, dim_head=16, dropout=0.0)
    latents, spikes = torch.randn(B, 4, D), torch.randn(B, T, D)
    latent_time, spike_time = torch.rand(B, 4), torch.rand(B, T)
    real = padding_mask([7, 3, 1])

    def run():
        latents_out = cross(latents, spikes, context_mask=real, query_time=latent_time,
                            context_time=spike_time, rotary=rotary, rotate_value=True)
        return block(latents_out, rotary=rotary.cos_sin(latent_time)).float()

    exact = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = run()
    assert torch.isfinite(low_precision).all()
    torch.testing.assert_close(low_precision, exact, atol=0.1, rtol=0.05)
