"""How the VQ model trains: three stages, each one run of the package's Trainer.

1. ``tokenizer``: the VQ-VAE (Poisson reconstruction of held-in and held-out counts from the
   codes, plus the commitment loss), its codebook started by k-means of the first encoder outputs;
2. ``codes``: the masked code model over the tokenizer's codes (cross-entropy of hidden codes);
3. ``behavior``: a copy of the code model, fine-tuned to decode velocity (skipped without it).

``max_steps`` is split between them by ``stage_fractions``; each stage trains only its own
modules (the others frozen), validates with its own score and checkpoints into
``<out>/stage_<name>``. :class:`StagedTraining` is part of :class:`~mini_decoders.models.vq.VQ`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mini_decoders.data.batching import collate_binned
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError
from mini_decoders.metrics import bits_per_spike, r2_score
from mini_decoders.models.code_transformer import collate_codes
from mini_decoders.nn.quantize import perplexity
from mini_decoders.scoring import BEHAVIOR
from mini_decoders.tokenizers.vq import window_mask
from mini_decoders.training.schedule import default_param_groups
from mini_decoders.training.trainer import TrainConfig, Trainer

STAGES = ("tokenizer", "codes", "behavior")


class StagedTraining:
    """VQ's ``fit``: the three stages in order (a part of :class:`~mini_decoders.models.vq.VQ`)."""

    def stage_steps(self, config: dict | None = None) -> dict[str, int]:
        """Optimizer steps of each stage: ``max_steps`` split by ``stage_fractions`` (a stage with
        fraction > 0 gets at least one step; behaviour gets none without velocity)."""
        config = self.config if config is None else config
        fractions = np.asarray(config["stage_fractions"], dtype=np.float64)
        if not self.decodes_behavior:
            fractions[2] = 0.0
        fractions = fractions / fractions.sum()
        total = int(config["max_steps"])
        return {stage: (max(1, int(round(total * f))) if f > 0 else 0) for stage, f in zip(STAGES, fractions)}

    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        steps = self.stage_steps()
        started = time.perf_counter()
        histories: dict[str, Any] = {}
        samples = 0
        for stage in STAGES:
            if steps[stage] == 0:
                continue
            history = self._fit_stage(stage, sessions, steps[stage], out_dir=out_dir, resume=resume, progress=progress)
            histories[stage] = history
            samples += history["samples"]
        self.stage = STAGES[0]
        records = [{**record, "stage": stage} for stage, h in histories.items() for record in h["records"]]
        return {"samples": samples, "steps": sum(h["steps"] for h in histories.values()),
                "seconds": time.perf_counter() - started, "records": records,
                "stage_seconds": {stage: h["seconds"] for stage, h in histories.items()},
                "stage_steps": {stage: h["steps"] for stage, h in histories.items()}}

    def _stage_config(self, stage: str, n_steps: int, n_items: int):
        lr = {"tokenizer": self.config["lr"], "codes": self.config["code_lr"],
              "behavior": self.config["behavior_lr"]}[stage]
        monitor = {"tokenizer": ("val_recon_bps", "max"), "codes": ("val_code_ce", "min"),
                   "behavior": ("val_vel_r2", "max")}[stage]
        val_every = self.config.get("val_every")
        return TrainConfig.from_model_config(
            self.config, max_steps=n_steps, lr=float(lr),
            warmup_steps=max(1, int(round(float(self.config["warmup_fraction"]) * n_steps))),
            batch_size=min(int(self.config["batch_size"]), n_items),
            val_every=None if val_every is None else min(int(val_every), n_steps),
            monitor=monitor[0], monitor_mode=monitor[1])

    def _fit_stage(self, stage: str, sessions: list[Session], n_steps: int, *, out_dir: Path | None, resume: bool,
                   progress: bool) -> dict:
        self.stage = stage
        stage_dir = None if out_dir is None else Path(out_dir) / f"stage_{stage}"
        resuming = resume and stage_dir is not None and (stage_dir / "checkpoint.pt").is_file()
        val_sessions = [s for s in sessions if "val" in s.trials.split]
        if stage == "tokenizer":
            items, collate = self._count_items(sessions, "train"), collate_binned
            if not items:
                raise DataError(f"vq: no train trials in sessions {[s.id for s in sessions]} (trials.split)")
            if not resuming:
                self._init_tokenizer(items)
            validate = self._validate_tokenizer
        else:
            if stage == "behavior":  # before the items: they are standardised with it
                self._init_velocity_stats(sessions)
            items, collate = self._code_items(sessions, "train", with_behavior=stage == "behavior"), collate_codes
            val_items = self._code_items(val_sessions, "val", with_behavior=stage == "behavior")
            validate = self._code_validator(stage, val_items)
        if stage == "behavior" and not resuming:
            self.behavior_model.load_state_dict(self.code_model.state_dict())  # start from the code model
        modules = {"tokenizer": self.tokenizer, "codes": self.code_model, "behavior": self.behavior_model}[stage]
        trained = {id(p) for p in modules.parameters()}
        frozen = [p for p in self.parameters() if id(p) not in trained]
        for param in frozen:
            param.requires_grad_(False)
        try:
            trainer = Trainer(self, items, collate, self._stage_config(stage, n_steps, len(items)), out_dir=stage_dir,
                              val_fn=validate if val_sessions else None,
                              param_groups=default_param_groups(self, float(self.config["weight_decay"])),
                              progress=progress, run_config={"model": self.name, "stage": stage})
            self._val_sessions = val_sessions
            started = time.perf_counter()
            history = trainer.fit(resume=resuming)
        finally:
            for param in frozen:
                param.requires_grad_(True)
            self._last_vectors = None
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    @torch.no_grad()
    def _init_tokenizer(self, items: list[dict]) -> None:
        """Read-out biases at each neuron's mean count; codebook by k-means of the first encoder outputs."""
        for index in range(len(self.specs)):
            own = [item for item in items if int(item["session_index"]) == index]
            if own:
                mean = np.concatenate([np.concatenate([item["heldin"] for item in own]).mean(0),
                                       np.concatenate([item["heldout"] for item in own]).mean(0)])
                log_mean = np.log(np.clip(mean, 1e-3, None)).astype(np.float32)
                self.tokenizer.read_out_bias[index] = torch.from_numpy(log_mean)
        if not self.config.get("kmeans_init", True):
            return
        was_training = self.training
        self.eval()
        generator = torch.Generator().manual_seed(int(self.config.get("seed", 0)))
        chosen = torch.randperm(len(items), generator=generator)[:1024].tolist()  # enough points, bounded memory
        batch = collate_binned([items[i] for i in chosen])
        z = self.tokenizer.encode(batch["heldin"], batch["session_index"], batch["time_mask"])
        vectors = z[window_mask(batch["time_mask"], self.window)]
        self.tokenizer.quantizer.kmeans_init(vectors, generator=generator)
        self.train(was_training)

    def _init_velocity_stats(self, sessions: list[Session]) -> None:
        for session in sessions:
            index, _ = self.spec_for(session)
            velocity = self._binned(session, "train").behavior[BEHAVIOR].reshape(-1, self.behavior_model.behavior_dims)
            velocity = velocity[np.isfinite(velocity).all(1)]
            if len(velocity) < 2:
                raise DataError(f"vq: session {session.id!r} has no train trials with {BEHAVIOR!r}")
            self.velocity_mean_stat[index] = torch.from_numpy(velocity.mean(0))
            self.velocity_std_stat[index] = torch.from_numpy(velocity.std(0).clip(1e-6))

    def _validate_tokenizer(self, model: "StagedTraining") -> dict[str, float]:
        heldin_bps, heldout_bps, counts = [], [], []
        for session in self._val_sessions:
            binned = self._binned(session, "val")
            _, spec = self.spec_for(session)
            predicted = self.predict_trials(session, binned)
            observed = np.where(binned.mask[..., None], binned.counts, np.nan)
            heldin_bps.append(bits_per_spike(predicted["rates_heldin"], observed[..., spec.heldin_index]))
            if spec.n_heldout:
                heldout_bps.append(bits_per_spike(predicted["rates_heldout"], observed[..., spec.heldout_index]))
            codes, _ = self.encode_trials(session, binned)
            counts.append(np.bincount(codes[codes >= 0], minlength=self.tokenizer.num_codes))
        scores = {"val_recon_bps": float(np.mean(heldin_bps)),
                  "val_perplexity": float(perplexity(torch.from_numpy(np.sum(counts, axis=0))))}
        if heldout_bps:
            scores["val_co_bps"] = float(np.mean(heldout_bps))
        return scores

    def _code_validator(self, stage: str, items: list[dict]):
        def validate(model: "StagedTraining") -> dict[str, float]:
            device = self.tokenizer.read_out_bias.device
            batch = {k: v.to(device) for k, v in collate_codes(items).items()}
            if stage == "codes":
                loss, logs = self.code_loss(batch, torch.Generator().manual_seed(0))
                return {"val_code_ce": float(loss), "val_code_accuracy": logs["code_accuracy"]}
            predicted = self.decode_velocity(batch["codes"].clamp_min(0), batch["session"], batch["window_valid"],
                                             batch.get("windows"))
            predicted = predicted[:, :batch["behavior"].shape[1]].float().cpu().numpy()
            return {"val_vel_r2": r2_score(predicted, batch["behavior"].cpu().numpy())}
        return validate
