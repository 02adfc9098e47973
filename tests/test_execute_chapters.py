"""`make book` executes chapters side by side into the cache that jupyter-book then reads.

What would break: a chapter executed but stored under another hash (jupyter-book would execute it
again, one after another: the build takes twice as long and nobody notices); chapters run one at a
time; a kernel given all the cores while another chapter runs beside it; a failed chapter cached
as if it had run, or one failure losing the chapters that did run.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "execute_chapters.py"


def load_script():
    spec = importlib.util.spec_from_file_location("execute_chapters", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["execute_chapters"] = module  # its worker processes find their function by this name
    spec.loader.exec_module(module)
    return module


execute_chapters = load_script()


def test_the_book_s_chapters_are_the_toc_s_notebooks_in_order_without_coursework():
    settings = execute_chapters.read_settings(ROOT)
    assert settings["mode"] == "cache" and settings["cache"] == ROOT / "_build" / ".jupyter_cache"
    chapters = execute_chapters.toc_notebooks(ROOT, settings["exclude"])
    assert [p.relative_to(ROOT).as_posix() for p in chapters] == sorted(
        p.relative_to(ROOT).as_posix() for p in ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))
    assert not any("coursework" in str(p) for p in chapters)  # shown, not executed (_config.yml)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_book_executes_the_chapters_before_jupyter_book_builds():
    commands = subprocess.run(["make", "-n", "book"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = commands.splitlines()
    execute = next(i for i, line in enumerate(lines) if "book/execute_chapters.py" in line)
    build = next(i for i, line in enumerate(lines) if "jupyter-book build" in line)
    assert execute < build


def chapter(code: str, budget: int | None = None) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    intro = "# A chapter" + (f"\n\nRun time: against a budget of {budget} min (quick profile, 2-core CPU)."
                             if budget else "")
    notebook.cells = [nbformat.v4.new_markdown_cell(intro), nbformat.v4.new_code_cell(code)]
    return notebook


def book(folder: Path, codes: dict[str, str], budgets: dict[str, int] | None = None) -> list[Path]:
    """A book in ``folder`` whose chapters run ``codes``; its notebooks, in the toc's order."""
    (folder / "_config.yml").write_text("execute:\n  execute_notebooks: cache\n  timeout: 120\n"
                                        "  exclude_patterns: ['skipped/*']\n")
    (folder / "intro.md").write_text("# Intro\n")
    (folder / "skipped").mkdir()
    nbformat.write(chapter("raise SystemExit('an excluded notebook was executed')"), folder / "skipped" / "s.ipynb")
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": name} for name in codes] + [{"file": "skipped/s"}]}
    (folder / "_toc.yml").write_text(json.dumps(toc))
    paths = []
    for name, code in codes.items():
        nbformat.write(chapter(code, (budgets or {}).get(name)), folder / f"{name}.ipynb")
        paths.append(folder / f"{name}.ipynb")
    return paths


# Each chapter notes when it ran and its thread setting, then waits: two at a time overlap.
TIMED = """import os, time, json
start = time.time(); time.sleep(3)
print(json.dumps({"start": start, "stop": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}))"""


def printed(notebook: nbformat.NotebookNode) -> dict:
    return json.loads(notebook.cells[1].outputs[0]["text"])


def test_chapters_run_two_at_a_time_on_one_thread_each_and_land_in_the_cache_jupyter_book_reads(tmp_path, capsys):
    paths = book(tmp_path, {"one": TIMED + "  # one", "two": TIMED + "  # two"})  # two hashes, two records
    assert execute_chapters.main(["--root", str(tmp_path), "--jobs", "2", "--threads", "1"]) == 0
    cache = get_cache(tmp_path / "_build" / ".jupyter_cache")
    runs = []
    for path in paths:
        # myst-nb matches a chapter's source notebook to the cache and merges the outputs in: as here
        _, executed = cache.merge_match_into_notebook(nbformat.read(path, as_version=4))
        runs.append(printed(executed))
    assert all(run["threads"] == "1" for run in runs)
    first, second = sorted(runs, key=lambda run: run["start"])
    assert second["start"] < first["stop"], "the chapters ran one after the other"
    assert len(cache.list_cache_records()) == 2  # the excluded notebook was not executed
    # a second run finds everything cached and executes nothing
    assert execute_chapters.main(["--root", str(tmp_path)]) == 0
    assert "2 of 2 chapters cached; executing 0" in capsys.readouterr().out
    assert len(cache.list_cache_records()) == 2


def test_a_failed_chapter_is_not_cached_and_the_others_are(tmp_path, capsys):
    good, bad = book(tmp_path, {"good": "print('fine')", "bad": "x = 1\nraise ValueError('the data is wrong')"})
    assert execute_chapters.main(["--root", str(tmp_path), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    assert "bad FAILED" in out and "ValueError: the data is wrong" in out
    cache = get_cache(tmp_path / "_build" / ".jupyter_cache")
    cache.match_cache_notebook(nbformat.read(good, as_version=4))
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nbformat.read(bad, as_version=4))
    assert "ValueError" in (tmp_path / "_build" / "execute_chapters" / "bad.log").read_text()


def test_the_longest_chapter_starts_first_by_its_budget_then_by_its_last_run(tmp_path, capsys):
    """Started last, a long chapter runs alone at the end while the other core waits (chapter 10 did)."""
    short, long, unknown = book(tmp_path, {"short": TIMED.replace("3", "0") + " # s", "long": TIMED.replace("3", "0"),
                                           "unknown": "print('{}')"}, budgets={"short": 2, "long": 9})
    cache = get_cache(tmp_path / "_build" / ".jupyter_cache")
    estimates = {path: execute_chapters.estimated_seconds(cache, path) for path in (short, long, unknown)}
    assert estimates == {short: 120.0, long: 540.0, unknown: 60.0}
    assert execute_chapters.longest_first([unknown, short, long], estimates) == [long, short, unknown]
    assert execute_chapters.main(["--root", str(tmp_path), "--jobs", "1"]) == 0
    runs = {path.stem: printed(cache.merge_match_into_notebook(nbformat.read(path, as_version=4))[1])
            for path in (short, long)}
    assert runs["long"]["start"] < runs["short"]["start"]
    # once executed, a chapter's own last run time is its estimate (the budget was only a guess)
    measured = execute_chapters.estimated_seconds(cache, long)
    assert measured < 60 and measured == cache.match_cache_notebook(nbformat.read(long, as_version=4)).data[
        "execution_seconds"]
