"""Spikes as tokens (POYO): one token per spike, plus a start and an end token per unit.

A token is *who* fired, not *when*: its vector is ``unit_embedding[unit] + type_embedding[type]``
and its time (seconds from the window start) travels beside it, to be used only by rotary
attention. Types are ``spike``, ``start`` (at time 0) and ``end`` (at the window length): every
unit of the window gets a start and an end token, so a unit that stays silent is still *seen*
(silence is information) and the model knows which units were recorded at all.

Units of different sessions are different neurons, so the unit vocabulary is keyed by global id
strings (``"<session>/<unit>"``) and grows when sessions are added. Each session keeps a lookup
table local unit index -> vocabulary row, so mapping a window's spikes is one fancy-index.

Token batches reuse the packed layout of :mod:`mini_decoders.data.batching`: a
:class:`~mini_decoders.data.batching.SpikeWindows` whose ``units`` field holds a *token code*
``3 * vocabulary_row + type``, so the shared ``collate_spike_tokens`` / ``packed_spike_tokens`` /
``bucket_batches`` work on them unchanged; :func:`decode_token_codes` splits the code again.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mini_decoders.data.batching import SpikeWindows, collate_spike_tokens, spike_windows
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError
from mini_decoders.nn.vocab import GrowingVocabEmbedding
from mini_decoders.tokenizers.base import Tokenizer, Tokens

TOKEN_TYPES = ("spike", "start", "end")
SPIKE, START, END = range(len(TOKEN_TYPES))
N_TOKEN_TYPES = len(TOKEN_TYPES)


def encode_token_codes(rows: np.ndarray, types: np.ndarray | int) -> np.ndarray:
    """Pack (vocabulary row, token type) into one int64 code: ``3 * row + type``."""
    return np.asarray(rows, dtype=np.int64) * N_TOKEN_TYPES + np.asarray(types, dtype=np.int64)


def decode_token_codes(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`encode_token_codes`: ``(rows, types)``, each shaped like ``codes``."""
    return torch.div(codes, N_TOKEN_TYPES, rounding_mode="floor"), codes % N_TOKEN_TYPES


def unit_dropout(n_windows: int, n_units: int, min_units: int, rng: np.random.Generator) -> np.ndarray:
    """Which units each window keeps, for the unit-dropout augmentation (this book's default).

    Each window keeps a uniformly drawn number of units between ``min(min_units, U)`` and ``U``,
    chosen at random: the decoder learns not to rely on any single neuron (electrodes lose and
    gain units from day to day).

    Returns:
        (N, U) bool, True = kept.
    """
    low = min(max(int(min_units), 1), n_units)
    n_keep = rng.integers(low, n_units + 1, size=n_windows)  # (N,)
    return random_unit_subsets(n_keep, n_units, rng)


def triangular_unit_counts(n_windows: int, n_units: int, min_units: int, mode_units: int, max_units: int,
                           peak: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) number of units each window keeps, as POYO's authors draw it (their ``UnitCustomDistribution``).

    The count ``x`` has the density 1 at ``min_units``, rising linearly to ``peak`` at
    ``mode_units`` and falling back to 1 at ``max_units``; the window keeps ``min(floor(x), U)``
    units (so all ``U`` when the session has fewer than ``min_units``). That density is a
    uniform density plus a triangle, so it is drawn as a mixture (no rejection loop): uniform with
    probability ``2 / (peak + 1)`` (its share of the area), else ``rng.triangular``.
    (The authors draw it by rejection; their acceptance test divides by a fresh uniform draw
    where a constant proposal density belongs, which flattens the peak. We sample the density
    their class documents.)
    """
    if not min_units <= mode_units <= max_units or min_units >= max_units or peak < 1:
        raise DataError(f"unit dropout: need min_units <= mode_units <= max_units (min < max) and peak >= 1, got "
                        f"{min_units}, {mode_units}, {max_units}, peak {peak}")
    uniform = rng.uniform(min_units, max_units, size=n_windows)  # (N,)
    triangle = rng.triangular(min_units, mode_units, max_units, size=n_windows)  # (N,)
    drawn = np.where(rng.random(n_windows) < 2.0 / (peak + 1.0), uniform, triangle)
    return np.minimum(np.floor(drawn).astype(np.int64), n_units)


def random_unit_subsets(n_keep: np.ndarray, n_units: int, rng: np.random.Generator) -> np.ndarray:
    """(N, U) bool: window ``i`` keeps ``n_keep[i]`` of its ``U`` units, chosen uniformly at random."""
    # The rank of a random key is a random permutation per row: keep the n_keep smallest.
    ranks = rng.random((len(n_keep), n_units)).argsort(axis=1).argsort(axis=1)
    return ranks < np.asarray(n_keep)[:, None]


def add_start_end_tokens(windows: SpikeWindows, unit_rows: np.ndarray,
                         keep_units: np.ndarray | None = None) -> SpikeWindows:
    """Spike tokens of ``windows`` plus a start and an end token for every (kept) unit.

    Args:
        windows: spikes of N windows of one session (``units`` = local unit index).
        unit_rows: (U,) vocabulary row of each local unit.
        keep_units: (N, U) bool from :func:`unit_dropout`; None keeps every unit.

    Returns:
        A :class:`SpikeWindows` whose ``units`` are token codes (:func:`encode_token_codes`);
        within a window the spike tokens come first (in time order), then start, then end tokens.
    """
    unit_rows = np.asarray(unit_rows, dtype=np.int64)
    n_windows, n_units = len(windows), len(unit_rows)
    if len(windows.units) and windows.units.max() >= n_units:
        raise DataError(f"tokenize: spikes of unit {int(windows.units.max())} but the session has only "
                        f"{n_units} units in its lookup table")
    spike_window = np.repeat(np.arange(n_windows), windows.lengths)  # (S,)
    spike_times, spike_units = windows.times, windows.units
    if keep_units is not None:
        if keep_units.shape != (n_windows, n_units):
            raise DataError(f"tokenize: keep_units must be (windows, units) = {(n_windows, n_units)}, "
                            f"got {keep_units.shape}")
        kept = keep_units[spike_window, spike_units]
        spike_window, spike_times, spike_units = spike_window[kept], spike_times[kept], spike_units[kept]
    else:
        keep_units = np.ones((n_windows, n_units), dtype=bool)
    marker_window, marker_unit = np.nonzero(keep_units)  # (M,) each, window-major
    n_markers = len(marker_window)
    window = np.concatenate([spike_window, marker_window, marker_window])
    times = np.concatenate([spike_times.astype(np.float32), np.zeros(n_markers, np.float32),
                            np.full(n_markers, windows.length, np.float32)])
    codes = np.concatenate([encode_token_codes(unit_rows[spike_units], SPIKE),
                            encode_token_codes(unit_rows[marker_unit], START),
                            encode_token_codes(unit_rows[marker_unit], END)])
    order = np.argsort(window, kind="stable")  # group by window, keep the order within each group
    offsets = np.concatenate(([0], np.cumsum(np.bincount(window, minlength=n_windows)))).astype(np.int64)
    return SpikeWindows(times[order], codes[order], offsets, windows.starts, windows.length)


def concatenate_windows(parts: Sequence[SpikeWindows]) -> SpikeWindows:
    """Windows of several sessions (already tokenised) as one packed batch, in the given order."""
    if not parts:
        raise DataError("concatenate_windows: nothing to concatenate")
    lengths = {round(part.length, 9) for part in parts}
    if len(lengths) != 1:
        raise DataError(f"concatenate_windows: windows of different lengths {sorted(lengths)} s")
    offsets = np.concatenate([[0]] + [np.diff(part.offsets) for part in parts]).cumsum().astype(np.int64)
    return SpikeWindows(np.concatenate([part.times for part in parts]), np.concatenate([part.units for part in parts]),
                        offsets, np.concatenate([part.starts for part in parts]), parts[0].length)


class SpikeTokenizer(Tokenizer):
    """Unit and token-type embeddings, and the per-session unit lookup tables.

    Args:
        dim: token size ``D``.
        init_scale: std of new embedding rows (0.02 as in POYO).
    """

    READS, TIME_UNIT = "spikes", "s"

    def __init__(self, dim: int, init_scale: float = 0.02):
        super().__init__()
        self.unit_vocab = GrowingVocabEmbedding(dim, init_scale)
        self.token_type = nn.Embedding(N_TOKEN_TYPES, dim)
        nn.init.normal_(self.token_type.weight, std=init_scale)
        self._rows: dict[str, np.ndarray] = {}  # session id -> (U,) vocabulary rows; a cache

    def add_units(self, unit_ids: Iterable[str]) -> None:
        """Grow the vocabulary by the ids not yet known (existing rows are untouched)."""
        self.unit_vocab.extend(unit_ids)
        self._rows.clear()  # rows stay valid after `extend`, but not after a `subset`; stay simple

    def unit_rows(self, session_id: str, unit_ids: Sequence[str]) -> np.ndarray:
        """(U,) int64 vocabulary row of each unit of a session (cached per session id).

        Raises:
            DataError: a unit is not in the vocabulary (the message says how to adapt).
        """
        rows = self._rows.get(session_id)
        if rows is None or len(rows) != len(unit_ids):
            rows = self.unit_vocab.index(list(unit_ids)).cpu().numpy()
            self._rows[session_id] = rows
        return rows

    def collate(self, windows: SpikeWindows | Sequence[SpikeWindows], pad_to_multiple: int = 8) -> dict[str, Tensor]:
        """Tokenised windows -> a padded batch.

        Returns:
            ``input_times`` (B, L) float32 seconds from each window start, ``input_rows`` (B, L)
            int64, ``input_types`` (B, L) int64, ``input_mask`` (B, L) bool (True = real token).
        """
        if not isinstance(windows, SpikeWindows):
            windows = concatenate_windows(windows)
        padded = collate_spike_tokens(windows, pad_to_multiple=pad_to_multiple)
        rows, types = decode_token_codes(padded["units"])
        return {"input_times": padded["times"], "input_rows": rows, "input_types": types,
                "input_mask": padded["mask"]}

    def window_batch(self, session: Session, window_starts: np.ndarray, length: float,
                     keep_units: np.ndarray | None = None) -> dict[str, Tensor]:
        """The spike tokens of windows ``[start, start + length)`` of ``session``, as a padded batch.

        Every spike of a (kept) unit is a token, plus a start and an end token per unit; see
        :func:`add_start_end_tokens` (``keep_units``: unit dropout) and :meth:`collate`.

        Raises:
            DataError: a unit of the session is not in the vocabulary (the message says how to adapt).
        """
        windows = spike_windows(session, window_starts, length)
        rows = self.unit_rows(session.id, [str(u) for u in session.units.ids])
        return self.collate(add_start_end_tokens(windows, rows, keep_units))

    def tokens(self, batch) -> Tokens:
        """One token per spike (and per unit's start and end) of a :meth:`window_batch`: (B, L, D), at
        their times in seconds from the window start, real where ``input_mask``."""
        return Tokens(self(batch["input_rows"], batch["input_types"]), batch["input_times"], batch["input_mask"])

    def forward(self, rows: Tensor, types: Tensor) -> Tensor:
        """``(B, L)`` vocabulary rows and token types -> ``(B, L, D)`` token vectors.

        Time is deliberately not added here: it enters attention through rotary embeddings only.
        """
        return self.unit_vocab(rows) + self.token_type(types)
