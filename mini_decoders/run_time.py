"""How long a chapter took to run, on what, stated in the chapter itself.

Each chapter's introduction says ``Run time: {glue:md}`run_time```; its last cell calls
:func:`state_run_time`, which measures the time since the package was first imported in this
kernel (so Colab's install cell is not counted), names the machine and the profile, prints the
line, and glues it for the book (MyST-NB), so the number on the page is the one measured while
that page was executed, on the machine that built it.

The introduction also states the chapter's budget: ``against a budget of N min (quick profile,
2-core CPU)``. After a build, :func:`book_times` reads each executed chapter's measured time
beside its stated budget (``benchmarks/book_times.py`` prints it; ``make book`` runs it), so a
budget that no longer holds is seen, not assumed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import mini_decoders


def machine_description() -> str:
    """The device the chapter ran on, in words: a GPU's name, or a CPU's core and torch-thread counts."""
    import torch

    if torch.cuda.is_available():
        return f"a {torch.cuda.get_device_name(0)} GPU"
    threads = torch.get_num_threads()
    return f"a {os.cpu_count()}-core CPU ({threads} torch thread{'s' if threads != 1 else ''})"


def run_time_text(seconds: float, profile: str, machine: str) -> str:
    """``"3.4 min (quick profile, a 2-core CPU (1 torch thread))"``: minutes from one decimal, seconds under a minute."""
    amount = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    return f"{amount} ({profile} profile, {machine})"


def state_run_time(profile: str, name: str = "run_time") -> str:
    """Print and glue how long this chapter has run, since ``mini_decoders`` was first imported.

    Args:
        profile: the profile the chapter ran in (``tiny``, ``quick`` or ``full``).
        name: the glue key the chapter's introduction pastes with ``{glue:md}``.

    Returns:
        the text, e.g. ``"3.4 min (quick profile, a 2-core CPU (1 torch thread))"``.
    """
    text = run_time_text(time.monotonic() - mini_decoders.IMPORTED_AT, profile, machine_description())
    print(f"This chapter ran in {text}.")
    try:  # the book build (MyST-NB) pastes it into the introduction; elsewhere the print is the record
        from IPython.display import Markdown
        from myst_nb import glue
    except ImportError:
        return text
    glue(name, Markdown(text), display=False)
    return text


BUDGET_PATTERN = re.compile(r"against a budget of (\d+(?:\.\d+)?) min \(quick profile, 2-core CPU\)")
MEASURED_PATTERN = re.compile(r"(\d+(?:\.\d+)?) (s|min) \(([a-z]+) profile")


def stated_budget_minutes(notebook: dict) -> float | None:
    """The quick-profile budget (minutes) the chapter's introduction states, or None if it states none."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            found = BUDGET_PATTERN.search("".join(cell.get("source", "")))
            if found:
                return float(found.group(1))
    return None


def _parse_run_time(text: str) -> tuple[float, str] | None:
    found = MEASURED_PATTERN.search(text)
    if not found:
        return None
    return float(found.group(1)) * (60.0 if found.group(2) == "min" else 1.0), found.group(3)


def measured_run_time(notebook: dict, glued: dict | None = None) -> tuple[float, str] | None:
    """``(seconds, profile)`` the executed chapter measured, or None if it measured nothing.

    Read from the glued ``run_time`` (``glued``: the ``<chapter>.glue.json`` MyST-NB writes beside the
    executed copy; a chapter taken from the execution cache keeps its glue but not its printed
    outputs), else from the line the last cell printed ("This chapter ran in ...").
    """
    if glued and "run_time" in glued:
        data = glued["run_time"].get("data", {})
        parsed = _parse_run_time("".join(data.get("text/markdown", "")))
        if parsed:
            return parsed
    for cell in reversed(notebook.get("cells", [])):
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", ""))
            if "This chapter ran in" in text and _parse_run_time(text):
                return _parse_run_time(text)
    return None


def book_times(chapters: list[Path], executed: Path) -> list[dict]:
    """Each chapter's stated budget beside the time its executed copy measured.

    Args:
        chapters: the chapters' source notebooks (their introductions state the budgets).
        executed: the folder of executed copies (``_build/jupyter_execute`` after ``make book``),
            searched for a notebook of the same name.

    Returns:
        one dict per chapter: ``chapter``, ``budget_minutes``, ``seconds`` and ``profile`` (None when
        the executed copy or its line is missing), ``held`` (None when either number is missing).
    """
    rows = []
    for chapter in chapters:
        budget = stated_budget_minutes(json.loads(Path(chapter).read_text()))
        copies = sorted(Path(executed).rglob(Path(chapter).name))
        measured = None
        if copies:
            glue_path = copies[0].with_suffix(".glue.json")
            glued = json.loads(glue_path.read_text()) if glue_path.is_file() else None
            measured = measured_run_time(json.loads(copies[0].read_text()), glued)
        seconds, profile = measured if measured else (None, None)
        held = None if budget is None or seconds is None else seconds <= budget * 60.0
        rows.append({"chapter": Path(chapter).stem, "budget_minutes": budget, "seconds": seconds,
                     "profile": profile, "held": held})
    return rows


def cached_training_times(cache: Path) -> list[dict]:
    """Every run in a run cache (:mod:`mini_decoders.run_cache`): ``model``, ``recipe``, ``profile``,
    ``sessions`` (ids) and ``train_seconds`` (of the run that was trained), slowest first."""
    runs = []
    for entry in sorted(Path(cache).glob("*/metrics.json")):
        try:
            config = json.loads((entry.parent / "config.json").read_text())
            seconds = json.loads(entry.read_text())["training"]["train_seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a finished run
        runs.append({"model": config.get("model"), "recipe": config.get("recipe", "default"),
                     "profile": config.get("profile"), "sessions": [s.get("id") for s in config.get("sessions", [])],
                     "train_seconds": float(seconds)})
    return sorted(runs, key=lambda run: -run["train_seconds"])
