"""Which exercises exist: one :class:`Exercise` per ``check_*`` function, registered by a decorator.

The registry ties the three places an exercise lives in together: the notebook that holds its
stub and solution (``source``), the function name the stub defines (``function``), and the check
that grades it (``check_<key>``). The signature verifier, the editions builder and the autograder
all read it, so adding an exercise is: write ``check_<key>`` with ``@exercise(...)``, add the
cells to the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Exercise:
    """One exercise.

    Attributes:
        key: short name; the check is ``check_<key>`` in :mod:`mini_decoders.course`.
        function: the name of the function the notebook's stub and solution define.
        source: the notebook's file name without ``.ipynb`` (a chapter or an assignment).
        reference: the package implementation it re-derives (shown to students in messages).
        check: the check function.
        assignment: the assignment number for graded items, else None.
        points: rubric points (graded items only).
        title: one line for reports and the rubric.
        planned: the check exists but its chapter's cells do not yet (chapters being written);
            the verifier does not ask for them. Drop the flag when the cells are added.
        outcome: graded on a measured result (a score the student's choice reaches within a
            budget, with partial credit), not on matching the package call for call.
    """

    key: str
    function: str
    source: str
    reference: str
    check: Callable
    assignment: Optional[int] = None
    points: int = 0
    title: str = ""
    planned: bool = False
    outcome: bool = False

    @property
    def check_name(self) -> str:
        return f"check_{self.key}"


@dataclass(frozen=True)
class Assignment:
    """A graded assignment: a notebook in ``coursework/`` and the exercises it is scored on."""

    number: int
    title: str
    notebook: str  # path relative to the repository root

    @property
    def items(self) -> list[Exercise]:
        return [item for item in EXERCISES.values() if item.assignment == self.number]

    @property
    def total_points(self) -> int:
        return sum(item.points for item in self.items)


EXERCISES: dict[str, Exercise] = {}

ASSIGNMENTS: dict[int, Assignment] = {
    1: Assignment(1, "Tokenizers side by side", "coursework/assignment_1_tokenizers.ipynb"),
    2: Assignment(2, "Adapt a pretrained model to a new session", "coursework/assignment_2_adaptation.ipynb"),
    3: Assignment(3, "Design a masking scheme", "coursework/assignment_3_masking.ipynb"),
}


def exercise(*, function: str, source: str, reference: str, title: str = "", assignment: int | None = None,
             points: int = 0, planned: bool = False, outcome: bool = False) -> Callable[[Callable], Callable]:
    """Register the decorated ``check_<key>`` function as the check of an exercise."""

    def register(check: Callable) -> Callable:
        name = check.__name__
        if not name.startswith("check_"):
            raise ValueError(f"a check function must be named check_<key>, got {name!r}")
        key = name[len("check_"):]
        if key in EXERCISES:
            raise ValueError(f"exercise {key!r} is registered twice")
        if assignment is not None and (assignment not in ASSIGNMENTS or points <= 0):
            raise ValueError(f"{name}: graded items need a known assignment and positive points")
        EXERCISES[key] = Exercise(key, function, source, reference, check, assignment, points,
                                  title or (check.__doc__ or "").strip().splitlines()[0], planned, outcome)
        return check

    return register


def exercises_in(source: str) -> list[Exercise]:
    """The exercises of one notebook (by file stem), in registration order."""
    return [item for item in EXERCISES.values() if item.source == source]
