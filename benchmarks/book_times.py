"""Each chapter's measured run time beside the budget its introduction states (after `make book`).

    python benchmarks/book_times.py                      # reads _build/jupyter_execute
    python benchmarks/book_times.py --executed DIR --strict

Prints one line per chapter and the total; ``--strict`` exits 1 when a chapter ran over its budget
or has no measured time. Then every run the build trained (the run cache, ``_build/run_cache``):
model, recipe, sessions and training seconds against the 5-minute budget of a model's quick
training (DESIGN; issue 24). The budgets are for the quick profile on a 2-core CPU (what `make book`
runs on this project's machines); on another machine read the numbers, not the verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mini_decoders.run_time import book_times, cached_training_times  # noqa: E402

TRAINING_BUDGET_SECONDS = 300.0  # a model's quick training on 2 cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", default=str(ROOT / "_build" / "jupyter_execute"),
                        help="the executed notebooks (default: _build/jupyter_execute)")
    parser.add_argument("--chapters", default=str(ROOT / "notebooks"), help="the chapters' folder")
    parser.add_argument("--runs", default=str(ROOT / "_build" / "run_cache"),
                        help="the build's run cache (default: _build/run_cache)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget does not hold")
    args = parser.parse_args(argv)
    chapters = sorted(Path(args.chapters).glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        print(f"book_times: no chapters (NN_name.ipynb) in {args.chapters}", file=sys.stderr)
        return 2
    rows = book_times(chapters, Path(args.executed))
    total_seconds = total_budget = 0.0
    print(f"{'chapter':<36} {'measured':>10} {'budget':>8}  verdict")
    for row in rows:
        seconds, budget = row["seconds"], row["budget_minutes"]
        total_seconds += seconds or 0.0
        total_budget += budget or 0.0
        verdict = ("not executed" if seconds is None else "no budget stated" if budget is None
                   else "held" if row["held"] else "OVER")
        if seconds is not None and row["profile"] != "quick":
            verdict += f" ({row['profile']} profile: the budgets are for quick)"
        shown = "-" if seconds is None else f"{seconds / 60:.1f} min"
        print(f"{row['chapter']:<36} {shown:>10} {('-' if budget is None else f'{budget:g} min'):>8}  {verdict}")
    print(f"{'total':<36} {total_seconds / 60:>6.1f} min {total_budget:>4g} min")
    runs = cached_training_times(Path(args.runs))
    if runs:
        print(f"\n{'run (model, recipe, sessions)':<44} {'training':>10}  verdict (<= {TRAINING_BUDGET_SECONDS:.0f} s)")
        for run in runs:
            label = f"{run['model']} {run['recipe']} on {', '.join(run['sessions'])}"
            verdict = "held" if run["train_seconds"] <= TRAINING_BUDGET_SECONDS else "OVER"
            print(f"{label[:44]:<44} {run['train_seconds']:>8.0f} s  {verdict}")
    broken = [row for row in rows if not row["held"]]
    broken += [run for run in runs if run["train_seconds"] > TRAINING_BUDGET_SECONDS]
    return 1 if args.strict and broken else 0


if __name__ == "__main__":
    sys.exit(main())
