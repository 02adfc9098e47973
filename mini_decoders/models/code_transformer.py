"""The transformer over VQ code tokens (chapter 7's stage 2 and 3), its batches and its masks.

A trial becomes a sequence of window tokens, one per code of the VQ tokenizer
(:mod:`mini_decoders.tokenizers.vq`). :class:`CodeTransformer` reads them (the code's vector, or
the window's held-in counts in LaBraM's recipe), predicts hidden codes (masked code modelling:
:func:`random_window_mask` chooses which) and decodes velocity; :func:`collate_codes` pads the
sequences of a batch. :class:`~mini_decoders.models.vq.VQ` trains two copies of it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from mini_decoders.errors import RunError
from mini_decoders.nn.attention import TransformerBlock
from mini_decoders.nn.positions import LearnedPositions


def random_window_mask(window_valid: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Which code tokens to hide: about ``ratio`` of each sample's real windows, at least one.

    Args:
        window_valid: (B, N) bool real windows.
    Returns:
        (B, N) bool, True = hidden (only real windows).
    """
    noise = torch.rand(window_valid.shape, generator=generator, device="cpu").to(window_valid.device)
    hidden = (noise < ratio) & window_valid
    # A sample that drew nothing hides its window with the smallest noise: every sample is scored.
    first = noise.masked_fill(~window_valid, 2.0).argmin(dim=1)
    empty = ~hidden.any(dim=1) & window_valid.any(dim=1)
    hidden[empty, first[empty]] = True
    return hidden


def collate_codes(items: list[dict]) -> dict[str, Tensor]:
    """Pad code sequences of unequal length.

    Items: ``codes`` (N_i,) int64, ``session`` int, optional ``behavior`` (N_i * W, D) float32,
    optional ``heldin`` (T_i, U_in_max) float32 counts with ``window`` W (bins per code).

    Returns:
        ``codes`` (B, N) int64 (0 in padding), ``window_valid`` (B, N) bool, ``session`` (B,),
        ``behavior`` (B, N * W, D) NaN-padded when the items have it, and ``windows``
        (B, N, W, U_in_max) zero-padded held-in counts when the items have ``heldin``.
    """
    n_windows = max(len(item["codes"]) for item in items)
    codes = np.zeros((len(items), n_windows), dtype=np.int64)
    valid = np.zeros((len(items), n_windows), dtype=bool)
    for row, item in enumerate(items):  # a loop per trial
        codes[row, :len(item["codes"])] = item["codes"]
        valid[row, :len(item["codes"])] = True
    batch = {"codes": torch.from_numpy(codes), "window_valid": torch.from_numpy(valid),
             "session": torch.tensor([item["session"] for item in items], dtype=torch.int64)}
    if "heldin" in items[0]:
        window = int(items[0]["window"])
        counts = np.zeros((len(items), n_windows * window, items[0]["heldin"].shape[1]), dtype=np.float32)
        for row, item in enumerate(items):
            counts[row, :len(item["heldin"])] = item["heldin"]
        batch["windows"] = torch.from_numpy(counts).reshape(len(items), n_windows, window, -1)
    if "behavior" in items[0]:
        n_bins = max(len(item["behavior"]) for item in items)
        behavior = np.full((len(items), n_bins, items[0]["behavior"].shape[1]), np.nan, dtype=np.float32)
        for row, item in enumerate(items):
            behavior[row, :len(item["behavior"])] = item["behavior"]
        batch["behavior"] = torch.from_numpy(behavior)
    return batch


# ================================================================================================
# The transformer

class CodeTransformer(nn.Module):
    """Window tokens -> contextual vectors, with a masked-code head and a velocity head.

    A token is one window of ``window`` bins. It is read from the window's code (this book's
    recipe: a projection of the codebook vector) or, with ``count_units`` > 0, from the window's
    held-in counts (LaBraM's recipe: the encoder reads the raw patches and the codes are only its
    targets), plus a window position and a session vector.

    Args:
        codebook_dim: C, size of a codebook vector (tokens start from the code's vector).
        num_codes: K.
        n_sessions: sessions (each gets a learned vector added to every token).
        dim, layers, heads, dropout: the transformer.
        max_windows: longest code sequence.
        window: bins per code (the velocity head outputs one value per bin).
        behavior_dims: velocity channels.
        feature_dim: size of an optional extra input per token (0 = none).
        per_code_embedding: add a free learned vector per code to its token (on top of the
            projection of its codebook vector; unused with ``count_units``).
        tied_head: score the codes by distance in codebook space (see :meth:`code_logits`) instead
            of with a free ``Linear(D, K)``.
        count_units: U_in_max; > 0 makes each token a per-session linear read-in of the window's
            ``window x count_units`` held-in counts instead of its code.
    """

    def __init__(self, codebook_dim: int, num_codes: int, n_sessions: int, dim: int, layers: int, heads: int,
                 dropout: float, max_windows: int, window: int, behavior_dims: int = 2, feature_dim: int = 0,
                 per_code_embedding: bool = True, tied_head: bool = False, count_units: int = 0):
        super().__init__()
        self.window, self.behavior_dims = window, behavior_dims
        self.reads_counts = count_units > 0
        if self.reads_counts:
            # (S, W * U, D): one Linear per session, stacked so a batch can mix sessions in one einsum.
            fan_in = window * count_units
            self.read_in_weight = nn.Parameter(torch.randn(n_sessions, fan_in, dim) / math.sqrt(fan_in))
            self.read_in_bias = nn.Parameter(torch.zeros(n_sessions, dim))
            self.code_projection = self.code_embedding = None
        else:
            self.code_projection = nn.Linear(codebook_dim, dim)
            self.code_embedding = nn.Embedding(num_codes, dim) if per_code_embedding else None
            if self.code_embedding is not None:
                nn.init.zeros_(self.code_embedding.weight)  # start from the codebook's geometry alone
        # Optional extra input per token (the VQ decoder's view of the code sequence), zero at the
        # start so that a pretrained code model is unchanged until fine-tuning finds it useful.
        self.feature_projection = nn.Linear(feature_dim, dim) if feature_dim else None
        if self.feature_projection is not None:
            nn.init.zeros_(self.feature_projection.weight)
            nn.init.zeros_(self.feature_projection.bias)
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.positions = LearnedPositions(max_windows, dim)
        self.session_embedding = nn.Embedding(n_sessions, dim)
        nn.init.normal_(self.session_embedding.weight, std=0.02)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, ffn_mult=2, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        if tied_head:
            self.code_query = nn.Linear(dim, codebook_dim)
            self.code_log_scale = nn.Parameter(torch.zeros(()))
            self.code_bias = nn.Parameter(torch.zeros(num_codes))  # room for the codes' frequencies
        else:
            self.code_head = nn.Linear(dim, num_codes)
        self.tied_head = tied_head
        self.behavior_head = nn.Linear(dim, window * behavior_dims)

    def embed(self, session: Tensor, codes: Tensor | None = None, code_vectors: Tensor | None = None,
              windows: Tensor | None = None) -> Tensor:
        """Token vectors before masking, positions and context: (B, N, D).

        Args:
            codes: (B, N) int64 and code_vectors: (B, N, C) their codebook rows (code tokens), or
            windows: (B, N, W, U_in_max) held-in counts (count tokens).
        """
        if self.reads_counts:
            if windows is None:
                raise RunError("this code model reads counts (config code_input='counts'): pass `windows`")
            return (torch.einsum("bnk,bkd->bnd", windows.flatten(2).float(), self.read_in_weight[session])
                    + self.read_in_bias[session][:, None, :])
        if code_vectors is None:
            raise RunError("this code model reads codes (config code_input='codes'): pass `codes` and `code_vectors`")
        x = self.code_projection(code_vectors)  # (B, N, D)
        if self.code_embedding is not None:
            x = x + self.code_embedding(codes)
        return x

    def forward(self, session: Tensor, window_valid: Tensor | None = None, hidden: Tensor | None = None, *,
                codes: Tensor | None = None, code_vectors: Tensor | None = None, windows: Tensor | None = None,
                features: Tensor | None = None) -> Tensor:
        """Contextual token vectors.

        Args:
            session: (B,) session index.
            window_valid: (B, N) bool real windows (None = all).
            hidden: (B, N) bool tokens replaced by the mask token (None = none): nothing of a
                hidden window's input (code or counts) reaches the output.
            codes, code_vectors, windows: the input, see :meth:`embed`.
            features: (B, N, F) extra input per token (None = none); must not be used with
                ``hidden`` if it carries information about the hidden windows.
        Returns:
            (B, N, D).
        """
        x = self.embed(session, codes, code_vectors, windows)  # (B, N, D)
        if hidden is not None:
            x = torch.where(hidden[..., None], self.mask_token.to(x.dtype), x)
        if features is not None and self.feature_projection is not None:
            x = x + self.feature_projection(features)
        x = x + self.positions(x.shape[1]) + self.session_embedding(session)[:, None, :]
        x = self.embed_dropout(x)
        if window_valid is not None and bool(window_valid.all()):
            window_valid = None
        for block in self.blocks:
            x = block(x, key_padding_mask=window_valid)
        return self.norm(x)

    def code_logits(self, x: Tensor, codebook: Tensor) -> Tensor:
        """(M, D) contextual vectors -> (M, K) logits over the codes.

        Tied head: the vector predicts a point ``q`` in codebook space and code ``k`` scores
        ``-s/2 ||q - e_k||²`` (+ a per-code bias), so codes near the truth share its credit and a
        rare code is scored through its vector, not a row learned from its few occurrences. With
        K = 512 codes and a few thousand training windows, a free ``Linear(D, K)`` memorises the
        training sequences instead.
        """
        if not self.tied_head:
            return self.code_head(x)
        query = self.code_query(x).float()  # (M, C)
        codebook = codebook.float()
        scores = query @ codebook.t() - 0.5 * codebook.pow(2).sum(1)[None, :]  # -½||q - e||² + ½||q||²
        return self.code_log_scale.exp() * scores + self.code_bias

    def velocity(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N * W, behavior_dims) standardised velocity of every bin."""
        return self.behavior_head(x).reshape(x.shape[0], -1, self.behavior_dims)
