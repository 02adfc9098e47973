"""The interface every model implements: build from data, fit, predict per trial.

A model in this package is a :class:`Decoder`. Whether it is a closed-form Wiener filter or a
transformer pretrained on twenty sessions, the Run API (``mini_decoders.run``) only ever calls:

- ``Decoder.build(sessions, config)``: sizes come from the data (units per session, behaviour
  dimensions). The unit ids are remembered, so data recorded from other units is refused with a
  message instead of silently producing nonsense.
- ``model.fit(sessions, config, out_dir=..., resume=..., progress=...)``: gradient models hand
  themselves to the one :class:`~mini_decoders.training.trainer.Trainer`; closed-form models solve.
- ``model.predict_trials(session, binned)``: a dict of arrays, one row per trial.

What a model knows about its training data lives in :class:`SessionSpec` (plain python, so it
goes into ``config.json`` and back). Everything learned is in the ``state_dict`` (tensors) or,
if it must, in ``extra_state()`` (plain python), so checkpoints stay ``weights_only``-safe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mini_decoders.data.binning import BinnedTrials
from mini_decoders.data.session import Session
from mini_decoders.errors import RunError
from mini_decoders.models.recipes import Departure, apply_recipe
from mini_decoders.models.registry import adaptable_models
from mini_decoders.training.profiles import config_for

PREDICTION_KEYS = ("rates_heldin", "rates_heldout", "hand_vel")  # the datasets PRED.h5 may hold


@dataclass
class SessionSpec:
    """What a model remembers about one training session (goes into ``config.json``).

    Attributes:
        id: session identifier (the NWB ``identifier``).
        unit_ids: (U,) unit ids in the units-table order.
        heldout: (U,) held-out flag of each unit.
        behavior_dims: behaviour name -> number of channels (e.g. ``{"hand_vel": 2}``).
    """

    id: str
    unit_ids: list[str]
    heldout: list[bool]
    behavior_dims: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, session: Session) -> "SessionSpec":
        return cls(id=session.id, unit_ids=[str(u) for u in session.units.ids],
                   heldout=[bool(h) for h in session.units.heldout],
                   behavior_dims={name: int(series.values.shape[1]) for name, series in session.behavior.items()})

    @classmethod
    def from_dict(cls, data: dict) -> "SessionSpec":
        return cls(id=str(data["id"]), unit_ids=[str(u) for u in data["unit_ids"]],
                   heldout=[bool(h) for h in data["heldout"]],
                   behavior_dims={str(k): int(v) for k, v in data.get("behavior_dims", {}).items()})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_heldin(self) -> int:
        return len(self.heldout) - sum(self.heldout)

    @property
    def n_heldout(self) -> int:
        return sum(self.heldout)

    @property
    def heldin_index(self) -> np.ndarray:
        return np.flatnonzero(~np.asarray(self.heldout, dtype=bool))

    @property
    def heldout_index(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.heldout, dtype=bool))


class Decoder(nn.Module):
    """Base class of every model: baselines now, NDT1/2, MtM, POYO and VQ later.

    Class attributes a subclass sets:
        name: the registry name (``"ridge"``).
        CONFIGS: ``{"tiny": {...}, "quick": {...}, "full": {...}}``: the three recipes, in one
            place per model. Every config has at least ``bin_size`` (s).
        predicts: what :meth:`predict_trials` returns, a subset of ``{"rates", "hand_vel"}``.
            ``"rates"`` means ``rates_heldin`` and ``rates_heldout`` (expected spikes per bin).
        PAPER: config key -> the value the model's paper uses, where the default recipe differs
            (``{}``: the default recipe *is* the published method, as for the classic baselines).
        DEPARTURES: the named changes that turn ``PAPER`` into the default recipe, each with
            its config keys (see :mod:`mini_decoders.models.recipes`).

    What the model *is*, for the experiments that run models side by side (the registry,
    :mod:`mini_decoders.models.registry`, only lists the names):
        TOKEN: what one token is, in words (``"time bin"``, ``"spike"``).
        JUDGED_ON: the metric its issue judges it on: ``"co_bps"`` (rate models) or ``"vel_r2"``
            (decoders).
        BASELINE: the classic model it must beat on ``JUDGED_ON`` (None for the classic baselines
            of each metric themselves).
        MODEL_BAR: the ratio to ``BASELINE``'s score its issue asks for (1.0: beat it).
        CLASSIC: a classic decoder (no transformer), one of the baselines the book starts from.
        ADAPTS: the ``finetune`` modes of a model that adapts to new units (``("units", "full")``);
            ``()`` for a model with nothing shared to keep, which is retrained instead.
        ADAPTATION: what ``finetune(mode="units")`` learns, in words.

    Args:
        specs: one :class:`SessionSpec` per training session.
        config: the model config (one of ``CONFIGS`` with overrides).
    """

    name: ClassVar[str] = ""
    CONFIGS: ClassVar[dict[str, dict]] = {}
    predicts: ClassVar[set[str]] = set()
    PAPER: ClassVar[dict[str, Any]] = {}
    DEPARTURES: ClassVar[tuple[Departure, ...]] = ()
    TOKEN: ClassVar[str] = ""
    JUDGED_ON: ClassVar[str] = ""
    BASELINE: ClassVar[str | None] = None
    MODEL_BAR: ClassVar[float] = 1.0
    CLASSIC: ClassVar[bool] = False
    ADAPTS: ClassVar[tuple[str, ...]] = ()
    ADAPTATION: ClassVar[str] = ""

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__()
        if not specs:
            raise RunError(f"{self.name or type(self).__name__}: needs at least one session to build from")
        self.specs = list(specs)
        self.config = dict(config)
        self.session_index = {spec.id: i for i, spec in enumerate(self.specs)}

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, sessions: list[Session], config: dict) -> "Decoder":
        """A fresh, untrained model sized for ``sessions``."""
        return cls([SessionSpec.of(session) for session in sessions], config)

    @classmethod
    def recipe_config(cls, profile: str | None = None, recipe: str | None = None) -> dict:
        """The config of ``recipe`` (``default``, ``paper``, ``paper+CHANGE``, ``default-CHANGE``) at ``profile``.

        A fresh dict (callers may edit it) with ``"recipe"`` set to the canonical recipe name.

        Raises:
            RunError: unknown profile, recipe or change.
        """
        return apply_recipe(config_for(cls.CONFIGS, profile), cls.PAPER, cls.DEPARTURES, recipe)

    @property
    def bin_size(self) -> float:
        return float(self.config.get("bin_size", 0.02))

    def num_parameters(self) -> int:
        """Learned numbers: trainable parameters plus the buffers a closed-form fit fills."""
        seen = {id(p) for p in self.parameters()}
        n = sum(p.numel() for p in self.parameters())
        n += sum(b.numel() for name, b in self.named_buffers() if id(b) not in seen and not name.endswith("_stat"))
        return int(n)

    # ------------------------------------------------------------------ unit matching
    def spec_for(self, session: Session) -> tuple[int, SessionSpec]:
        """Index and spec of the training session ``session`` corresponds to.

        Matched by session id, or by identical unit ids (the same recording under another id).
        Anything else is refused: a model's read-in is tied to the units it was trained on.
        """
        ids = [str(u) for u in session.units.ids]
        index = self.session_index.get(session.id)
        if index is None:
            index = next((i for i, spec in enumerate(self.specs) if spec.unit_ids == ids), None)
        trained = ", ".join(repr(spec.id) for spec in self.specs)
        if index is None:
            raise RunError(f"this run was trained on other units (sessions {trained}); session {session.id!r} "
                           f"({session.source or 'in memory'}) is not one of them and its {len(ids)} units do "
                           f"not match. {self.how_to_adapt()}")
        spec = self.specs[index]
        if spec.unit_ids != ids:
            unseen = [u for u in ids if u not in set(spec.unit_ids)]
            missing = [u for u in spec.unit_ids if u not in set(ids)]
            detail = (f"{len(unseen)} units not seen in training (e.g. {unseen[:3]})" if unseen else
                      f"{len(missing)} training units missing (e.g. {missing[:3]})" if missing else
                      "the same units in a different order")
            raise RunError(f"this run was trained on other units: session {session.id!r} has {len(ids)} units, "
                           f"the run expects {len(spec.unit_ids)} ({detail}). {self.how_to_adapt()}")
        heldout = [bool(h) for h in session.units.heldout]
        if heldout != spec.heldout:
            raise RunError(f"session {session.id!r}: the held-out units differ from training "
                           f"({sum(heldout)} held out now, {spec.n_heldout} in training); the model's input is the "
                           f"held-in units, so the same units must be held out. {self.how_to_adapt()}")
        return index, spec

    def how_to_adapt(self) -> str:
        """What to do with a recording of other units: fine-tune this run, or (a model with nothing
        shared to keep) train one on it."""
        if self.ADAPTS:
            return ("To decode a new recording, adapt the run to its units first: "
                    "`mini-decoders finetune RUN --data NEW.nwb --mode units` (unit identification: "
                    "learn embeddings for the new units with the rest frozen) or `--mode full` "
                    "(fine-tune everything); in Python, `run.finetune(...)`.")
        # nothing shared to keep: saying `finetune` would send the user to a refusal
        return (f"This {self.name} run cannot be adapted to new units: train one on the new recording "
                f"(`mini-decoders train {self.name} --data NEW.nwb`), or use a model that adapts "
                f"({', '.join(adaptable_models())}).")

    # ------------------------------------------------------------------ what subclasses implement
    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path, resume: bool = False,
            progress: bool = True) -> dict:
        """Learn from the train (and val) trials of ``sessions``; return a history dict.

        The dict has at least ``samples`` (training trials processed, for throughput) and may
        have ``records`` (per-step logs).
        """
        raise NotImplementedError

    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        """Predictions for the trials in ``binned`` (binned from ``session`` at ``bin_size``).

        Returns:
            ``rates_heldin`` (N, T, U_in) and ``rates_heldout`` (N, T, U_out) expected spikes per
            bin if ``"rates"`` in ``predicts``; ``hand_vel`` (N, T, 2) if ``"hand_vel"`` in
            ``predicts``. Values in padded bins are arbitrary (the caller masks them).
            A model that forecasts may add ``rates_forward`` (N, T_fp, U_in + U_out): expected
            counts in the T_fp bins after each trial's end (held-in units, then held-out), which
            ``Run.evaluate`` scores as ``fp_bps``.
        """
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Plain-python state that is not in the ``state_dict`` (default: none)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""


def padded_unit_counts(binned: BinnedTrials, spec: SessionSpec, max_heldin: int,
                       max_heldout: int) -> tuple[np.ndarray, np.ndarray]:
    """Split binned counts into held-in and held-out, zero-padded to the widest session.

    Returns:
        (N, T, ``max_heldin``) held-in and (N, T, ``max_heldout``) held-out float32 counts; the
        units after a session's own count are zeros.
    """
    heldin = np.zeros(binned.counts.shape[:2] + (max_heldin,), dtype=np.float32)
    heldout = np.zeros(binned.counts.shape[:2] + (max_heldout,), dtype=np.float32)
    heldin[..., :spec.n_heldin] = binned.counts[..., spec.heldin_index]
    heldout[..., :spec.n_heldout] = binned.counts[..., spec.heldout_index]
    return heldin, heldout


def to_tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)
