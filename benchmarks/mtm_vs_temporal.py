"""Issue acceptance for MtM: multi-task masking + prompt vs the same backbone with temporal masking only.

1. ``mini-decoders data synth`` writes simulated multi-region sessions (NLB-layout NWB files, units
   carry their region in ``location``, true rates beside them) — another program than the one
   that trains.
2. ``mini-decoders train smoothing`` (NLB smoothing + GLM baseline) on the same files.
3. ``mini_decoders.train("mtm", ...)`` twice: once with the profile's recipe (``mtm.RECIPE``: the
   paper's neuron, causal, intra- and inter-region masks plus NDT's temporal masks in 70% of the
   batches, each with its prompt), once with ``mask_mode "temporal"`` (the NDT baseline: temporal
   masks only, a prompt that always says "temporal"). With ``--with-paper`` also the paper's mix
   (``mtm.PAPER_RECIPE``: the four schemes, uniformly). Same class, same architecture, same steps,
   same checkpoint rule.
4. The four evaluations on the test trials (bits/spike pooled and per neuron, PSTH R², single-trial
   R²) from each RUN's metrics.json, and the paper's own co-smoothing (``heldin_cosmooth``: each
   held-in neuron left out of the input and predicted from the others) and intra-region
   question (``intra_loo``: each held-in neuron predicted from the rest of its area alone); the
   oracle (true rates) on the same entries, and the smoothing co-bps. The verdict on the paper's
   four questions uses the per-neuron score, as the paper's code. A RUN folder written before a
   score existed is evaluated again.

    python benchmarks/mtm_vs_temporal.py --out /tmp/mtm_acceptance [--profile quick] [--threads 2]
        [--sessions 3] [--seed 0] [--mtm-config JSON] [--with-paper] [--rescore] [--json OUT.json]

``--mtm-config`` overrides the MtM run's config, e.g. temporal masks in half the batches:
``'{"scheme_weights": {"temporal": 0.5, "neuron": 0.125, "causal": 0.125, "intra_region": 0.125,
"inter_region": 0.125}}'``. Each RUN folder is named by a hash of its whole config, so variants
never reuse each other's results and a rerun reuses its own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mini_decoders.evaluation import ALL_TASKS, SCORES, TASK_KEYS

TASK_COLUMNS = tuple(TASK_KEYS[task] for task in ALL_TASKS)  # cosmooth, forward, intra, inter, heldin_cosmooth, ...
PAPER_FOUR = ("heldin_cosmooth", "forward", "intra_loo", "inter")  # co-smoothing and intra-region as the paper asks


@contextlib.contextmanager
def mtm_variant(**overrides):
    """Register, for the duration, an MtM whose profile configs carry ``overrides``.

    The RUN folder still says model ``"mtm"`` and its config.json holds the overridden keys, so
    ``load_run`` rebuilds exactly this variant anywhere.
    """
    from mini_decoders.models import registry

    base = registry.get_model("mtm")
    variant = type(base.__name__, (base,), {"CONFIGS": {p: {**c, **overrides} for p, c in base.CONFIGS.items()}})
    registry.MODELS["mtm"] = variant
    try:
        yield
    finally:
        registry.MODELS["mtm"] = base


def cli(*args: str, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "mini_decoders.cli", *args], check=True, env=env)


def oracle_rows(paths: list[Path]) -> dict[str, float]:
    from mini_decoders.data import read_nwb
    from mini_decoders.data.simulate import TrueRates
    from mini_decoders.evaluation import flat_task_scores, oracle_task_scores

    per_session = [flat_task_scores(oracle_task_scores(read_nwb(p), TrueRates.load(p.with_name(f"{p.stem}_truth.h5"))))
                   for p in paths]
    return {key: float(np.mean([s[key] for s in per_session if s[key] is not None])) for key in per_session[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working folder (data and RUN folders)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch / BLAS threads for training")
    parser.add_argument("--mtm-config", default=None, help="JSON object of overrides for the MtM run")
    parser.add_argument("--with-paper", action="store_true", help="also train the paper's mix (4 schemes, uniform)")
    parser.add_argument("--rescore", action="store_true",
                        help="score saved RUN folders again on the test trials (after the evaluation changed)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    import mini_decoders as md
    from mini_decoders.files import write_json_atomic

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = out / "data"
    if not (data / "simulation.json").exists():
        cli("data", "synth", "--out", str(data), "--sessions", str(args.sessions), "--seed", str(args.seed),
            threads=args.threads)
    paths = sorted(data.glob("*.nwb"))
    if not (out / "smoothing" / "metrics.json").exists():
        cli("train", "smoothing", "--data", *map(str, paths), "--profile", args.profile, "--out", str(out / "smoothing"),
            threads=args.threads)
    smoothing = json.loads((out / "smoothing" / "metrics.json").read_text())

    from mini_decoders.models.mtm import BASELINE_RECIPE, PAPER_RECIPE, MtM
    from mini_decoders.training.profiles import config_for

    results: dict[str, dict] = {}
    mtm_overrides = json.loads(args.mtm_config) if args.mtm_config else {}
    mtm_label = "MtM (+ temporal)" if not mtm_overrides else "MtM (--mtm-config)"
    variants = [(mtm_label, mtm_overrides)]
    if args.with_paper:
        variants.append(("MtM (paper's mix, 4 schemes)", PAPER_RECIPE))
    variants.append(("temporal only (NDT)", BASELINE_RECIPE))
    for label, overrides in variants:
        config = {**config_for(MtM.CONFIGS, args.profile), **overrides}
        folder_name = "mtm_" + hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        folder = out / folder_name
        if (folder / "metrics.json").exists():
            metrics = json.loads((folder / "metrics.json").read_text())
            stale = any(f"{c}_{score}" not in metrics["mean"]  # saved before a score existed
                        for c in TASK_COLUMNS for score in SCORES)
            if args.rescore or stale:
                metrics.update(md.load_run(folder).evaluate(paths, "test"))
                write_json_atomic(folder / "metrics.json", metrics)
        else:
            with mtm_variant(**overrides):
                started = time.process_time()
                run = md.train("mtm", paths, profile=args.profile, out=folder, seed=args.seed, progress=False)
            metrics = run.metrics
            # CPU time of this process (training + the test evaluation): on a shared machine the
            # wall time also counts other programs' turns on the cores.
            metrics["training"]["cpu_seconds"] = time.process_time() - started
            write_json_atomic(folder / "metrics.json", metrics)
        training = metrics["training"]
        results[label] = {**metrics["mean"], "train_seconds": training["train_seconds"],
                          "cpu_seconds": training.get("cpu_seconds"), "steps": training["history"]["last"]["step"]}
    results["oracle (true rates)"] = oracle_rows(paths)
    smoothing_co_bps = smoothing["mean"]["co_bps"]

    print(f"\nprofile {args.profile}, {len(paths)} sessions, test trials; torch threads {args.threads}")
    for score in SCORES:
        print(f"\n{score:>28} " + " ".join(f"{c:>15}" for c in TASK_COLUMNS))
        for label, row in results.items():
            values = [row.get(f"{c}_{score}") for c in TASK_COLUMNS]
            print(f"{label:>28} " + " ".join(f"{float('nan') if v is None else v:15.4f}" for v in values))
    print(f"\nsmoothing (NLB baseline) co-bps: {smoothing_co_bps:.4f}")
    for label, row in results.items():
        if "train_seconds" in row:
            cpu = f", {row['cpu_seconds']:.0f} s of CPU time" if row.get("cpu_seconds") else ""
            print(f"{label}: {row['steps']} steps, trained in {row['train_seconds']:.0f} s wall{cpu}")
    mtm, temporal = results[mtm_label], results["temporal only (NDT)"]
    verdict = {c: mtm[f"{c}_bps"] >= temporal[f"{c}_bps"] for c in TASK_COLUMNS}
    verdict["co_bps_beats_smoothing"] = mtm["cosmooth_bps"] > smoothing_co_bps
    verdict["paper_four"] = all(mtm[f"{c}_neuron_bps"] >= temporal[f"{c}_neuron_bps"] for c in PAPER_FOUR)
    gaps = " ".join(f"{c} {mtm[f'{c}_bps'] - temporal[f'{c}_bps']:+.4f}" for c in TASK_COLUMNS)
    print("MtM - temporal-only, bits/spike:", gaps)
    print("MtM >= temporal-only:", {c: verdict[c] for c in TASK_COLUMNS},
          "| MtM co-bps > smoothing:", verdict["co_bps_beats_smoothing"])
    print(f"the paper's four evaluations ({', '.join(PAPER_FOUR)}), per neuron: MtM >= temporal-only on all: "
          f"{verdict['paper_four']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "threads": args.threads, "results": results,
                                               "smoothing_co_bps": smoothing_co_bps, "verdict": verdict}, indent=2))


if __name__ == "__main__":
    main()
