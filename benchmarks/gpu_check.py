"""One prepared check of everything that only a GPU can prove: run it once on a lent GPU machine.

    python benchmarks/gpu_check.py                        # on a GPU: quick profile, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --tiny    # what CI runs: the same checks, seconds per model

What it checks, each a row of the printed table and an entry of the JSON (``--json``):

1. **precision**: every model trains ``--steps`` optimizer steps of its quick recipe in fp32, in
   bf16 autocast, and in fp16 with the gradient scaler; the loss must stay finite and fall, and the
   final loss must equal fp32's within ``--rtol``. Each row records the peak memory (CUDA: allocated
   by torch) and the time per optimizer step. ridge and smoothing are fitted in closed form: one
   fp32 row each. fp16 runs on CUDA only: the package refuses fp16 on a CPU (autocast to fp16 there
   is slow and has no use), so on a CPU those rows say "skipped" and why.
2. **resume**: NDT1 is interrupted by a real SIGINT (Ctrl-C) half-way through, resumed with
   ``mini-decoders train ... --resume``, and must end with the weights of the uninterrupted run
   (bit for bit on a CPU; within ``--resume-atol`` on CUDA, whose atomic-add kernels need not sum
   in the same order twice).
3. **ddp**: ``torchrun --standalone --nproc_per_node=1`` runs ``mini-decoders train`` under
   DistributedDataParallel (NCCL on CUDA, gloo on a CPU) and must match the plain run.
4. **chapters**: chapters 3 and 4 executed with nbclient in the profile (quick; tiny with
   ``--tiny``), timed (``--chapters`` picks others: the CI test runs chapter 1, since CI executes
   every chapter through nbval anyway).

It uses only the package's public API (``mini_decoders.train``, ``mini_decoders.load_run``,
``mini_decoders.data.simulate``) and its command line, so it keeps working when the package's
modules move. Exit code 0 when every check passed (skipped ones do not fail).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "fp16")
CHAPTERS = ("03_ndt1_masked_modelling", "04_poyo_spike_tokens")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one) | cuda | cpu")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny profile and few steps: proves the script and every path run (CI, on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 300; --tiny: 40)")
    parser.add_argument("--models", default="all",
                        help="comma-separated, or all (default: every model of the package's registry)")
    parser.add_argument("--rtol", type=float, default=0.05,
                        help="bf16/fp16 final loss vs fp32's: relative tolerance (default 0.05)")
    parser.add_argument("--resume-atol", type=float, default=None,
                        help="largest weight difference allowed after resuming (default: 0 on a CPU, 1e-5 on CUDA)")
    parser.add_argument("--chapters", default=",".join(CHAPTERS),
                        help=f"notebooks/<name>.ipynb to execute and time (default {','.join(CHAPTERS)})")
    parser.add_argument("--skip-notebooks", action="store_true", help="execute no chapter")
    parser.add_argument("--json", default="gpu_check.json", help="where the results go (default gpu_check.json)")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one, removed at the end)")
    args = parser.parse_args(argv)
    args.profile = "tiny" if args.tiny else "quick"
    args.steps = args.steps or (40 if args.tiny else 300)
    # A step that hangs fails under its own name long before a caller's timeout (the CI test's is 900 s).
    args.step_timeout = 240 if args.tiny else 1200
    args.models = [m.strip() for m in args.models.split(",") if m.strip() and m.strip() != "all"] or ["all"]
    args.chapters = [] if args.skip_notebooks else [c.strip() for c in args.chapters.split(",") if c.strip()]
    return args


def say(message: str) -> None:
    print(message, flush=True)


# ----------------------------------------------------------------------------- helpers
def loss_stages(run) -> list[list[tuple[int, float]]]:
    """The run's logged training losses, split into stages (VQ trains its tokenizer, then its model)."""
    curve = run.metrics.get("training", {}).get("history", {}).get("loss_curve", [])
    stages: list[list[tuple[int, float]]] = []
    for step, loss in curve:
        if not stages or step <= stages[-1][-1][0]:
            stages.append([])
        stages[-1].append((int(step), float(loss)))
    return stages


def judged_score(run) -> dict:
    mean = run.metrics.get("mean", {})
    return {key: mean[key] for key in ("co_bps", "vel_r2", "psth_r2", "fp_bps") if mean.get(key) is not None}


def weight_difference(a, b) -> float:
    """Largest absolute difference between the floating-point weights of two runs (inf if they differ in shape)."""
    import torch

    first, second = a.model.state_dict(), b.model.state_dict()
    if first.keys() != second.keys():
        return math.inf
    worst = 0.0
    for name, value in first.items():
        other = second[name]
        if not isinstance(value, torch.Tensor):
            continue
        if value.shape != other.shape:
            return math.inf
        if value.is_floating_point():
            worst = max(worst, float((value.double() - other.double()).abs().max()) if value.numel() else 0.0)
        elif not torch.equal(value, other):
            return math.inf
    return worst


class PeakMemory:
    """Peak CUDA memory allocated by torch inside the block (None on a CPU)."""

    def __init__(self, cuda: bool):
        self.cuda, self.bytes = cuda, None

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.bytes = int(torch.cuda.max_memory_allocated())
        return False


def cli(*args: str) -> list[str]:
    """The package's command line, run by this interpreter."""
    return [sys.executable, "-m", "mini_decoders.cli", *args]


# ----------------------------------------------------------------------------- 1. precision
def closed_form_models() -> set[str]:
    """The registry's models fitted in closed form (no optimizer steps, hence no precision to check)."""
    from mini_decoders.models.baselines import ClosedFormDecoder
    from mini_decoders.models.registry import model_classes

    return {name for name, model_class in model_classes().items() if issubclass(model_class, ClosedFormDecoder)}


def check_precision(args, data: list[str], work: Path, device: str, cuda: bool) -> list[dict]:
    import mini_decoders as md
    from mini_decoders.models.registry import MODELS

    closed_form = closed_form_models()
    models = list(MODELS) if args.models == ["all"] else args.models
    rows = []
    for model in models:
        precisions = ("fp32",) if model in closed_form else PRECISIONS
        reference = None
        for precision in precisions:
            row = {"check": "precision", "model": model, "precision": precision}
            if model in closed_form:
                row["note"] = "closed form: no optimizer steps, no autocast"
            if precision == "fp16" and not cuda:
                row.update(status="skipped", note="fp16 with the grad scaler runs on CUDA only (the package refuses "
                                                  "fp16 on a CPU); this CPU run checks fp32 and bf16")
                rows.append(row)
                say(f"  {model:<9} {precision}: skipped (fp16 needs CUDA)")
                continue
            options = {} if model in closed_form else {"max_steps": args.steps, "precision": precision}
            started = time.perf_counter()
            try:
                with PeakMemory(cuda) as memory:
                    run = md.train(model, data, profile=args.profile, out=work / "runs" / f"{model}-{precision}",
                                   device=device, progress=False, **options)
            except Exception as error:  # one failing model must not hide the others
                row.update(status="failed", error=f"{type(error).__name__}: {str(error)[:500]}")
                rows.append(row)
                say(f"  {model:<9} {precision}: FAILED {row['error']}")
                continue
            training = run.metrics.get("training", {})
            row.update(seconds=round(time.perf_counter() - started, 2),
                       train_seconds=round(float(training.get("train_seconds", 0.0)), 3),
                       peak_memory_mb=None if memory.bytes is None else round(memory.bytes / 2**20, 1),
                       scores=judged_score(run))
            problems = []
            if model not in closed_form:
                stages = loss_stages(run)
                steps = sum(stage[-1][0] for stage in stages)
                losses = [loss for stage in stages for _, loss in stage]
                row.update(steps=steps, step_ms=round(1000 * row["train_seconds"] / max(steps, 1), 2),
                           first_loss=stages[0][0][1] if stages else None,
                           final_loss=stages[-1][-1][1] if stages else None,
                           loss_curve=[[s, round(v, 6)] for stage in stages for s, v in stage])
                if not losses or not all(math.isfinite(v) for v in losses):
                    problems.append("loss not finite")
                falling = [stage[-1][1] < stage[0][1] for stage in stages if len(stage) > 1]
                row["falling"] = bool(falling) and all(falling)
                if not row["falling"]:
                    problems.append("loss did not fall" + ("" if falling else " (fewer than 2 logged points)"))
                if precision == "fp32":
                    reference = row.get("final_loss")
                elif reference is not None and row.get("final_loss") is not None:
                    relative = abs(row["final_loss"] - reference) / max(abs(reference), 1e-12)
                    row["vs_fp32"] = round(relative, 5)
                    if relative > args.rtol:
                        problems.append(f"final loss {row['final_loss']:.5g} vs fp32 {reference:.5g}: "
                                        f"{relative:.1%} > rtol {args.rtol:.0%}")
            row["status"] = "failed" if problems else "passed"
            if problems:
                row["error"] = "; ".join(problems)
            rows.append(row)
            say(f"  {model:<9} {precision}: {row['status']} in {row['seconds']:.1f} s"
                + (f", loss {row['first_loss']:.4g} -> {row['final_loss']:.4g}" if row.get("final_loss") else "")
                + (f" ({row['error']})" if problems else ""))
    return rows


# ----------------------------------------------------------------------------- 2. resume
def check_resume(args, data: list[str], work: Path, device: str, cuda: bool) -> dict:
    """Ctrl-C (a real SIGINT) half-way through NDT1, then `mini-decoders train --resume`."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import mini_decoders as md

    row = {"check": "resume", "model": "ndt1", "precision": "auto", "steps": args.steps}
    common = dict(profile=args.profile, device=device, max_steps=args.steps, progress=False)
    straight = md.train("ndt1", data, out=work / "resume-straight", **common)
    cut = work / "resume-cut"
    at_step, calls = max(1, args.steps // 2), [0]

    def ctrl_c(optimizer, *_):
        calls[0] += 1
        if calls[0] == at_step:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; the Trainer saves a consistent checkpoint

    handle = register_optimizer_step_post_hook(ctrl_c)
    interrupted = False
    try:
        md.train("ndt1", data, out=cut, **common)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        handle.remove()
    row["interrupted_at_step"] = at_step if interrupted else None
    if not interrupted:
        row.update(status="failed", error="the run finished before the interrupt: nothing was resumed")
        return row
    started = time.perf_counter()
    result = subprocess.run(cli("train", "ndt1", "--data", *data, "--profile", args.profile, "--out", str(cut),
                                "--device", device, "--max-steps", str(args.steps), "--resume", "--quiet"),
                            capture_output=True, text=True, timeout=args.step_timeout)
    row["resume_seconds"] = round(time.perf_counter() - started, 2)
    if result.returncode != 0:
        row.update(status="failed", error=f"--resume exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return row
    resumed = md.load_run(cut)
    difference = weight_difference(straight, resumed)
    atol = args.resume_atol if args.resume_atol is not None else (1e-5 if cuda else 0.0)
    row.update(max_weight_difference=difference, bit_exact=difference == 0.0, atol=atol,
               same_scores=judged_score(straight) == judged_score(resumed))
    row["status"] = "passed" if difference <= atol else "failed"
    if row["status"] == "failed":
        row["error"] = f"resumed weights differ from the uninterrupted run's by up to {difference:.3g} > {atol:g}"
    return row


# ----------------------------------------------------------------------------- 3. DDP
DDP_SPY = '''
import json
import sys

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

wrapped, backends = [], []
original_init, original_group = DistributedDataParallel.__init__, dist.init_process_group


def spy_init(self, *args, **kwargs):
    wrapped.append(1)
    original_init(self, *args, **kwargs)


def spy_group(*args, **kwargs):
    result = original_group(*args, **kwargs)
    backends.append(str(dist.get_backend()))
    return result


DistributedDataParallel.__init__, dist.init_process_group = spy_init, spy_group
from mini_decoders.cli import main  # noqa: E402

code = main(sys.argv[1:])
print("DDP_SPY", json.dumps({"wrapped": len(wrapped), "backends": backends}))
sys.exit(code)
'''


def check_ddp(args, data: list[str], work: Path, device: str, cuda: bool) -> dict:
    """torchrun --nproc_per_node=1: the DDP code path (process group, wrapper) on one device."""
    import mini_decoders as md

    row = {"check": "ddp", "model": "ndt1", "precision": "auto", "steps": args.steps, "launcher": "torchrun"}
    spy = work / "ddp_spy.py"
    spy.write_text(DDP_SPY)
    train = ["train", "ndt1", "--data", *data, "--profile", args.profile, "--device", device,
             "--max-steps", str(args.steps), "--quiet"]
    plain = subprocess.run(cli(*train, "--out", str(work / "ddp-plain")), capture_output=True, text=True,
                           timeout=args.step_timeout)
    started = time.perf_counter()
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                               str(spy), *train, "--out", str(work / "ddp-torchrun")],
                              capture_output=True, text=True, timeout=args.step_timeout)
    row["seconds"] = round(time.perf_counter() - started, 2)
    for name, result in (("plain", plain), ("torchrun", launched)):
        if result.returncode != 0:
            row.update(status="failed", error=f"{name} run exited {result.returncode}: "
                                              f"{(result.stderr or result.stdout).strip()[-800:]}")
            return row
    spied = next((line for line in launched.stdout.splitlines() if line.startswith("DDP_SPY")), "DDP_SPY {}")
    seen = json.loads(spied.split(" ", 1)[1])
    row.update(ddp_wrapped=seen.get("wrapped", 0), backends=seen.get("backends", []))
    ddp, single = md.load_run(work / "ddp-torchrun"), md.load_run(work / "ddp-plain")
    difference = weight_difference(ddp, single)
    final = [loss_stages(run)[-1][-1][1] for run in (ddp, single)]
    relative = abs(final[0] - final[1]) / max(abs(final[1]), 1e-12)
    row.update(final_loss=final[0], plain_final_loss=final[1], vs_plain=round(relative, 6),
               max_weight_difference=difference)
    problems = []
    if not row["ddp_wrapped"]:
        problems.append("the model was not wrapped in DistributedDataParallel")
    if not all(math.isfinite(v) for v in final):
        problems.append("loss not finite")
    if relative > args.rtol:
        problems.append(f"final loss {final[0]:.5g} vs the plain run's {final[1]:.5g}")
    row["status"] = "failed" if problems else "passed"
    if problems:
        row["error"] = "; ".join(problems)
    return row


# ----------------------------------------------------------------------------- 4. chapters
def check_chapters(args, work: Path) -> list[dict]:
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    # A kernel of this very interpreter, whatever kernels the machine has installed.
    kernels = work / "jupyter" / "kernels" / "gpu-check"
    kernels.mkdir(parents=True, exist_ok=True)
    (kernels / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                              "{connection_file}"],
                                                     "display_name": "gpu check", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(work / "jupyter"), os.environ.get("JUPYTER_PATH")]))
    os.environ["MINI_DECODERS_PROFILE"] = args.profile
    rows = []
    for stem in args.chapters:
        row = {"check": "chapter", "model": stem, "profile": args.profile}
        folder = work / "chapters" / stem
        folder.mkdir(parents=True)
        nb = nbformat.read(str(ROOT / "notebooks" / f"{stem}.ipynb"), as_version=4)
        started = time.perf_counter()
        # Over IPC sockets, not TCP ports: no other kernel on the machine (a test run, a book
        # build) can take this one's ports in the gap between choosing and binding them.
        kernel = AsyncKernelManager(kernel_name="gpu-check", transport="ipc", ip=str(work / "chapters" / "kernel"))
        try:
            NotebookClient(nb, km=kernel, timeout=args.step_timeout if args.tiny else 1800,
                           resources={"metadata": {"path": str(folder)}}).execute()
            row["status"] = "passed"
        except Exception as error:  # CellExecutionError names the cell and the error
            row.update(status="failed", error=f"{type(error).__name__}: {str(error)[-800:]}")
        row["seconds"] = round(time.perf_counter() - started, 1)
        printed = "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                          for output in cell.get("outputs", []))
        row["skipped_sections"] = [line.strip() for line in printed.splitlines() if line.startswith("skipping")]
        rows.append(row)
        say(f"  chapter {stem}: {row['status']} in {row['seconds']:.0f} s")
    return rows


# ----------------------------------------------------------------------------- report
def table(rows: list[dict]) -> str:
    header = ("check", "model", "prec", "status", "steps", "loss first->final", "vs ref", "ms/step", "peak MB", "s")
    lines = []
    for row in rows:
        loss = (f"{row['first_loss']:.4g}->{row['final_loss']:.4g}" if row.get("first_loss") is not None
                else f"{row['final_loss']:.4g}" if row.get("final_loss") is not None else "")
        reference = row.get("vs_fp32", row.get("vs_plain", row.get("max_weight_difference", "")))
        lines.append((row["check"], row["model"], row.get("precision", row.get("profile", "")), row["status"],
                      str(row.get("steps", "")), loss, f"{reference:.3g}" if isinstance(reference, float) else "",
                      str(row.get("step_ms", "")), str(row.get("peak_memory_mb", "") or ""),
                      str(row.get("seconds", row.get("resume_seconds", "")))))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)) for line in [header, *lines]]
    notes = [f"- {row['check']} {row['model']} {row.get('precision', '')}: {row.get('error') or row.get('note')}"
             for row in rows if row.get("error") or (row["status"] == "skipped" and row.get("note"))]
    return "\n".join(out + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # Two shared cores: BLAS and torch threads spinning against each other make small models crawl.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
    import torch

    import mini_decoders

    if args.device == "cpu":
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cuda = args.device in ("auto", "cuda") and torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        print("error: --device cuda, but CUDA is not available here (use --device cpu)", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    environment = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()}, "
                                                              f"{torch.get_num_threads()} torch threads)",
        "bf16_supported": bool(torch.cuda.is_bf16_supported()) if cuda else True,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "mini_decoders": mini_decoders.__version__, "package_file": mini_decoders.__file__,
        "profile": args.profile, "steps": args.steps,
    }
    say(f"gpu check: {environment['device']} | torch {environment['torch']} | mini-decoders "
        f"{environment['mini_decoders']} | profile {args.profile}, {args.steps} steps per run")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict] = []
    try:
        # Data: the package's simulator through its command line, as NWB files every check shares.
        trials = "100" if args.tiny else "300"
        synth = subprocess.run(cli("data", "synth", "--out", str(work / "data"), "--sessions", "2", "--trials", trials),
                               capture_output=True, text=True, timeout=600)
        if synth.returncode != 0:
            print(f"error: data synth failed: {synth.stderr.strip()}", file=sys.stderr)
            return 1
        data = sorted(str(path) for path in (work / "data").glob("*.nwb"))
        say(f"data: {len(data)} simulated sessions of {trials} trials ({time.perf_counter() - started:.0f} s)")

        say("1. precision: fp32, bf16, fp16 + grad scaler")
        rows += check_precision(args, data, work, device, cuda)
        say("2. interrupt + --resume")
        rows.append(check_resume(args, data, work, device, cuda))
        say(f"  resume: {rows[-1]['status']}" + (f" ({rows[-1]['error']})" if rows[-1].get("error") else ""))
        say("3. torchrun --nproc_per_node=1 (DDP)")
        rows.append(check_ddp(args, data, work, device, cuda))
        say(f"  ddp: {rows[-1]['status']}" + (f" ({rows[-1]['error']})" if rows[-1].get("error") else ""))
        if not args.chapters:
            say("4. chapters: none asked for (--skip-notebooks)")
        else:
            say(f"4. chapters {', '.join(args.chapters)} ({args.profile} profile) with nbclient")
            rows += check_chapters(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    failed = [row for row in rows if row["status"] == "failed"]
    result = {"format": "mini_decoders.gpu_check/1", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "environment": environment, "seconds": round(total, 1), "passed": not failed, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print()
    print(table(rows))
    print(f"\n{'all checks passed' if not failed else f'{len(failed)} check(s) FAILED'} in {total:.0f} s "
          f"on {environment['device']}; results in {args.json}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
