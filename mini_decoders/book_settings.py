"""Where the book and the package are published: the one setting every notebook takes.

The repository (``REPOSITORY``, ``BRANCH``) and the release (``VERSION``, which *is*
``mini_decoders.__version__``; ``pyproject.toml`` reads the same attribute) are written here
and nowhere else. From them come:

- each chapter's and assignment's first cell, the Colab badge (:func:`colab_badge`);
- its second cell, the install cell that runs only on Colab (:func:`install_cell`);
- ``_config.yml``'s ``repository:`` (the book's repository and launch buttons);
- the student and instructor editions (``mini-decoders course editions``);
- ``pyproject.toml``'s ``[project.urls]``.

``python -m mini_decoders.book_settings`` rewrites the notebooks' first two cells and
``_config.yml`` from this module; ``--check`` only lists what disagrees (the tests run it).
A release is made by changing ``__version__``, syncing, and pushing the tag ``v<VERSION>``:
``.github/workflows/release.yml`` then builds, checks and publishes it to PyPI.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from mini_decoders import __version__ as VERSION

REPOSITORY = "mini-decoders/mini-decoders"  # owner/name on GitHub
BRANCH = "main"                              # the branch the badges and the book's links open
PACKAGE = "mini-decoders"                    # the distribution name on PyPI
COLAB = "https://colab.research.google.com"
BADGE_IMAGE = f"{COLAB}/assets/colab-badge.svg"

__all__ = ["BRANCH", "PACKAGE", "REPOSITORY", "VERSION", "check", "colab_badge", "colab_url", "install_cell",
           "repository_url", "sync"]


def repository_url() -> str:
    """``https://github.com/<owner>/<name>``."""
    return f"https://github.com/{REPOSITORY}"


def colab_url(path: str, branch: str = BRANCH) -> str:
    """The Colab link that opens ``path`` (relative to the repository root) from GitHub."""
    return f"{COLAB}/github/{REPOSITORY}/blob/{branch}/{path.strip('/')}"


def colab_badge(path: str, branch: str = BRANCH) -> str:
    """The markdown of an "Open in Colab" badge for ``path``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(path, branch)})"


def install_cell(version: str = VERSION) -> str:
    """The second cell of every notebook: on Colab only, install ``mini-decoders==version``.

    While that release is not on PyPI, pip fails and the cell stops with one line that says what
    to install instead (the package from GitHub), rather than a pip error followed by an
    ``ImportError`` further down.
    """
    return (_INSTALL_CELL.replace("{VERSION}", version).replace("{PACKAGE}", PACKAGE)
            .replace("{GITHUB}", f"git+{repository_url()}@{BRANCH}"))


_INSTALL_CELL = """\
# Runs only on Colab: installs mini-decoders {VERSION}, the release this book was written for.
# A GPU runtime (Runtime > Change runtime type > GPU) runs the same quick recipe, only faster.
import subprocess
import sys

if "google.colab" in sys.modules:
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{PACKAGE}=={VERSION}"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        reason = (pip.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise RuntimeError(f"could not install {PACKAGE} {VERSION} from PyPI ({reason}). Install it from GitHub "
                           'instead, with  %pip install "{GITHUB}"  '
                           "(or @v{VERSION} once that release is tagged), then run this notebook again")
    import torch

    print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available()
          else "none (the CPU runs the same recipe, only slower)")"""


# ----------------------------------------------------------------------------- the checkout's files
def notebooks(root: Path) -> list[Path]:
    """The notebooks whose first two cells come from here: chapters, drafts and assignments."""
    return (sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "notebooks" / "drafts").glob("*.ipynb"))
            + sorted((root / "coursework").glob("*.ipynb")))


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _first_cells(path: Path, root: Path) -> tuple[str, str]:
    relative = path.resolve().relative_to(root.resolve()).as_posix()
    return colab_badge(relative), install_cell()


def _config_repository(text: str) -> dict[str, str]:
    block = re.search(r"^repository:\n((?:[ \t]+\S.*\n?)+)", text, flags=re.M)
    if not block:
        return {}
    return dict(re.findall(r"^[ \t]+(\w+):[ \t]*(\S+)", block.group(1), flags=re.M))


def check(root: str | Path) -> list[str]:
    """Every place in the checkout ``root`` that disagrees with this module (empty: all agree)."""
    root = Path(root)
    problems = []
    for path in notebooks(root):
        cells = json.loads(path.read_text())["cells"]
        badge, install = _first_cells(path, root)
        name = path.relative_to(root).as_posix()
        if len(cells) < 2 or cells[0]["cell_type"] != "markdown" or "".join(cells[0]["source"]) != badge:
            problems.append(f"{name} cell 0: not the Colab badge of {colab_url(name)}")
        if len(cells) < 2 or cells[1]["cell_type"] != "code" or "".join(cells[1]["source"]) != install:
            problems.append(f"{name} cell 1: not the install cell of {PACKAGE} {VERSION}")
    config = root / "_config.yml"
    if config.is_file():
        found = _config_repository(config.read_text())
        if found.get("url") != repository_url() or found.get("branch") != BRANCH:
            problems.append(f"_config.yml repository: {found or 'missing'}, expected url {repository_url()}, "
                            f"branch {BRANCH}")
    return [f"{problem} (run `python -m mini_decoders.book_settings`)" for problem in problems]


def sync(root: str | Path) -> list[Path]:
    """Rewrite the first two cells of every notebook and ``_config.yml``'s repository from here.

    A notebook whose first cells are not a badge and an install cell gets them inserted; the
    cells' metadata (a ``hide-cell`` tag) are kept. Returns the files that changed.
    """
    root = Path(root)
    changed = []
    for path in notebooks(root):
        raw = path.read_text()
        nb = json.loads(raw)
        badge, install = _first_cells(path, root)
        cells = nb["cells"]
        if not cells or cells[0]["cell_type"] != "markdown" or "colab" not in "".join(cells[0]["source"]).lower():
            cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": []})
        if len(cells) < 2 or cells[1]["cell_type"] != "code" or "google.colab" not in "".join(cells[1]["source"]):
            cells.insert(1, {"cell_type": "code", "execution_count": None, "metadata": {"tags": ["hide-cell"]},
                             "outputs": [], "source": []})
        cells[0]["source"], cells[1]["source"] = _lines(badge), _lines(install)
        text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if text != raw:
            path.write_text(text)
            changed.append(path)
    config = root / "_config.yml"
    if config.is_file():
        text = config.read_text()
        new = re.sub(r"^repository:\n(?:[ \t]+\S.*\n?)+",
                     f"repository:\n  url: {repository_url()}\n  branch: {BRANCH}\n", text, count=1, flags=re.M)
        if new != text:
            config.write_text(new)
            changed.append(config)
    return changed


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mini_decoders.book_settings",
                                     description="Write (or --check) the notebooks' badge and install cells and "
                                                 "_config.yml's repository from mini_decoders/book_settings.py.")
    parser.add_argument("--root", default=".", help="the repository checkout (default: the working directory)")
    parser.add_argument("--check", action="store_true", help="only list what disagrees; exit 1 if anything does")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "_toc.yml").is_file():
        print(f"error: {root.resolve()} is not a checkout of the book (no _toc.yml)", file=sys.stderr)
        return 2
    if args.check:
        problems = check(root)
        print("\n".join(problems) or f"ok: every notebook and _config.yml take {repository_url()} and {VERSION}")
        return 1 if problems else 0
    for path in sync(root):
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
