"""The autograder: run a submitted notebook, then score the assignment's checks on what it defines.

:func:`grade` executes the submission top to bottom in a fresh kernel (nbclient; one thread, a
per-cell timeout; errors do not stop it, as in a student's own run), then, in the same kernel,
runs each graded item's check on the function of that name, one item per cell, so that each has
its own timeout. The profile is ``MINI_DECODERS_PROFILE`` when set (CI sets ``tiny``), else
``quick``: the outcome-graded parts then run their real-grading setting and targets.

An item scores its rubric points when its check passes and 0 otherwise; an outcome item
(:class:`~mini_decoders.course.outcomes.PartialCredit`) can score a fraction. The
report says why, item by item: the check's message, an item that ran past its timeout, and the
errors of the submission's own cells that belong to the item (between its stub and the next
part's). A justification cell (tag ``justification``) is not scored; the report says whether it
was written, for the instructor to read.

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
from mini_decoders.course.notebooks import cell_tags, require, top_level_functions
from mini_decoders.course.outcomes import PartialCredit
from mini_decoders.course.registry import ASSIGNMENTS
from mini_decoders.errors import DataError
from mini_decoders.training.device import thread_environment
from mini_decoders.training.profiles import resolve_profile


MARKER = "<<mini-decoders-grade>>"
TAG_JUSTIFICATION = "justification"
JUSTIFICATION_PLACEHOLDER = "Replace this text"  # what an unwritten justification cell still says
TIMED_OUT = "CellTimeoutError"


@dataclass
class ItemResult:
    """One graded item."""

    key: str
    function: str
    title: str
    points: float
    max_points: int
    status: str  # passed | partial | not implemented | failed | missing | error | timed out
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
    profile: str = "tiny"

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
                 f"rubric: coursework/rubric.md (profile {self.profile})", ""]
        width = max(len(item.function) for item in self.items)
        for number, item in enumerate(self.items, 1):
            mark = "✓" if item.status == "passed" else "~" if item.status == "partial" else "✗"
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


def grade_namespace(assignment: int, namespace: dict, keys: list[str] | None = None) -> list[dict]:
    """Run the assignment's checks (or those of ``keys``) on the functions in ``namespace`` (a kernel's ``globals()``)."""
    results = []
    for item in ASSIGNMENTS[assignment].items:
        if keys is not None and item.key not in keys:
            continue
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
            except PartialCredit as error:
                status, points, message = "partial", round(item.points * error.fraction, 1), str(error)
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


def grading_profile(profile: str | None = None) -> str:
    """The profile a submission is graded in: ``profile``, else ``MINI_DECODERS_PROFILE``, else ``quick``."""
    chosen = profile or os.environ.get("MINI_DECODERS_PROFILE", "").strip() or "quick"
    return resolve_profile(chosen)


def _item_sections(nb, assignment: int) -> dict[str, tuple[int, int]]:
    """Cells that belong to each item: from the heading above the first cell that defines its function to the
    next item's heading."""
    starts = {}
    for item in ASSIGNMENTS[assignment].items:
        stub = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                     and item.function in top_level_functions(cell.source)), None)
        if stub is not None:  # the part starts at the heading above its stub
            stub = max((i for i in range(stub + 1) if nb.cells[i].cell_type == "markdown"
                        and nb.cells[i].source.lstrip().startswith("#")), default=stub)
        starts[item.key] = stub
    known = sorted(start for start in starts.values() if start is not None)
    sections = {}
    for key, start in starts.items():
        if start is not None:
            sections[key] = (start, next((s for s in known if s > start), len(nb.cells)))
    return sections


def _justification_note(nb, start: int, end: int) -> str:
    cells = [cell for cell in nb.cells[start:end] if TAG_JUSTIFICATION in cell_tags(cell)]
    if not cells:
        return ""
    text = " ".join(cell.source for cell in cells)
    if JUSTIFICATION_PLACEHOLDER in text:
        return "justification: not written (the cell still holds the placeholder); the instructor grades it"
    return f"justification: written ({len(text.split())} words); the instructor reads and grades it"


def grade(submission: str | Path, assignment: int, *, cell_timeout: int = 300, profile: str | None = None,
          kernel_name: str = "python3") -> GradeReport:
    """Execute ``submission`` and score it on assignment ``assignment``'s rubric.

    Args:
        submission: the student's ``.ipynb``.
        assignment: 1, 2 or 3 (see :data:`mini_decoders.course.ASSIGNMENTS`).
        cell_timeout: seconds per cell; a cell that runs longer is interrupted (and reported), and
            so is a graded item whose check runs longer (it scores 0, "timed out").
        profile: ``MINI_DECODERS_PROFILE`` for the run (default: the environment's, else ``quick``,
            the setting the assignments state their outcome targets in; ``tiny``: seconds, for CI).

    Raises:
        DataError: unknown assignment, or the file is not a notebook.
    """
    nbformat = require("nbformat")
    NotebookClient = require("nbclient").NotebookClient
    if assignment not in ASSIGNMENTS:
        raise DataError(f"--assignment must be one of {sorted(ASSIGNMENTS)}, got {assignment}")
    profile = grading_profile(profile)
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
    n_submitted = len(nb.cells)
    items = ASSIGNMENTS[assignment].items
    for item in items:  # one cell per item: each check has its own timeout
        nb.cells.append(nbformat.v4.new_code_cell(
            "import json as _grader_json\n"
            "from mini_decoders.course.grading import MARKER as _grader_marker, grade_namespace as _grader_run\n"
            f"print(_grader_marker + _grader_json.dumps(_grader_run({assignment}, globals(), keys=[{item.key!r}])))"))
    started = time.perf_counter()
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True,
                            error_on_timeout={"ename": TIMED_OUT, "evalue": f"ran longer than {cell_timeout} s",
                                              "traceback": []},
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    died = None
    with _environment(MINI_DECODERS_PROFILE=profile, **thread_environment(1)):
        try:
            client.execute()
        except Exception as error:  # the kernel died (a crash, os._exit, out of memory): report, do not raise
            died = f"{type(error).__name__}: {str(error)[:200]}"
    seconds = time.perf_counter() - started
    cell_errors = [{"cell": i, "ename": output.get("ename", ""), "evalue": output.get("evalue", "")[:200]}
                   for i, cell in enumerate(nb.cells[:n_submitted]) if cell.cell_type == "code"
                   for output in cell.outputs if output.get("output_type") == "error"]
    timed_out = {i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                 and (cell.get("metadata", {}).get("execution", {}).get("timed_out")
                      or any(o.get("ename") in (TIMED_OUT, "KeyboardInterrupt") for o in cell.outputs
                             if o.get("output_type") == "error"))}
    sections = _item_sections(nb, assignment)
    results = []
    for offset, item in enumerate(items):
        cell = nb.cells[n_submitted + offset]
        printed = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        line = next((line for line in printed.splitlines() if line.startswith(MARKER)), None)
        if line is not None:
            result = ItemResult(**json.loads(line[len(MARKER):])[0])
        elif n_submitted + offset in timed_out:
            result = ItemResult(item.key, item.function, item.title, 0, item.points, "timed out",
                                f"the check ran longer than the grader's {cell_timeout} s per cell and was stopped "
                                f"(a slower answer than the budget allows? grade with a longer --timeout to see)")
        else:
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            reason = (f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else died or "no output")
            result = ItemResult(item.key, item.function, item.title, 0, item.points, "error",
                                f"the grader could not run this part in the notebook's kernel ({reason})")
        start, end = sections.get(item.key, (None, None))
        if start is not None:
            if result.status != "passed":
                own = [e for e in cell_errors if start <= e["cell"] < end
                       and e["ename"] not in ("NotImplementedError", "ExerciseNotImplemented")]
                for error in own[:3]:
                    what = "ran longer than the per-cell timeout" if error["cell"] in timed_out else \
                        f"raised {error['ename']}: {error['evalue']}"
                    result.message += f"\ncell {error['cell']} of this part {what}"
            note = _justification_note(nb, start, end)
            if note:
                result.message += f"\n{note}"
        results.append(result)
    return GradeReport(assignment, ASSIGNMENTS[assignment].title, str(path), results, cell_errors, seconds, profile)
