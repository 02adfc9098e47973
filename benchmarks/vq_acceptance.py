"""Issue acceptance for VQ tokens (chapter 7): codebook use, reconstruction, behaviour from codes.

Everything goes through the command line, on data written by another program:

    mini-decoders data synth --out DIR/data --sessions N
    mini-decoders train vq    --data DIR/data/*.nwb --profile quick --out DIR/vq
    mini-decoders train ridge --data DIR/data/*.nwb --profile quick --out DIR/ridge

and then, per session, on the test trials:

- codebook perplexity of the test codes / K                         (target >= 0.5)
- held-in reconstruction bits/spike from the codes / the oracle's   (target >= 0.7; the oracle is
  the simulator's true rates, from ``<id>_truth.h5``)
- velocity R² decoded from the codes / the Wiener filter's (ridge)  (target >= 0.9)

    python benchmarks/vq_acceptance.py [--out DIR] [--sessions 1] [--profile quick] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGETS = {"perplexity_ratio": 0.5, "recon_bps_ratio": 0.7, "vel_r2_ratio": 0.9}


def cli(*args: str, threads: int) -> float:
    """Run ``mini-decoders ARGS`` in a subprocess with ``threads`` torch/BLAS threads; its wall time (s)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "mini_decoders.cli", *args]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    return time.perf_counter() - started


def session_scores(vq_run, ridge_run, nwb_path: Path) -> dict:
    from mini_decoders.data.binning import bin_trials
    from mini_decoders.data.nwb import read_nwb
    from mini_decoders.data.simulate import TrueRates
    from mini_decoders.metrics import bits_per_spike, r2_score
    from mini_decoders.nn.quantize import perplexity

    session = read_nwb(nwb_path)
    truth = TrueRates.load(nwb_path.with_name(f"{session.id}_truth.h5"))
    model = vq_run.model
    binned = bin_trials(session, model.bin_size, split="test", behavior=("hand_vel",), lag=float(model.config["lag"]))
    heldin = session.units.heldin_index
    observed = np.where(binned.mask[..., None], binned.counts, np.nan)[..., heldin]
    expected = truth.expected_counts(binned.starts, binned.lengths, model.bin_size)[..., heldin]  # NaN past the end

    predicted = model.predict_trials(session, binned)
    codes, _ = model.encode_trials(session, binned)
    k = model.tokenizer.num_codes
    used = float(perplexity(torch.from_numpy(np.bincount(codes[codes >= 0], minlength=k))))
    recon = bits_per_spike(predicted["rates_heldin"], observed)
    oracle = bits_per_spike(expected, observed)
    velocity = binned.behavior["hand_vel"]
    vq_r2 = r2_score(np.where(binned.mask[..., None], predicted["hand_vel"], np.nan), velocity)
    ridge_binned = bin_trials(session, ridge_run.model.bin_size, split="test", behavior=("hand_vel",),
                              lag=float(ridge_run.model.config["lag"]))
    ridge_r2 = r2_score(ridge_run.model.predict_trials(session, ridge_binned)["hand_vel"], ridge_binned.behavior["hand_vel"])
    return {"num_codes": k, "test_perplexity": used, "perplexity_ratio": used / k,
            "recon_heldin_bps": recon, "oracle_heldin_bps": oracle, "recon_bps_ratio": recon / oracle,
            "vq_vel_r2": vq_r2, "ridge_vel_r2": ridge_r2, "vel_r2_ratio": vq_r2 / ridge_r2,
            "co_bps": vq_run.metrics["sessions"][session.id].get("co_bps"),
            "bits_per_second": model.bits_per_second(), "codes_per_second": model.codes_per_second(),
            "test_trials": int(len(binned.starts))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of the training processes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from mini_decoders.models.registry import get_model
    from mini_decoders.run import load_run

    out = Path(args.out or tempfile.mkdtemp(prefix="vq_acceptance_"))
    data = out / "data"
    cli("data", "synth", "--out", str(data), "--sessions", str(args.sessions), "--seed", str(args.seed),
        threads=args.threads)
    paths = sorted(data.glob("*.nwb"))
    seconds = {}
    for model in ("vq", get_model("vq").BASELINE):  # VQ and the classic baseline it is judged against
        seconds[model] = cli("train", model, "--data", *map(str, paths), "--profile", args.profile, "--out",
                             str(out / model), "--seed", str(args.seed), "--quiet", threads=args.threads)
    vq_run, ridge_run = load_run(out / "vq"), load_run(out / "ridge")
    train_seconds = vq_run.metrics["training"]["train_seconds"]
    rows = {path.stem: session_scores(vq_run, ridge_run, path) for path in paths}

    print(f"\nVQ acceptance, profile {args.profile}, {len(paths)} session(s), K = {vq_run.model.tokenizer.num_codes}, "
          f"window = {vq_run.model.window} bins, {vq_run.model.bits_per_second():.0f} bits/s of codes")
    print(f"VQ training: {train_seconds:.0f} s ({seconds['vq']:.0f} s for the whole command, evaluation included), "
          f"{args.threads} thread(s); stages {vq_run.metrics['training']['history'].get('stage_seconds')}")
    header = (f"{'session':>8} {'perplexity/K':>12} {'recon bps':>9} {'oracle bps':>10} {'ratio':>6} "
              f"{'VQ vel R2':>9} {'ridge R2':>8} {'ratio':>6} {'co-bps':>7}")
    print(header)
    for name, row in rows.items():
        print(f"{name:>8} {row['perplexity_ratio']:12.3f} {row['recon_heldin_bps']:9.4f} {row['oracle_heldin_bps']:10.4f} "
              f"{row['recon_bps_ratio']:6.3f} {row['vq_vel_r2']:9.4f} {row['ridge_vel_r2']:8.4f} "
              f"{row['vel_r2_ratio']:6.3f} {row['co_bps'] if row['co_bps'] is not None else float('nan'):7.4f}")
    verdict = {}
    for key, target in TARGETS.items():
        worst = min(row[key] for row in rows.values())
        verdict[key] = {"target": target, "worst": worst, "met": worst >= target}
        status = "met" if worst >= target else f"MISSED by {target - worst:.3f}"
        print(f"  {key:>16} >= {target}: worst session {worst:.3f} -> {status}")
    verdict["train_seconds"] = {"target": 300.0, "value": train_seconds, "met": train_seconds <= 300.0}
    print(f"  {'train seconds':>16} <= 300: {train_seconds:.0f} -> {'met' if train_seconds <= 300 else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "threads": args.threads, "sessions": rows,
                                               "verdict": verdict, "train_seconds": train_seconds,
                                               "command_seconds": seconds, "work_folder": str(out)}, indent=2))


if __name__ == "__main__":
    main()
