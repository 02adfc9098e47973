"""Student and instructor editions of the chapter and assignment notebooks.

- **student**: solution cells removed (the stubs stay), outputs cleared, a Colab badge that opens
  this very edition, the install cell of the release (both from :mod:`mini_decoders.book_settings`),
  and notebook metadata that asks Colab for a GPU runtime (the chapters' ``quick`` recipe, faster).
- **instructor**: the same, with the solution cells kept and unfolded (no ``hide-input``, and no
  ``remove-cell``, the tag that keeps the assignments' solutions out of the book).

``build_editions(out)`` writes ``out/student/<name>.ipynb`` and ``out/instructor/<name>.ipynb``.
The badges point at ``<repo_path>/<edition>/<name>.ipynb`` on the repository and branch of
:mod:`mini_decoders.book_settings`, so publishing an edition means committing (or pushing) ``out``
at that path.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from mini_decoders import __version__
from mini_decoders.book_settings import colab_badge, colab_url, install_cell
from mini_decoders.course.notebooks import (TAG_FOLD, TAG_REMOVE, TAG_SOLUTION, cell_tags, default_sources,
                                            read_notebook, repo_root, require)


EDITIONS = ("student", "instructor")
COLAB_BADGE = re.compile(r"https://colab\.research\.google\.com/github/([^/\s]+)/([^/\s]+)/blob/([^/\s]+)/([^)\s]+?\.ipynb)")
NOTES = {
    "student": ("*Student edition.* Each exercise is a stub that raises `NotImplementedError`: write it, "
                "run its cell, then run the check below it. Later cells do not depend on your answers."),
    "instructor": "*Instructor edition:* solutions are included and unfolded.",
}


def install_cell_source() -> str:
    """The first code cell of an edition: the book's install cell (:func:`mini_decoders.book_settings.install_cell`)."""
    return install_cell()


def make_edition(nb, edition: str, name: str, repo_path: str = "editions"):
    """A new notebook: ``edition`` ("student" or "instructor") of ``nb``, to be saved as ``name``.ipynb."""
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, got {edition!r}")
    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        tags = cell_tags(cell)
        if TAG_SOLUTION in tags:
            if edition == "student":
                continue
            cell.metadata["tags"] = [t for t in tags if t not in (TAG_FOLD, TAG_REMOVE)]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    out.cells = cells
    path = f"{repo_path.strip('/')}/{edition}/{name}.ipynb"
    url, badge = colab_url(path), colab_badge(path)
    first = out.cells[0] if out.cells else None
    if first is not None and first.cell_type == "markdown" and COLAB_BADGE.search(first.source):
        first.source = COLAB_BADGE.sub(url, first.source) + "\n\n" + NOTES[edition]
    else:
        out.cells.insert(0, require("nbformat").v4.new_markdown_cell(badge + "\n\n" + NOTES[edition]))
    install = next((cell for cell in out.cells if cell.cell_type == "code"), None)
    if install is not None and "google.colab" in install.source:
        install.source = install_cell_source()
    else:
        out.cells.insert(1, require("nbformat").v4.new_code_cell(install_cell_source()))
    out.metadata["accelerator"] = "GPU"  # Colab opens the notebook on a GPU runtime
    out.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    out.metadata["mini_decoders"] = {"edition": edition, "version": __version__}
    return out


def build_editions(out: str | Path, sources: list[Path] | None = None, root: Path | None = None,
                   include_drafts: bool = False, repo_path: str | None = None) -> dict[str, list[Path]]:
    """Write the student and instructor editions of every chapter and assignment notebook.

    Args:
        out: output folder; ``out/student`` and ``out/instructor`` are created.
        sources: notebooks to convert (default: ``notebooks/*.ipynb`` and ``coursework/*.ipynb``,
            plus ``notebooks/drafts`` with ``include_drafts``).
        root: the repository root (default: the checkout the package comes from).
        repo_path: the folder the badges point at, relative to the repository root (default:
            ``out`` relative to ``root`` when it lies inside it, else ``"editions"``).

    Returns:
        ``{"student": [paths], "instructor": [paths]}``.
    """
    nbformat = require("nbformat")
    root = Path(root) if root is not None else repo_root()
    out = Path(out)
    if repo_path is None:
        try:
            repo_path = out.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            repo_path = "editions"
    sources = [Path(p) for p in sources] if sources is not None else default_sources(root, include_drafts)
    written: dict[str, list[Path]] = {edition: [] for edition in EDITIONS}
    for source in sources:
        nb = read_notebook(source)
        for edition in EDITIONS:
            target = out / edition / f"{source.stem}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            edition_nb = make_edition(nb, edition, source.stem, repo_path)
            tmp = target.with_name(target.name + ".tmp")
            nbformat.write(edition_nb, str(tmp))
            tmp.replace(target)
            written[edition].append(target)
    return written
