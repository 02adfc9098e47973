"""PerceiverIO blocks with rotary time (POYO's trunk).

A long sequence of input tokens (every spike of a window) is read by a small, fixed set of
latent tokens through one cross-attention (:class:`RotaryCrossBlock`: cost linear in the number of
inputs), the latents talk among themselves (:class:`RotarySelfBlock`), and queries placed at any
time read the latents out with another cross-attention. Time never enters a token: it rotates
queries and keys (:class:`~mini_decoders.nn.rotary.RotaryTimeEmbedding`), and in the encoder and the
latent stack the values too, so what a latent gathers carries relative timing.
"""

from __future__ import annotations

from torch import Tensor, nn

from mini_decoders.nn.attention import CrossAttention, SelfAttention
from mini_decoders.nn.feedforward import FeedForward
from mini_decoders.nn.rotary import RotaryTimeEmbedding


class RotaryCrossBlock(nn.Module):
    """``q += CrossAttn(LN(q), LN(context))``; ``q += FFN(LN(q))`` (pre-norm, GEGLU)."""

    def __init__(self, dim: int, heads: int, dim_head: int, ffn_dropout: float, atn_dropout: float):
        super().__init__()
        self.query_norm, self.context_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = CrossAttention(dim, heads=heads, dim_head=dim_head, dropout=atn_dropout)
        self.feedforward = FeedForward(dim, mult=4, dropout=ffn_dropout, activation="geglu")

    def forward(self, queries: Tensor, context: Tensor, context_mask: Tensor | None, query_time: Tensor,
                context_time: Tensor, rotary: RotaryTimeEmbedding, rotate_value: bool) -> Tensor:
        """(B, Q, D) queries, (B, K, D) context -> (B, Q, D)."""
        queries = queries + self.attention(self.query_norm(queries), self.context_norm(context),
                                           context_mask=context_mask, query_time=query_time,
                                           context_time=context_time, rotary=rotary, rotate_value=rotate_value)
        return queries + self.feedforward(self.ffn_norm(queries))


class RotarySelfBlock(nn.Module):
    """Latent self-attention with value rotation, then GEGLU; both with residual dropout."""

    def __init__(self, dim: int, heads: int, dim_head: int, ffn_dropout: float, lin_dropout: float,
                 atn_dropout: float):
        super().__init__()
        self.attention_norm, self.ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, dim_head=dim_head, dropout=atn_dropout)
        self.feedforward = FeedForward(dim, mult=4, dropout=ffn_dropout, activation="geglu")
        self.residual_dropout = nn.Dropout(lin_dropout)

    def forward(self, latents: Tensor, cos_sin: tuple[Tensor, Tensor]) -> Tensor:
        """(B, N, D) -> (B, N, D); ``cos_sin`` from ``RotaryTimeEmbedding.cos_sin(latent_times)``."""
        attended = self.attention(self.attention_norm(latents), rotary=cos_sin, rotate_value=True)
        latents = latents + self.residual_dropout(attended)
        return latents + self.residual_dropout(self.feedforward(self.ffn_norm(latents)))
