"""Reports: the results of the experiments as text and pictures.

- the side-by-side benchmark (:mod:`mini_decoders.experiments.benchmark`): :func:`format_table`
  (what the command prints), :func:`plot_benchmark` (scores against compute, costs against work)
  and :func:`table_provenance` (how and when a saved table was made, for a page that shows it);
- the transfer experiment (:mod:`mini_decoders.experiments.transfer`): :func:`format_transfer` and
  :func:`plot_transfer` (accuracy against k and against N);
- the token lab (:mod:`mini_decoders.experiments.token_lab`): :func:`format_token_lab`, with its cost
  exponents (:func:`format_cost_scaling`);
- the data-scaling curve (:mod:`mini_decoders.experiments.scaling`): :func:`format_scaling` (its
  picture is :func:`mini_decoders.experiments.scaling.plot_scaling`).

matplotlib is imported by the functions that draw: the package must import (and the command
line start) on a machine without a display or without matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mini_decoders.experiments.cells import row_label
from mini_decoders.files import replacing
from mini_decoders.metrics import METRIC_LABELS, METRICS
from mini_decoders.models.registry import MODELS
from mini_decoders.viz_scores import ORACLE_STYLE


# ================================================================================================
# The benchmark

def format_table(table: dict) -> str:
    """The table as aligned text (what the command prints)."""
    width = max([10] + [len(row_label(row)) for row in table["rows"] if row.get("model")])
    columns = [("model", width, "s"), ("token", 24, "s"), ("co_bps", 7, ".3f"), ("fp_bps", 7, ".3f"),
               ("vel_r2", 7, ".3f"), ("psth_r2", 7, ".3f"), ("params", 9, ",d"), ("train_seconds", 8, ".1f"),
               ("samples_per_second", 9, ".0f"), ("peak_memory_mb", 8, ".0f"), ("beats_baseline", 8, "s")]
    heads = {"train_seconds": "train s", "samples_per_second": "samples/s", "peak_memory_mb": "peak MB",
             "beats_baseline": "beats"}
    lines = ["  ".join(f"{heads.get(name, name):>{width}}" for name, width, _ in columns)]
    for row in table["rows"] + ([table["oracle"]] if table.get("oracle") else []):
        cells = []
        for name, width, spec in columns:
            value = row_label(row) if name == "model" and row.get("model") else row.get(name)
            if row.get("status") == "error" and name in METRICS:
                text = "error" if name == "co_bps" else ""
            elif value is None:
                text = "-"
            elif spec == "s":
                text = str(value)[:width]
            else:
                text = format(value, spec)
            cells.append(f"{text:>{width}}")
        lines.append("  ".join(cells))
    for name, error in table["summary"]["failed"].items():
        lines.append(f"{name}: {error}"[:300])
    summary = table["summary"]
    bars = {row["model"]: row["model_bar"] for row in table["rows"] if row.get("model_bar") not in (None, 1.0)}
    bars_text = "".join(f"{model} {bar}x, " for model, bar in bars.items()) + "else > 1x"
    lines.append(f"every row finite: {summary['every_row_finite']}; every transformer beats its baseline: "
                 f"{summary['transformers_beat_baselines']}; meets its model issue's bar ({bars_text}): "
                 f"{summary.get('transformers_meet_model_bars')}")
    return "\n".join(lines)


def format_token_lab(table: dict) -> str:
    """The token lab as aligned text: one row per tokenizer, the oracle, and the parameter spread."""
    columns = [("token", 8, "s"), ("width", 5, "d"), ("co_bps", 7, ".3f"), ("vel_r2", 7, ".3f"),
               ("tokens_per_second", 9, ".0f"), ("train_seconds", 8, ".1f"), ("seconds_per_step", 8, ".3f"),
               ("peak_memory_mb", 8, ".0f"), ("tokenizer_params", 9, ",d"), ("shared_params", 9, ",d"),
               ("params", 9, ",d")]
    heads = {"tokens_per_second": "tokens/s", "train_seconds": "train s", "seconds_per_step": "s/step",
             "peak_memory_mb": "peak MB", "tokenizer_params": "own par", "shared_params": "shared"}
    oracle = dict(table["oracle"] or {}, token="oracle")
    lines = ["  ".join(f"{heads.get(name, name):>{width}}" for name, width, _ in columns)]
    for row in table["rows"] + ([oracle] if table.get("oracle") else []):
        cells = [("-" if row.get(name) is None else format(row[name], spec)) for name, _, spec in columns]
        lines.append("  ".join(f"{text[:width]:>{width}}" for text, (_, width, _) in zip(cells, columns)))
    if table.get("scaling"):
        lines += format_cost_scaling(table["scaling"]).splitlines()
    lines.append(f"profile {table['profile']}, {table['steps']} steps of {table['batch_size']} trials, seed "
                 f"{table['seed']}; parameter spread (max/min - 1): {table['param_spread']:.1%} "
                 f"({'within' if table['params_within_10pct'] else 'NOT within'} 10%); {table['seconds']:.0f} s in all")
    return "\n".join(lines)


def format_scaling(table: dict) -> str:
    """The scaling curves as aligned text: one row per curve (mean ± std over seeds at each count),
    where each crosses its baseline, the oracle, and how the curves were made."""
    counts = table["trial_counts"]
    crossings = {(c["model"], c["pretrained"]): c for c in table.get("crossings", [])}
    labels = [curve["model"] + ("+pretrained" if curve.get("pretrained") else "") for curve in table["curves"]]
    width = max([8] + [len(label) for label in labels])
    head = (f"{'model':<{width}}  {'metric':<6}  " + "  ".join(f"{f'n={n}':>13}" for n in counts)
            + f"  {'vs':>9}  {'crosses at':>10}  {'margin':>7}")
    lines = [head]
    for label, curve in zip(labels, table["curves"]):
        by_n = {p["n_trials"]: p for p in curve["points"]}
        cells = []
        for n in counts:
            point = by_n.get(n) or {}
            if point.get("mean") is None:
                cells.append("-")
            else:
                cells.append(f"{point['mean']:.3f}" + ("" if point.get("std") is None else f"±{point['std']:.3f}"))
        crossing = crossings.get((curve["model"], bool(curve.get("pretrained"))))
        if crossing is None:
            versus, at, margin = "baseline", "", ""
        else:
            versus = crossing["baseline"]
            at = "never" if crossing["n_trials"] is None else str(crossing["n_trials"])
            margin = "" if crossing["margin_at_largest"] is None else f"{crossing['margin_at_largest']:+.3f}"
        lines.append(f"{label:<{width}}  {curve['metric']:<6}  " + "  ".join(f"{c:>13}" for c in cells)
                     + f"  {versus:>9}  {at:>10}  {margin:>7}")
    if table.get("oracle"):
        lines.append("oracle (true rates): " + ", ".join(f"{k} {v:.3f}" for k, v in table["oracle"].items()
                                                           if v is not None))
    for error in table.get("errors", []):
        lines.append(f"error in {error['cell']}: {error['error']}"[:300])
    steps = ", ".join(f"{m} {s}" for m, s in table.get("steps", {}).items() if s is not None) or "none"
    pretrain = table.get("pretrain") or {}
    pre = (f"; pretrained on {', '.join(table['pretrain_sessions'])} for "
           + ", ".join(f"{m} {s}" for m, s in pretrain.get("steps", {}).items()) + " steps"
           + (" per seed" if pretrain.get("per_seed") else " (once, first seed)")
           + f", then fine-tuned ({pretrain.get('finetune_mode')}) for the same steps as from scratch"
           if table.get("pretrain_sessions") else "")
    skipped = (f"; counts {table['skipped_trial_counts']} left out (only {table.get('train_trials_available')} "
               "train trials)" if table.get("skipped_trial_counts") else "")
    lines.append(f"profile {table['profile']}: scores on the {table.get('test_trials', '?')} test trials of "
                 f"{table.get('target_session')!r}, mean ± std over seeds {table['seeds']}; steps: {steps}{pre}"
                 f"{skipped}; {table.get('seconds', 0.0):.0f} s in all")
    return "\n".join(lines)


def format_cost_scaling(scaling: dict) -> str:
    """The token lab's cost exponents (:func:`~mini_decoders.experiments.token_lab.cost_scaling`) as aligned text.

    One row per tokenizer; for each sweep (neurons, firing rate, window length) the exponent ``k`` of
    tokens, seconds and saved activations per training step (each grows like ``x**k``).
    """
    sweeps = ("neurons", "rate", "window")
    measures = (("tokens", "exponent_tokens"), ("seconds", "exponent_seconds"), ("activations", "exponent_saved"))
    first = next(iter(scaling.values()))
    ranges = ", ".join(f"{sweep} {_span(first[sweep]['x'])}" for sweep in sweeps)
    width = 7 * len(sweeps) + len(sweeps) - 1
    lines = [f"cost per training step ~ x^k, k fitted on log-log axes: x = held-in neurons, firing rate (Hz) or "
             f"window (s)", f"({ranges}); activations: what autograd keeps for the backward pass",
             f"{'':>8}  " + "  ".join(f"{name:^{width}}" for name, _ in measures),
             f"{'token':>8}  " + "  ".join(" ".join(f"{sweep:>7}" for sweep in sweeps) for _ in measures)]
    for kind, entry in scaling.items():
        groups = [" ".join("-" if entry[sweep].get(key) is None else f"{round(entry[sweep][key], 2) + 0.0:>7.2f}"
                           for sweep in sweeps) for _, key in measures]
        lines.append(f"{kind:>8}  " + "  ".join(groups))
    return "\n".join(lines)


def _span(values: list) -> str:
    return f"{min(values):.3g}-{max(values):.3g}"


def table_provenance(table: dict, command: str = "mini-decoders benchmark") -> str:
    """One line: how and when a saved benchmark table was made (a page that shows it prints this).

    It names the command, when it ran, the package version, the profile and seed, the models and
    the data, e.g. ``measured by `mini-decoders benchmark --profile quick ...` on
    2026-12-06T11:30:33, mini-decoders 0.1.0, profile quick, seed 0; 8 models: ridge, ...;
    3 simulated sessions (sim_s0, sim_s1, sim_s2) with 630 training trials in all``.

    Args:
        table: a benchmark table (:func:`~mini_decoders.experiments.benchmark.run_benchmark`).
        command: what to name when the table recorded no command (written by ``run_benchmark``
            from Python, or by a version of the package that did not record it).
    """
    data = table.get("data", [])
    trials = sum(entry.get("trials", {}).get("train", 0) for entry in data)
    models = list(dict.fromkeys(row["model"] for row in table.get("rows", []) if row.get("model")))
    sessions = [str(entry.get("session", "?")) for entry in data]
    shown = ", ".join(sessions[:4]) + (f", ... ({len(sessions)} in all)" if len(sessions) > 4 else "")
    # only the simulator writes the true rates the oracle row is scored from
    kind = "simulated " if table.get("oracle") else ""
    return (f"measured by `{table.get('command') or command}` on {table.get('created', '?')}, mini-decoders "
            f"{table.get('package_version', '?')}, profile {table.get('profile', '?')}, seed {table.get('seed', '?')}; "
            f"{_count(len(models), 'model')}: {', '.join(models) or 'none'}; "
            f"{_count(len(data), kind + 'session')}" + (f" ({shown})" if sessions else "")
            + f" with {trials} training trials in all")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def plot_benchmark(table: dict, path: str | Path | None = None, axes=None):
    """Scores against training time, peak memory, and inference cost against the work.

    Top row: co-bps and velocity R² against training seconds (log scale; one point per model,
    the oracle as a dashed line), peak memory per model. Bottom row: inference seconds per window
    against window length, held-in spikes per window, and neurons (log-log).

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt  # see the module docstring

    if axes is None:
        fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    else:
        fig = np.ravel(axes)[0].figure
    axes = np.asarray(axes).reshape(2, 3)
    rows = [row for row in table["rows"] if row.get("status") == "ok"]
    colors = {name: f"C{i % 10}" for i, name in enumerate(MODELS)}
    oracle = table.get("oracle") or {}
    for ax, metric in zip(axes[0, :2], ("co_bps", "vel_r2")):
        drawn = False
        for row in rows:
            if row.get(metric) is None:
                continue
            seconds = max(row.get("train_seconds") or 0.0, 1e-2)
            ax.scatter(seconds, row[metric], color=colors.get(row["model"], "0.3"), s=40, zorder=3)
            ax.annotate(row_label(row), (seconds, row[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            drawn = True
        if oracle.get(metric) is not None:
            ax.axhline(oracle[metric], label=f"oracle ({oracle[metric]:.3f})", **ORACLE_STYLE)
            ax.legend(frameon=False, fontsize=8, loc="best")  # clear of the points
        if drawn:
            _plain_log_axis(ax, "x")
        ax.set_xlabel("training time (s, log scale)")
        ax.set_ylabel(METRIC_LABELS[metric])
        ax.set_title(f"{METRIC_LABELS[metric]} vs compute", fontsize=10)
    ax = axes[0, 2]
    memory = [(row_label(row), row.get("peak_memory_mb")) for row in rows if row.get("peak_memory_mb") is not None]
    if memory:
        ax.bar(range(len(memory)), [m for _, m in memory], color=[colors.get(n, "0.3") for n, _ in memory])
        ax.set_xticks(range(len(memory)), [n for n, _ in memory], rotation=30)
    kinds = {row.get("memory_kind") for row in rows}
    ax.set_ylabel("peak memory (MB)")
    ax.set_title("peak memory" + (" (GPU allocated)" if "cuda_max_memory_allocated" in kinds else
                                  " (growth of peak RSS)"), fontsize=10)
    sweeps = (("length", "window length (s)"), ("spikes", "held-in spikes per window"), ("units", "neurons"))
    for ax, (sweep, label) in zip(axes[1], sweeps):
        drawn = False
        for row in rows:
            data = (row.get("cost") or {}).get(sweep) or {}
            points = [(x, s) for x, s in zip(data.get("x", []), data.get("seconds", [])) if x and s]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, np.array(ys) * 1000, marker="o", color=colors.get(row["model"], "0.3"), label=row_label(row))
                drawn = True
        if drawn:
            _plain_log_axis(ax, "x")
            _plain_log_axis(ax, "y")
            ax.legend(frameon=False, fontsize=7, ncol=2)
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("inference time per window (ms)")
        ax.set_title(f"cost vs {sweep}", fontsize=10)
    fig.suptitle(f"side by side: profile {table.get('profile')}, budget {table.get('budget', {}).get('kind')}, "
                 f"{len(table.get('data', []))} session(s)", fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def _plain_log_axis(ax, which: str = "x") -> None:
    """Log scale with tick labels written as plain numbers (0.5, 1, 2) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # see the module docstring

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


# ================================================================================================
# The transfer experiment

def format_transfer(result: dict) -> str:
    """The transfer results as text: one line per (model, N), scores at each k, then scratch and baselines."""
    fractions = result["fractions"]
    head = f"{'':>22}" + "".join(f"{f'k={f:.0%}':>10}" for f in fractions)
    lines = [f"transfer to {result['new_session']!r} (train trials at each k: {result['n_train_trials']})", head]

    def line(label: str, points: list[dict]) -> str:
        by_fraction = {float(p["fraction"]): p.get("score") for p in points}
        cells = [by_fraction.get(float(f)) for f in fractions]
        return f"{label:>22}" + "".join(f"{'-' if v is None else format(v, '.3f'):>10}" for v in cells)

    for model, entry in result["models"].items():
        for n in result["pretrain_counts"]:
            lines.append(line(f"{model} pretrained N={n}", [p for p in entry["adapted"] if p["n_sessions"] == n]))
        lines.append(line(f"{model} from scratch", entry["scratch"]))
        lines.append(f"{'':>22}({entry['metric']}, {entry['adaptation']})")
    for name, baseline in result.get("baselines", {}).items():
        lines.append(line(f"{name} (baseline)", baseline["points"]))
    if result.get("oracle"):
        lines.append("oracle: " + ", ".join(f"{k} {v:.3f}" for k, v in result["oracle"].items() if v is not None))
    for error in result.get("errors", []):
        lines.append(f"error in {error['cell']}: {error['error']}"[:300])
    return "\n".join(lines)


def plot_transfer(result: dict, path: str | Path | None = None, axes=None):
    """Accuracy against k (left) and against N (right), one row per model, with scratch, baseline, oracle.

    Returns:
        The figure.
    """
    import matplotlib.pyplot as plt  # see the module docstring

    models = list(result["models"])
    if axes is None:
        fig, axes = plt.subplots(max(1, len(models)), 2, figsize=(11, 3.4 * max(1, len(models))), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(-1, 2)
        fig = axes[0, 0].figure
    oracle = result.get("oracle") or {}
    for (ax_k, ax_n), model in zip(axes, models):
        entry = result["models"][model]
        metric = entry["metric"]
        for i, n in enumerate(result["pretrain_counts"]):
            points = sorted((p["fraction"], p["score"]) for p in entry["adapted"]
                            if p["n_sessions"] == n and p["score"] is not None)
            if points:
                x, y = zip(*points)
                ax_k.plot(np.array(x) * 100, y, marker="o", color=f"C{i}", label=f"pretrained on {n} session(s)")
        scratch = sorted((p["fraction"], p["score"]) for p in entry["scratch"] if p["score"] is not None)
        if scratch:
            x, y = zip(*scratch)
            ax_k.plot(np.array(x) * 100, y, marker="s", color="0.45", linestyle=":", label="from scratch")
        # the classic baseline trained for this model's metric
        baseline_name, baseline = next(((name, b) for name, b in result.get("baselines", {}).items()
                                        if b["metric"] == metric), (None, None))
        if baseline:
            points = sorted((p["fraction"], p["score"]) for p in baseline["points"] if p["score"] is not None)
            if points:
                x, y = zip(*points)
                ax_k.plot(np.array(x) * 100, y, marker="^", color="C7", linestyle="-.", label=f"{baseline_name} (classic)")
        for ax in (ax_k, ax_n):
            if oracle.get(metric) is not None:
                ax.axhline(oracle[metric], label=f"oracle ({oracle[metric]:.3f})", **ORACLE_STYLE)
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax_k.set_xscale("log")
        ax_k.set_xticks([f * 100 for f in result["fractions"]], [f"{f:.0%}" for f in result["fractions"]])
        ax_k.minorticks_off()
        ax_k.set_xlabel("k: share of the new session's train trials (log scale)")
        ax_k.set_title(f"{model}: {entry['adaptation']}", fontsize=9)
        ax_k.legend(frameon=False, fontsize=7)
        for j, fraction in enumerate(result["fractions"]):
            points = sorted((p["n_sessions"], p["score"]) for p in entry["adapted"]
                            if float(p["fraction"]) == float(fraction) and p["score"] is not None)
            if points:
                x, y = zip(*points)
                ax_n.plot(x, y, marker="o", color=f"C{j + 3}", label=f"k = {fraction:.0%}")
        ax_n.set_xlabel("N: pretraining sessions")
        ax_n.set_xticks(result["pretrain_counts"])
        ax_n.set_title(f"{model}: more pretraining sessions", fontsize=9)
        ax_n.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix, 120 dpi) atomically: a crash leaves the old picture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, suffix=path.suffix) as temp:
        fig.savefig(temp, dpi=120)
    return path
