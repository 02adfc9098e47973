"""Every performance benchmark of the project from one entry point, with a summary table.

Each script in this folder measures one thing (data throughput, the Trainer's overhead, NDT and
POYO step cost, MtM's masking, the tokenizers side by side, the acceptance numbers of the model
chapters). This runner starts each one as its own process — as a user would, so one failure does
not stop the rest — with the same data and thread count, collects what it prints, and ends with
one table: status, seconds, and each script's headline (the last line it printed).

    python benchmarks/run_all.py                       # reduced: tiny profile, a few minutes in all
    python benchmarks/run_all.py --mode quick          # each script's own defaults (the quick acceptance)
    python benchmarks/run_all.py --only data_throughput,trainer_overhead --json SUMMARY.json

``reduced`` proves every benchmark runs and shows its numbers at a glance (tiny models: the
numbers say nothing about the models' quality). ``quick`` runs the scripts as their chapters
document them; budget an hour or more on two CPU cores. A script in this folder that the runner
does not know is reported as ``unlisted`` and, in ``quick`` mode, run without arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mini_decoders.models.registry import MODELS

HERE = Path(__file__).resolve().parent


@dataclass
class Entry:
    """One benchmark script and its arguments per mode.

    ``{data}`` in an argument is replaced by the simulated NWB files (one argument each),
    ``{data_1}`` by the first file only, ``{work}`` by a fresh folder for the script, and
    ``{threads}`` by the thread count.
    """

    name: str
    what: str
    reduced: list[str]
    quick: list[str] = field(default_factory=list)

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


ENTRIES = [
    Entry("data_throughput", "binning and spike-token batching of a one-hour session (spikes/s)",
          ["--repeats", "1"]),
    Entry("trainer_overhead", "the Trainer against a bare PyTorch loop (ms/step)",
          ["--steps", "5", "--warmup", "2", "--rounds", "1", "--device", "cpu", "--threads", "{threads}"],
          ["--device", "cpu", "--threads", "{threads}"]),
    Entry("ndt_throughput", "NDT1/NDT2 training step against sequence length (tokens/s, peak memory)",
          ["--models", "ndt1,ndt2", "--lengths", "25,50", "--batch-size", "8", "--profile", "tiny", "--repeats", "1",
           "--device", "cpu", "--threads", "{threads}"],
          ["--models", "ndt1,ndt2", "--device", "cpu", "--threads", "{threads}"]),
    Entry("poyo_vs_torch_brain", "POYO forward+backward throughput and memory (ours; torch_brain's if installed)",
          ["--steps", "2", "--batch", "4", "--profile", "tiny", "--device", "cpu", "--threads", "{threads}",
           "--which", "ours"],
          ["--device", "cpu", "--threads", "{threads}"]),
    Entry("mtm_step_cost", "one training step of MtM (each masking scheme) against NDT1",
          ["--profile", "tiny", "--rounds", "2", "--steps-per-round", "1", "--threads", "{threads}"],
          ["--threads", "{threads}"]),
    Entry("baselines_reference", "our ridge and smoothing against scikit-learn references",
          ["--data", "{data}", "--profile", "tiny"], ["--data", "{data}"]),
    Entry("tokenizer_comparison", "spikes, bins, patches, codes: velocity R² and bits per second at equal budget",
          ["--data", "{data_1}", "--profile", "tiny", "--budget-seconds", "10", "--threads", "{threads}",
           "--out", "{work}"],
          ["--data", "{data_1}", "--threads", "{threads}", "--out", "{work}"]),
    Entry("ndt2_transfer", "NDT2 against smoothing, and pretraining -> a new session",
          ["--data", "{data}", "--profile", "tiny", "--threads", "{threads}"],
          ["--data", "{data}", "--threads", "{threads}"]),
    Entry("mtm_vs_temporal", "MtM's four masks + prompt against temporal masking only",
          ["--out", "{work}", "--profile", "tiny", "--sessions", "2", "--threads", "{threads}"],
          ["--out", "{work}", "--threads", "{threads}"]),
    Entry("vq_acceptance", "VQ codebook use, reconstruction from codes, velocity from codes",
          ["--out", "{work}", "--profile", "tiny", "--threads", "{threads}"],
          ["--out", "{work}", "--threads", "{threads}"]),
]


def _expand(args: list[str], data: list[str], work: Path, threads: int) -> list[str]:
    out = []
    for arg in args:
        if arg == "{data}":
            out.extend(data)
        else:
            out.append(arg.replace("{data_1}", data[0]).replace("{work}", str(work)).replace("{threads}", str(threads)))
    return out


def _headline(output: str) -> str:
    """The last line of ``output`` that says something (not a progress bar, not a lone bracket)."""
    lines = [line.strip() for line in output.splitlines()
             if any(c.isalnum() for c in line) and "it/s]" not in line]
    return lines[-1] if lines else ""


def run_entry(entry: Entry, mode: str, data: list[str], root: Path, threads: int, timeout: float) -> dict:
    """Run one script; returns ``{"name", "status", "seconds", "headline", "output", "command"}``."""
    work = root / entry.name
    work.mkdir(parents=True, exist_ok=True)
    args = entry.reduced if mode == "reduced" else entry.quick
    command = [sys.executable, str(entry.script), *_expand(args, data, work, threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent)
        output = process.stdout + ("\n" + process.stderr if process.returncode else "")
        status = "ok" if process.returncode == 0 else f"failed ({process.returncode})"
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else (error.stdout or "")
        status = f"timeout ({timeout:.0f} s)"
    return {"name": entry.name, "what": entry.what, "status": status, "seconds": time.perf_counter() - started,
            "headline": _headline(output), "output": output, "command": " ".join(command)}


def side_by_side(mode: str, data: list[str], root: Path, threads: int, timeout: float) -> dict:
    """The book's own benchmark (``mini-decoders benchmark``): a few models, reduced or quick."""
    work = root / "side_by_side"
    # reduced: the two classic rate/velocity baselines and one transformer; quick: every registered model
    models = "ridge,smoothing,ndt1" if mode == "reduced" else ",".join(MODELS)
    profile = "tiny" if mode == "reduced" else "quick"
    command = [sys.executable, "-m", "mini_decoders.cli", "benchmark", "--data", *data, "--models", models,
               "--profile", profile, "--json", str(work / "B.json"), "--plot", str(work / "B.png"),
               "--threads", str(threads), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        output, status = process.stdout + process.stderr, "ok" if process.returncode == 0 else f"failed ({process.returncode})"
    except subprocess.TimeoutExpired:
        output, status = "", f"timeout ({timeout:.0f} s)"
    headline = ""
    table_path = work / "B.json"
    if status == "ok" and table_path.exists():
        table = json.loads(table_path.read_text())
        headline = "; ".join(f"{row['model']} {row['judged_on']}="
                             + (f"{row[row['judged_on']]:.3f}" if row.get(row.get("judged_on") or "") is not None else "n/a")
                             for row in table["rows"])
    return {"name": "side_by_side", "what": "every model on the same data, budget and seeds (chapter 8)",
            "status": status, "seconds": time.perf_counter() - started, "headline": headline or _headline(output),
            "output": output, "command": " ".join(command)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["reduced", "quick"], default="reduced")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of every script")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per script (default: 900 reduced, 7200 quick)")
    parser.add_argument("--work", default=None, help="folder for data and outputs (default: temporary)")
    parser.add_argument("--json", default=None, help="also write the summary (and every output) here")
    parser.add_argument("--verbose", action="store_true", help="print each script's full output")
    args = parser.parse_args()
    timeout = args.timeout or (900.0 if args.mode == "reduced" else 7200.0)

    known = {entry.name for entry in ENTRIES} | {"side_by_side"}
    only = None if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    if only is not None and set(only) - known:
        parser.error(f"--only: unknown benchmark(s) {sorted(set(only) - known)}; known: {sorted(known)}")
    unlisted = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in known and p.stem != "run_all")

    root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mini_decoders_benchmarks_"))
    root.mkdir(parents=True, exist_ok=True)
    from mini_decoders.data.synth import write_synthetic

    sizes = dict(n_sessions=3, n_trials=40, n_units=40) if args.mode == "reduced" else dict(n_sessions=3)
    data = [str(p) for p in (sorted((root / "data").glob("*.nwb")) or write_synthetic(root / "data", seed=0, **sizes))]
    print(f"benchmarks ({args.mode}) on {len(data)} simulated sessions in {root / 'data'}; outputs in {root}", flush=True)

    results = []
    for entry in ENTRIES:
        if only is not None and entry.name not in only:
            continue
        print(f"-- {entry.name}: {entry.what}", flush=True)
        result = run_entry(entry, args.mode, data, root, args.threads, timeout)
        print(result["output"] if args.verbose else "\n".join(
            line for line in result["output"].splitlines()[-15:] if "it/s]" not in line), flush=True)
        print(f"   [{result['status']}, {result['seconds']:.0f} s]", flush=True)
        results.append(result)
    if only is None or "side_by_side" in only:
        print("-- side_by_side: every model on the same data, budget and seeds (chapter 8)", flush=True)
        result = side_by_side(args.mode, data, root, args.threads, timeout)
        print(result["headline"], f"\n   [{result['status']}, {result['seconds']:.0f} s]", flush=True)
        results.append(result)
    for name in unlisted:
        if args.mode == "quick" and (only is None or name in only):
            entry = Entry(name, "unlisted in run_all", [], [])
            results.append(run_entry(entry, args.mode, data, root, args.threads, timeout))
        else:
            results.append({"name": name, "what": "not in run_all's list", "status": "unlisted", "seconds": 0.0,
                            "headline": "add it to ENTRIES in benchmarks/run_all.py", "output": "", "command": ""})

    width = max(len(r["name"]) for r in results)
    print("\nsummary")
    print(f"{'benchmark':<{width}}  {'status':<14}  {'seconds':>7}  headline")
    for r in results:
        print(f"{r['name']:<{width}}  {r['status']:<14}  {r['seconds']:>7.0f}  {r['headline'][:110]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"mode": args.mode, "data": data, "results": results}, indent=2))
    failed = [r["name"] for r in results if r["status"] not in ("ok", "unlisted")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
