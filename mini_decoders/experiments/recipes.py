"""The recipe ladder: what each of this book's changes to a paper's method buys, measured one at a time.

For every transformer the package has the paper's recipe and its own default recipe, one named
change (a :class:`~mini_decoders.models.recipes.Departure`) apart at a time. The ladder trains,
on the same data with the same seed and each recipe's own number of steps:

    paper  ->  paper + change 1  ->  ...  ->  paper + change k (each alone)  ->  default

and scores each on the test trials with the model's judged metric (co-bps for rate models,
velocity R² for decoders), next to the classic baseline and the oracle. One command runs it::

    mini-decoders benchmark --recipe-ladder --models smoothing,ridge,ndt1 --profile quick --json L.json

(``make ladder`` runs every model). A chapter reads the JSON (``MINI_DECODERS_LADDER_JSON``) and
shows :func:`departures_markdown`; the numbers come from that run, with its provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mini_decoders.experiments.benchmark import run_benchmark
from mini_decoders.experiments.cells import cell_label, row_label
from mini_decoders.experiments.report import table_provenance
from mini_decoders.metrics import METRIC_LABELS
from mini_decoders.models.recipes import DEFAULT, PAPER
from mini_decoders.models.registry import classic_baseline, get_model

LADDER_ENV = "MINI_DECODERS_LADDER_JSON"
# what a ladder table that did not record its command was made by
LADDER_COMMAND = "mini-decoders benchmark --recipe-ladder"


def run_ladder(models: str | list[str], data=None, profile: str | None = None, json_path=None, *, work=None,
               seed: int = 0, threads: int | None = None, isolate: bool = True, log=print) -> dict:
    """Every ladder step of ``models`` (plus the classic baseline each is judged against) as one benchmark.

    Each recipe trains for its own number of steps (no shared wall-clock budget) and the
    inference-cost sweeps are left out: the ladder measures scores, not speed.

    Returns:
        the benchmark table (see :func:`mini_decoders.experiments.benchmark.run_benchmark`).
    """
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    baselines = [classic_baseline(get_model(m).JUDGED_ON) for m in names]
    names = list(dict.fromkeys([b for b in baselines if b] + names))
    return run_benchmark(data, names, profile, json_path, work=work, seed=seed, budget_seconds=0, threads=threads,
                         isolate=isolate, costs=False, ladder=True, log=log)


def load_ladder(path: str | os.PathLike | None = None) -> dict | None:
    """The ladder table at ``path`` (default: ``$MINI_DECODERS_LADDER_JSON``); None when there is none."""
    path = path or os.environ.get(LADDER_ENV, "").strip()
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def ladder_effects(table: dict, model: str) -> dict[str, Any] | None:
    """The scores of ``model``'s ladder in ``table``, and each change's effect on its own.

    Returns:
        ``{"metric", "paper", "default", "baseline", "oracle", "changes": {key: {"score", "effect"}}}``
        (``effect`` = score with the change added to the paper's recipe minus the paper's score; None
        where a row is missing or failed); None when the table has no row of ``model``'s paper recipe.
    """
    model_class = get_model(model)
    metric = model_class.JUDGED_ON or "co_bps"
    rows = {row_label(row): row for row in table.get("rows", []) if row.get("status") == "ok"}

    def score(label: str) -> float | None:
        row = rows.get(label)
        return None if row is None else row.get(metric)

    paper = score(cell_label(model, PAPER))
    if cell_label(model, PAPER) not in rows:
        return None
    changes = {}
    for departure in model_class.DEPARTURES:
        value = score(cell_label(model, f"{PAPER}+{departure.key}"))
        changes[departure.key] = {"score": value,
                                  "effect": None if value is None or paper is None else value - paper}
    baseline = classic_baseline(metric)
    oracle = table.get("oracle") or {}
    return {"metric": metric, "paper": paper, "default": score(cell_label(model, DEFAULT)),
            "baseline": score(baseline) if baseline else None, "baseline_name": baseline,
            "oracle": oracle.get(metric), "changes": changes}


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
    return str(value)


def departures_markdown(model: str, profile: str | None = None, table: dict | None = None) -> str:
    """A Markdown table of ``model``'s changes from its paper: what, paper vs this book, why, and the
    measured effect of each change alone (from a ladder ``table``; a dash where there is none).

    Args:
        profile: whose config values to show (default: the table's profile, else ``quick``).
    """
    model_class = get_model(model)
    profile = profile or (table or {}).get("profile") or "quick"
    paper, default = model_class.recipe_config(profile, PAPER), model_class.recipe_config(profile, DEFAULT)
    effects = ladder_effects(table, model) if table else None
    metric = model_class.JUDGED_ON or "co_bps"
    label = METRIC_LABELS.get(metric, metric)
    lines = [f"| change | the paper | this book | config (paper → book, {profile}) | {label}: paper + this change − paper |",
             "|---|---|---|---|---|"]
    for departure in model_class.DEPARTURES:
        keys = "; ".join(f"`{k}` {_value(paper.get(k))} → {_value(default.get(k))}" for k in departure.config_keys
                         if paper.get(k) != default.get(k)) or "same in this profile"
        effect = (effects or {}).get("changes", {}).get(departure.key, {}).get("effect")
        lines.append(f"| **{departure.title}** ({departure.why}) | {departure.paper} | {departure.ours} | {keys} | "
                     f"{'–' if effect is None else f'{effect:+.4f}'} |")
    if effects:
        def show(value: float | None) -> str:
            return "–" if value is None else f"{value:.4f}"
        lines.append("")
        # co-bps of the true rates is the best any model can do; a ridge from the true rates to
        # velocity is only a reference (a better decoder of the same rates can beat it)
        reference = "oracle (true rates)" if metric.endswith("bps") else "ridge from the true rates"
        lines.append(f"{label}: paper's recipe {show(effects['paper'])}, this book's {show(effects['default'])}, "
                     f"{effects['baseline_name']} {show(effects['baseline'])}, {reference} {show(effects['oracle'])}; "
                     f"{table_provenance(table, LADDER_COMMAND)}.")
    return "\n".join(lines)
