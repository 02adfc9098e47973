"""How much does the Trainer cost on top of a bare PyTorch loop?

Same model (a 2-layer transformer encoder), same data (batch 32 x 50 tokens x 128 dims), same
optimizer (AdamW), clipping on in both. The bare loop does zero_grad, forward, backward, clip,
step; ``Trainer.fit`` adds batch assembly, the schedule, the NaN check, logging (every 10 steps)
and the RNG snapshot it takes for Ctrl-C, with progress, validation and checkpoints off.

Each step is timed from one ``training_loss`` call to the next, so both measure the whole loop.
Rounds alternate bare / Trainer so that load from other processes hits both alike; the reported
numbers are medians (and minima) over all timed steps after warm-up.

    python benchmarks/trainer_overhead.py [--steps 20] [--warmup 5] [--rounds 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from mini_decoders.training.schedule import default_param_groups
from mini_decoders.training.device import select_device
from mini_decoders.training.trainer import TrainConfig, Trainer

BATCH, TOKENS, DIM = 32, 50, 128


class Encoder(nn.Module):
    """2-layer transformer encoder regressing a target per token; records when each step starts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(DIM, nhead=4, dim_feedforward=4 * DIM, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.readout = nn.Linear(DIM, 2)
        self.step_starts: list[float] = []

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.step_starts.append(time.perf_counter())
        prediction = self.readout(self.encoder(batch["x"]))  # (B, T, 2)
        return ((prediction - batch["y"]) ** 2).mean()


def step_seconds(step_starts: list[float], warmup: int) -> np.ndarray:
    return np.diff(np.asarray(step_starts))[warmup:]


def bare_loop(items: list[dict], steps: int, device: torch.device) -> list[float]:
    model = Encoder().to(device)
    optimizer = torch.optim.AdamW(default_param_groups(model, 0.01), lr=1e-4)
    batch = {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}
    for _ in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = model.training_loss(batch)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model.step_starts


def trainer_loop(items: list[dict], steps: int, device: torch.device) -> list[float]:
    model = Encoder()
    config = TrainConfig(max_steps=steps + 1, batch_size=BATCH, lr=1e-4, warmup_steps=0, grad_clip=1.0,
                         precision="fp32", device=str(device), log_every=10)
    Trainer(model, items, torch.utils.data.default_collate, config, progress=False).fit()
    return model.step_starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = select_device(args.device)
    generator = torch.Generator().manual_seed(0)
    # Exactly one global batch of items: every Trainer step sees the same 32 samples (reordered).
    items = [{"x": torch.randn(TOKENS, DIM, generator=generator), "y": torch.randn(TOKENS, 2, generator=generator)}
             for _ in range(BATCH)]
    bare, trained = [], []
    for _ in range(args.rounds):
        bare.append(step_seconds(bare_loop(items, args.steps + args.warmup, device), args.warmup))
        trained.append(step_seconds(trainer_loop(items, args.steps + args.warmup, device), args.warmup))
    bare, trained = np.concatenate(bare), np.concatenate(trained)
    bare_median, trainer_median = float(np.median(bare)), float(np.median(trained))
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {BATCH} x {TOKENS} tokens x {DIM} dims, "
          f"{args.rounds} rounds x {args.steps} timed steps")
    # The minimum is the least disturbed step: on a shared machine it is the steadier comparison.
    print(f"bare PyTorch loop : {1e3 * bare_median:8.2f} ms/step median, {1e3 * bare.min():8.2f} min")
    print(f"Trainer.fit       : {1e3 * trainer_median:8.2f} ms/step median, {1e3 * trained.min():8.2f} min")
    print(f"ratio             : {trainer_median / bare_median:8.3f} median, {trained.min() / bare.min():8.3f} min "
          f"(goal <= 1.05)")


if __name__ == "__main__":
    main()
