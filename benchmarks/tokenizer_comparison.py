"""What should a token of neural activity be? Spikes, bins, patches or learned codes, side by side.

Same data, same compute budget: POYO (spike tokens), NDT1 (bin tokens), NDT2 (patch tokens) and
VQ (learned codes) are trained on the same sessions, each for at most ``--budget-seconds`` of
training on this machine (steps estimated from two short probe runs, capped at the profile's own
``max_steps``; the seconds actually used are reported). Then, on the test trials:

- **velocity R²**. Decoders that output velocity (POYO, VQ's behaviour decoder on codes) are
  scored directly. Rate models (NDT1, NDT2, and VQ's reconstruction from codes) the NLB way: a
  ridge regression from predicted rates (held-in + held-out) to hand velocity ``--nlb-lag`` s
  later, fitted on the train trials (``metrics.velocity_r2_from_rates``). The Wiener filter
  (``ridge``) and the oracle (the same NLB ridge from the simulator's true rates) frame them.
- **tokens per second of data**: what the transformer reads. Spikes: every spike of every unit
  plus a start and an end token per unit per 1 s window; bins: one per 20 ms; patches: one per 20
  ms per group of ``neurons_per_token`` held-in neurons; codes: one per window of W bins.
- **bits per second of activity**: what the token stream costs to store. Counts (bins, patches):
  the empirical entropy of each held-in neuron's 20 ms count, summed over neurons (a
  zeroth-order estimate: neurons and bins coded independently); spikes: the same at 1 ms
  resolution, ``1000 * H_b(rate * 1 ms)`` per unit (spike times kept to the millisecond); codes:
  ``log2 K`` per code (fixed length) and the codes' empirical entropy (entropy-coded).

    python benchmarks/tokenizer_comparison.py [--data F.nwb ... | --sessions 1] [--profile quick]
        [--budget-seconds 180] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = {"poyo": "spikes", "ndt1": "bins", "ndt2": "patches", "vq": "VQ codes"}
PROBE_STEPS = 12


# ------------------------------------------------------------------------------------------------
# Tokens and bits per second

def entropy_bits(counts: np.ndarray) -> float:
    """Empirical entropy (bits) of the values in ``counts`` (integers)."""
    _, frequency = np.unique(counts.astype(np.int64), return_counts=True)
    p = frequency / frequency.sum()
    return float(-(p * np.log2(p)).sum())


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def stream_costs(session, model_name: str, model) -> dict[str, float]:
    """Tokens per second of data and bits per second of activity of one model's tokens on ``session``."""
    from mini_decoders.data.binning import bin_trials

    binned = bin_trials(session, 0.02, split=None, behavior=())
    seconds = float(binned.mask.sum() * 0.02)
    heldin = session.units.heldin_index
    real = binned.counts[binned.mask]  # (S, U) real bins
    count_bits = sum(entropy_bits(real[:, u]) for u in heldin) / 0.02  # bits/s of held-in counts
    if model_name == "poyo":
        window = float(model.config["window_length"])
        rates = real.sum(0) / seconds  # (U,) spikes/s of every unit (POYO reads them all)
        return {"tokens_per_second": float(rates.sum() + 2 * session.n_units / window),
                "bits_per_second": float((1000 * binary_entropy(rates / 1000)).sum()), "units_read": "all"}
    if model_name == "ndt1":
        return {"tokens_per_second": 1 / 0.02, "bits_per_second": count_bits, "units_read": "held-in"}
    if model_name == "ndt2":
        n = int(model.config["neurons_per_token"])
        clamped = np.clip(real[:, heldin], 0, int(model.config["max_count"]))
        bits = sum(entropy_bits(clamped[:, u]) for u in range(len(heldin))) / 0.02
        return {"tokens_per_second": math.ceil(len(heldin) / n) / 0.02, "bits_per_second": bits, "units_read": "held-in"}
    if model_name == "vq":
        codes, _ = model.encode_trials(session, binned)
        return {"tokens_per_second": model.codes_per_second(), "bits_per_second": model.bits_per_second(),
                "entropy_bits_per_second": model.bits_per_second(codes), "units_read": "held-in"}
    raise ValueError(model_name)


# ------------------------------------------------------------------------------------------------
# Accuracy

def velocity_scores(run, session, nlb_lag: float, rates_too: bool = False) -> dict[str, float]:
    """Direct R² for decoders, NLB ridge-from-rates R² for rate models (and for VQ's rates with ``rates_too``)."""
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.metrics import r2_score, velocity_r2_from_rates
    from mini_decoders.scoring import all_unit_rates

    model = run.model
    scores = {}
    binned = bin_trials(session, 0.02, split=None, behavior=("hand_vel",), lag=float(model.config.get("lag", 0.0)))
    predicted = run.predict([session])[session.id]
    test = binned.split == "test"
    if "hand_vel" in predicted:
        scores["vel_r2"] = r2_score(predicted["hand_vel"][test], binned.behavior["hand_vel"][test])
        scores["decoded"] = "direct"
    if "rates_heldin" in predicted and ("hand_vel" not in predicted or rates_too):
        lagged = bin_trials(session, 0.02, split=None, behavior=("hand_vel",), lag=nlb_lag).behavior["hand_vel"]
        rates = all_unit_rates(predicted)
        train = binned.split == "train"
        key = "vel_r2" if "hand_vel" not in predicted else "rates_vel_r2"
        scores[key] = velocity_r2_from_rates(rates[train], lagged[train], rates[test], lagged[test])
        scores.setdefault("decoded", f"ridge from rates (lag {nlb_lag:g} s)")
    return scores


def oracle_r2(nwb_path: Path, session, nlb_lag: float) -> float | None:
    """The NLB ridge from the simulator's true rates (the ceiling of the rate models' score)."""
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.data.simulate import TrueRates
    from mini_decoders.metrics import velocity_r2_from_rates

    truth_path = nwb_path.with_name(f"{session.id}_truth.h5")
    if not truth_path.is_file():
        return None
    truth = TrueRates.load(truth_path)
    binned = bin_trials(session, 0.02, split=None, behavior=("hand_vel",), lag=nlb_lag)
    expected = np.nan_to_num(truth.expected_counts(binned.starts, binned.lengths, 0.02))
    train, test = binned.split == "train", binned.split == "test"
    velocity = binned.behavior["hand_vel"]
    return velocity_r2_from_rates(expected[train], velocity[train], expected[test], velocity[test])


# ------------------------------------------------------------------------------------------------
# Same budget

def steps_for_budget(name: str, sessions, profile: str, budget: float, work: Path) -> tuple[int, float]:
    """Steps that fit ``budget`` seconds of training: two probes (P and 2P steps) give the seconds
    per step and the fixed cost; capped at the profile's ``max_steps``. Returns (steps, s/step)."""
    import mini_decoders as md
    from mini_decoders.models.registry import get_model
    from mini_decoders.training.profiles import config_for

    cap = int(config_for(get_model(name).CONFIGS, profile)["max_steps"])
    seconds = []
    for steps in (PROBE_STEPS, 2 * PROBE_STEPS):
        run = md.train(name, sessions, profile=profile, out=work / f"probe_{name}_{steps}", max_steps=steps,
                       progress=False)
        seconds.append(run.metrics["training"]["train_seconds"])
    per_step = max((seconds[1] - seconds[0]) / PROBE_STEPS, 1e-4)
    fixed = max(seconds[0] - PROBE_STEPS * per_step, 0.0)
    return int(np.clip((budget - fixed) / per_step, PROBE_STEPS, cap)), per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=None, help="NWB files (default: write simulated ones)")
    parser.add_argument("--sessions", type=int, default=1, help="simulated sessions when --data is not given")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--budget-seconds", type=float, default=180.0,
                        help="training seconds per model (0: each model's profile as it is)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--nlb-lag", type=float, default=0.1, help="behaviour lag (s) of the NLB ridge from rates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="work folder for runs (default: temporary)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import mini_decoders as md
    from mini_decoders.data.nwb import read_nwb

    work = Path(args.out or tempfile.mkdtemp(prefix="tokenizer_comparison_"))
    if args.data is None:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run([sys.executable, "-m", "mini_decoders.cli", "data", "synth", "--out", str(work / "data"),
                        "--sessions", str(args.sessions)], check=True, env=env)
        paths = sorted((work / "data").glob("*.nwb"))
    else:
        paths = [Path(p) for p in args.data]
    sessions = [read_nwb(p) for p in paths]

    rows: dict[str, dict] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        steps, per_step = (steps_for_budget(name, sessions, args.profile, args.budget_seconds, work)
                           if args.budget_seconds > 0 else (None, None))
        started = time.perf_counter()
        run = md.train(name, sessions, profile=args.profile, out=work / name, max_steps=steps, progress=False)
        row = {"tokenizer": MODELS[name], "steps": steps or int(run.model.config["max_steps"]),
               "seconds_per_step": per_step, "train_seconds": run.metrics["training"]["train_seconds"],
               "wall_seconds": time.perf_counter() - started, "params": run.model.num_parameters(), "sessions": {}}
        for path, session in zip(paths, sessions):
            row["sessions"][session.id] = {**velocity_scores(run, session, args.nlb_lag, rates_too=name == "vq"),
                                           **stream_costs(session, name, run.model)}
        rows[name] = row
        print(f"{name}: {row['steps']} steps, {row['train_seconds']:.0f} s", flush=True)
    ridge = md.train("ridge", sessions, profile=args.profile, out=work / "ridge", progress=False)
    references = {s.id: {"ridge_vel_r2": ridge.metrics["sessions"][s.id]["vel_r2"],
                         "oracle_vel_r2": oracle_r2(p, s, args.nlb_lag)} for p, s in zip(paths, sessions)}

    def mean(name: str, key: str) -> float:
        values = [v[key] for v in rows[name]["sessions"].values() if v.get(key) is not None]
        return float(np.mean(values)) if values else float("nan")

    raw = float(np.mean([rows[n]["sessions"][s.id]["bits_per_second"] for n in ("ndt1",) if n in rows
                         for s in sessions])) if "ndt1" in rows else None
    print(f"\nTokenizer comparison: {len(sessions)} session(s), profile {args.profile}, budget "
          f"{args.budget_seconds:g} s of training per model, {args.threads} thread(s); velocity R² on test trials")
    print(f"| model | token | vel R² | decoded | tokens/s | bits/s | compression | units read | params | steps | train s |")
    print(f"|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        first = next(iter(row["sessions"].values()))
        bits = mean(name, "bits_per_second")
        compression = f"{raw / bits:.2g}x" if raw else "-"
        bits_text = f"{bits:,.0f}"
        if name == "vq":
            bits_text += f" ({mean(name, 'entropy_bits_per_second'):,.0f} entropy-coded)"
        print(f"| {name} | {row['tokenizer']} | {mean(name, 'vel_r2'):.3f} | {first['decoded']} | "
              f"{mean(name, 'tokens_per_second'):,.0f} | {bits_text} | {compression} | {first['units_read']} | "
              f"{row['params']:,} | {row['steps']} | {row['train_seconds']:.0f} |")
        if name == "vq":
            print(f"| vq (rates) | VQ codes | {mean(name, 'rates_vel_r2'):.3f} | ridge from rates (lag {args.nlb_lag:g} s) "
                  f"| | | | | | | |")
    ridge_r2 = np.mean([r["ridge_vel_r2"] for r in references.values()])
    oracles = [r["oracle_vel_r2"] for r in references.values() if r["oracle_vel_r2"] is not None]
    print(f"| ridge (Wiener) | bins, 160 ms history | {ridge_r2:.3f} | direct | | | | all | | closed form | |")
    if oracles:
        print(f"| oracle | true rates | {np.mean(oracles):.3f} | ridge from rates (lag {args.nlb_lag:g} s) | | | | all | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "budget_seconds": args.budget_seconds,
                                               "threads": args.threads, "models": rows, "references": references,
                                               "raw_count_bits_per_second": raw, "data": [str(p) for p in paths]},
                                              indent=2, default=float))


if __name__ == "__main__":
    main()
