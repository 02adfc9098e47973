"""The book's structure: every chapter is in the table of contents, ships without outputs, and
opens with a Colab badge and an install cell that runs only on Colab."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files():
    return set(re.findall(r"file:\s*(\S+)", (ROOT / "_toc.yml").read_text()))


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    listed = toc_files()
    assert NOTEBOOKS, "no chapter notebooks found"
    for notebook in NOTEBOOKS:
        assert f"notebooks/{notebook.stem}" in listed, f"{notebook.name} missing from _toc.yml"
    for entry in listed:
        assert any((ROOT / f"{entry}{suffix}").exists() for suffix in (".md", ".ipynb")), f"_toc.yml lists {entry}"


def test_chapters_are_numbered_in_reading_order():
    for notebook in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", notebook.stem), notebook.name


def test_notebooks_ship_without_outputs():
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                    f"{notebook.name}: outputs are committed (strip them; the book executes chapters)"


def test_first_cells_are_colab_badge_and_guarded_install():
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        assert "colab.research.google.com" in "".join(cells[0]["source"]), notebook.name
        install = "".join(cells[1]["source"])
        assert "google.colab" in install and re.search(r"pip.{0,10}install", install), notebook.name
