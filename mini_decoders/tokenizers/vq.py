"""VQ tokens: a short window of population activity becomes one integer from a learned codebook.

The other tokenizers are fixed recipes (a spike, a bin, a patch). This one is *learned*, as a
VQ-VAE (van den Oord et al. 2017): an encoder summarises each window of ``W`` bins of the held-in
population into a vector, a :class:`~mini_decoders.nn.quantize.VectorQuantizer` snaps it to the
nearest of ``K`` codes, and a decoder must reconstruct the spike counts from the codes alone
(Poisson likelihood). What survives the bottleneck — ``log2 K`` bits per window — is what the
codes mean. LaBraM does the same for EEG (one code per channel x 1 s patch, cosine codes);
nobody maintains one for spikes, so this is the package's own, clearly-labelled extension.

    counts (B, T, U_in)
      -> windows of W bins: (B, N, W, U_in), N = ceil(T / W)
      -> per-session read-in of each bin (shared BinTokenizer, positions = bin within window)
      -> flatten the window, MLP -> (B, N, D) -> [optional transformer over windows] -> (B, N, C) z_e
      -> VectorQuantizer -> codes (B, N) and z_q (B, N, C)
      -> Linear(C, D) + window positions -> transformer over the code sequence
      -> per-session read-out -> log-rates (B, N * W, U_in + U_out)

Sessions record different neurons, so each has its own read-in and read-out (as in NDT1/MtM),
and they all share one codebook: code 17 should mean the same population state in every
session. The decoder reads the whole code sequence, so a bin's rates may use neighbouring codes
(LaBraM's decoder is a transformer too); the *information* still has to pass through the codes.

Padding: trials of a batch are padded to the longest. A window is *real* when it holds at least
one real bin (:func:`window_mask`); the last window of a trial whose length is not a multiple of
``W`` is real, its padded bins read as silence. Windows wholly past a trial's end get a code (so
shapes stay rectangular) but never reach the codebook: not its k-means start, EMA update or usage
statistics (dead-code restarts), nor the commitment loss or the perplexity.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mini_decoders.nn.attention import TransformerBlock
from mini_decoders.nn.positions import LearnedPositions
from mini_decoders.nn.quantize import Quantized, VectorQuantizer
from mini_decoders.tokenizers.base import Tokenizer, Tokens
from mini_decoders.tokenizers.bins import BinTokenizer


def split_windows(values: Tensor, window: int) -> Tensor:
    """(B, T, ...) -> (B, N, W, ...) with N = ceil(T / W); the last window is zero-padded."""
    n_bins = values.shape[1]
    n_windows = -(-n_bins // window)
    pad = n_windows * window - n_bins
    if pad:
        values = F.pad(values, (0,) * (2 * (values.ndim - 2)) + (0, pad))
    return values.reshape(values.shape[0], n_windows, window, *values.shape[2:])


def window_mask(valid: Tensor, window: int) -> Tensor:
    """(B, T) real bins -> (B, N) bool: windows holding at least one real bin."""
    return split_windows(valid, window).any(dim=2)


class VQTokenizer(Tokenizer):
    """VQ-VAE over windows of binned population activity, one codebook shared by all sessions.

    Args:
        heldin_per_session: held-in units of each session (the encoder's input).
        heldout_per_session: held-out units of each session (reconstructed too, never read).
        window: W, bins per code (2 bins of 20 ms = one code per 40 ms).
        dim: D, width of the encoder and decoder.
        code_dim: C, size of a code vector.
        num_codes: K, codebook size.
        encoder_layers: transformer blocks over the window sequence before quantisation (0 = each
            code sees its own window only).
        decoder_layers: transformer blocks over the code sequence.
        heads: attention heads of both transformers.
        max_bins: longest trial (bins) the position tables cover.
        dropout: dropout in the transformers.
        beta, ema_decay, cosine, restart_threshold, usage_decay: of the :class:`VectorQuantizer`.
    """

    READS, TIME_UNIT = "binned", "window"

    def __init__(self, heldin_per_session: list[int], heldout_per_session: list[int], window: int = 2,
                 dim: int = 64, code_dim: int = 16, num_codes: int = 256, encoder_layers: int = 0,
                 decoder_layers: int = 2, heads: int = 4, max_bins: int = 512, dropout: float = 0.0,
                 beta: float = 0.25, ema_decay: Optional[float] = 0.99, cosine: bool = False,
                 restart_threshold: float = 0.03, usage_decay: float = 0.95):
        super().__init__()
        if window < 1:
            raise ValueError(f"`window` must be >= 1 bin, got {window}")
        self.window, self.dim, self.code_dim = int(window), int(dim), int(code_dim)
        self.max_heldin, self.max_heldout = max(heldin_per_session), max(heldout_per_session)
        self.max_windows = -(-int(max_bins) // self.window)
        # Encoder: each bin of a window through the session's read-in (+ its place in the window).
        self.read_in = BinTokenizer(heldin_per_session, dim, self.window, transform="log1p")
        self.window_mlp = nn.Sequential(nn.LayerNorm(self.window * dim), nn.Linear(self.window * dim, dim), nn.GELU(),
                                        nn.Linear(dim, dim))
        self.encoder_positions = LearnedPositions(self.max_windows, dim)
        self.encoder = nn.ModuleList(TransformerBlock(dim, heads, ffn_mult=2, dropout=dropout)
                                     for _ in range(encoder_layers))
        self.to_code = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, code_dim))
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta=beta, ema_decay=ema_decay, cosine=cosine,
                                         restart_threshold=restart_threshold, usage_decay=usage_decay)
        # Decoder: codes -> rates of every bin of every window.
        self.from_code = nn.Linear(code_dim, dim)
        self.decoder_positions = LearnedPositions(self.max_windows, dim)
        self.decoder = nn.ModuleList(TransformerBlock(dim, heads, ffn_mult=2, dropout=dropout)
                                     for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        n_out = self.window * (self.max_heldin + self.max_heldout)
        # (S, D, W * (U_in + U_out)) one read-out per session; small weights so that the start is
        # the bias (each neuron's mean rate, set by the model before training).
        self.read_out_weight = nn.Parameter(torch.randn(len(heldin_per_session), dim, n_out) * 0.02 / math.sqrt(dim))
        self.read_out_bias = nn.Parameter(torch.full((len(heldin_per_session), self.max_heldin + self.max_heldout),
                                                     -2.0))

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    # ------------------------------------------------------------------ encoder
    def encode(self, heldin: Tensor, session: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """Continuous encoder outputs ``z_e``, one per window.

        Args:
            heldin: (B, T, U_in_max) counts, zero-padded units.
            session: (B,) session index.
            valid: (B, T) bool real bins (None = all real); padded bins are read as silence.
        Returns:
            (B, N, C).
        """
        if valid is not None:
            heldin = heldin * valid[..., None]
        windows = split_windows(heldin.float(), self.window)  # (B, N, W, U)
        batch, n_windows = windows.shape[:2]
        per_bin = self.read_in(windows.flatten(0, 1), session.repeat_interleave(n_windows))  # (B*N, W, D)
        x = self.window_mlp(per_bin.reshape(batch, n_windows, self.window * self.dim))  # (B, N, D)
        if len(self.encoder):
            x = x + self.encoder_positions(n_windows)
            key_valid = None if valid is None or bool(valid.all()) else window_mask(valid, self.window)
            for block in self.encoder:
                x = block(x, key_padding_mask=key_valid)
        return self.to_code(x)  # (B, N, C)

    def quantize(self, z: Tensor, update: Optional[bool] = None, window_valid: Optional[Tensor] = None) -> Quantized:
        """Snap ``z`` (B, N, C) to the codebook (EMA update while training unless ``update=False``).

        ``window_valid`` (B, N) bool marks the real windows (see :func:`window_mask`); only those
        feed the codebook's EMA, its usage statistics and the commitment loss.
        """
        return self.quantizer(z, update=update, valid=window_valid)

    # ------------------------------------------------------------------ decoder
    def decoder_features(self, quantized: Tensor, window_valid: Optional[Tensor] = None) -> Tensor:
        """Code vectors (B, N, C) -> the decoder's contextual vectors (B, N, D), before the read-out.

        Session-independent (the read-out is per session): what the code sequence means in terms
        of population activity. The behaviour decoder of ``models/vq.py`` may read them.
        """
        x = self.from_code(quantized) + self.decoder_positions(quantized.shape[1])  # (B, N, D)
        if window_valid is not None and bool(window_valid.all()):
            window_valid = None
        for block in self.decoder:
            x = block(x, key_padding_mask=window_valid)
        return self.decoder_norm(x)

    def decode(self, quantized: Tensor, session: Tensor, window_valid: Optional[Tensor] = None) -> Tensor:
        """Code vectors (B, N, C) -> log-rates (B, N * W, U_in_max + U_out_max), held-in columns first."""
        x = self.decoder_features(quantized, window_valid)  # (B, N, D)
        log_rates = torch.einsum("bnd,bdo->bno", x, self.read_out_weight[session])  # (B, N, W * U)
        log_rates = log_rates.reshape(x.shape[0], -1, self.max_heldin + self.max_heldout)  # (B, N * W, U)
        return log_rates + self.read_out_bias[session][:, None, :]

    def decode_codes(self, codes: Tensor, session: Tensor, window_valid: Optional[Tensor] = None) -> Tensor:
        """Integer codes (B, N) -> log-rates (B, N * W, U_in_max + U_out_max)."""
        return self.decode(self.quantizer.lookup(codes), session, window_valid)

    def forward(self, heldin: Tensor, session: Tensor, valid: Optional[Tensor] = None,
                update: Optional[bool] = None) -> tuple[Tensor, Quantized, Tensor]:
        """Encode, quantise, decode.

        Returns:
            log-rates (B, N * W, U_in_max + U_out_max), the :class:`Quantized` result (codes (B, N),
            losses, perplexity) and ``z_e`` (B, N, C) (for dead-code restarts).
        """
        z = self.encode(heldin, session, valid)
        window_valid = None if valid is None else window_mask(valid, self.window)
        # Windows past a trial's end are padding: they get a code (shapes stay), but they must not
        # pull the codebook, count as usage or add to the commitment loss.
        quantized = self.quantize(z, update, window_valid)
        return self.decode(quantized.quantized, session, window_valid), quantized, z

    @torch.no_grad()
    def tokenize(self, heldin: Tensor, session: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """Counts (B, T, U_in_max) -> codes (B, N) int64, without touching the codebook."""
        return self.quantizer.assign(self.encode(heldin, session, valid))

    def tokens(self, batch) -> Tokens:
        """One token per window of ``window`` bins: its code's vector (B, N, C), at window positions
        0..N-1, real where the window holds a real bin. The codebook is not updated (no EMA step)."""
        return self._window_tokens(batch, update=False)[0]

    def _window_tokens(self, batch, update: Optional[bool]) -> tuple[Tokens, Quantized]:
        """The tokens of ``batch`` (one per window, at window positions 0..N-1) and the quantiser's result."""
        valid = batch["time_mask"]
        window_valid = window_mask(valid, self.window)  # (B, N)
        quantized = self.quantize(self.encode(batch["heldin"], batch["session_index"], valid), update=update,
                                  window_valid=window_valid)
        positions = torch.arange(window_valid.shape[1], device=valid.device).expand(window_valid.shape)
        return Tokens(quantized.quantized, positions, window_valid), quantized

    def training_tokens(self, batch) -> tuple[Tokens, Tensor]:
        """:meth:`tokens` while the codebook learns with the model that reads them: codes of the real
        windows (straight-through gradient to the encoder), the codebook updated (EMA, or by gradient
        through the returned codebook loss) and the commitment + codebook loss returned."""
        tokens, quantized = self._window_tokens(batch, update=None)
        return tokens, quantized.loss

    def token_parameters(self) -> Iterator[nn.Parameter]:
        """Encoder and codebook: what makes a code. The decoder and read-out (which reconstruct counts
        from codes, for the VQ-VAE objective), and the encoder's positions when it has no transformer,
        are not on the tokens' path."""
        unused = [self.from_code, self.decoder_positions, self.decoder, self.decoder_norm]
        if not len(self.encoder):
            unused.append(self.encoder_positions)
        decoder = {id(p) for module in unused for p in module.parameters()} | {id(self.read_out_weight),
                                                                              id(self.read_out_bias)}
        return (p for p in self.parameters() if id(p) not in decoder)
