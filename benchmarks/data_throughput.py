"""How fast does the data layer turn spikes into model inputs?

Builds a one-hour, 200-unit session with ~16 Hz mean rate (~11.5 M spikes, homogeneous Poisson
spike trains drawn directly with numpy) and times, best of 3:

* ``bin_session`` of the whole hour at 20 ms;
* ``bin_trials`` over 3600 one-second trials at 20 ms;
* ``spike_windows`` over 1 s windows every 0.5 s (each spike lands in two windows);
* ``collate_spike_tokens`` of batches of 64 windows, over all windows.

Usage::

    python benchmarks/data_throughput.py [--json OUT.json] [--seed S] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np

from mini_decoders.data.batching import collate_spike_tokens, spike_windows
from mini_decoders.data.binning import bin_session, bin_trials
from mini_decoders.data.session import Session, Trials, Units
from mini_decoders.files import write_json_atomic

DURATION_S = 3600.0
N_UNITS = 200
MEAN_RATE_HZ = 16.0
BATCH_SIZE = 64


def make_session(seed: int) -> Session:
    """One hour of Poisson spikes; unit rates vary (gamma, mean 16 Hz) as real populations do."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(shape=2.0, scale=1.0, size=N_UNITS)
    rates *= MEAN_RATE_HZ / rates.mean()
    counts = rng.poisson(rates * DURATION_S)
    # Given its count, a homogeneous Poisson train is that many uniform times: no per-spike loop.
    times = rng.uniform(0.0, DURATION_S, counts.sum())
    units = np.repeat(np.arange(N_UNITS), counts)
    order = np.argsort(times, kind="stable")
    starts = np.arange(3600, dtype=np.float64)
    trials = Trials(starts, starts + 1.0)
    return Session("bench", times[order], units[order], Units([f"bench/{u}" for u in range(N_UNITS)]),
                   trials=trials, source="benchmarks/data_throughput.py")


def best_of(repeats: int, run: Callable[[], object]) -> float:
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="time each operation this many times, keep the best")
    args = parser.parse_args(argv)

    session = make_session(args.seed)
    window_starts = np.arange(0.0, DURATION_S - 1.0 + 1e-9, 0.5)
    windows = spike_windows(session, window_starts, 1.0)
    batches = np.array_split(np.arange(len(windows)), int(np.ceil(len(windows) / BATCH_SIZE)))

    def collate_all() -> None:
        for batch in batches:
            collate_spike_tokens(windows, batch)

    operations = [
        ("bin_session 20 ms", session.n_spikes, lambda: bin_session(session, 0.02)),
        ("bin_trials 3600 x 1 s", session.n_spikes, lambda: bin_trials(session, 0.02)),
        (f"spike_windows {len(window_starts)} x 1 s, step 0.5 s", windows.n_tokens,
         lambda: spike_windows(session, window_starts, 1.0)),
        (f"collate_spike_tokens {len(batches)} x {BATCH_SIZE} windows", windows.n_tokens, collate_all),
    ]
    results = []
    for name, n_spikes, run in operations:
        seconds = best_of(args.repeats, run)
        results.append({"operation": name, "spikes": int(n_spikes), "seconds": seconds,
                        "mspikes_per_s": n_spikes / seconds / 1e6})

    print(f"session: {session.n_spikes:,} spikes, {N_UNITS} units, {DURATION_S / 3600:.0f} h "
          f"({session.n_spikes / N_UNITS / DURATION_S:.1f} Hz mean); best of {args.repeats}")
    print(f"{'operation':<42} {'spikes':>12} {'seconds':>9} {'Mspikes/s':>10}")
    for row in results:
        print(f"{row['operation']:<42} {row['spikes']:>12,} {row['seconds']:>9.3f} {row['mspikes_per_s']:>10.1f}")

    if args.json:
        report = {"session": {"spikes": session.n_spikes, "units": N_UNITS, "duration_s": DURATION_S},
                  "repeats": args.repeats, "machine": platform.platform(), "cpu_count": os.cpu_count(),
                  "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        write_json_atomic(args.json, report)  # a reader never sees half a file
    return results


if __name__ == "__main__":
    main()
