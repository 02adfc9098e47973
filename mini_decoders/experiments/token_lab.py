"""The token lab (issue 24): the same backbone, objective, data, seed and steps; only the tokenizer changes.

    mini-decoders benchmark --token-lab --profile tiny

For each tokenizer (:data:`~mini_decoders.models.token_lab.TOKEN_KINDS`) one
:class:`~mini_decoders.models.token_lab.TokenLabModel` is trained by the one ``Trainer`` on the train
trials of the same sessions (the benchmark's simulated data unless ``data`` is given), for the same
number of steps, and scored on the test trials: co-bps (held-out neurons, NLB bits/spike), velocity
R² (the model's own velocity read-out), tokens per second of data, training seconds, seconds and
peak memory per step, and its parameters (the tokenizer's own + the shared backbone). The oracle
row scores the simulator's true rates with the same metrics (velocity: ridge from the true rates).

:func:`cost_scaling` then measures how each tokenizer's training step grows with the work: tokens,
seconds, peak memory and saved activations per step at three numbers of neurons, three firing rates
and three window lengths, and the exponent ``k`` of each (cost ~ ``x**k``, the slope of a log-log fit).
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
from mini_decoders.data.simulate import SimulationConfig, simulate
from mini_decoders.data.synth import write_synthetic
from mini_decoders.errors import RunError
from mini_decoders.experiments.cost import PeakMemory, heldin_spikes_per_window, scaling_exponent, window_view
from mini_decoders.experiments.oracle import oracle_row
from mini_decoders.metrics import r2_score
from mini_decoders.models.token_lab import (TOKEN_KINDS, LabUnits, TokenLabConfig, TokenLabModel, build_tokenizer,
                                            collate_for, matched_models)
from mini_decoders.run import as_sessions
from mini_decoders.scoring import BEHAVIOR, heldout_bps, observed_counts
from mini_decoders.training.trainer import TrainConfig, Trainer

BIN_SIZE = 0.02
# Per profile: the simulated sessions (when no data is given), the shared backbone, the budget, and
# the cost sweep (``cost``: held-in neurons come from ``neurons`` units per session, a quarter held out;
# ``rates``: the fraction of spikes kept; ``windows``: seconds; a few timed steps of a small batch per point).
LAB_PROFILES = {
    "tiny": dict(synth=dict(n_sessions=2, n_trials=30, n_units=24), config=dict(dim=32, layers=1, heads=2),
                 steps=15, batch_size=8, lr=2e-3,
                 cost=dict(neurons=(8, 16, 32), rates=(0.25, 0.5, 1.0), windows=(0.6, 1.2, 2.4), batch_size=2,
                           steps=1)),
    # Measured with one torch thread: 4.5 CPU-minutes in all (7 minutes of wall time on a 2-core machine
    # shared with other jobs), 60% of it spike tokens (~600 per trial, the longest sequences) and 25%
    # patches (~450): every tokenizer gets the same 800 steps, and the s/step column shows the price.
    # One layer and no dropout: at this budget a second layer learned less per second, and attention
    # dropout (on CPU) leaves the fused attention kernel for one ~3x slower on long sequences.
    "quick": dict(synth=dict(n_sessions=2, n_trials=120, n_units=48),
                  config=dict(dim=64, layers=1, heads=2, dropout=0.0), steps=800, batch_size=16, lr=3e-3,
                  cost=dict(neurons=(24, 48, 96), rates=(0.25, 0.5, 1.0), windows=(0.5, 1.0, 2.0), batch_size=8,
                            steps=5)),
}
SWEEPS = ("neurons", "rate", "window")
MAX_PARAM_SPREAD = 0.10  # issue 24: every variant's total within 10% of the others


def run_token_lab(data: Sequence[str | Path] | None = None, profile: str = "tiny", seed: int = 0, *,
                  work: str | Path = "token_lab.work", kinds: Sequence[str] = TOKEN_KINDS, device: str = "cpu",
                  scaling: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Train and score the backbone once per tokenizer, then measure how its cost scales; returns the table.

    Args:
        data: NWB files; None: the profile's simulated sessions, written to ``<work>/data``.
        profile: ``tiny`` (seconds) or ``quick`` (a few minutes on 2 cores).
        seed: the seed of every variant (same shared initial weights, same batches).
        work: folder for the simulated data.
        kinds: the tokenizers to compare.
        device: the training device (``cpu`` keeps the timings comparable across machines).
        scaling: also run :func:`cost_scaling` (the table's ``scaling``; None when False).
        log: where progress lines go (None: silent).

    Returns:
        ``{"profile", "seed", "steps", "batch_size", "lr", "config", "data", "rows", "oracle", "param_spread",
        "params_within_10pct", "scaling", "scaling_settings", "seconds"}``; a row per tokenizer with ``token``,
        ``width``, ``co_bps``, ``vel_r2``, ``tokens_per_second``, ``train_seconds``, ``seconds_per_step``,
        ``peak_memory_mb``, ``params``, ``tokenizer_params``, ``shared_params``, ``first_loss``, ``last_loss``.
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
        train_config = TrainConfig(max_steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
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
    costs = None
    if scaling:
        costs = cost_scaling(profile, seed, kinds=kinds, config=config,
                             widths={kind: model.width for kind, model in models.items()}, device=device, log=log)
    return {"profile": profile, "seed": seed, "steps": settings["steps"], "batch_size": settings["batch_size"],
            "lr": settings["lr"], "config": vars(config), "data": [str(p) for p in paths], "rows": rows,
            "oracle": None if oracle is None else {"co_bps": oracle.get("co_bps"), "vel_r2": oracle.get("vel_r2")},
            "param_spread": spread, "params_within_10pct": spread <= MAX_PARAM_SPREAD,
            "scaling": costs, "scaling_settings": settings["cost"] if scaling else None,
            "seconds": time.perf_counter() - started}


def cost_scaling(profile: str = "tiny", seed: int = 0, *, kinds: Sequence[str] = TOKEN_KINDS,
                 config: TokenLabConfig | None = None, widths: dict[str, int] | None = None, device: str = "cpu",
                 log: Callable[[str], None] | None = print) -> dict:
    """How each tokenizer's training step grows with neurons, firing rate and window length.

    Three sweeps around one centre (the middle number of neurons, every spike, the middle window),
    each changing one thing: ``neurons`` (the first ``n`` units of one simulated population, a quarter
    of them held out, so that every point has neurons of the same kind), ``rate`` (the same
    windows with each spike kept with probability ``f``: the firing rate times ``f``) and
    ``window`` (longer windows cut from the same trials, :func:`~mini_decoders.experiments.cost.window_view`).
    At each point a fresh model of the tokenizer's width takes one warm-up step and a few timed
    training steps (forward, backward, optimiser) on the same small batch.

    Args:
        profile: whose ``cost`` settings (:data:`LAB_PROFILES`) and backbone to use.
        seed: the simulator's and the models' seed.
        kinds: the tokenizers to measure.
        config: the shared backbone (default: the profile's).
        widths: each tokenizer's width (default: matched at the centre, :func:`matched_models`);
            the lab passes its own, so the sweep times the models it trained.
        device: where to time (``cpu`` keeps timings comparable across machines).
        log: where progress lines go (None: silent).

    Returns:
        ``{kind: {sweep: {"x", "tokens", "tokens_per_second", "seconds_per_step", "peak_memory_mb", "saved_mb",
        "exponent_tokens", "exponent_seconds", "exponent_memory", "exponent_saved"}}}`` for ``sweep`` in
        :data:`SWEEPS`; ``x`` is held-in neurons, held-in firing rate (Hz) or window length (s); ``tokens``
        are per step (the batch's real tokens), ``tokens_per_second`` per second of data;
        ``peak_memory_mb`` is :class:`~mini_decoders.experiments.cost.PeakMemory`'s (on a CPU the growth
        of the process's peak, often 0 once the allocator holds enough), ``saved_mb`` what autograd
        keeps for the backward pass (activations; the weights are not counted), the same on every run
        with the same attention kernel. Token counts are exact; times are measurements (noisy at small sizes).
    """
    if profile not in LAB_PROFILES:
        raise RunError(f"token lab: profile must be one of {', '.join(LAB_PROFILES)}, got {profile!r}")
    say = log or (lambda message: None)
    settings = LAB_PROFILES[profile]["cost"]
    config = config or TokenLabConfig(bin_size=BIN_SIZE, **LAB_PROFILES[profile]["config"])
    neurons, rates, windows = settings["neurons"], settings["rates"], settings["windows"]
    n_windows = settings["batch_size"]
    started = time.perf_counter()

    # One simulated population; smaller ones are its first neurons (a quarter held out), so that every
    # point of the neuron sweep has neurons of the same kind, not a fresh draw of rates.
    largest = simulate(n_sessions=1, n_trials=max(n_windows, 4), n_units=int(max(neurons)), seed=seed,
                       trial_length=float(max(windows))).sessions[0]  # trials as long as the longest window

    def population(n_units: int):
        n_out = min(n_units // 4, len(largest.units.heldout_index))
        chosen = np.concatenate([largest.units.heldin_index[:n_units - n_out], largest.units.heldout_index[:n_out]])
        return largest.select_units(np.sort(chosen))

    def windows_of(session, keep: float, length: float):
        """(view, held-in rate in Hz): the first windows of ``length`` s, each spike kept with probability ``keep``."""
        kept = np.random.default_rng(seed).random(session.n_spikes) < keep
        starts = session.trials.start[:n_windows]
        view = window_view(session, session.spike_times[kept], session.spike_units[kept], starts, float(length))
        spikes = heldin_spikes_per_window(session, view.spike_times, view.spike_units, starts, float(length))
        return view, spikes / (len(session.units.heldin_index) * length)

    middle = windows[len(windows) // 2]
    centre = population(neurons[len(neurons) // 2])
    points: dict[str, list] = {sweep: [] for sweep in SWEEPS}  # (view, x) per point
    for n_units in neurons:
        session = population(n_units)
        points["neurons"].append((windows_of(session, 1.0, middle)[0], len(session.units.heldin_index)))
    points["rate"] = [windows_of(centre, keep, middle) for keep in rates]
    points["window"] = [(windows_of(centre, 1.0, length)[0], length) for length in windows]
    if widths is None:
        models = matched_models(_units_of(points["window"][len(windows) // 2][0]), config, kinds, seed)
        widths = {kind: model.width for kind, model in models.items()}
    result = {}
    for kind in kinds:
        result[kind] = {}
        for sweep in SWEEPS:
            measured = [_step_cost(kind, widths[kind], view, config, settings["steps"], seed, device)
                        for view, _ in points[sweep]]
            x = [float(x) for _, x in points[sweep]]
            window_seconds = [len(view.trials) * float(view.trials.duration[0]) for view, _ in points[sweep]]
            entry = {"x": x, "tokens": [m["tokens"] for m in measured],
                     "tokens_per_second": [m["tokens"] / s for m, s in zip(measured, window_seconds)],
                     "seconds_per_step": [m["seconds"] for m in measured],
                     "peak_memory_mb": [m["peak_memory_mb"] for m in measured],
                     "saved_mb": [m["saved_mb"] for m in measured]}
            entry.update(exponent_tokens=scaling_exponent(x, entry["tokens"]),
                         exponent_seconds=scaling_exponent(x, entry["seconds_per_step"]),
                         exponent_memory=scaling_exponent(x, entry["peak_memory_mb"]),
                         exponent_saved=scaling_exponent(x, entry["saved_mb"]))
            result[kind][sweep] = entry
        powers = {key: ", ".join(f"{sweep}^{_exponent_text(result[kind][sweep][key])}" for sweep in SWEEPS)
                  for key in ("exponent_tokens", "exponent_seconds")}
        say(f"  cost of {kind}: tokens ~ {powers['exponent_tokens']}; s/step ~ {powers['exponent_seconds']}")
    say(f"  cost sweep: {time.perf_counter() - started:.0f} s")
    return result


def _exponent_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def _units_of(view) -> LabUnits:
    """The :class:`LabUnits` of one session's windows."""
    heldin = view.select_units(view.units.heldin_index)
    n_bins = int(round(float(view.trials.duration[0]) / BIN_SIZE))
    return LabUnits([len(view.units.heldin_index)], [len(view.units.heldout_index)], [str(u) for u in heldin.units.ids],
                    n_bins)


def _step_cost(kind: str, width: int, view, config: TokenLabConfig, steps: int, seed: int, device: str) -> dict:
    """Tokens, median seconds, peak memory and saved activations of a training step of a fresh ``kind``
    model on every window of ``view`` (one batch)."""
    binned = bin_trials(view, BIN_SIZE, split=None, behavior=(BEHAVIOR,), lag=SimulationConfig.lag)
    heldin = view.select_units(view.units.heldin_index)
    units = _units_of(view)
    torch.manual_seed(seed)
    tokenizer, token_dim = build_tokenizer(kind, width, units, config.dim)
    model = TokenLabModel(tokenizer, token_dim, units, config).to(device)
    dataset = BinnedTrialDataset([binned], [view.units.heldout], BEHAVIOR)
    batch = collate_for(model, [heldin])([dataset[i] for i in range(len(dataset))])
    batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cuda = str(device).startswith("cuda")

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}  # storage -> bytes of what autograd keeps for the backward pass

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step(measure: bool = False) -> float:
        if cuda:
            torch.cuda.synchronize()
        clock = time.perf_counter()
        if measure:
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
                loss = model.training_loss(batch)
        else:
            loss = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - clock

    model.train()
    with PeakMemory(device) as memory:
        step(measure=True)  # the first step also pays for allocations: not timed
        seconds = float(np.median([step() for _ in range(max(1, steps))]))
    with torch.no_grad():
        tokens = int(model.tokenizer.tokens(batch).mask.sum())
    return {"tokens": tokens, "seconds": seconds, "peak_memory_mb": memory.peak_mb,
            "saved_mb": sum(saved.values()) / 2**20}


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
