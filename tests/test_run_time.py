"""Every chapter states its measured run time: the introduction pastes what the last cell measured."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import mini_decoders
from mini_decoders import run_time

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


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
