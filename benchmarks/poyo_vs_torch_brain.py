"""Forward+backward throughput and peak memory: our POYO vs torch_brain's, same data and sizes.

    python benchmarks/poyo_vs_torch_brain.py [--steps 10] [--batch 16] [--device cpu|cuda] [--threads 1]

torch_brain is never a dependency of mini-decoders. To compare, install it into a separate venv
that also has this package:

    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install torch torch-brain && \\
        /tmp/tbvenv/bin/pip install --no-deps -e .

Without it, only our model is measured. Both models get the same windows of simulated spikes
(one token per spike plus start/end tokens per unit), the same dim / depth / heads / latents,
and the same output queries (one per 20 ms bin).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from mini_decoders.data.simulate import simulate
from mini_decoders.models.poyo import POYO, WindowSampler


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def measure(step, device: torch.device, steps: int) -> tuple[float, float]:
    """(seconds per step, peak memory MB) of ``step()`` after two warm-up calls."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / steps, peak_memory_mb(device)


def torch_brain_step(batch: dict, config: dict, n_units: int, device: torch.device):
    """A forward+backward closure of torch_brain's POYO on ``batch``, or None if not installed."""
    try:
        from torch_brain.models import POYO as TorchBrainPOYO  # API of torch-brain 0.2.x
    except ImportError:
        print("torch_brain is not installed: measuring mini-decoders alone. To compare, install it into a "
              "separate venv: python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install torch torch-brain")
        return None
    model = TorchBrainPOYO(sequence_length=config["window_length"], latent_step=config["latent_step"],
                           num_latents_per_step=config["latents_per_step"], dim=config["dim"], depth=config["depth"],
                           dim_head=config["dim_head"], cross_heads=config["cross_heads"],
                           self_heads=config["self_heads"], ffn_dropout=config["ffn_dropout"],
                           lin_dropout=config["lin_dropout"], atn_dropout=config["atn_dropout"], dim_out=2).to(device)
    model.unit_emb.initialize_vocab([str(u) for u in range(n_units)])
    model.session_emb.initialize_vocab(["s"])
    n_steps = int(round(config["window_length"] / config["latent_step"]))
    size = batch["input_rows"].shape[0]
    latent_index = torch.arange(config["latents_per_step"]).repeat(n_steps)[None].expand(size, -1).to(device)
    latent_times = (torch.arange(n_steps).repeat_interleave(config["latents_per_step"]) * config["latent_step"]
                    + config["latent_step"] / 2)[None].expand(size, -1).to(device)
    inputs = dict(input_unit_index=batch["input_rows"] % n_units, input_timestamps=batch["input_times"],
                  input_token_type=batch["input_types"], input_mask=batch["input_mask"], latent_index=latent_index,
                  latent_timestamps=latent_times, session_index=torch.zeros(size, dtype=torch.long),
                  output_timestamps=batch["query_times"], output_mask=torch.ones_like(batch["query_times"],
                                                                                        dtype=torch.bool))
    inputs = {k: v.to(device) for k, v in inputs.items()}

    def step():
        output = model(**inputs)
        output.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--profile", default="quick", choices=list(POYO.CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--which", choices=["both", "ours", "theirs"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = simulate(n_sessions=1, n_trials=max(40, args.batch * 2), seed=0)
    session = data.sessions[0]
    config = dict(POYO.CONFIGS[args.profile], seed=0, unit_dropout_min=1.0)
    model = POYO.build([session], config).to(device)
    sampler = WindowSampler(model, [session], "train", config)
    batch = {k: v.to(device) for k, v in sampler.collate([sampler[i] for i in range(args.batch)]).items()}
    tokens = int(batch["input_mask"].sum())

    def ours():
        # the same work as the yardstick's step: forward, a scalar of the velocity output, backward
        output = model(batch)["hand_vel"]
        output.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    if args.which == "both":
        # One process per model: on a CPU, peak memory is the process's peak RSS, so each model
        # must be measured in a process of its own for the two numbers to mean anything.
        import subprocess
        import sys

        results = {}
        for which in ("ours", "theirs"):
            command = [sys.executable, __file__, "--which", which] + [f"--{k}={v}" for k, v in
                                                                      (("steps", args.steps), ("batch", args.batch),
                                                                       ("profile", args.profile), ("device", args.device),
                                                                       ("threads", args.threads))]
            output = subprocess.run(command, capture_output=True, text=True).stdout
            print(output, end="")
            for line in output.splitlines():
                if line.startswith("RESULT"):
                    _, name, seconds, memory = line.split()
                    results[name] = (float(seconds), float(memory))
        if len(results) == 2:
            (ours_s, ours_mb), (theirs_s, theirs_mb) = results["ours"], results["theirs"]
            print(f"ratio ours/torch_brain: throughput {theirs_s / ours_s:.2f}x, peak memory {ours_mb / theirs_mb:.2f}x")
        return
    if args.which == "ours":
        seconds, memory = measure(ours, device, args.steps)
        print(f"config {args.profile}: dim {config['dim']}, depth {config['depth']}, latents "
              f"{len(model.latent_times)}, batch {args.batch} windows, {tokens} tokens")
        print(f"mini-decoders POYO: {args.batch / seconds:8.1f} windows/s  {tokens / seconds:10.0f} tokens/s  "
              f"peak {memory:8.1f} MB  ({model.num_parameters()} parameters)")
        print(f"RESULT ours {seconds} {memory}")
        return
    theirs = torch_brain_step(batch, config, session.n_units, device)
    if theirs is not None:
        del model
        seconds, memory = measure(theirs, device, args.steps)
        print(f"torch_brain POYO:   {args.batch / seconds:8.1f} windows/s  {tokens / seconds:10.0f} tokens/s  "
              f"peak {memory:8.1f} MB")
        print(f"RESULT theirs {seconds} {memory}")


if __name__ == "__main__":
    main()
