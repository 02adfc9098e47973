"""Training throughput and peak memory of the NDT models versus sequence length.

One training step (forward + backward + AdamW) on random Poisson counts, timed after warm-up, for
each sequence length. Tokens/s counts every bin of every trial in the batch. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU, tracemalloc does not see torch's
allocator, so it is the growth of the process's peak resident set (``resource.getrusage``), a
coarse upper bound.

    python benchmarks/ndt_throughput.py --models ndt1 --lengths 25,50,100,200,400 \
        --json out.json --plot out.png

Each model has its own ``bench_<model>`` function returning a step closure, so models can be
added without touching the others (NDT2: add ``bench_ndt2`` and list it in ``BENCHES``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Callable

import torch

from mini_decoders.experiments.report import save_figure
from mini_decoders.files import write_json_atomic
from mini_decoders.models.base import SessionSpec


def fake_spec(n_units: int, heldout_fraction: float = 0.25) -> SessionSpec:
    n_heldout = int(round(n_units * heldout_fraction))
    return SessionSpec(id="bench", unit_ids=[f"bench/{u}" for u in range(n_units)],
                       heldout=[u >= n_units - n_heldout for u in range(n_units)])


# ------------------------------------------------------------------------------------------- NDT1


def training_step(model, optimizer, batch):
    """One optimiser step of ``model.training_loss(batch)``, as a closure the timer can call."""

    def step() -> None:
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step

def bench_ndt1(n_bins: int, batch_size: int, n_units: int, profile: str, device: torch.device) -> Callable[[], None]:
    """A closure running one NDT1 training step on a (batch_size, n_bins, n_units) batch."""
    from mini_decoders.models.ndt1 import NDT1

    spec = fake_spec(n_units)
    config = dict(NDT1.CONFIGS[profile], max_bins=max(n_bins, 8))
    model = NDT1([spec], config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    counts = torch.poisson(torch.full((batch_size, n_bins, n_units), 0.3, device=device))
    batch = {"heldin": counts[..., :spec.n_heldin], "heldout": counts[..., spec.n_heldin:],
             "valid": torch.ones(batch_size, n_bins, dtype=torch.bool, device=device),
             "session": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    return training_step(model, optimizer, batch)


BENCHES: dict[str, Callable[..., Callable[[], None]]] = {"ndt1": bench_ndt1}


# ------------------------------------------------------------------------------------------- runner

def peak_rss_mb() -> float:
    """Peak resident set of this process so far (MB; ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def measure(model: str, n_bins: int, batch_size: int, n_units: int, profile: str, device: torch.device,
            warmup: int = 2, repeats: int = 5) -> dict:
    """Tokens/s and peak memory of ``model`` at one sequence length."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = peak_rss_mb()
    step = BENCHES[model](n_bins, batch_size, n_units, profile, device)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak_mb = torch.cuda.max_memory_allocated(device) / 1024**2
        memory_kind = "cuda_max_memory_allocated"
    else:
        peak_mb = max(peak_rss_mb() - rss_before, 0.0)
        memory_kind = "cpu_peak_rss_growth"
    seconds = (time.perf_counter() - started) / repeats
    return {"model": model, "n_bins": n_bins, "batch_size": batch_size, "n_units": n_units, "profile": profile,
            "device": str(device), "step_seconds": seconds, "tokens_per_second": batch_size * n_bins / seconds,
            "peak_memory_mb": peak_mb, "memory_kind": memory_kind}


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_memory) = plt.subplots(1, 2, figsize=(9, 3.5))
    for model in sorted({r["model"] for r in results}):
        rows = sorted((r for r in results if r["model"] == model), key=lambda r: r["n_bins"])
        lengths = [r["n_bins"] for r in rows]
        ax_speed.plot(lengths, [r["tokens_per_second"] for r in rows], "o-", label=model)
        ax_memory.plot(lengths, [r["peak_memory_mb"] for r in rows], "o-", label=model)
    ax_speed.set(xscale="log", yscale="log", xlabel="sequence length (bins)", ylabel="training tokens / s")
    ax_memory.set(xscale="log", xlabel="sequence length (bins)",
                  ylabel=f"peak memory (MB, {results[0]['memory_kind']})")
    ax_speed.legend()
    fig.suptitle(f"training step, batch {results[0]['batch_size']}, {results[0]['device']}")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ndt1", help=f"comma-separated, from {sorted(BENCHES)}")
    parser.add_argument("--lengths", default="25,50,100,200,400", help="sequence lengths in bins")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=120)
    parser.add_argument("--profile", default="quick", choices=["tiny", "quick", "full"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--plot", help="write a PNG here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    unknown = [m for m in args.models.split(",") if m not in BENCHES]
    if unknown:
        parser.error(f"unknown models {unknown}; available: {sorted(BENCHES)}")
    results = []
    for model in args.models.split(","):
        for n_bins in (int(n) for n in args.lengths.split(",")):
            result = measure(model, n_bins, args.batch_size, args.units, args.profile, device, repeats=args.repeats)
            results.append(result)
            print(f"{model:6s} T={n_bins:4d}  {result['tokens_per_second']:10.0f} tokens/s  "
                  f"{result['step_seconds'] * 1e3:8.1f} ms/step  peak {result['peak_memory_mb']:8.1f} MB", flush=True)
    if args.json:
        write_json_atomic(args.json, results)
    if args.plot:
        plot(results, args.plot)
    return results



# ------------------------------------------------------------------------------------------- NDT2
# (added by the NDT2 engineer; separate from the NDT1 code above)

def bench_ndt2(n_bins: int, batch_size: int, n_units: int, profile: str, device: torch.device) -> Callable[[], None]:
    """A closure running one NDT2 MAE training step on a (batch_size, n_bins, n_units) batch.

    Tokens/s in ``measure`` counts bins; NDT2's own sequence is bins x patches (x 0.5 through the
    encoder at mask ratio 0.5, plus every patch through the light decoder).
    """
    from mini_decoders.models.ndt2 import NDT2

    spec = fake_spec(n_units)
    config = dict(NDT2.CONFIGS[profile], max_time_bins=max(n_bins, 8), dropout=0.0)
    model = NDT2([spec], config).to(device).train()
    model.subject_vocab.extend(["bench"])
    model.task_vocab.extend(["bench"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    counts = torch.poisson(torch.full((batch_size, n_bins, n_units), 0.3, device=device))
    batch = {"heldin": counts[..., :spec.n_heldin], "heldout": counts[..., spec.n_heldin:],
             "heldin_unit_mask": torch.ones(batch_size, spec.n_heldin, dtype=torch.bool, device=device),
             "heldout_unit_mask": torch.ones(batch_size, spec.n_heldout, dtype=torch.bool, device=device),
             "time_mask": torch.ones(batch_size, n_bins, dtype=torch.bool, device=device),
             "context": torch.zeros(batch_size, 3, dtype=torch.int64, device=device)}

    return training_step(model, optimizer, batch)


BENCHES["ndt2"] = bench_ndt2


if __name__ == "__main__":
    main()
