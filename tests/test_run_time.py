"""Every chapter states its measured run time: the introduction pastes what the last cell measured."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import mini_decoders
from mini_decoders import run_time

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_introduction_pastes_the_run_time_the_last_cell_measures(path):
    cells = json.loads(path.read_text())["cells"]
    intro = next(i for i, cell in enumerate(cells) if cell["cell_type"] == "markdown"
                 and "".join(cell["source"]).lstrip().startswith("# "))
    assert "Run time: {glue:md}`run_time`" in "".join(cells[intro]["source"]), "the introduction must state the run time"
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "code" and "state_run_time(PROFILE)" in last, \
        "the chapter's last cell must measure the run time (everything before it counts)"


def test_the_run_time_counts_from_the_packages_import_and_names_the_machine(monkeypatch, capsys):
    glued = {}

    def fake_glue(name, value, display=True):
        glued[name] = (value.data, display)

    monkeypatch.setattr("myst_nb.glue", fake_glue)
    monkeypatch.setattr(mini_decoders, "IMPORTED_AT", time.monotonic() - 150.0)
    text = run_time.state_run_time("quick")
    assert text.startswith("2.5 min (quick profile, ") and run_time.machine_description() in text
    assert glued == {"run_time": (text, False)}, "the book pastes exactly what was measured, and shows it once"
    assert f"This chapter ran in {text}." in capsys.readouterr().out


def test_run_time_text_says_seconds_under_a_minute():
    assert run_time.run_time_text(42.4, "tiny", "a 2-core CPU") == "42 s (tiny profile, a 2-core CPU)"
    assert run_time.run_time_text(600.0, "quick", "a T4 GPU") == "10.0 min (quick profile, a T4 GPU)"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_introduction_states_the_chapters_quick_budget(path):
    budget = run_time.stated_budget_minutes(json.loads(path.read_text()))
    assert budget is not None and 0 < budget <= 30, \
        "state 'against a budget of N min (quick profile, 2-core CPU)' next to the run time"


def executed_copy(folder: Path, name: str, printed: str) -> None:
    cells = [{"cell_type": "code", "source": "state_run_time(PROFILE)",
              "outputs": [{"output_type": "stream", "name": "stdout", "text": [printed]}]}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"cells": cells}))


def test_book_times_reads_the_measured_time_beside_the_stated_budget(tmp_path):
    chapters = tmp_path / "notebooks"
    chapters.mkdir()
    for name, budget in (("01_a.ipynb", 2), ("02_b.ipynb", 3), ("03_c.ipynb", 1)):
        intro = f"# C\n\nRun time: {{glue:md}}`run_time` against a budget of {budget} min (quick profile, 2-core CPU)."
        (chapters / name).write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": intro}]}))
    executed = tmp_path / "_build" / "jupyter_execute" / "notebooks"
    executed_copy(executed, "01_a.ipynb", "This chapter ran in 1.5 min (quick profile, a 2-core CPU (2 torch threads)).\n")
    executed_copy(executed, "02_b.ipynb", "This chapter ran in 3.2 min (quick profile, a 2-core CPU (2 torch threads)).\n")
    rows = run_time.book_times(sorted(chapters.glob("*.ipynb")), tmp_path / "_build" / "jupyter_execute")
    assert [(r["chapter"], r["budget_minutes"], r["seconds"], r["held"]) for r in rows] == [
        ("01_a", 2.0, 90.0, True), ("02_b", 3.0, 192.0, False), ("03_c", 1.0, None, None)]
    assert run_time.measured_run_time({"cells": [{"outputs": [{"text": "This chapter ran in 42 s (tiny profile, x)."}]}]}) \
        == (42.0, "tiny")
    # A chapter taken from the execution cache has no printed outputs, only its glue file
    (executed / "03_c.glue.json").write_text(json.dumps({"run_time": {"data": {
        "text/markdown": "2.5 min (quick profile, a 2-core CPU (2 torch threads))"}}}))
    executed_copy(executed, "03_c.ipynb", "")
    third = run_time.book_times([chapters / "03_c.ipynb"], tmp_path / "_build" / "jupyter_execute")[0]
    assert (third["seconds"], third["profile"], third["held"]) == (150.0, "quick", False)
    (executed / "03_c.glue.json").unlink()
    (executed / "03_c.ipynb").unlink()

    import subprocess
    import sys
    script = [sys.executable, str(ROOT / "benchmarks" / "book_times.py"), "--chapters", str(chapters),
              "--executed", str(tmp_path / "_build" / "jupyter_execute")]
    report = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "OVER" in report.stdout and "not executed" in report.stdout, report.stdout
    assert subprocess.run([*script, "--strict"], capture_output=True, text=True, timeout=60).returncode == 1


def test_the_runs_of_a_build_are_listed_with_their_training_time(tmp_path):
    from mini_decoders.data.simulate import simulate
    from mini_decoders.run import train

    sessions = simulate(n_sessions=1, n_trials=20, n_units=16, seed=0).sessions
    run = train("ridge", sessions, profile="tiny", out=tmp_path / "run", cache=tmp_path / "cache", progress=False)
    (tmp_path / "cache" / "half").mkdir()  # an entry without metrics is not a run
    runs = run_time.cached_training_times(tmp_path / "cache")
    assert runs == [{"model": "ridge", "recipe": "default", "profile": "tiny", "sessions": [sessions[0].id],
                     "train_seconds": run.metrics["training"]["train_seconds"]}]
