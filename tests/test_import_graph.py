"""The package's import graph: no cycle, and the layers below never import the layers on top.

Every import statement of every module is read with ``ast``: at module top, inside functions and
under ``if`` or ``try`` alike, so an import hidden in a function still counts. Two rules:

- no cycle: a module never (directly or through others) imports itself;
- ``data`` -> ``tokenizers`` -> ``models`` (using ``nn``) never import ``run`` or ``experiments``:
  what runs models against each other sits on top, and nothing below depends on it.

The checks run on the real package and, to show they can fail, on a small package that breaks each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mini_decoders

PACKAGE_ROOT = Path(mini_decoders.__file__).parent
LOWER = ("mini_decoders.data", "mini_decoders.tokenizers", "mini_decoders.nn", "mini_decoders.models")
UPPER = ("mini_decoders.run", "mini_decoders.experiments")


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``root`` (``__init__`` = the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` (at ``path``) imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import: from the package, up level - 1 packages
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the module pkg.sub when there is one, else names of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` of a module, or a name in one
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None when the graph has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" when fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = "open", [node]
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _within(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every (importer, imported) pair where a lower layer imports ``run`` or ``experiments``."""
    return sorted((name, target) for name, targets in graph.items() if _within(name, LOWER)
                  for target in targets if _within(target, UPPER))


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE_ROOT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_data_tokenizers_nn_and_models_never_import_run_or_experiments():
    assert upward_imports(import_graph(PACKAGE_ROOT)) == []


def test_the_checks_fail_on_a_package_that_breaks_each_rule(tmp_path):
    root = tmp_path / "mini_decoders"
    files = {
        "__init__.py": "",
        "run.py": "from mini_decoders.models import ndt1\n",
        "models/__init__.py": "",
        # the cycle and the upward edge both hide in a function, where only an ast walk sees them
        "models/ndt1.py": "def fit():\n    from mini_decoders.run import train\n",
        "models/ok.py": "from . import ndt1\n",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    graph = import_graph(root)
    assert graph["mini_decoders.models.ok"] == {"mini_decoders.models.ndt1"}  # relative imports resolve
    assert find_cycle(graph) == ["mini_decoders.models.ndt1", "mini_decoders.run", "mini_decoders.models.ndt1"]
    assert upward_imports(graph) == [("mini_decoders.models.ndt1", "mini_decoders.run")]
