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


PAPER_CHAPTERS = ("03_ndt1_masked_modelling", "04_poyo_spike_tokens", "05_ndt2_multicontext",
                  "06_mtm_universal_translator", "07_vq_tokens")
PAPER_SUBSECTIONS = ("### Data", "### Preprocessing", "### Model", "### Training objective", "### What it reported")


def markdown_lines(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return [line.rstrip() for cell in cells if cell["cell_type"] == "markdown"
            for line in "".join(cell["source"]).splitlines()]


def test_paper_chapters_open_with_the_paper_and_its_five_subsections():
    """Each paper chapter teaches the paper as published before the book's own version of it."""
    for stem in PAPER_CHAPTERS:
        lines = markdown_lines(ROOT / "notebooks" / f"{stem}.ipynb")
        assert "## The paper" in lines, f"{stem}: no '## The paper' section"
        start = lines.index("## The paper")
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"## ", lines[i])), len(lines))
        section = lines[start:end]
        positions = [section.index(heading) if heading in section else -1 for heading in PAPER_SUBSECTIONS]
        assert -1 not in positions, f"{stem}: '## The paper' lacks {[h for h, p in zip(PAPER_SUBSECTIONS, positions) if p < 0]}"
        assert positions == sorted(positions), f"{stem}: the paper's subsections are out of order"
        numbered = next((i for i, line in enumerate(lines) if re.match(r"## \d", line)), len(lines))
        assert start < numbered, f"{stem}: '## The paper' must come before the chapter's numbered sections"


def test_no_unchecked_facts_in_any_notebook():
    for notebook in NOTEBOOKS + sorted((ROOT / "coursework").glob("*.ipynb")):
        text = notebook.read_text().lower()
        for phrase in ("from memory", "not checked"):
            assert phrase not in text, f"{notebook.name} contains {phrase!r}: check the fact or leave it out"


MATH_OR_CODE = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|```.*?```|`[^`\n]*`", flags=re.S)
PRECISE_NUMBER = re.compile(r"(?<![\w.])\d+\.\d{3,}(?![\w.])")  # 0.238 or 0.0016; not 0.25 or 2534.78
CITED = re.compile(r"\{cite\}|Table|§|App\.|Eq\.|authors' code|project page")


def test_no_measured_number_is_typed_into_chapter_prose():
    """The book executes every chapter at build time, in the profile of the machine: a result typed
    into markdown (a co-bps of 0.238) disagrees with the figures as soon as anything changes. A
    number with three or more decimals in a chapter's prose must be a citation (its cell names the
    source: {cite}, a table, a section, the authors' code) or be written by a cell from the run."""
    for notebook in NOTEBOOKS:
        for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            if cell["cell_type"] != "markdown":
                continue
            prose = MATH_OR_CODE.sub("", "".join(cell["source"]))
            numbers = PRECISE_NUMBER.findall(prose)
            assert not numbers or CITED.search(prose), (
                f"{notebook.name} cell {index}: {numbers} typed into markdown. Print a measured number from the "
                f"run (IPython.display.Markdown), or name the source of a cited one")


# ---------------------------------------------------------------------------- coursework in the book
COURSEWORK = sorted((ROOT / "coursework").glob("*.ipynb"))


def test_the_toc_has_a_coursework_part_with_the_assignments_and_the_rubric():
    import yaml

    parts = yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]
    coursework = [part for part in parts if part.get("caption") == "Coursework"]
    assert len(coursework) == 1, "_toc.yml has no 'Coursework' part"
    files = [chapter["file"] for chapter in coursework[0]["chapters"]]
    assert COURSEWORK and all(f"coursework/{notebook.stem}" in files for notebook in COURSEWORK), files
    assert "coursework/rubric" in files


def test_the_book_shows_the_assignments_without_solutions():
    """Solution cells carry remove-cell (left out of the page; `solution` stays for the grader and the
    editions), and the build does not execute the assignments, so they render as stubs."""
    import yaml

    for notebook in COURSEWORK:
        cells = json.loads(notebook.read_text())["cells"]
        solutions = [cell for cell in cells if "solution" in cell.get("metadata", {}).get("tags", [])]
        assert solutions, f"{notebook.name}: no solution cell"
        for cell in solutions:
            assert "remove-cell" in cell["metadata"]["tags"], f"{notebook.name}: a solution cell the book would show"
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                    f"{notebook.name}: outputs are committed"
    excluded = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"].get("exclude_patterns", [])
    assert any(Path(f"/x/coursework/{COURSEWORK[0].name}").match(pattern) for pattern in excluded), excluded
