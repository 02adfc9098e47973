"""The tokenizer interface: what a tokenizer reads, and the tokens it emits.

The book's question is *what a token of neural activity should be*. To ask it in code, every
tokenizer (spikes, bins, patches, VQ codes) emits the same thing, :class:`Tokens`: token vectors,
where each token sits in time, and which tokens are real. A backbone that reads :class:`Tokens`
(attention over the real tokens, a read-out) can then take any of them: swap the token, keep the rest.

What a tokenizer reads is a batch (a dict of tensors) of one of two kinds, its ``READS``:

- ``"binned"`` (bins, patches, VQ codes): a :func:`~mini_decoders.data.batching.collate_binned`
  batch of trials: ``heldin`` (B, T, U) held-in counts (the model's input), ``heldin_unit_mask``
  (B, U), ``time_mask`` (B, T) real bins, ``session_index`` (B,) (each session has its own read-in);
- ``"spikes"`` (spike tokens): :meth:`~mini_decoders.tokenizers.spikes.SpikeTokenizer.window_batch`
  of windows of one session: ``input_rows`` / ``input_types`` / ``input_times`` / ``input_mask`` (B, L).

The models keep calling their tokenizers directly where their forward needs more than
:class:`Tokens` (NDT2 hides patches before embedding them, POYO's rotary attention reads times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Mapping, Optional

from torch import Tensor, nn


@dataclass
class Tokens:
    """A batch of tokens, whatever made them.

    Attributes:
        embeddings: (B, L, D) token vectors.
        times: (B, L) where each token sits in time: seconds from the window start (spike tokens,
            float) or its position in the trial (bin, patch and code tokens: the index of its time
            bin, or of its window of bins; int64). ``TIME_UNIT`` of the tokenizer says which.
        mask: (B, L) bool, True for real tokens (False: padding, never attended to).
    """

    embeddings: Tensor
    times: Tensor
    mask: Tensor


class Tokenizer(nn.Module):
    """Base class of the tokenizers: reads a batch of one kind (``READS``), emits :class:`Tokens`.

    Class attributes a subclass sets:
        READS: ``"binned"`` or ``"spikes"``, the kind of batch :meth:`tokens` reads (see the module
            docstring for its keys).
        TIME_UNIT: what ``Tokens.times`` counts: ``"s"``, ``"bin"`` or ``"window"``.
    """

    READS: ClassVar[str] = ""
    TIME_UNIT: ClassVar[str] = ""

    def tokens(self, batch: Mapping[str, Tensor]) -> Tokens:
        """The tokens of ``batch``: (B, L, D) vectors, their (B, L) times, their (B, L) mask."""
        raise NotImplementedError

    def training_tokens(self, batch: Mapping[str, Tensor]) -> tuple[Tokens, Optional[Tensor]]:
        """The tokens of ``batch`` while training, and the tokenizer's own loss (None: it has none).

        A learned codebook (VQ) adds its commitment loss here and updates itself; fixed recipes
        (spikes, bins, patches) are :meth:`tokens` with no loss of their own.
        """
        return self.tokens(batch), None

    def token_seconds(self, tokens: Tokens, bin_size: float) -> Tensor:
        """(B, L) float seconds of each token from the window start, whatever its ``TIME_UNIT``.

        Bin tokens sit at their bin's centre; a token of a window of ``self.window`` bins at the
        window's centre; spike tokens already carry seconds. One clock lets one backbone place the
        tokens of every tokenizer on the same output bins.
        """
        times = tokens.times.float()
        if self.TIME_UNIT == "s":
            return times
        if self.TIME_UNIT == "bin":
            return (times + 0.5) * bin_size
        if self.TIME_UNIT == "window":
            window = int(getattr(self, "window"))
            return (times * window + window / 2) * bin_size
        raise ValueError(f"{type(self).__name__}.TIME_UNIT must be 's', 'bin' or 'window', got {self.TIME_UNIT!r}")

    def token_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the tokens depend on (what a parameter count charges to the tokenizer).

        All of them by default; a tokenizer that carries more (the VQ tokenizer's own decoder)
        leaves those out.
        """
        return self.parameters()
