"""The ``mini-decoders`` command line (DESIGN §6).

Every subcommand is a thin layer over the Python API, so anything the command line does a
notebook can do too. Errors in the user's input are printed as one ``error: ...`` line with a
non-zero exit code; a traceback is shown only with ``MINI_DECODERS_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from mini_decoders.errors import MiniDecodersError  # no dependencies: safe to import before main's try
from mini_decoders.models.registry import MODELS  # names only: no model (and no torch) is imported

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Each command imports what it runs when it runs (torch, pynwb and the models take seconds to load):
# the command line parses its arguments, answers --help and handles Ctrl-C before they load.


def _sessions(paths: list[str]):
    from mini_decoders.data.nwb import read_nwb

    return [read_nwb(p) for p in paths]


# ---------------------------------------------------------------------------------- data
def cmd_data_synth(args: argparse.Namespace) -> int:
    from mini_decoders.data.synth import write_synthetic

    extra = {} if args.array_drift is None else {"array_drift": args.array_drift}
    paths = write_synthetic(args.out, n_sessions=args.sessions, seed=args.seed, n_trials=args.trials, **extra)
    for path in paths:
        print(path)
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mini_decoders.data.registry import DandiEntry, fetch, fetch_dandi, get_entry

    entry = get_entry(args.name)
    if args.dry_run:
        if isinstance(entry, DandiEntry):
            present = fetch_dandi(args.name, args.cache, dry_run=True)
            print(f"{entry.name}: would download {entry.url} ({entry.size_note or 'size: see ' + entry.doi}) into "
                  f"{entry.local_dir(args.cache)} with the DANDI client; {len(present)} file(s) already there")
        else:
            from mini_decoders.data.registry import cache_dir, verify_file

            cache = Path(args.cache).expanduser() if args.cache else cache_dir()
            missing = [f for f in entry.files if not verify_file(cache / f.path, f)]
            print(f"{entry.name}: {len(entry.files) - len(missing)} of {len(entry.files)} file(s) verified in {cache}; "
                  f"would download {len(missing)} ({sum(f.size for f in missing) / 1e6:.2f} MB)")
        return 0
    for path in fetch(args.name, cache=args.cache, total_timeout=args.timeout):
        print(path)
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from mini_decoders.data.registry import REGISTRY, DandiEntry

    for name, entry in REGISTRY.items():
        size = (entry.size_note or "DANDI set") if isinstance(entry, DandiEntry) else f"{entry.size / 1e6:.2f} MB"
        print(f"{name:<18} {size:<22} {entry.licence:<32} {entry.description}")
    print("fetch one with `mini-decoders data fetch NAME` (the NLB sets need the DANDI client: "
          "pip install 'mini-decoders[dandi]')")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from mini_decoders.data.nwb import describe_nwb

    print(describe_nwb(args.file))
    return 0


# ---------------------------------------------------------------------------------- runs
def cmd_train(args: argparse.Namespace) -> int:
    from mini_decoders.run import train

    run = train(args.model, args.data, profile=args.profile, out=args.out, recipe=args.recipe, device=args.device,
                max_steps=args.max_steps, seed=args.seed, resume=args.resume, progress=not args.quiet,
                precision=args.precision)
    print(f"run written to {run.path}")
    print(json.dumps(run.metrics.get("mean", {}), indent=2))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from mini_decoders.run import load_run

    run = load_run(args.run).finetune(args.data, mode=args.mode, out=args.out, profile=args.profile,
                                      max_steps=args.max_steps, seed=args.seed, progress=not args.quiet)
    print(f"fine-tuned run written to {run.path}")
    print(json.dumps(run.metrics.get("mean", {}), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mini_decoders.run import load_run

    run = load_run(args.run)
    path = run.write_predictions(_sessions(args.data), args.out)
    print(f"predictions written to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mini_decoders.files import write_json_atomic
    from mini_decoders.run import load_run

    run = load_run(args.run)
    scores = run.evaluate(_sessions(args.data), split=args.split)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, scores)
    print(json.dumps(scores, indent=2))
    return 0


# ---------------------------------------------------------------------------------- benchmark
def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.token_lab and args.scaling:
        raise MiniDecodersError("benchmark: give --token-lab or --scaling, not both")
    if args.token_lab:
        return cmd_token_lab(args)
    if args.scaling:
        return cmd_scaling(args)
    if args.json is None:
        raise MiniDecodersError("benchmark: --json OUT.json is required (the table is written there)")
    from mini_decoders.experiments.benchmark import run_benchmark
    from mini_decoders.experiments.report import format_table, format_transfer
    from mini_decoders.experiments.transfer import parse_counts, parse_fractions

    transfer = "only" if args.transfer_only else bool(args.transfer)
    if transfer and (args.pretrain_sessions or args.fractions):
        options = {"only": True} if transfer == "only" else {}
        if args.pretrain_sessions:
            options["pretrain_counts"] = parse_counts(args.pretrain_sessions)
        if args.fractions:
            options["fractions"] = parse_fractions(args.fractions)
        transfer = options
    table = run_benchmark(args.data, args.models, args.profile, args.json, args.plot, work=args.work, seed=args.seed,
                          max_steps=args.max_steps,
                          budget_seconds="auto" if args.budget_seconds is None else args.budget_seconds,
                          device=args.device, threads=args.threads, isolate=not args.in_process, transfer=transfer,
                          costs=not args.no_costs, progress=not args.quiet, recipe=args.recipe,
                          ladder=args.recipe_ladder, command=shlex.join(["mini-decoders", *args.argv]), log=print)
    if table["rows"]:  # --transfer-only has no model rows, hence no table to print
        print(format_table(table))
    if table.get("transfer"):
        print(format_transfer(table["transfer"]))
    print(f"table written to {args.json}" + (f", plot to {args.plot}" if args.plot else ""))
    return 0


def cmd_token_lab(args: argparse.Namespace) -> int:
    from mini_decoders.experiments.report import format_token_lab
    from mini_decoders.experiments.token_lab import run_token_lab
    from mini_decoders.files import write_json_atomic
    from mini_decoders.training.profiles import resolve_profile

    profile = resolve_profile(args.profile)
    work = args.work or (str(Path(args.json).with_suffix(".work")) if args.json else "token_lab.work")
    table = run_token_lab(args.data, profile, args.seed, work=work, device=args.device or "cpu", log=print)
    print(format_token_lab(table))
    if args.json:
        write_json_atomic(Path(args.json), table)
        print(f"table written to {args.json}")
    return 0 if table["params_within_10pct"] else 1


def cmd_scaling(args: argparse.Namespace) -> int:
    from mini_decoders.experiments.report import format_scaling
    from mini_decoders.experiments.scaling import SCALING_PROFILES, run_scaling, write_scaling
    from mini_decoders.training.profiles import resolve_profile

    profile = resolve_profile(args.profile)
    if profile not in SCALING_PROFILES:
        raise MiniDecodersError(f"benchmark --scaling: --profile must be one of {', '.join(SCALING_PROFILES)}, "
                                f"got {profile!r}")
    json_path = Path(args.json or "scaling.json")
    work = args.work or str(json_path.with_name(json_path.stem + ".work"))
    seeds = [args.seed + i for i in range(SCALING_PROFILES[profile]["seeds"])]
    table = run_scaling(args.data, profile, seeds=seeds, models=args.models, work=work,
                        device=args.device or "cpu", log=print)
    table["command"] = shlex.join(["mini-decoders", *args.argv])
    _, plot_path = write_scaling(table, json_path, args.plot)
    print(format_scaling(table))
    print(f"table written to {json_path}, plot to {plot_path}")
    return 0


# ---------------------------------------------------------------------------------- course
def cmd_course_editions(args: argparse.Namespace) -> int:
    from mini_decoders.course import build_editions

    written = build_editions(args.out, root=args.root, include_drafts=args.drafts, repo_path=args.repo_path)
    for edition, paths in written.items():
        print(f"{edition}: {len(paths)} notebooks in {Path(args.out) / edition}")
    return 0


def cmd_course_verify(args: argparse.Namespace) -> int:
    from mini_decoders.course import EXERCISES, verify

    problems = verify([Path(p) for p in args.notebooks] or None, root=args.root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(EXERCISES)} exercises, every stub's signature equals its solution's")
    return 0


def cmd_course_grade(args: argparse.Namespace) -> int:
    from mini_decoders.course import grade

    report = grade(args.submission, args.assignment, cell_timeout=args.timeout)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_course_list(args: argparse.Namespace) -> int:
    from mini_decoders.course import EXERCISES

    for item in EXERCISES.values():
        graded = f"assignment {item.assignment}, {item.points} points" if item.assignment else "exercise"
        planned = " (planned)" if item.planned else ""
        print(f"{item.source:<28} {item.check_name:<32} {item.function:<24} {graded}{planned}")
    return 0


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mini-decoders", description="Transformers for brain decoding.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make, fetch or inspect data").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write simulated NWB sessions (NLB layout) and their true rates")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--sessions", type=int, default=3, help="number of sessions (default 3)")
    synth.add_argument("--trials", type=int, default=None, help="trials per session (default: the simulator's)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--array-drift", type=float, default=None, metavar="D",
                       help="sessions of one subject record the same units (one array over days), their tuning "
                            "drifting by D in [0, 1] (default: every session has its own units)")
    synth.set_defaults(func=cmd_data_synth)
    fetch = data.add_parser("fetch", help="download a real dataset by name and verify its checksum")
    fetch.add_argument("name")
    fetch.add_argument("--cache", default=None, help="cache folder (default $MINI_DECODERS_DATA or ~/.cache/mini_decoders)")
    fetch.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="give up on a file after S seconds, every attempt included (default "
                            "$MINI_DECODERS_FETCH_TIMEOUT or 60)")
    fetch.add_argument("--dry-run", action="store_true", help="say what would be downloaded; download nothing")
    fetch.set_defaults(func=cmd_data_fetch)
    listing = data.add_parser("list", help="the registered real datasets: size, licence, what they hold")
    listing.set_defaults(func=cmd_data_list)
    info = data.add_parser("info", help="summarise an NWB file, or say why it cannot be used")
    info.add_argument("file")
    info.set_defaults(func=cmd_data_info)

    train = sub.add_parser("train", help="train a model")
    train.add_argument("model", help=f"{', '.join(list(MODELS)[:-1])} or {list(MODELS)[-1]}")
    train.add_argument("--data", nargs="+", required=True, help="NWB files")
    train.add_argument("--profile", default=None, help="tiny | quick | full | auto (default: $MINI_DECODERS_PROFILE or auto)")
    train.add_argument("--out", default=None, help="RUN folder (default runs/<model>)")
    train.add_argument("--recipe", default=None,
                       help="default (what works best on small data) | paper (the method as published, sized by "
                            "the profile) | paper+CHANGE | default-CHANGE (one change measured on its own)")
    train.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                       help="auto (default: bf16 on a GPU that has it, else fp16 with a gradient scaler; fp32 on a "
                            "CPU) | fp32 | bf16 | fp16 (CUDA only)")
    train.add_argument("--seed", type=int, default=None,
                       help="the run's seed (default 0; with --resume, the run's own seed: another one is refused)")
    train.add_argument("--resume", action="store_true", help="continue from the RUN folder's checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    finetune = sub.add_parser("finetune", help="adapt a run to new sessions (new units)")
    finetune.add_argument("run")
    finetune.add_argument("--data", nargs="+", required=True, help="NWB files of the new session(s)")
    finetune.add_argument("--mode", choices=["units", "full"], default="units",
                          help="units: learn only the new unit/session embeddings (unit identification); full: everything")
    finetune.add_argument("--out", required=True, help="the new RUN folder")
    finetune.add_argument("--profile", default=None, help="take the fine-tuning recipe of this profile")
    finetune.add_argument("--max-steps", type=int, default=None)
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--quiet", action="store_true")
    finetune.set_defaults(func=cmd_finetune)

    predict = sub.add_parser("predict", help="write PRED.h5 (NLB-style) for every trial")
    predict.add_argument("run")
    predict.add_argument("--data", nargs="+", required=True)
    predict.add_argument("--out", required=True)
    predict.set_defaults(func=cmd_predict)

    evaluate = sub.add_parser("eval", help="score a run on data (co-bps, fp-bps, vel R², PSTH R²)")
    evaluate.add_argument("run")
    evaluate.add_argument("--data", nargs="+", required=True)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--json", default=None, help="also write the scores to this file")
    evaluate.set_defaults(func=cmd_eval)

    bench = sub.add_parser("benchmark", help="every model on the same data, budget and seeds: one JSON table")
    bench.add_argument("--models", default=None,
                       help=f"comma-separated (default: {','.join(MODELS)})")
    bench.add_argument("--data", nargs="+", default=None,
                       help="NWB files (default: simulated sessions written to the work folder)")
    bench.add_argument("--profile", default=None, help="tiny | quick | full | auto (default: $MINI_DECODERS_PROFILE or auto)")
    bench.add_argument("--json", default=None,
                       help="the table (written atomically; required but with --token-lab and --scaling)")
    bench.add_argument("--token-lab", action="store_true",
                       help="the token lab instead: one backbone, five tokenizers (spikes, bins, patches, VQ codes, "
                            "convolution), matched parameter counts")
    bench.add_argument("--scaling", action="store_true",
                       help="the data-scaling curve instead: test score against the number of training trials "
                            "(baselines, transformers, pretrained transformers), several seeds, error bars; "
                            "--json defaults to scaling.json")
    bench.add_argument("--plot", default=None,
                       help="a PNG: scores vs compute, cost vs work (with --scaling: the curves; default: the "
                            "--json path with .png)")
    bench.add_argument("--work", default=None,
                       help="work folder with one row per model; a rerun skips finished rows (default: <json>.work)")
    bench.add_argument("--seed", type=int, default=0,
                       help="the seed of every model (with --scaling: the first of the seeds)")
    bench.add_argument("--recipe", default=None,
                       help="the recipe of every model that has one: default | paper | paper+CHANGE | default-CHANGE")
    bench.add_argument("--recipe-ladder", action="store_true",
                       help="for each model: its paper recipe, the paper's plus each of our changes alone, and the "
                            "default (what each change buys, one row each)")
    bench.add_argument("--max-steps", type=int, default=None, help="the same number of steps for every gradient model")
    bench.add_argument("--budget-seconds", type=float, default=None,
                       help="the same training wall-clock for every gradient model (default: the profile's; "
                            "0: each model's own recipe)")
    bench.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    bench.add_argument("--threads", type=int, default=None, help="torch/BLAS threads per model")
    bench.add_argument("--in-process", action="store_true",
                       help="train every model in this process (default: one process per model)")
    bench.add_argument("--transfer", action="store_true",
                       help="also pretrain on N sessions and adapt to the last one with k%% of its trials")
    bench.add_argument("--transfer-only", action="store_true", help="the transfer experiment alone (no model rows)")
    bench.add_argument("--pretrain-sessions", default=None, help="transfer: N values, e.g. 1,3")
    bench.add_argument("--fractions", default=None, help="transfer: k values as fractions, e.g. 0.1,0.3,1")
    bench.add_argument("--no-costs", action="store_true",
                       help="leave out the inference-cost sweeps (time vs window length, spikes, neurons)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars in the model logs")
    bench.set_defaults(func=cmd_benchmark)

    course = sub.add_parser("course", help="coursework: editions, exercise verifier, autograder").add_subparsers(
        dest="course_command", required=True)
    editions = course.add_parser("editions", help="write student (stubs) and instructor (solutions) notebooks")
    editions.add_argument("--out", required=True, help="output folder (gets student/ and instructor/)")
    editions.add_argument("--drafts", action="store_true", help="also the draft chapters in notebooks/drafts")
    editions.add_argument("--repo-path", default=None,
                          help="folder the Colab badges point at, relative to the repository (default: --out)")
    editions.add_argument("--root", default=None, help="repository root (default: this checkout)")
    editions.set_defaults(func=cmd_course_editions)
    verify = course.add_parser("verify", help="check the exercise cells; fails if a stub's signature drifts")
    verify.add_argument("notebooks", nargs="*", help="notebooks to check (default: chapters, drafts, coursework)")
    verify.add_argument("--root", default=None, help="repository root (default: this checkout)")
    verify.set_defaults(func=cmd_course_verify)
    grade = course.add_parser("grade", help="run a submitted assignment notebook and score it")
    grade.add_argument("submission", help="the student's .ipynb")
    grade.add_argument("--assignment", type=int, required=True, help="1, 2 or 3")
    grade.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    grade.add_argument("--json", default=None, help="also write the report to this file")
    grade.set_defaults(func=cmd_course_grade)
    listing = course.add_parser("list", help="list the exercises and graded items")
    listing.set_defaults(func=cmd_course_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    debug = os.environ.get("MINI_DECODERS_DEBUG") == "1"
    try:
        # Inside the try: a Ctrl-C while the heavy libraries (torch, pynwb) load is an interrupt too.
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser().parse_args(argv)
        args.argv = argv  # a table records the command that made it (its provenance)
        return args.func(args)
    except MiniDecodersError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, PermissionError, IsADirectoryError) as error:
        if debug:
            raise
        print(f"error: {error.strerror or error}: {error.filename}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # a bug: say so in one line, keep the traceback behind a switch
        if debug:
            raise
        print(f"error: unexpected {type(error).__name__}: {error} (rerun with MINI_DECODERS_DEBUG=1 "
              "for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
