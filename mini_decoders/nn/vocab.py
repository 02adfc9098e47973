"""An embedding table keyed by string ids that can grow (POYO's unit and session embeddings).

A unit is the same neuron only within its session, so unit ids are global strings
(``"<session>/<unit>"``). Training on more sessions, or adapting to a new one, adds rows; the
vocabulary (id -> row) is saved inside ``state_dict``, so a checkpoint is self-describing and can
be loaded into a fresh, empty module.

Growing or subsetting replaces ``weight`` with a new ``Parameter``: build the optimiser after the
vocabulary is final (or rebuild it).
"""

from collections import Counter
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mini_decoders.errors import DataError


def _as_id_list(ids: Iterable[str]) -> list[str]:
    # A bare string is iterable too, and would silently become one id per character.
    if isinstance(ids, str):
        raise TypeError(f"expected a list of ids, got the single string {ids!r}; wrap it in a list")
    return [str(one_id) for one_id in ids]


class GrowingVocabEmbedding(nn.Module):
    """``nn.Embedding`` whose rows are named by string ids; starts empty.

    Args:
        dim: embedding size ``D``.
        init_scale: standard deviation of new rows, N(0, init_scale) (0.02 in POYO: small, so a
            new unit starts close to "average unit" and does not dominate the token).
    """

    def __init__(self, dim: int, init_scale: float = 0.02):
        super().__init__()
        self.dim, self.init_scale = dim, init_scale
        self.weight = nn.Parameter(torch.empty(0, dim))  # (N, D)
        self._row_of: dict[str, int] = {}

    @property
    def ids(self) -> list[str]:
        """The ids in row order."""
        return list(self._row_of)

    def __len__(self) -> int:
        return len(self._row_of)

    def extend(self, ids: Iterable[str]) -> None:
        """Add the ids not yet known, in order, as new N(0, init_scale) rows.

        Existing rows are left bitwise unchanged; extending with known ids does nothing.
        """
        new_ids = list(dict.fromkeys(one_id for one_id in _as_id_list(ids)
                                     if one_id not in self._row_of))
        if not new_ids:
            return
        old = self.weight
        new_rows = torch.randn(len(new_ids), self.dim, device=old.device, dtype=old.dtype)
        self.weight = nn.Parameter(torch.cat([old.detach(), new_rows * self.init_scale]),
                                   requires_grad=old.requires_grad)
        for one_id in new_ids:
            self._row_of[one_id] = len(self._row_of)

    def subset(self, ids: Iterable[str]) -> None:
        """Keep only ``ids``, in that order (rows move with their ids)."""
        ids = _as_id_list(ids)
        duplicates = sorted(one_id for one_id, count in Counter(ids).items() if count > 1)
        if duplicates:
            raise DataError(f"subset: ids must be unique, found duplicates {duplicates[:5]}")
        rows = self.index(ids)
        self.weight = nn.Parameter(self.weight.detach()[rows].clone(),
                                   requires_grad=self.weight.requires_grad)
        self._row_of = {one_id: row for row, one_id in enumerate(ids)}

    def index(self, ids: Iterable[str]) -> Tensor:
        """Row of each id: ``(N,)`` int64 on the weight's device.

        Raises:
            DataError: naming the unknown ids and how to adapt the model to them.
        """
        ids = _as_id_list(ids)
        unknown = [one_id for one_id in ids if one_id not in self._row_of]
        if unknown:
            shown = ", ".join(repr(one_id) for one_id in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise DataError(
                f"{len(unknown)} id(s) not in the vocabulary of {len(self)}: {shown}{more}. "
                f"The model never saw them in training; adapt it to the new data first "
                f"(`mini-decoders finetune RUN --mode units`: unit identification, which "
                f"learns only the new embeddings, or `--mode full` to fine-tune everything).")
        return torch.tensor([self._row_of[one_id] for one_id in ids], dtype=torch.long,
                            device=self.weight.device)

    def forward(self, index: Tensor) -> Tensor:
        """``(...)`` int64 rows -> ``(..., D)``. Only the rows used receive a gradient."""
        return F.embedding(index, self.weight)

    def get_extra_state(self) -> dict[str, Any]:
        # Plain python lists so that `torch.load(weights_only=True)` accepts the checkpoint.
        return {"ids": self.ids}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        ids = list(state["ids"])
        if len(ids) != self.weight.shape[0] or len(set(ids)) != len(ids):
            raise DataError(f"vocabulary in state_dict has {len(ids)} ids "
                            f"({len(set(ids))} unique) for {self.weight.shape[0]} rows")
        self._row_of = {one_id: row for row, one_id in enumerate(ids)}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The saved table may have any number of rows: resize ours to it before the copy, which
        # would otherwise fail on the shape. The ids follow in `set_extra_state`.
        saved = state_dict.get(prefix + "weight")
        # A different `dim` is left to the parent, which reports the size mismatch.
        if saved is not None and saved.ndim == 2 and saved.shape[1] == self.dim \
                and saved.shape[0] != self.weight.shape[0]:
            self.weight = nn.Parameter(
                torch.empty(saved.shape, device=self.weight.device, dtype=self.weight.dtype),
                requires_grad=self.weight.requires_grad)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{len(self)} ids, dim={self.dim}"
