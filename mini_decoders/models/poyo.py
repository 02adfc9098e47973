"""POYO: spikes as tokens, rotary *time*, a PerceiverIO trunk, queries at any timestamp.

The model reads every spike of a window as a token (:mod:`mini_decoders.tokenizers.spikes`)
and squeezes them into a small, fixed set of latent tokens with one cross-attention, so the cost
is linear in the number of spikes (never spikes x spikes). Latents talk to each other in a short
self-attention stack, and the output is read by *queries*: the session's embedding (plus a task
embedding, POYO+) placed at whatever timestamps one wants a prediction for.

Time is never added to a token. It rotates queries and keys (``RotaryTimeEmbedding``), so
attention scores depend only on time *differences*; in the encoder and the latent stack values
are rotated too and the result rotated back, so what a latent gathers carries relative timing.

Tasks (POYO+ style, one readout per task, each with its own query embedding):

- ``hand_vel``: velocity regression at the 20 ms bin centres of each trial (sample-weighted MSE:
  bins after the trial's ``move_onset_time`` — or ``go_time`` — weigh ``move_weight``, earlier
  bins ``hold_weight``; uniform when the trial table has neither column).
- ``condition``: classification of the trial condition (reach direction) from one query at the
  window centre, where trials carry at least two condition labels. Class rows live in a growing
  vocabulary, so the checkpoint holds the labels.

Windows: training draws one window per trial, jittered in time; evaluation covers each trial
with windows of ``window_length`` every ``eval_step`` seconds and averages the predictions of a
bin over the windows that contain it ("stitching").

New sessions: :meth:`POYO.finetune` with ``mode="units"`` (unit identification: only the new
unit and session embeddings learn, everything else stays bit-identical) or ``mode="full"``
(everything, with a higher rate for the embeddings; optionally embeddings only for the first
``unfreeze_after`` steps).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mini_decoders.data.batching import bucket_batches
from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.metrics import r2_score
from mini_decoders.models.base import Decoder, SessionSpec
from mini_decoders.models.poyo_windows import condition_labels, merge_batches, phase_weights, stitching_windows
from mini_decoders.models.recipes import Departure
from mini_decoders.nn.attention import attention_weights
from mini_decoders.nn.perceiver import RotaryCrossBlock, RotarySelfBlock
from mini_decoders.nn.rotary import RotaryTimeEmbedding
from mini_decoders.nn.vocab import GrowingVocabEmbedding
from mini_decoders.tokenizers.spikes import SpikeTokenizer, random_unit_subsets, triangular_unit_counts, unit_dropout
from mini_decoders.training.profiles import CHECKPOINT_SECONDS
from mini_decoders.training.schedule import lr_mult_groups
from mini_decoders.training.trainer import TrainConfig, Trainer

BEHAVIOR = "hand_vel"
TASKS = ("hand_vel", "condition")
UNIT_DROPOUT_MODES = ("fraction", "triangular")


# ================================================================================================
# The model

class POYO(Decoder):
    """POYO / POYO+ decoder of hand velocity (and trial condition) from spike tokens."""

    name = "poyo"
    predicts = {"hand_vel"}
    TOKEN, JUDGED_ON, BASELINE = "spike", "vel_r2", "ridge"
    ADAPTS = ("units", "full")
    ADAPTATION = "unit identification: new unit + session embeddings, the rest frozen"
    # Unit dropout: "fraction" keeps a uniform number of units >= unit_dropout_min x U per window;
    # "triangular" (the authors') draws the number kept from the unit_dropout_*_units density.
    _TRAIN = dict(bin_size=0.02, lag=0.0, window_length=1.0, latent_step=0.125, eval_step=0.5, jitter=0.25,
                  move_weight=2.0, hold_weight=1.0, condition_weight=0.2, t_min=1e-4, t_max=2.0627,
                  unit_dropout="fraction", unit_dropout_min_units=30, unit_dropout_mode_units=100,
                  unit_dropout_max_units=300, unit_dropout_peak=4.0,
                  optimizer="adamw", schedule="warmup_cosine",
                  weight_decay=1e-4, min_lr_ratio=0.05, grad_clip=1.0, precision="auto", device="auto",
                  log_every=10, checkpoint_every=None, checkpoint_seconds=None, num_workers=0, monitor_tasks=True,
                  finetune_lr=3e-3, finetune_steps=300, finetune_new_lr_mult=10.0, unfreeze_after=0)
    CONFIGS = {
        "tiny": dict(_TRAIN, dim=32, depth=1, latents_per_step=4, cross_heads=1, self_heads=2, dim_head=16,
                     ffn_dropout=0.0, lin_dropout=0.0, atn_dropout=0.0, unit_dropout_min=0.7,
                     max_steps=12, batch_size=4, lr=2e-3, warmup_steps=3, val_every=None,
                     early_stopping_patience=None, finetune_steps=10),
        # Sized for a few hundred steps of 16 windows (0.3-1 s/step on one CPU core): no dropout, a
        # short warm-up, one cross-attention head reading ~2,000 tokens per window. At lr 4e-3 the
        # loss sat at chance for 200 steps (attention stays uniform over the window); 1.5e-3 does not.
        "quick": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["quick"],
                      dim=64, depth=2, latents_per_step=8, cross_heads=1, self_heads=4, dim_head=32,
                      ffn_dropout=0.0, lin_dropout=0.0, atn_dropout=0.0, unit_dropout_min=0.8,
                      max_steps=600, batch_size=16, lr=1.5e-3, warmup_steps=30, val_every=100,
                      early_stopping_patience=None, finetune_steps=200, finetune_lr=1e-2),
        # POYO's 1.3M public config (dim 64, depth 6, 16 latents per 125 ms step); ~1 GB on a GPU.
        "full": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["full"],
                     dim=64, depth=6, latents_per_step=16, cross_heads=2, self_heads=8, dim_head=64,
                     ffn_dropout=0.2, lin_dropout=0.4, atn_dropout=0.2, unit_dropout_min=0.5,
                     max_steps=20000, batch_size=128, lr=4e-3, warmup_steps=500, val_every=500,
                     early_stopping_patience=None, checkpoint_every=2000, finetune_steps=2000),
    }

    # The paper's recipe (``recipe="paper"``). The stored copies of the paper give only its abstract,
    # so these are the authors' code values, as in /work/facts/poyo.md: loss weights per phase from
    # torch_brain examples/poyo/configs/base.yaml (reach_period 5.0, hold_period 0.1; its return and
    # random-target periods weigh 1.0 and have no counterpart in our trials); unit dropout from
    # neuro-galaxy/poyo poyo/transforms/unit_dropout.py with the POYO-MP config's counts (min 30, mode
    # 100, max 300, peak 4: our _TRAIN defaults, used only in "triangular" mode); LAMB with a flat then
    # cosine schedule (torch_brain examples/poyo/train.py: OneCycleLR with div_factor 1 and pct_start =
    # base.yaml's lr_decay_start 0.5) at base_lr 3.125e-5 x batch size: 5e-4 = 3.125e-5 x 16, the quick
    # profile's batch, for every profile (the full profile's batch of 128 would give 4e-3); weight decay
    # 1e-4 is already ours (the authors decay every parameter, we spare biases, norms and embedding
    # tables in both recipes). Dropout: the class defaults of neuro-galaxy/poyo poyo/models/poyo.py.
    # Rotary periods up to 4 s: poyo/nn/rotary_embedding.py. POYO-1 decodes velocity only, so no
    # condition read-out.
    PAPER = dict(condition_weight=0.0, move_weight=5.0, hold_weight=0.1, ffn_dropout=0.2, lin_dropout=0.4,
                 atn_dropout=0.0, unit_dropout="triangular", optimizer="lamb", schedule="flat_cosine", lr=5e-4,
                 t_max=4.0)
    DEPARTURES = (
        Departure("condition", "reach-direction read-out", ("condition_weight",),
                  "velocity only: one 2-d read-out",
                  "a second query per window classifies the trial's condition (POYO+-style multi-task), "
                  "loss weight 0.2",
                  "the reach target shapes the whole velocity profile; a second task on the same latents helps "
                  "when trials are few"),
        Departure("phase_weights", "flatter loss weights", ("move_weight", "hold_weight"),
                  "squared errors weigh 5 during the reach and 0.1 during the hold (authors' code)",
                  "2 from the movement onset on, 1 before it",
                  "the book scores velocity over the whole trial, holds included; at 0.1 the hold is barely fit"),
        Departure("dropout", "dropout rates", ("ffn_dropout", "lin_dropout", "atn_dropout"),
                  "dropout 0.2 in the feed-forward layers and 0.4 on the latent blocks' residual branches, "
                  "none on attention (authors' code)",
                  "none in the tiny and quick profiles; the paper's plus 0.2 on attention in the full profile",
                  "a few hundred steps are too few to overfit; dropout only slows them down"),
        Departure("unit_dropout", "milder unit dropout", ("unit_dropout",),
                  "each window keeps a number of units drawn from a triangular density (30 to 300, most "
                  "likely 100; every unit when a session has fewer than 30) (authors' code)",
                  "each window keeps a uniform fraction of its units, at least 80% (quick)",
                  "the authors' counts suit sessions of hundreds of units; on ~120 units they keep every "
                  "unit in most windows and as few as a quarter in others"),
        Departure("optimiser", "AdamW, warm-up and cosine", ("optimizer", "schedule", "lr"),
                  "LAMB at 3.125e-5 × batch size (5e-4 at batch 16), flat for half of training, then cosine "
                  "decay (authors' code)",
                  "AdamW at 1.5e-3 (quick) after a short warm-up, then cosine decay",
                  "LAMB moves each tensor by about lr × its own norm per step, a pace set for 1,000 epochs; "
                  "AdamW at a higher rate learns in a few hundred steps"),
        Departure("rotary", "shorter rotary periods", ("t_max",),
                  "rotary periods from 0.1 ms up to 4 s (authors' release code)",
                  "up to 2.0627 s",
                  "the slowest pair then turns by about half a circle across a 1 s window, not a quarter, "
                  "so it tells times within the window further apart"),
    )

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        cfg = self.config
        dim, dim_head = int(cfg["dim"]), int(cfg["dim_head"])
        self.tokenizer = SpikeTokenizer(dim)
        self.session_vocab = GrowingVocabEmbedding(dim)
        self.task_embedding = nn.Embedding(len(TASKS), dim)
        nn.init.normal_(self.task_embedding.weight, std=0.02)
        n_steps = int(round(float(cfg["window_length"]) / float(cfg["latent_step"])))
        self.latents_per_step = int(cfg["latents_per_step"])
        self.latent_embedding = nn.Embedding(self.latents_per_step, dim)
        nn.init.normal_(self.latent_embedding.weight, std=0.02)
        step = float(cfg["latent_step"])
        # K latents at the centre of each step; the same K vectors repeat, only their times differ.
        self.register_buffer("latent_times", torch.arange(n_steps).repeat_interleave(self.latents_per_step)
                             .float() * step + step / 2, persistent=False)
        self.register_buffer("latent_index", torch.arange(self.latents_per_step).repeat(n_steps), persistent=False)
        self.rotary = RotaryTimeEmbedding(dim_head, t_min=float(cfg["t_min"]), t_max=float(cfg["t_max"]))
        dropouts = dict(ffn_dropout=float(cfg["ffn_dropout"]), atn_dropout=float(cfg["atn_dropout"]))
        self.encoder = RotaryCrossBlock(dim, int(cfg["cross_heads"]), dim_head, **dropouts)
        self.processor = nn.ModuleList(RotarySelfBlock(dim, int(cfg["self_heads"]), dim_head,
                                                       lin_dropout=float(cfg["lin_dropout"]), **dropouts)
                                       for _ in range(int(cfg["depth"])))
        self.decoder = RotaryCrossBlock(dim, int(cfg["cross_heads"]), dim_head, **dropouts)
        self.output_norm = nn.LayerNorm(dim)
        self.velocity_readout = nn.Linear(dim, 2)
        self.condition_vocab = GrowingVocabEmbedding(dim)  # one row per condition label = its class weights
        self.register_buffer("velocity_mean_stat", torch.zeros(2))
        self.register_buffer("velocity_std_stat", torch.ones(2))
        self._register_sessions(self.specs)

    @classmethod
    def build(cls, sessions: list[Session], config: dict) -> "POYO":
        model = cls([SessionSpec.of(session) for session in sessions], config)
        model.condition_vocab.extend(condition_labels(sessions))
        return model

    def param_groups(self, rules: dict[str, float], weight_decay: float) -> list[dict]:
        """Optimiser groups (AdamW or LAMB): decay on weight matrices only; none on biases, norms and
        embedding tables. A unit's row is updated only in batches where it fires; decay would shrink it
        between visits. ``rules`` maps name prefixes to learning-rate multipliers (longest prefix wins)."""
        return lr_mult_groups(self, rules, weight_decay, decay_positions=False)

    def _register_sessions(self, specs: list[SessionSpec]) -> None:
        for spec in specs:
            if BEHAVIOR in spec.behavior_dims and spec.behavior_dims[BEHAVIOR] != 2:
                raise DataError(f"poyo decodes 2-D {BEHAVIOR!r}, session {spec.id!r} has "
                                f"{spec.behavior_dims[BEHAVIOR]} channels")
        self.tokenizer.add_units([unit for spec in specs for unit in spec.unit_ids])
        self.session_vocab.extend([spec.id for spec in specs])

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predict for a batch of tokenised windows.

        Args:
            batch: ``input_times/rows/types/mask`` (B, L) from ``SpikeTokenizer.collate``;
                ``query_times`` (B, Q) seconds from the window start; ``session`` (B,) row in
                ``session_vocab``.

        Returns:
            ``hand_vel`` (B, Q, 2) standardised velocity at the query times; ``condition_logits``
            (B, C) from one query at the window centre (C = known condition labels, may be 0).
        """
        inputs = self.tokenizer(batch["input_rows"], batch["input_types"])  # (B, L, D)
        batch_size = inputs.shape[0]
        latents = self.latent_embedding(self.latent_index).expand(batch_size, -1, -1)  # (B, N, D)
        latent_times = self.latent_times.expand(batch_size, -1)  # (B, N)
        # Encoder: cost O(N * L), linear in the number of spikes.
        latents = self.encoder(latents, inputs, batch["input_mask"], latent_times, batch["input_times"],
                               self.rotary, rotate_value=True)
        cos_sin = self.rotary.cos_sin(latent_times)  # once, shared by every latent layer
        for block in self.processor:
            latents = block(latents, cos_sin)
        # Queries: session (+ task) embedding; where they are in time enters through rotary only.
        query_times = batch["query_times"]  # (B, Q)
        centre = torch.full((batch_size, 1), float(self.config["window_length"]) / 2, device=inputs.device)
        session = self.session_vocab(batch["session"])[:, None, :]  # (B, 1, D)
        queries = torch.cat([session + self.task_embedding.weight[0],
                             session + self.task_embedding.weight[1]], dim=1)  # (B, 2, D)
        queries = torch.cat([queries[:, :1].expand(-1, query_times.shape[1], -1), queries[:, 1:]], dim=1)
        all_times = torch.cat([query_times, centre], dim=1)  # (B, Q + 1)
        outputs = self.decoder(queries, latents, None, all_times, latent_times, self.rotary, rotate_value=False)
        outputs = self.output_norm(outputs)
        return {"hand_vel": self.velocity_readout(outputs[:, :-1]),  # (B, Q, 2)
                "condition_logits": outputs[:, -1] @ self.condition_vocab.weight.T}  # (B, C)

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Sample-weighted MSE on standardised velocity + ``condition_weight`` x cross-entropy."""
        predicted = self(batch)
        weight = batch["query_weight"]  # (B, Q); 0 on padding and bins without a target
        squared_error = ((predicted["hand_vel"].float() - batch["target"]) ** 2).mean(-1)  # (B, Q)
        velocity_loss = (weight * squared_error).sum() / weight.sum().clamp_min(1e-6)
        loss, logs = velocity_loss, {"velocity_mse": float(velocity_loss.detach())}
        labelled = batch["condition"] >= 0
        if predicted["condition_logits"].shape[1] > 0 and bool(labelled.any()):
            cross_entropy = F.cross_entropy(predicted["condition_logits"][labelled].float(),
                                            batch["condition"][labelled])
            loss = loss + float(self.config["condition_weight"]) * cross_entropy
            logs["condition_ce"] = float(cross_entropy.detach())
        return loss, logs

    # ------------------------------------------------------------------ data -> batches
    def _trial_targets(self, session: Session, split) -> tuple[BinnedTrials, np.ndarray, np.ndarray]:
        """Binned trials, standardised velocity targets (N, T, 2) and weights (N, T) (0 = not scored)."""
        has_velocity = BEHAVIOR in session.behavior
        binned = bin_trials(session, self.bin_size, split=split, behavior=(BEHAVIOR,) if has_velocity else (),
                            lag=float(self.config["lag"]))
        n_trials, n_bins = binned.mask.shape
        if not has_velocity:
            return binned, np.zeros((n_trials, n_bins, 2), np.float32), np.zeros((n_trials, n_bins), np.float32)
        velocity = binned.behavior[BEHAVIOR]
        scored = binned.mask & np.isfinite(velocity).all(-1)
        mean, std = self.velocity_mean_stat.cpu().numpy(), self.velocity_std_stat.cpu().numpy()
        target = np.where(scored[..., None], (velocity - mean) / std, 0.0).astype(np.float32)
        weight = np.where(scored, phase_weights(session, binned, float(self.config["move_weight"]),
                                                float(self.config["hold_weight"])), 0.0).astype(np.float32)
        return binned, target, weight

    def _condition_rows(self, binned: BinnedTrials) -> np.ndarray:
        """(N,) class row of each trial's condition, -1 when unknown to the model or unlabelled."""
        known = {label: row for row, label in enumerate(self.condition_vocab.ids)}
        return np.array([known.get(str(c), -1) if str(c) else -1 for c in binned.condition], dtype=np.int64)

    def _window_batch(self, session: Session, session_row: int, window_starts: np.ndarray,
                      query_times: list[np.ndarray] | np.ndarray, keep_units: np.ndarray | None = None) -> dict:
        """Tokens of windows of one session and their (padded) output queries, as numpy/tensors."""
        batch = self.tokenizer.window_batch(session, window_starts, float(self.config["window_length"]), keep_units)
        batch["query_times"] = torch.as_tensor(np.asarray(query_times, dtype=np.float32))
        batch["session"] = torch.full((len(window_starts),), session_row, dtype=torch.int64)
        return batch

    # ------------------------------------------------------------------ training
    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        velocities = []
        for session in sessions:
            self.spec_for(session)
            if BEHAVIOR in session.behavior:
                velocity = bin_trials(session, self.bin_size, split="train", behavior=(BEHAVIOR,),
                                      lag=float(self.config["lag"])).behavior[BEHAVIOR].reshape(-1, 2)
                velocities.append(velocity[np.isfinite(velocity).all(1)])
        if velocities:  # one standardisation for all sessions, so a new session can reuse the readout
            velocity = np.concatenate(velocities)
            self.velocity_mean_stat.copy_(torch.from_numpy(velocity.mean(0)))
            self.velocity_std_stat.copy_(torch.from_numpy(velocity.std(0).clip(1e-6)))
        return self._train(sessions, dict(self.config), param_groups=None, out_dir=out_dir, resume=resume,
                           progress=progress)

    def _train(self, sessions: list[Session], cfg: dict, param_groups: list[dict] | None, *,
               out_dir: Path | None, resume: bool, progress: bool, steps: int | None = None) -> dict:
        dataset = WindowSampler(self, sessions, "train", cfg)
        val_sets = [(s, self._trial_targets(s, "val")[0]) for s in sessions if "val" in s.trials.split]
        any_velocity = any(BEHAVIOR in s.behavior for s in sessions)

        def validate(model: "POYO") -> dict[str, float]:
            r2s, accuracies = [], []
            for session, binned in val_sets:
                if any_velocity and BEHAVIOR in session.behavior:
                    r2s.append(r2_score(model.predict_trials(session, binned)[BEHAVIOR], binned.behavior[BEHAVIOR]))
                if len(model.condition_vocab):
                    labels, _ = model.predict_conditions(session, binned)
                    accuracies.append(float(np.mean(labels == binned.condition.astype(str))))
            scores = {}
            if r2s:
                scores["val_r2"] = float(np.mean(r2s))
            if accuracies:
                scores["val_condition_accuracy"] = float(np.mean(accuracies))
            return scores

        monitor = "val_r2" if any_velocity else "val_condition_accuracy"
        train_config = TrainConfig.from_model_config(
            cfg,
            max_steps=int(steps if steps is not None else cfg["max_steps"]),
            batch_size=min(int(cfg["batch_size"]), len(dataset)),
            monitor=monitor, monitor_mode="max")
        groups = param_groups if param_groups is not None else self.param_groups({}, train_config.weight_decay)
        trainer = Trainer(self, dataset, dataset.collate, train_config, out_dir=out_dir,
                          val_fn=validate if val_sets else None, param_groups=groups, progress=progress,
                          run_config={"model": self.name})
        started = time.perf_counter()
        history = trainer.fit(resume=resume)
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    # ------------------------------------------------------------------ new sessions
    def finetune(self, sessions: list[Session], mode: str, config: dict | None = None, *, out_dir: Path | None = None,
                 progress: bool = True) -> dict:
        """Adapt to sessions recorded from new units.

        Args:
            sessions: the new sessions (their train/val trials are used).
            mode: ``"units"``: unit identification, only the new unit and session embeddings
                learn and every other number stays bit-identical; ``"full"``: everything learns,
                the embeddings at ``finetune_new_lr_mult`` x the rate; with
                ``unfreeze_after = k > 0`` the first k steps are embeddings only (gradual
                unfreezing).
            config: overrides of the model config (``finetune_steps``, ``finetune_lr``, ...).

        Returns:
            the training history dict (``samples``, ``steps``, ``records``).
        """
        if mode not in ("units", "full"):
            raise RunError(f"poyo finetune: mode must be 'units' or 'full', got {mode!r}")
        cfg = {**self.config, **(config or {})}
        new_specs = [SessionSpec.of(s) for s in sessions if s.id not in self.session_index]
        for session in sessions:
            if session.id in self.session_index:
                self.spec_for(session)  # a known session must still have its units
        old_units, old_sessions = len(self.tokenizer.unit_vocab), len(self.session_vocab)
        self._register_sessions(new_specs)
        for spec in new_specs:
            self.session_index[spec.id] = len(self.specs)
            self.specs.append(spec)
        cfg.update(lr=float(cfg["finetune_lr"]), warmup_steps=min(int(cfg["warmup_steps"]), 50))
        steps = int(cfg["finetune_steps"])
        unfreeze_after = int(cfg.get("unfreeze_after") or 0) if mode == "full" else steps
        histories = []
        if unfreeze_after > 0:
            histories.append(self._train_embeddings_only(sessions, cfg, min(unfreeze_after, steps), old_units,
                                                         old_sessions, out_dir=out_dir, progress=progress))
        if mode == "full" and steps - unfreeze_after > 0:
            for parameter in self.parameters():
                parameter.requires_grad_(True)
            rules = {"tokenizer.unit_vocab.": float(cfg["finetune_new_lr_mult"]),
                     "session_vocab.": float(cfg["finetune_new_lr_mult"])}
            groups = self.param_groups(rules, float(cfg["weight_decay"]))
            full_dir = None if out_dir is None else Path(out_dir) / "full"
            histories.append(self._train(sessions, cfg, groups, out_dir=full_dir, resume=False, progress=progress,
                                         steps=steps - unfreeze_after))
        return {"samples": sum(h["samples"] for h in histories), "steps": sum(h["steps"] for h in histories),
                "records": [r for h in histories for r in h["records"]]}

    def _train_embeddings_only(self, sessions: list[Session], cfg: dict, steps: int, old_units: int,
                               old_sessions: int, *, out_dir: Path | None, progress: bool) -> dict:
        """Train only the rows added for new units/sessions; every other number is left untouched."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        tables = [(self.tokenizer.unit_vocab.weight, old_units), (self.session_vocab.weight, old_sessions)]
        hooks = []
        for table, n_old in tables:
            table.requires_grad_(True)
            row_is_new = (torch.arange(table.shape[0], device=table.device) >= n_old)[:, None]
            # Old rows get an exact zero gradient even when a new session reuses an old unit id;
            # with no weight decay and zero moments Adam then leaves them bit-identical.
            hooks.append(table.register_hook(lambda grad, keep=row_is_new: grad * keep.to(grad.dtype)))
        groups = [{"params": [table for table, _ in tables], "weight_decay": 0.0, "lr_mult": 1.0}]
        try:
            history = self._train(sessions, cfg, groups, out_dir=out_dir, resume=False, progress=progress,
                                  steps=steps)
        finally:
            for hook in hooks:
                hook.remove()
            for parameter in self.parameters():
                parameter.requires_grad_(True)
        return history

    # ------------------------------------------------------------------ prediction
    def _stitched_outputs(self, session: Session, binned: BinnedTrials) -> tuple[np.ndarray, np.ndarray]:
        """Velocity (N, T, 2) averaged over overlapping windows and condition logits (N, C)."""
        self.spec_for(session)
        session_row = int(self.session_vocab.index([session.id])[0])
        window_trial, window_start, first_bin = stitching_windows(
            binned.starts, binned.lengths, self.bin_size, float(self.config["window_length"]),
            float(self.config["eval_step"]))
        bins_per_window = int(round(float(self.config["window_length"]) / self.bin_size))
        n_trials, n_bins = binned.mask.shape
        offsets = np.arange(bins_per_window)
        bins = first_bin[:, None] + offsets  # (W, Tw) trial bin of each query
        in_trial = bins < binned.lengths[window_trial][:, None]
        query_times = ((bins - first_bin[:, None]) + 0.5) * self.bin_size \
            + (binned.starts[window_trial] + first_bin * self.bin_size - window_start)[:, None]
        total = np.zeros((n_trials, n_bins, 2))
        count = np.zeros((n_trials, n_bins))
        logits = np.zeros((n_trials, len(self.condition_vocab)))
        device = self.velocity_readout.weight.device
        n_tokens = np.searchsorted(session.spike_times, window_start + float(self.config["window_length"])) \
            - np.searchsorted(session.spike_times, window_start)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            # Similar lengths together: little padding at evaluation, in a fixed order.
            for chunk in bucket_batches(n_tokens, batch_size=64, shuffle=False):
                batch = self._window_batch(session, session_row, window_start[chunk], query_times[chunk])
                out = self({k: v.to(device) for k, v in batch.items()})
                velocity = out["hand_vel"].float().cpu().numpy()  # (b, Tw, 2)
                valid = in_trial[chunk]
                rows = np.broadcast_to(window_trial[chunk][:, None], valid.shape)[valid]
                np.add.at(total, (rows, bins[chunk][valid]), velocity[valid])
                np.add.at(count, (rows, bins[chunk][valid]), 1.0)
                np.add.at(logits, window_trial[chunk], out["condition_logits"].float().cpu().numpy())
        self.train(was_training)
        standardised = total / np.maximum(count, 1.0)[..., None]
        velocity = standardised * self.velocity_std_stat.cpu().numpy() + self.velocity_mean_stat.cpu().numpy()
        return velocity, logits / np.maximum(np.bincount(window_trial, minlength=n_trials), 1)[:, None]

    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        velocity, _ = self._stitched_outputs(session, binned)
        return {BEHAVIOR: velocity.astype(np.float32)}

    def predict_conditions(self, session: Session, binned: BinnedTrials) -> tuple[np.ndarray, np.ndarray]:
        """Most likely condition label (N,) and class probabilities (N, C) per trial.

        The class order is ``self.condition_vocab.ids``.
        """
        _, logits = self._stitched_outputs(session, binned)
        if logits.shape[1] == 0:
            raise RunError("this poyo run was trained without condition labels; it cannot classify conditions")
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        return np.asarray(self.condition_vocab.ids)[probabilities.argmax(1)], probabilities

    def latent_attention(self, session: Session, window_start: float) -> dict[str, np.ndarray]:
        """Encoder cross-attention of one window, for figures (slow, explicit softmax).

        Returns:
            ``weights`` (H, N_latents, L) attention probabilities; ``token_times`` (L,) s from
            the window start; ``token_units`` (L,) local unit index of each token (start and
            end tokens included); ``token_types`` (L,); ``latent_times`` (N_latents,).
        """
        self.spec_for(session)
        session_row = int(self.session_vocab.index([session.id])[0])
        batch = self._window_batch(session, session_row, np.array([window_start]), np.zeros((1, 1)))
        device = self.velocity_readout.weight.device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            inputs = self.tokenizer(batch["input_rows"], batch["input_types"])
            latents = self.latent_embedding(self.latent_index)[None]
            weights = attention_weights(self.encoder.attention, self.encoder.query_norm(latents),
                                        self.encoder.context_norm(inputs), context_mask=batch["input_mask"],
                                        query_time=self.latent_times[None], context_time=batch["input_times"],
                                        rotary=self.rotary, rotate_value=True)
        real = batch["input_mask"][0].cpu().numpy()
        rows = self.tokenizer.unit_rows(session.id, [str(u) for u in session.units.ids])
        local = np.full(len(self.tokenizer.unit_vocab), -1)
        local[rows] = np.arange(len(rows))
        return {"weights": weights[0][..., real].cpu().numpy(),
                "token_times": batch["input_times"][0][real].cpu().numpy(),
                "token_units": local[batch["input_rows"][0][real].cpu().numpy()],
                "token_types": batch["input_types"][0][real].cpu().numpy(),
                "latent_times": self.latent_times.cpu().numpy()}


# ================================================================================================
# Training windows

class WindowSampler:
    """Training items: one per train trial; each batch draws fresh jittered windows.

    ``collate`` turns a list of items into a batch: it cuts a window around each trial (random
    offset within ``jitter``), applies unit dropout, tokenises per session and pads. Random draws
    use torch's generator, which the Trainer seeds, so runs are reproducible.
    """

    def __init__(self, model: POYO, sessions: list[Session], split: str, cfg: dict):
        self.model, self.sessions, self.cfg = model, sessions, cfg
        if str(cfg.get("unit_dropout", "fraction")) not in UNIT_DROPOUT_MODES:
            raise RunError(f"poyo: unit_dropout must be one of {UNIT_DROPOUT_MODES}, got {cfg.get('unit_dropout')!r}")
        self.per_session = []
        items = []
        for position, session in enumerate(sessions):
            model.spec_for(session)
            binned, target, weight = model._trial_targets(session, split)
            conditions = model._condition_rows(binned)
            self.per_session.append((session, int(model.session_vocab.index([session.id])[0]), binned, target,
                                     weight, conditions))
            items += [(position, trial) for trial in range(len(binned.trial_index))]
        if not items:
            raise DataError(f"poyo: no {split!r} trials in sessions {[s.id for s in sessions]}")
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.items[i]

    def _kept_units(self, n_windows: int, n_units: int) -> np.ndarray | None:
        """(N, U) bool units each window keeps (unit dropout), or None to keep all.

        One numpy generator per session's windows, seeded from torch's (which the Trainer seeds).
        """
        cfg = self.cfg
        mode = str(cfg.get("unit_dropout", "fraction"))
        if mode == "triangular":
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            counts = triangular_unit_counts(n_windows, n_units, int(cfg["unit_dropout_min_units"]),
                                            int(cfg["unit_dropout_mode_units"]), int(cfg["unit_dropout_max_units"]),
                                            float(cfg["unit_dropout_peak"]), rng)
            return random_unit_subsets(counts, n_units, rng)
        if float(cfg["unit_dropout_min"]) < 1.0:
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            return unit_dropout(n_windows, n_units, int(np.ceil(float(cfg["unit_dropout_min"]) * n_units)), rng)
        return None

    def collate(self, items: list[tuple[int, int]]) -> dict[str, Tensor]:
        cfg, model = self.cfg, self.model
        length, jitter, bin_size = float(cfg["window_length"]), float(cfg["jitter"]), model.bin_size
        bins_per_window = int(round(length / bin_size))
        parts = []
        for position in sorted({p for p, _ in items}):  # a loop per session
            session, session_row, binned, target, weight, conditions = self.per_session[position]
            trials = np.array([t for p, t in items if p == position])
            n_bins = binned.lengths[trials]
            # Window start in bins relative to the trial: anywhere from -jitter to (end - length + jitter).
            low = -int(round(jitter / bin_size))
            high = np.maximum(n_bins - bins_per_window, 0) + int(round(jitter / bin_size))
            draw = torch.rand(len(trials)).numpy()
            first_bin = low + np.floor(draw * (high - low + 1)).astype(np.int64)  # (b,)
            # Sub-bin jitter too, so spikes do not always sit at the same phase of the query grid.
            shift = (torch.rand(len(trials)).numpy() - 0.5) * bin_size
            window_start = binned.starts[trials] + first_bin * bin_size + shift
            bins = first_bin[:, None] + np.arange(bins_per_window)  # (b, Tw) trial bins queried
            valid = (bins >= 0) & (bins < n_bins[:, None])
            clipped = np.clip(bins, 0, binned.mask.shape[1] - 1)
            query_times = (bins + 0.5) * bin_size - first_bin[:, None] * bin_size - shift[:, None]
            keep = self._kept_units(len(trials), session.n_units)
            batch = model._window_batch(session, session_row, window_start, query_times, keep)
            batch["target"] = torch.from_numpy(target[trials[:, None], clipped] * valid[..., None])
            batch["query_weight"] = torch.from_numpy((weight[trials[:, None], clipped] * valid).astype(np.float32))
            batch["condition"] = torch.from_numpy(conditions[trials])
            parts.append(batch)
        return merge_batches(parts)
