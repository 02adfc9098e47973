"""The token lab (issue 24): the same backbone, objective, data, seed and steps; only the tokenizer changes.

    mini-decoders benchmark --token-lab --profile tiny

For each tokenizer (:data:`~mini_decoders.models.token_lab.TOKEN_KINDS`) one
:class:`~mini_decoders.models.token_lab.TokenLabModel` is trained by the one ``Trainer`` on the train
trials of the same sessions (the benchmark's simulated data unless ``data`` is given), for the same
number of steps, and scored on the test trials: co-bps (held-out neurons, NLB bits/spike), velocity
R² (the model's own velocity read-out), tokens per second of data, training seconds, seconds and
peak memory per step, and its parameters (the tokenizer's own + the shared backbone). The oracle
row scores the simulator's true rates with the same metrics (velocity: ridge from the true rates).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mini_decoders.data.batching import BinnedTrialDataset
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.synth import write_synthetic
from mini_decoders.errors import RunError
from mini_decoders.experiments.cost import PeakMemory
from mini_decoders.experiments.oracle import oracle_row
from mini_decoders.metrics import r2_score
from mini_decoders.models.token_lab import (TOKEN_KINDS, LabUnits, TokenLabConfig, collate_for, matched_models)
from mini_decoders.run import as_sessions
from mini_decoders.scoring import BEHAVIOR, heldout_bps, observed_counts
from mini_decoders.training.trainer import TrainConfig, Trainer

BIN_SIZE = 0.02
# Per profile: the simulated sessions (when no data is given), the shared backbone and the budget.
LAB_PROFILES = {
    "tiny": dict(synth=dict(n_sessions=2, n_trials=30, n_units=24), config=dict(dim=32, layers=1, heads=2),
                 steps=15, batch_size=8),
    # A few minutes in all on 2 CPU cores: spike tokens (a few hundred per trial) dominate.
    "quick": dict(synth=dict(n_sessions=2, n_trials=120, n_units=48), config=dict(dim=64, layers=2, heads=2),
                  steps=150, batch_size=16),
}
MAX_PARAM_SPREAD = 0.10  # issue 24: every variant's total within 10% of the others


def run_token_lab(data: Sequence[str | Path] | None = None, profile: str = "tiny", seed: int = 0, *,
                  work: str | Path = "token_lab.work", kinds: Sequence[str] = TOKEN_KINDS, device: str = "cpu",
                  log: Callable[[str], None] | None = print) -> dict:
    """Train and score the backbone once per tokenizer; returns the table.

    Args:
        data: NWB files; None: the profile's simulated sessions, written to ``<work>/data``.
        profile: ``tiny`` (seconds) or ``quick`` (a few minutes on 2 cores).
        seed: the seed of every variant (same shared initial weights, same batches).
        work: folder for the simulated data.
        kinds: the tokenizers to compare.
        device: the training device (``cpu`` keeps the timings comparable across machines).
        log: where progress lines go (None: silent).

    Returns:
        ``{"profile", "seed", "steps", "batch_size", "config", "data", "rows", "oracle", "param_spread",
        "params_within_10pct", "seconds"}``; a row per tokenizer with ``token``, ``width``, ``co_bps``,
        ``vel_r2``, ``tokens_per_second``, ``train_seconds``, ``seconds_per_step``, ``peak_memory_mb``,
        ``params``, ``tokenizer_params``, ``shared_params``, ``first_loss``, ``last_loss``.
    """
    if profile not in LAB_PROFILES:
        raise RunError(f"token lab: profile must be one of {', '.join(LAB_PROFILES)}, got {profile!r}")
    say = log or (lambda message: None)
    settings = LAB_PROFILES[profile]
    started = time.perf_counter()
    work = Path(work)
    if data:
        paths = [Path(p).resolve() for p in data]
    else:
        paths = sorted((work / "data").glob("*.nwb")) or write_synthetic(work / "data", seed=seed, **settings["synth"])
    sessions = as_sessions([str(p) for p in paths])
    lag = _lag(Path(paths[0]).parent)
    train = [bin_trials(s, BIN_SIZE, split="train", behavior=(BEHAVIOR,), lag=lag) for s in sessions]
    test = [bin_trials(s, BIN_SIZE, split="test", behavior=(BEHAVIOR,), lag=lag) for s in sessions]
    heldout = [s.units.heldout for s in sessions]
    train_set = BinnedTrialDataset(train, heldout, BEHAVIOR)
    heldin_sessions = [s.select_units(s.units.heldin_index) for s in sessions]
    units = LabUnits([len(s.units.heldin_index) for s in sessions], [len(s.units.heldout_index) for s in sessions],
                     [str(u) for s in heldin_sessions for u in s.units.ids],
                     max(b.counts.shape[1] for b in train + test))
    config = TokenLabConfig(bin_size=BIN_SIZE, **settings["config"])
    models = matched_models(units, config, kinds, seed)
    mean_counts, velocity_std = _targets(train, heldout, units)
    say(f"token lab: {len(kinds)} tokenizers on {len(sessions)} session(s), {len(train_set)} train trials, "
        f"{settings['steps']} steps of {settings['batch_size']}, profile {profile}")
    rows = []
    for kind, model in models.items():
        model.set_targets(mean_counts, velocity_std)
        train_config = TrainConfig(max_steps=settings["steps"], batch_size=settings["batch_size"], lr=2e-3,
                                   warmup_steps=max(1, settings["steps"] // 10), device=device, precision="fp32",
                                   seed=seed, log_every=1)
        trainer = Trainer(model, train_set, collate_for(model, heldin_sessions), train_config, progress=False)
        with PeakMemory(device) as memory:
            clock = time.perf_counter()
            history = trainer.fit()
            train_seconds = time.perf_counter() - clock
        _, losses = history.values("loss")
        row = {"token": kind, "width": model.width, **_scores(model, sessions, heldin_sessions, test),
               "train_seconds": train_seconds, "seconds_per_step": train_seconds / settings["steps"],
               "peak_memory_mb": memory.peak_mb, "memory_kind": memory.kind,
               "first_loss": float(losses[0]), "last_loss": float(losses[-1])}
        counts = model.parameter_counts()
        row.update(params=counts["total"], tokenizer_params=counts["tokenizer"], shared_params=counts["shared"])
        say(f"  {kind}: co-bps {row['co_bps']:.3f}, vel R² {row['vel_r2']:.3f}, {row['params']:,} params, "
            f"{train_seconds:.1f} s")
        rows.append(row)
    totals = [row["params"] for row in rows]
    spread = max(totals) / min(totals) - 1.0
    oracle = oracle_row(paths, sessions, BIN_SIZE)
    return {"profile": profile, "seed": seed, "steps": settings["steps"], "batch_size": settings["batch_size"],
            "config": vars(config), "data": [str(p) for p in paths], "rows": rows,
            "oracle": None if oracle is None else {"co_bps": oracle.get("co_bps"), "vel_r2": oracle.get("vel_r2")},
            "param_spread": spread, "params_within_10pct": spread <= MAX_PARAM_SPREAD,
            "seconds": time.perf_counter() - started}


def _lag(folder: Path, default: float = 0.1) -> float:
    """The simulator's behaviour lag (``simulation.json``), the one the oracle reads velocity at."""
    try:
        return float(json.loads((folder / "simulation.json").read_text()).get("lag", default))
    except (OSError, ValueError, AttributeError):
        return default


def _targets(train, heldout, units: LabUnits) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, U_in_max + U_out_max) mean count per bin of each neuron, and the (2,) velocity std, on train trials."""
    width_in, width_out = max(units.heldin_per_session), max(units.heldout_per_session)
    means = np.full((len(train), width_in + width_out), 1e-3)
    for s, (binned, flags) in enumerate(zip(train, heldout)):
        mean = binned.counts[binned.mask].mean(0)  # (U,)
        means[s, :(~flags).sum()] = mean[~flags]
        means[s, width_in:width_in + flags.sum()] = mean[flags]
    velocity = np.concatenate([b.behavior[BEHAVIOR][b.mask] for b in train])
    return torch.tensor(means, dtype=torch.float32), torch.tensor(np.nanstd(velocity, 0), dtype=torch.float32)


@torch.no_grad()
def _scores(model, sessions, heldin_sessions, test) -> dict:
    """co-bps, velocity R² and tokens per second of data on the test trials (mean over sessions)."""
    model.eval()
    collate = collate_for(model, heldin_sessions)
    co_bps, vel_r2, n_tokens, seconds = [], [], 0.0, 0.0
    for s, (session, binned) in enumerate(zip(sessions, test)):
        dataset = BinnedTrialDataset([binned], [session.units.heldout], BEHAVIOR)
        batch = collate([{**dataset[i], "session_index": np.int64(s)} for i in range(len(dataset))])
        log_rates, velocity, _ = model(batch)
        n_out = len(session.units.heldout_index)
        rates = log_rates[..., model.max_heldin:model.max_heldin + n_out].exp().double().numpy()  # (N, T, U_out)
        co_bps.append(heldout_bps(rates, observed_counts(binned), session.units.heldout_index))
        vel_r2.append(r2_score(velocity.double().numpy(), binned.behavior[BEHAVIOR]))
        tokens = model.tokenizer.tokens(batch)
        n_tokens += float(tokens.mask.sum())
        seconds += float(batch["time_mask"].sum()) * BIN_SIZE
    model.train()
    return {"co_bps": _mean(co_bps), "vel_r2": _mean(vel_r2), "tokens_per_second": n_tokens / seconds}


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None
