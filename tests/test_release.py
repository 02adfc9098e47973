"""Runs where readers run it: the profile a reader gets on a GPU, and the release every notebook,
badge and config takes its repository and version from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ASSIGNMENTS = sorted((ROOT / "coursework").glob("*.ipynb"))


def _profile_lines(notebook: Path) -> str:
    """The notebook's own lines that import ``resolve_profile`` and set ``PROFILE`` (as written)."""
    for cell in json.loads(notebook.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and re.search(r"^PROFILE = resolve_profile\(", source, flags=re.M):
            lines = source.splitlines()
            imports = [line for line in lines if re.match(r"from \S+ import .*\bresolve_profile\b", line)]
            assignment = [line for line in lines if line.startswith("PROFILE = resolve_profile(")]
            assert imports and len(assignment) == 1, notebook.name
            return "\n".join(imports + assignment)
    raise AssertionError(f"{notebook.name}: no `PROFILE = resolve_profile(...)` line")


@pytest.mark.parametrize("notebook", CHAPTERS + ASSIGNMENTS, ids=lambda p: p.stem)
def test_a_reader_on_a_gpu_gets_the_quick_profile(notebook, monkeypatch):
    """On Colab with a GPU (CUDA mocked here), nothing set: the chapter runs the published book's
    `quick` recipe, not the hours-long `full` one; `full` only when asked for."""
    monkeypatch.delenv("MINI_DECODERS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    code = _profile_lines(notebook)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the notebook's own two lines
    assert namespace["PROFILE"] == "quick", f"{notebook.name}: {namespace['PROFILE']!r} on a GPU"
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "full")
    exec(code, namespace)  # noqa: S102
    assert namespace["PROFILE"] == "full"


def test_no_text_says_auto_is_full_on_a_gpu():
    paths = [ROOT / "README.md", ROOT / "Makefile", ROOT / "_config.yml", *sorted((ROOT / "book").glob("*.md")),
             *CHAPTERS, *ASSIGNMENTS, *sorted((ROOT / "mini_decoders").rglob("*.py"))]
    stale = re.compile(r"full\W{0,3} on (?:a )?GPU|full\W{0,3} when (?:a )?CUDA|chapters (?:run|use) the `full` profile",
                       flags=re.I)
    found = [f"{path.relative_to(ROOT)}: {match.group(0)!r}" for path in paths
             for match in stale.finditer(path.read_text())]
    assert not found, "text that says `auto` means `full` on a GPU:\n" + "\n".join(found)
