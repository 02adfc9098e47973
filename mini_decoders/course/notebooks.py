"""Read the exercise cell convention out of notebooks, and verify it.

:func:`find_exercises` pairs each ``exercise`` cell (the stub) with its ``solution`` and ``check``
cells; :func:`verify` reports every way a notebook can break the convention — above all a stub
whose signature has drifted from its solution's. Notebooks are read as plain JSON (through
``nbformat``) and their code is parsed with ``ast``, never executed.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mini_decoders import __version__
from mini_decoders.course.registry import ASSIGNMENTS, EXERCISES
from mini_decoders.errors import MiniDecodersError


TAG_EXERCISE, TAG_SOLUTION, TAG_CHECK, TAG_FOLD = "exercise", "solution", "check", "hide-input"
TAG_REMOVE = "remove-cell"  # Jupyter Book leaves the cell out: the assignments' solutions are not in the book


def repo_root() -> Path:
    """The checkout the package is installed from (it holds ``_toc.yml``), else the working directory."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "_toc.yml").exists() else Path.cwd()


def default_sources(root: Path | None = None, include_drafts: bool = True) -> list[Path]:
    """Chapter notebooks (``notebooks/``, optionally ``notebooks/drafts/``) and ``coursework/`` assignments.

    Raises:
        MiniDecodersError: ``root`` holds none. The notebooks are the book's, not the package's:
            a pip install has the checks and the grader, but editions and the verifier need a
            checkout of the repository.
    """
    root = Path(root) if root is not None else repo_root()
    paths = sorted((root / "notebooks").glob("*.ipynb"))
    if include_drafts:
        paths += sorted((root / "notebooks" / "drafts").glob("*.ipynb"))
    paths += sorted((root / "coursework").glob("*.ipynb"))
    if not paths:
        from mini_decoders.book_settings import repository_url
        from mini_decoders.errors import MiniDecodersError

        raise MiniDecodersError(f"no chapter or assignment notebooks in {root.resolve()}: this command works on the "
                                f"book's notebooks, which a pip install does not include; run it inside a checkout "
                                f"(git clone {repository_url()}) or pass --root CHECKOUT")
    return paths


def require(module: str):
    """Import one of the Jupyter libraries the coursework tools use, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MiniDecodersError(f"the coursework tools need `{module}`: pip install nbformat nbclient ipykernel "
                                f"(they come with Jupyter)") from None


def read_notebook(path: Path):
    return require("nbformat").read(str(path), as_version=4)


def cell_tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _parse(source: str) -> Optional[ast.Module]:
    # IPython magics and shell escapes are not Python; blank them so the rest still parses.
    cleaned = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return ast.parse(cleaned)
    except SyntaxError:
        return None


def top_level_functions(source: str) -> dict[str, ast.FunctionDef]:
    tree = _parse(source)
    if tree is None:
        return {}
    return {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def signature_text(node: ast.FunctionDef) -> str:
    """``name(args) -> returns`` as written (names, defaults, annotations)."""
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{node.name}({ast.unparse(node.args)}){returns}"


def raises_not_implemented(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Raise) and child.exc is not None:
            target = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(target, ast.Name) and target.id == "NotImplementedError":
                return True
    return False


def names_used(source: str) -> set[str]:
    tree = _parse(source)
    if tree is None:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def check_calls(source: str) -> list[tuple[str, list[str]]]:
    """``(check name, [argument names])`` of every ``check_*(...)`` call in a cell."""
    tree = _parse(source)
    if tree is None:
        return []
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name.startswith("check_"):
                calls.append((name, [a.id if isinstance(a, ast.Name) else ast.unparse(a) for a in node.args]))
    return calls


@dataclass
class ExerciseCells:
    """Where one exercise sits in a notebook (cell indices)."""

    notebook: Path
    function: str
    stub: int
    solution: Optional[int] = None
    check: Optional[int] = None
    check_name: Optional[str] = None


def _next_code_cell(cells, index: int) -> Optional[int]:
    for j in range(index + 1, len(cells)):
        if cells[j].cell_type == "code":
            return j
    return None


def find_exercises(path: Path, nb=None) -> tuple[list[ExerciseCells], list[str]]:
    """The exercises of one notebook, and the convention problems found on the way."""
    nb = nb if nb is not None else read_notebook(path)
    cells, name = nb.cells, Path(path).name
    found, problems, claimed = [], [], set()
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or TAG_EXERCISE not in cell_tags(cell):
            continue
        where = f"{name} cell {i}"
        if _parse(cell.source) is None:
            problems.append(f"{where}: the exercise cell is not valid Python")
            continue
        functions = top_level_functions(cell.source)
        if len(functions) != 1:
            problems.append(f"{where}: an exercise cell defines exactly one function, found {sorted(functions) or 'none'}")
            continue
        function, stub_node = next(iter(functions.items()))
        if not raises_not_implemented(stub_node):
            problems.append(f"{where}: the stub `{function}` must raise NotImplementedError (is this a solution "
                            f"tagged as an exercise?)")
        entry = ExerciseCells(Path(path), function, i)
        found.append(entry)
        claimed.add(i)
        j = _next_code_cell(cells, i)
        if j is None or TAG_SOLUTION not in cell_tags(cells[j]):
            problems.append(f"{where}: the stub `{function}` must be followed by a code cell tagged 'solution'")
            continue
        entry.solution = j
        claimed.add(j)
        solution_node = top_level_functions(cells[j].source).get(function)
        if solution_node is None:
            problems.append(f"{name} cell {j}: the solution cell does not define `{function}`")
        else:
            if signature_text(solution_node) != signature_text(stub_node):
                problems.append(f"{name} cell {j}: the signature of `{function}` drifted from its stub:\n"
                                f"    stub:     {signature_text(stub_node)}\n    solution: {signature_text(solution_node)}")
            if raises_not_implemented(solution_node):
                problems.append(f"{name} cell {j}: the solution of `{function}` still raises NotImplementedError")
        k = _next_code_cell(cells, j)
        if k is None or TAG_CHECK not in cell_tags(cells[k]):
            problems.append(f"{name} cell {j}: the solution of `{function}` must be followed by a cell tagged 'check'")
            continue
        entry.check = k
        claimed.add(k)
        calls = [(check, args) for check, args in check_calls(cells[k].source) if function in args]
        if len(calls) != 1:
            problems.append(f"{name} cell {k}: the check cell must call one check_*({function}), found "
                            f"{[c for c, _ in check_calls(cells[k].source)] or 'none'}")
        else:
            entry.check_name = calls[0][0]
    for i, cell in enumerate(cells):
        tags = cell_tags(cell)
        if i not in claimed and (TAG_SOLUTION in tags or TAG_CHECK in tags):
            problems.append(f"{name} cell {i}: a '{'solution' if TAG_SOLUTION in tags else 'check'}' cell that belongs "
                            f"to no exercise (the order is exercise, solution, check)")
    return found, problems


def verify(paths: list[Path] | None = None, root: Path | None = None) -> list[str]:
    """Check the exercise convention of notebooks; returns the problems (empty = all good).

    Per exercise: the stub defines one function and raises ``NotImplementedError``; a solution
    cell follows with the *same signature* (names, defaults, annotations); a check cell follows
    that calls the registered ``check_<key>`` of that function; the function name appears in no
    other cell (so student editions run to the end). Per notebook: chapters fold solutions
    (``hide-input``), assignments leave them out of the book (``remove-cell``); every registered
    exercise of the notebook is present; the install cell pins
    the package's version. Across notebooks (default set only): every registered exercise has a
    notebook.
    """
    checking_all = paths is None
    paths = [Path(p) for p in (paths if paths is not None else default_sources(root))]
    problems = []
    by_check = {item.check_name: item for item in EXERCISES.values()}
    assignment_stems = {Path(assignment.notebook).stem for assignment in ASSIGNMENTS.values()}
    for path in paths:
        nb = read_notebook(path)
        found, notebook_problems = find_exercises(path, nb)
        problems += notebook_problems
        is_chapter = path.parent.name in ("notebooks", "drafts")
        is_assignment = path.stem in assignment_stems
        for entry in found:
            if entry.solution is not None and is_chapter and TAG_FOLD not in cell_tags(nb.cells[entry.solution]):
                problems.append(f"{path.name} cell {entry.solution}: tag the solution '{TAG_FOLD}' so the book folds it")
            if entry.solution is not None and is_assignment and TAG_REMOVE not in cell_tags(nb.cells[entry.solution]):
                problems.append(f"{path.name} cell {entry.solution}: tag the solution '{TAG_REMOVE}' so the book leaves "
                                f"it out (assignments are graded)")
            if entry.check_name is None:
                continue
            item = by_check.get(entry.check_name)
            if item is None:
                problems.append(f"{path.name} cell {entry.check}: `{entry.check_name}` is not a registered check "
                                f"(mini_decoders.course.EXERCISES)")
                continue
            if item.function != entry.function or item.source != path.stem:
                problems.append(f"{path.name} cell {entry.check}: `{entry.check_name}` is registered for `{item.function}` "
                                f"in {item.source}, not `{entry.function}` in {path.stem}")
            exercise_cells = {entry.stub, entry.solution, entry.check}
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "code" and i not in exercise_cells and entry.function in names_used(cell.source):
                    problems.append(f"{path.name} cell {i}: uses the exercise function `{entry.function}` outside its "
                                    f"exercise; use the package's implementation there, so that a student notebook "
                                    f"with the stub still runs")
        found_checks = {entry.check_name for entry in found}
        for item in EXERCISES.values():
            if item.source == path.stem and item.check_name not in found_checks and not item.planned:
                problems.append(f"{path.name}: the registered exercise `{item.function}` ({item.check_name}) is missing")
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        if code and "pip" in code[0].source:
            pins = re.findall(r"mini-decoders\s*(?:@\s*\S+@v|==)([0-9][0-9A-Za-z.+-]*)", code[0].source)
            if pins and any(pin != __version__ for pin in pins):
                problems.append(f"{path.name} cell {nb.cells.index(code[0])}: the install cell pins mini-decoders "
                                f"{pins[0]}, but the package is {__version__}")
    if checking_all:
        sources = {path.stem for path in paths}
        for item in EXERCISES.values():
            if item.source not in sources and not item.planned:
                problems.append(f"exercise `{item.function}` ({item.check_name}) is registered for {item.source}.ipynb, "
                                f"which was not found")
    return problems
