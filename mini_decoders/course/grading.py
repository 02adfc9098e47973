"""The autograder: run a submitted notebook, then score the assignment's checks on what it defines.

:func:`grade` executes the submission top to bottom in a fresh kernel (nbclient; tiny profile,
one thread, a per-cell timeout; errors do not stop it, as in a student's own run), then, in the
same kernel, runs each graded item's check on the function of that name. An item scores its
rubric points when its check passes and 0 otherwise; the report says why, item by item.

The grader trusts the submission's kernel: it is a teaching tool, not a sandbox against a
student who patches the checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mini_decoders.course.checking import CheckFailed, ExerciseNotImplemented
from mini_decoders.course.registry import ASSIGNMENTS
from mini_decoders.errors import DataError

MARKER = "<<mini-decoders-grade>>"


@dataclass
class ItemResult:
    """One graded item."""

    key: str
    function: str
    title: str
    points: float
    max_points: int
    status: str  # passed | not implemented | failed | missing | error
    message: str


@dataclass
class GradeReport:
    """The result of grading one submission."""

    assignment: int
    title: str
    submission: str
    items: list[ItemResult]
    cell_errors: list[dict] = field(default_factory=list)  # {"cell": i, "ename": ..., "evalue": ...}
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(item.points for item in self.items)

    @property
    def max_total(self) -> int:
        return sum(item.max_points for item in self.items)

    @property
    def percent(self) -> float:
        return 100.0 * self.total / self.max_total if self.max_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "max_total": self.max_total, "percent": self.percent}

    def text(self) -> str:
        """The report a student or an instructor reads."""
        lines = [f"Assignment {self.assignment}: {self.title}", f"submission: {self.submission}",
                 f"rubric: coursework/rubric.md", ""]
        width = max(len(item.function) for item in self.items)
        for number, item in enumerate(self.items, 1):
            mark = "✓" if item.status == "passed" else "✗"
            lines.append(f"[{item.points:>3g}/{item.max_points:<3d}] {self.assignment}.{number} "
                         f"{item.function:<{width}}  {mark} {item.status}")
            lines.append(f"          {item.title}")
            for message_line in item.message.strip().splitlines():
                lines.append(f"          {message_line}")
        lines += ["", f"total: {self.total:g}/{self.max_total} ({self.percent:.0f}%)"]
        if self.cell_errors:
            shown = ", ".join(f"cell {e['cell']} ({e['ename']})" for e in self.cell_errors[:8])
            more = f" and {len(self.cell_errors) - 8} more" if len(self.cell_errors) > 8 else ""
            lines.append(f"cells that raised while the notebook ran: {shown}{more}")
        else:
            lines.append("the notebook ran top to bottom without errors")
        lines.append(f"graded in {self.seconds:.0f} s")
        return "\n".join(lines)


def grade_namespace(assignment: int, namespace: dict) -> list[dict]:
    """Run the assignment's checks on the functions in ``namespace`` (a kernel's ``globals()``)."""
    results = []
    for item in ASSIGNMENTS[assignment].items:
        function = namespace.get(item.function)
        printed = io.StringIO()
        if function is None:
            status, points, message = "missing", 0, (f"no function `{item.function}` is defined in the notebook "
                                                     f"(keep the name and signature of the stub)")
        else:
            try:
                with contextlib.redirect_stdout(printed):
                    item.check(function)
                status, points, message = "passed", item.points, printed.getvalue().strip()
            except ExerciseNotImplemented as error:
                status, points, message = "not implemented", 0, str(error)
            except CheckFailed as error:
                status, points, message = "failed", 0, str(error)
            except Exception as error:  # a check that cannot even run on this answer
                status, points, message = "error", 0, f"{type(error).__name__}: {error}"
        results.append(dict(key=item.key, function=item.function, title=item.title, points=points,
                            max_points=item.points, status=status, message=message))
    return results


@contextlib.contextmanager
def _environment(**values: str):
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def grade(submission: str | Path, assignment: int, *, cell_timeout: int = 300, profile: str = "tiny",
          kernel_name: str = "python3") -> GradeReport:
    """Execute ``submission`` and score it on assignment ``assignment``'s rubric.

    Args:
        submission: the student's ``.ipynb``.
        assignment: 1, 2 or 3 (see :data:`mini_decoders.course.ASSIGNMENTS`).
        cell_timeout: seconds per cell; a cell that runs longer is interrupted (and reported).
        profile: ``MINI_DECODERS_PROFILE`` for the run (tiny: seconds per model).

    Raises:
        DataError: unknown assignment, or the file is not a notebook.
    """
    from mini_decoders.course.notebooks import require

    nbformat = require("nbformat")
    NotebookClient = require("nbclient").NotebookClient
    if assignment not in ASSIGNMENTS:
        raise DataError(f"--assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment}")
    path = Path(submission)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise DataError(f"{path}: not a readable notebook ({type(error).__name__}: {error})") from None
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    grader = nbformat.v4.new_code_cell(
        "import json as _grader_json\n"
        "from mini_decoders.course.grading import MARKER as _grader_marker, grade_namespace as _grader_run\n"
        f"print(_grader_marker + _grader_json.dumps(_grader_run({assignment}, globals())))")
    nb.cells.append(grader)
    started = time.perf_counter()
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(path.resolve().parent)}})
    with _environment(MINI_DECODERS_PROFILE=profile, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        client.execute()
    seconds = time.perf_counter() - started
    cell_errors = [{"cell": i, "ename": output.get("ename", ""), "evalue": output.get("evalue", "")[:200]}
                   for i, cell in enumerate(nb.cells[:-1]) if cell.cell_type == "code"
                   for output in cell.outputs if output.get("output_type") == "error"]
    printed = "".join(output.get("text", "") for output in nb.cells[-1].outputs if output.get("output_type") == "stream")
    line = next((line for line in printed.splitlines() if line.startswith(MARKER)), None)
    if line is None:
        errors = [o for o in nb.cells[-1].outputs if o.get("output_type") == "error"]
        reason = f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "no output"
        items = [ItemResult(item.key, item.function, item.title, 0, item.points, "error",
                            f"the grader could not run in this notebook's kernel ({reason})")
                 for item in ASSIGNMENTS[assignment].items]
    else:
        items = [ItemResult(**result) for result in json.loads(line[len(MARKER):])]
    return GradeReport(assignment, ASSIGNMENTS[assignment].title, str(path), items, cell_errors, seconds)
