"""Multi-head attention on PyTorch's fused kernel, and the transformer block built from it.

- ``SelfAttention``: tokens attend to each other (NDT1/NDT2/MtM encoders, POYO's latents).
- ``CrossAttention``: queries attend to a context (POYO: latents read spikes, output queries read
  latents), optionally with rotary *time* (``RotaryTimeEmbedding``).
- ``TransformerBlock``: attention + feed-forward with residuals, pre- or post-norm (NDT style).
- ``attention_weights``: the attention probabilities, computed the slow explicit way, for plots.

Masks are boolean with **True = allowed**: ``key_padding_mask``/``context_mask`` mark real tokens,
``attn_mask`` marks which key each query may see. Everything goes through
``F.scaled_dot_product_attention`` (SDPA). When nothing is masked no mask is built at all (and a
causal-only mask is passed as ``is_causal``) so SDPA may pick its fastest kernel; otherwise the
masks are folded into one boolean mask, never an additive ``-inf`` float tensor.

A softmax over a row with no allowed key is 0/0 = NaN, and one NaN poisons the whole batch through
the next layer's gradients. So a query that may attend to nothing (a padding query whose keys are
all masked, or a sequence that is all padding) attends to itself in ``SelfAttention``; in
``CrossAttention`` a sample whose context is empty gets a zero attention result. Outputs at padding
positions are finite but meaningless: mask them out of losses.
"""

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mini_decoders.nn.feedforward import FeedForward
from mini_decoders.nn.rotary import Rotary, RotaryTimeEmbedding, apply_rotary


class ProjectedHeads(NamedTuple):
    """What an attention layer hands to its kernel (fast SDPA or the explicit one for plots)."""
    q: Tensor  # (B, H, Q, dim_head)
    k: Tensor  # (B, H, K, dim_head)
    v: Tensor  # (B, H, K, dim_head)
    mask: Optional[Tensor]  # bool, broadcastable to (B, H, Q, K); True = may attend; None = all
    is_causal: bool  # causal with no other mask: SDPA builds the triangle itself
    has_context: Optional[Tensor]  # (B,) bool, CrossAttention only: False = empty context


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, N, H * dim_head) -> (B, H, N, dim_head)``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, H, N, dim_head) -> (B, N, H * dim_head)``."""
    return x.transpose(1, 2).flatten(2)


def _check_bool_mask(mask: Tensor, name: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    # A float 0/1 mask would be *added* to the scores by SDPA and silently mask nothing.
    if mask.dtype != torch.bool:
        raise ValueError(f"`{name}` must be a bool tensor (True = allowed), got dtype {mask.dtype}")
    if tuple(mask.shape) not in shapes:
        raise ValueError(f"`{name}` must have shape {' or '.join(map(str, shapes))}, "
                         f"got {tuple(mask.shape)}")


def _nonempty_key_mask(key_mask: Tensor) -> Tensor:
    """``(B, K)`` real-token mask -> ``(B, 1, 1, K)``; a sample with no real key may see all keys
    (its output is discarded or zeroed by the caller) so that no softmax row is empty."""
    key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
    return key_mask[:, None, None, :]


def self_attention_mask(batch: int, length: int, device: torch.device,
                        key_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor],
                        is_causal: bool) -> tuple[Optional[Tensor], bool]:
    """Fold padding, an explicit mask and causality into what SDPA takes.

    Returns:
        ``(mask, is_causal)``: ``mask`` is None (no masking or causal only, then ``is_causal``
        is passed on), ``(B, 1, 1, T)`` (padding only) or ``(B or 1, 1, T, T)``; bool, True =
        allowed, and every query row allows at least one key.
    """
    if key_padding_mask is not None:
        _check_bool_mask(key_padding_mask, "key_padding_mask", ((batch, length),))
    if attn_mask is not None:
        _check_bool_mask(attn_mask, "attn_mask", ((length, length), (batch, length, length)))
    if attn_mask is None and key_padding_mask is None:
        return None, is_causal
    if attn_mask is None and not is_causal:
        # Padding only: a (B, 1, 1, T) mask avoids materialising T x T per sample.
        return _nonempty_key_mask(key_padding_mask), False
    allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if attn_mask is not None:
        allowed = allowed & attn_mask.view(-1, 1, length, length)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    if is_causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril()
    # Rows with no allowed key see themselves; built without `if empty.any()` to avoid a GPU sync.
    empty_rows = ~allowed.any(dim=-1, keepdim=True)  # (B or 1, 1, T, 1)
    diagonal = torch.eye(length, dtype=torch.bool, device=device)
    return allowed | (empty_rows & diagonal), False


def _rotate(x: Tensor, rotary: Rotary, invert: bool = False) -> Tensor:
    if callable(rotary):
        return rotary(x, invert=invert)
    cos, sin = rotary
    return apply_rotary(x, cos, sin, invert=invert)


class SelfAttention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: token size ``D``.
        heads: number of heads ``H``.
        dim_head: size of one head; default ``dim // heads`` (then ``dim`` must divide). Give it
            explicitly when ``dim`` is fixed by the data, e.g. NDT1's ``D`` = number of neurons.
        dropout: dropout on the attention probabilities (training only).
        bias: bias in the query/key/value projection (the output projection always has one).
    """

    def __init__(self, dim: int, heads: int, dim_head: Optional[int] = None, dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        if dim_head is None:
            if dim % heads != 0:
                raise ValueError(f"`dim` ({dim}) must be a multiple of `heads` ({heads}) "
                                 f"unless `dim_head` is given")
            dim_head = dim // heads
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=bias)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def project(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                rotary: Optional[Rotary] = None, rotate_value: bool = False) -> ProjectedHeads:
        """Heads and mask for ``x``; arguments as in ``forward``."""
        batch, length, _ = x.shape
        q, k, v = (split_heads(part, self.heads) for part in self.to_qkv(x).chunk(3, dim=-1))
        if rotary is not None:  # (B, H, T, dim_head) each
            q, k = _rotate(q, rotary), _rotate(k, rotary)
            if rotate_value:
                v = _rotate(v, rotary)
        elif rotate_value:
            raise ValueError("`rotate_value=True` needs `rotary`")
        mask, is_causal = self_attention_mask(batch, length, x.device, key_padding_mask,
                                              attn_mask, is_causal)
        return ProjectedHeads(q, k, v, mask, is_causal, None)

    def forward(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                rotary: Optional[Rotary] = None, rotate_value: bool = False) -> Tensor:
        """Attend.

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: ``(B, T)`` bool, True = real token; padding is never attended to.
            attn_mask: ``(T, T)`` or ``(B, T, T)`` bool, True = query (row) may attend to key
                (column); e.g. NDT1's limited context window.
            is_causal: token ``t`` sees tokens ``<= t`` only (combined with the masks above).
            rotary: rotary embedding of the tokens' positions or times: ``(cos, sin)`` from
                ``RotaryTimeEmbedding.cos_sin(times)`` (computed once, shared by all layers), or
                a callable ``rotary(x, invert=False)`` on ``(B, H, T, dim_head)``.
            rotate_value: also rotate values, and rotate the result back (POYO's latent
                self-attention) so that each output carries *relative* time.
        Returns:
            ``(B, T, D)``.
        """
        heads = self.project(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                             is_causal=is_causal, rotary=rotary, rotate_value=rotate_value)
        out = F.scaled_dot_product_attention(
            heads.q, heads.k, heads.v, attn_mask=heads.mask, is_causal=heads.is_causal,
            dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, dim_head)
        if rotary is not None and rotate_value:
            out = _rotate(out, rotary, invert=True)
        return self.to_out(merge_heads(out))  # (B, T, D)


class CrossAttention(nn.Module):
    """Multi-head attention of queries into a context (PerceiverIO's read-in and read-out).

    Args:
        dim: query size ``D`` (also the output size).
        context_dim: context token size ``Dc``; default ``dim``.
        heads: number of heads (POYO: 1 to 4 for cross-attention).
        dim_head: size of one head (64 in POYO).
        dropout: dropout on the attention probabilities (training only).
    """

    def __init__(self, dim: int, context_dim: Optional[int] = None, heads: int = 1,
                 dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        context_dim = dim if context_dim is None else context_dim
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def project(self, queries: Tensor, context: Tensor, *, context_mask: Optional[Tensor] = None,
                query_time: Optional[Tensor] = None, context_time: Optional[Tensor] = None,
                rotary: Optional[RotaryTimeEmbedding] = None,
                rotate_value: bool = False) -> ProjectedHeads:
        """Heads and mask; arguments as in ``forward``."""
        q = split_heads(self.to_q(queries), self.heads)  # (B, H, Q, dim_head)
        k, v = (split_heads(part, self.heads) for part in self.to_kv(context).chunk(2, dim=-1))
        if rotary is not None:
            if query_time is None or context_time is None:
                raise ValueError("`rotary` needs both `query_time` (B, Q) and "
                                 "`context_time` (B, K)")
            q = rotary.rotate(q, query_time)
            context_cos, context_sin = rotary.cos_sin(context_time)  # once for keys and values:
            k = apply_rotary(k, context_cos, context_sin)  # the context is the long side (spikes)
            if rotate_value:
                v = apply_rotary(v, context_cos, context_sin)
        elif rotate_value:
            raise ValueError("`rotate_value=True` needs a `rotary` embedding")
        mask = has_context = None
        if context_mask is not None:
            _check_bool_mask(context_mask, "context_mask", ((context.shape[0], context.shape[1]),))
            mask = _nonempty_key_mask(context_mask)  # (B, 1, 1, K)
            has_context = context_mask.any(dim=-1)  # (B,)
        return ProjectedHeads(q, k, v, mask, False, has_context)

    def forward(self, queries: Tensor, context: Tensor, *, context_mask: Optional[Tensor] = None,
                query_time: Optional[Tensor] = None, context_time: Optional[Tensor] = None,
                rotary: Optional[RotaryTimeEmbedding] = None, rotate_value: bool = False) -> Tensor:
        """Attend from queries into the context.

        Args:
            queries: ``(B, Q, D)``.
            context: ``(B, K, Dc)``.
            context_mask: ``(B, K)`` bool, True = real context token. A sample with no real
                token gets a zero attention result (the output is then ``to_out``'s bias).
            query_time, context_time: ``(B, Q)`` and ``(B, K)`` seconds, needed with ``rotary``.
            rotary: rotate queries and keys by their times, so scores depend on time differences.
            rotate_value: also rotate values by the context time and rotate the result back by
                the query time (POYO's encoder): the output then encodes *when*, relative to its
                query, the attended tokens happened.
        Returns:
            ``(B, Q, D)``.
        """
        heads = self.project(queries, context, context_mask=context_mask, query_time=query_time,
                             context_time=context_time, rotary=rotary, rotate_value=rotate_value)
        out = F.scaled_dot_product_attention(
            heads.q, heads.k, heads.v, attn_mask=heads.mask,
            dropout_p=self.dropout if self.training else 0.0)  # (B, H, Q, dim_head)
        if rotate_value:
            out = rotary.rotate(out, query_time, invert=True)
        if heads.has_context is not None:
            out = out * heads.has_context[:, None, None, None]
        return self.to_out(merge_heads(out))  # (B, Q, D)


def attention_weights(attention: Union[SelfAttention, CrossAttention], queries: Tensor,
                      context: Optional[Tensor] = None, **kwargs) -> Tensor:
    """The attention probabilities of one layer, for plotting attention maps.

    Slow on purpose: it materialises the ``(B, H, Q, K)`` score tensor that SDPA never builds.
    Use it for figures, never inside a model.

    Args:
        attention: the layer to inspect.
        queries: ``(B, T, D)`` tokens for ``SelfAttention``, ``(B, Q, D)`` queries for
            ``CrossAttention``.
        context: ``(B, K, Dc)``, ``CrossAttention`` only.
        **kwargs: the layer's ``forward`` keyword arguments (masks, rotary, times).
    Returns:
        ``(B, H, Q, K)`` float32; each row sums to 1 (rows of an empty cross-attention context
        are 0). Attention dropout is not applied.
    """
    if isinstance(attention, CrossAttention):
        if context is None:
            raise ValueError("CrossAttention needs a `context`")
        heads = attention.project(queries, context, **kwargs)
    else:
        heads = attention.project(queries, **kwargs)
    scores = heads.q.float() @ heads.k.float().transpose(-2, -1) * attention.dim_head ** -0.5
    mask = heads.mask
    if heads.is_causal:
        length = scores.shape[-1]
        mask = torch.ones(length, length, dtype=torch.bool, device=scores.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, H, Q, K)
    if heads.has_context is not None:
        weights = weights * heads.has_context[:, None, None, None]
    return weights


class TransformerBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection (NDT1/NDT2/MtM).

    Pre-norm (``x + f(LN(x))``) trains stably without warm-up tricks; post-norm
    (``LN(x + f(x))``) is the original transformer and NDT2's default.

    Args:
        dim: token size ``D``.
        heads: attention heads.
        ffn_mult: feed-forward width as a multiple of ``dim``.
        dropout: dropout on attention probabilities, the feed-forward hidden layer and both
            residual branches.
        pre_norm: LayerNorm before each sub-layer (True) or after each residual sum (False).
        activation: feed-forward activation, ``"gelu"``, ``"relu"`` or ``"geglu"``.
        dim_head: head size; default ``dim // heads``.
        ffn_dim: feed-forward width directly, overriding ``ffn_mult``.
    """

    def __init__(self, dim: int, heads: int, ffn_mult: float = 4, dropout: float = 0.1,
                 pre_norm: bool = True, activation: str = "gelu", dim_head: Optional[int] = None,
                 ffn_dim: Optional[int] = None):
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = SelfAttention(dim, heads, dim_head=dim_head, dropout=dropout)
        self.feedforward = FeedForward(dim, ffn_mult, dropout=dropout, activation=activation,
                                       hidden_dim=ffn_dim)
        self.attention_norm = nn.LayerNorm(dim)
        self.feedforward_norm = nn.LayerNorm(dim)
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, key_padding_mask: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, is_causal: bool = False,
                rotary: Optional[Rotary] = None) -> Tensor:
        """``(B, T, D) -> (B, T, D)``; keyword arguments as in ``SelfAttention.forward``."""
        masks = dict(key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=is_causal,
                     rotary=rotary)
        if self.pre_norm:
            x = x + self.residual_dropout(self.attention(self.attention_norm(x), **masks))
            x = x + self.residual_dropout(self.feedforward(self.feedforward_norm(x)))
        else:
            x = self.attention_norm(x + self.residual_dropout(self.attention(x, **masks)))
            x = self.feedforward_norm(x + self.residual_dropout(self.feedforward(x)))
        return x
