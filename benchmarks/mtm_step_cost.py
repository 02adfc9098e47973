"""Cost of one training step: MtM (each masking scheme, and its recipes) vs NDT1 on the same batches.

MtM's claim is that multi-task masking is free: a mask is a cheap boolean draw, the prompt and
session tokens add 2 tokens to T, and causal attention is a mask on the same attention call. This
benchmark times one optimiser step (forward + backward + AdamW) of each model on identical
batches of real-shaped simulated data, interleaving the models round by round so that load on a
shared machine hits them alike, and reports the median.

    python benchmarks/mtm_step_cost.py [--profile quick] [--rounds 15] [--threads 1] [--device cpu]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def make_steps(profile: str, device: torch.device, batch_size: int | None, n_batches: int, seed: int = 0) -> dict:
    """name -> (model, optimizer, batches, scheme or None) for NDT1 and MtM variants."""
    from mini_decoders.data.simulate import simulate
    from mini_decoders.models.mtm import MASK_MODES, PAPER_RECIPE, MtM
    from mini_decoders.models.ndt1 import NDT1, collate_trials

    sessions = simulate(n_sessions=3, n_trials=120, seed=seed).sessions
    # "recipe": a scheme drawn per batch, as in training (the default mix, or the paper's).
    variants = {"ndt1": (NDT1, {}, None), "mtm recipe": (MtM, {}, None),
                "mtm paper recipe": (MtM, PAPER_RECIPE, None)}
    variants.update({f"mtm {s}": (MtM, {}, s) for s in MASK_MODES["all"] + ("temporal",)})
    steps = {}
    for name, (cls, overrides, scheme) in variants.items():
        config = {**cls.CONFIGS[profile], "device": str(device), "precision": "fp32", **overrides}
        torch.manual_seed(seed)
        model = cls.build(sessions, config).to(device).train()
        items = [item for session in sessions for item in model._trial_items(session, "train")]
        size = batch_size or int(config["batch_size"])
        rng = np.random.default_rng(seed)  # the same batches for every model
        batches = [collate_trials([items[i] for i in rng.choice(len(items), size, replace=False)]) for _ in range(n_batches)]
        batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        steps[name] = (model, optimizer, batches, scheme)
    return steps


def one_step(model, optimizer, batch, scheme) -> None:
    loss, _ = model.masked_loss(batch, scheme=scheme) if scheme else model.training_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps-per-round", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = make_steps(args.profile, device, args.batch_size, args.steps_per_round)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, (model, optimizer, batches, scheme) in steps.items():  # warm-up
        for batch in batches[:2]:
            one_step(model, optimizer, batch, scheme)
    for _ in range(args.rounds):
        for name, (model, optimizer, batches, scheme) in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            for batch in batches:
                one_step(model, optimizer, batch, scheme)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - started) / len(batches))
    reference = float(np.median(times["ndt1"]))
    rows = []
    print(f"profile {args.profile}, device {device}, threads {args.threads}, {args.rounds} rounds x "
          f"{args.steps_per_round} steps, median and interquartile range")
    for name, values in times.items():
        median, (q1, q3) = float(np.median(values)), np.percentile(values, [25, 75])
        rows.append({"model": name, "median_ms": 1e3 * median, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3,
                     "ratio_to_ndt1": median / reference})
        print(f"{name:>18}: {1e3 * median:8.2f} ms/step  (IQR {1e3 * q1:.2f}-{1e3 * q3:.2f})  x{median / reference:.3f} NDT1")
    if args.json:
        Path(args.json).write_text(json.dumps({"profile": args.profile, "device": str(device), "threads": args.threads,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
