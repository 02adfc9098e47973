"""NDT2's transfer experiment (chapter 5): pretrain on some sessions, adapt to a new one with few trials.

The question of NDT2's paper on our data: does pretraining on other sessions make a new session
cheaper to learn? NDT2 is pretrained (MAE) on some sessions, then fine-tuned (``mode="full"``:
MAE + velocity) on a fraction of a new session's train trials, and compared with the same model
trained from scratch on the same few trials for the same number of steps. The experiment across
models (POYO, NDT2, MtM; N sessions, k% of trials) is :mod:`mini_decoders.experiments.transfer`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from mini_decoders.data.session import Session
from mini_decoders.models.ndt2 import NDT2
from mini_decoders.run import Run
from mini_decoders.training.profiles import config_for


def few_trials(session: Session, fraction: float, seed: int = 0) -> Session:
    """``session`` with only ``fraction`` of its train trials (chosen at random); val and test kept."""
    split = np.asarray(session.trials.split)
    train = np.flatnonzero(split == "train")
    n_keep = max(2, int(round(fraction * len(train))))
    kept = np.sort(np.random.default_rng(seed).choice(train, n_keep, replace=False))
    return session.select_trials(np.sort(np.concatenate([kept, np.flatnonzero(split != "train")])))


def transfer_experiment(pretrain_sessions: list[Session], new_session: Session, fraction: float = 0.2,
                        profile: str | None = None, seed: int = 0, progress: bool = False,
                        config: dict | None = None, pretrained: NDT2 | None = None) -> dict[str, Any]:
    """Pretrain on some sessions, adapt to a new one with little data; compare with training from scratch.

    1. ``pretrained``: NDT2 pretrained (MAE) on ``pretrain_sessions``, then ``finetune(mode="full")``
       on ``fraction`` of the new session's train trials (MAE + velocity, ``finetune_steps`` steps).
    2. ``scratch``: a fresh NDT2 trained on the same few trials with the same objective (MAE +
       velocity) for the same number of steps as the fine-tuning.
    Both keep the step with the best score on the new session's val trials, and are scored on its
    test trials: co-bps (held-out neurons) and velocity R² (decoded directly).

    Args:
        config: overrides of the profile's NDT2 config (e.g. ``max_steps``, ``finetune_steps``).
        pretrained: a model already pretrained on ``pretrain_sessions`` (step 1 is then skipped;
            it is fine-tuned in place).

    Returns:
        ``{"pretrained": {"co_bps", "vel_r2", "seconds"}, "scratch": {...}, "n_train_trials": int,
        "pretrain_seconds": float, "pretrain_steps_per_second": float, "pretrain_co_bps": float (test
        co-bps on the pretraining sessions, before fine-tuning), "pretrain_history": records,
        "models": {"pretrained": NDT2, "scratch": NDT2}}``.
    """
    base = {**config_for(NDT2.CONFIGS, profile), "seed": seed, **(config or {})}
    small = few_trials(new_session, fraction, seed)
    results: dict[str, Any] = {"n_train_trials": int((np.asarray(small.trials.split) == "train").sum()), "models": {}}

    def score(model: NDT2) -> dict[str, float]:
        run = Run(None, model.eval(), {"model": NDT2.name, "bin_size": model.bin_size, "sessions": []})
        mean = run.evaluate([small])["mean"]
        return {"co_bps": mean.get("co_bps"), "vel_r2": mean.get("vel_r2")}

    if pretrained is None:
        torch.manual_seed(seed)
        pretrained = NDT2.build(pretrain_sessions, base)
        started = time.perf_counter()
        history = pretrained.fit(pretrain_sessions, base, out_dir=None, progress=progress)
        results["pretrain_seconds"] = time.perf_counter() - started
        results["pretrain_steps_per_second"] = history["steps"] / max(history["seconds"], 1e-9)
        results["pretrain_history"] = history["records"]
        run = Run(None, pretrained.eval(), {"model": NDT2.name, "bin_size": pretrained.bin_size, "sessions": []})
        results["pretrain_co_bps"] = run.evaluate(pretrain_sessions)["mean"].get("co_bps")
    base = {**pretrained.config, **(config or {})}
    started = time.perf_counter()
    pretrained.finetune([small], "full", {}, out_dir=None, progress=progress)
    results["pretrained"] = {**score(pretrained), "seconds": time.perf_counter() - started}

    torch.manual_seed(seed)
    # Same steps, warm-up and validation interval as the fine-tuning (its own pretraining recipe otherwise).
    scratch_config = {**base, "behavior_weight": 1.0, **NDT2.finetune_schedule(base)}
    scratch = NDT2.build([small], scratch_config)
    started = time.perf_counter()
    scratch.fit([small], scratch_config, out_dir=None, progress=progress)
    results["scratch"] = {**score(scratch), "seconds": time.perf_counter() - started}
    results["models"] = {"pretrained": pretrained, "scratch": scratch}
    return results
