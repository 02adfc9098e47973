"""Adapting a pretrained NDT2 to new sessions: context tuning, or full fine-tuning with layer-wise decay.

- ``mode="units"`` (the paper's context tuning): only the rows that are new (session context, and
  subject / task if unseen; the new session's read-out rows) learn; every other number stays
  bit for bit.
- ``mode="full"``: everything, with the MAE recipe's layer-wise learning-rate decay, 10x the rate
  for new parameters and every context embedding, plus a behaviour head decoding velocity.

:class:`FineTuning` is part of :class:`~mini_decoders.models.ndt2.NDT2`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.scoring import BEHAVIOR
from mini_decoders.training.schedule import lr_mult_groups

# Defaults of config keys that runs saved before them lack.
FINETUNE_POOLED_LR_MULT = 0.1
FINETUNE_VALIDATIONS = 20


class FineTuning:
    """NDT2's ``finetune`` and its optimiser recipe (a part of ``NDT2``)."""

    def lr_multipliers(self, new_prefixes: tuple[str, ...] = ()) -> dict[str, float]:
        """Name prefix -> learning-rate multiplier for ``finetune(mode="full")``.

        Layer-wise decay (MAE recipe): with L encoder layers and decay d, encoder layer ``i`` gets
        ``d ** (L - i)``, the tokenizer (below layer 0) ``d ** (L + 1)``; the MAE decoder and the
        heads keep 1. Context embeddings (all of them, as in NDT2) and ``new_prefixes`` get
        ``new_param_lr_mult`` (10); the per-session unit offsets and skip rows ``1 /
        finetune_lr_scale``, i.e. the pretraining learning rate; the per-session pooled read-out
        rows ``finetune_pooled_lr_mult`` (0.1).
        """
        decay, n_layers = float(self.config["layer_decay"]), len(self.encoder)
        rules = {"tokenizer.": decay ** (n_layers + 1)}
        rules.update({f"encoder.{i}.": decay ** (n_layers - i) for i in range(n_layers)})
        fast = float(self.config["new_param_lr_mult"])
        rules.update({prefix: fast for prefix in ("session_vocab.", "subject_vocab.", "task_vocab.", "context_flags",
                                                  *new_prefixes)})
        # The per-session read-out rows (our additions) of a new session are learned from their
        # start exactly as in pretraining, so they get the pretraining learning rate: 10x the
        # fine-tuning rate overshot on a few dozen trials (measured: co-bps 0.156 vs 0.184 at 1x).
        same_as_pretraining = 1.0 / float(self.config["finetune_lr_scale"])
        rules.update({prefix: same_as_pretraining for prefix in ("unit_bias_vocab.", "skip_weight_vocab.")})
        # The pooled read-out (D weights per held-out neuron) is what over-fits a few dozen trials:
        # at the pretraining rate a new session's validation co-bps peaked after 30 steps and then
        # fell below the GLM it started from; learning it slowly keeps the pretrained encoder's gain.
        # (.get: runs saved before this key existed fall back to its default)
        rules["heldout_weight_vocab."] = float(self.config.get("finetune_pooled_lr_mult", FINETUNE_POOLED_LR_MULT))
        return rules

    def param_groups(self, rules: dict[str, float], weight_decay: float) -> list[dict]:
        """AdamW groups by longest matching prefix; no decay on biases, norms, positions, vocabularies.

        A context row is updated only when its session is in the batch: decay would erode it.
        """
        return lr_mult_groups(self, rules, weight_decay, decay_positions=False)

    @staticmethod
    def finetune_schedule(config: dict) -> dict[str, int | None]:
        """Steps, warm-up and validation interval of a fine-tuning run with model ``config`` (and of its
        from-scratch control).

        ``finetune_steps`` steps, a tenth of them warm-up, validated ``finetune_validations`` times
        (when the profile validates at all): on a few dozen trials the best step comes early
        (measured: validation co-bps peaked at step 30-70 of 200), which a check every 100 steps misses.
        """
        steps = int(config["finetune_steps"])
        validations = int(config.get("finetune_validations", FINETUNE_VALIDATIONS))
        val_every = None if config.get("val_every") is None else max(1, steps // max(1, validations))
        return {"max_steps": steps, "warmup_steps": max(1, steps // 10), "val_every": val_every}

    def finetune(self, sessions: list[Session], mode: str, config: dict, *, out_dir: Path | None = None,
                 progress: bool = True, resume: bool = False) -> dict:
        """Adapt to new sessions.

        Args:
            sessions: the new sessions (their train trials are used; val trials pick the best step).
            mode: ``"units"``: learn only the context rows that are new (session, and subject/task
                if unseen), everything else frozen bit for bit (the MAE objective; velocity too if
                the model already decodes it). ``"full"``: everything, MAE + velocity MSE
                (``behavior_weight``, default 1), 10x learning rate for new parameters and all
                context embeddings, layer-wise decay ``layer_decay``.
            config: overrides of the training config (``max_steps``, ``lr``, ``batch_size``, ...);
                by default :meth:`finetune_schedule` at ``finetune_lr_scale`` x the pretraining lr.
        Returns:
            the training history (``samples``, ``steps``, ``records``).
        """
        if mode not in ("units", "full"):
            raise RunError(f"ndt2 finetune: mode must be 'units' or 'full', got {mode!r}")
        train_config = {**self.config, **self.finetune_schedule(self.config),
                        "lr": float(self.config["lr"]) * float(self.config["finetune_lr_scale"])}
        # Only what differs from the model's own config is an override: ``Run.finetune`` passes the
        # whole model config, which must not put the pretraining steps and lr back.
        train_config.update({k: v for k, v in config.items() if self.config.get(k) != v})
        with_velocity = mode == "full" or self.decodes_behavior
        if with_velocity and not all(BEHAVIOR in s.behavior for s in sessions):
            if mode == "full":
                raise DataError(f"ndt2 finetune --mode full decodes {BEHAVIOR!r}; sessions "
                                f"{[s.id for s in sessions if BEHAVIOR not in s.behavior]} have none")
            with_velocity = False
        per_session = ("session_vocab", "subject_vocab", "task_vocab") + \
            (("unit_bias_vocab",) if self.unit_bias_vocab is not None else ()) + \
            (("heldout_weight_vocab",) if self.pooled_heldout else ()) + \
            (("skip_weight_vocab",) if self.heldout_skip else ())
        before = {name: len(getattr(self, name)) for name in per_session}
        self._register(sessions, with_velocity=with_velocity)
        hooks = []
        if mode == "units":
            for param in self.parameters():
                param.requires_grad_(False)
            for name in per_session:
                vocab = getattr(self, name)
                if len(vocab) > before[name]:  # only vocabularies that grew have rows to learn
                    vocab.weight.requires_grad_(True)
                    new_rows = (torch.arange(len(vocab)) >= before[name]).float()[:, None]
                    hooks.append(vocab.weight.register_hook(lambda grad, rows=new_rows: grad * rows.to(grad.device)))
            groups = [{"params": [p for p in self.parameters() if p.requires_grad], "lr_mult": 1.0, "weight_decay": 0.0}]
            if not groups[0]["params"]:
                raise RunError("ndt2 finetune --mode units: nothing to learn, every session is already known")
            train_config["behavior_weight"] = train_config["behavior_weight"] if self.decodes_behavior else 0.0
        else:
            new = () if self.decodes_behavior else ("behavior_",)
            if float(train_config["behavior_weight"]) <= 0:
                train_config["behavior_weight"] = 1.0
            groups = self.param_groups(self.lr_multipliers(new), float(train_config["weight_decay"]))
        saved_config, saved_decodes = self.config, self.decodes_behavior
        self.config = {**self.config, "behavior_weight": train_config["behavior_weight"]}
        self.decodes_behavior = self.decodes_behavior or mode == "full"  # validation scores velocity
        try:
            history = self._train(sessions, train_config, out_dir=out_dir, resume=resume, progress=progress,
                                  param_groups=groups, with_velocity=with_velocity and train_config["behavior_weight"] > 0)
        except BaseException:
            self.decodes_behavior = saved_decodes
            raise
        else:
            self.predicts = {"rates", "hand_vel"} if self.decodes_behavior else {"rates"}
        finally:
            self.config = saved_config
            for param in self.parameters():
                param.requires_grad_(True)
            for hook in hooks:
                hook.remove()
        return history
