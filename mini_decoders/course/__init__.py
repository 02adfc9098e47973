"""Coursework: exercise checks, student/instructor editions, a signature verifier, an autograder.

The book is used for courses. Every chapter has a few exercises that re-derive a piece of the
package; three graded assignments live in ``coursework/``. This package holds what makes them
work:

- the checks, ``check_<key>(student_fn)``: run the student's function on fresh random inputs and
  edge cases, compare with the package's implementation, and raise :class:`CheckFailed` (an
  ``AssertionError``) naming the shape or entry that is off, with a hint — never the answer. A
  stub that still raises ``NotImplementedError`` gets :class:`ExerciseNotImplemented` (also a
  ``NotImplementedError``);
- :data:`EXERCISES` and :data:`ASSIGNMENTS`: the registry that ties each check to its notebook,
  its function name and (for graded items) its rubric points;
- :func:`verify` (``mini-decoders course verify``): every exercise follows the cell convention
  below and every stub's signature equals its solution's;
- :func:`build_editions` (``mini-decoders course editions --out DIR``): student notebooks (stubs,
  no solutions, outputs cleared, a Colab badge to themselves, a pinned install cell, a GPU
  runtime) and instructor notebooks (solutions shown);
- :func:`grade` (``mini-decoders course grade SUBMISSION.ipynb --assignment N``): runs a
  submitted notebook (``quick`` profile unless ``MINI_DECODERS_PROFILE`` says otherwise, a
  timeout per cell), then the assignment's checks on the functions it defines (outcome-graded
  parts with partial credit), and prints a per-item report with rubric points and a total.

The cell convention
-------------------
An exercise is three consecutive code cells, after a markdown cell that states the task::

    [markdown]            ### Exercise 2: the masked Poisson loss  (what to write, shapes, units)
    [code, exercise]      def my_loss(log_rates, targets, scored):      <- the stub
                              \"\"\"docstring with shapes\"\"\"
                              raise NotImplementedError("write my_loss")
    [code, solution,      # Solution                                    <- same signature
     hide-input]          def my_loss(log_rates, targets, scored):
                              ...
    [code, check]         from mini_decoders.course import check_masked_poisson_loss
                          check_masked_poisson_loss(my_loss)

- Tags (cell metadata ``tags``): ``exercise`` on the stub, ``solution`` on the solution (plus
  ``hide-input``, so Jupyter Book folds it behind a toggle), ``check`` on the check cell.
- The stub and the solution define the same top-level function with the same signature
  (argument names, defaults, annotations, return annotation); the stub's body ends in
  ``raise NotImplementedError(...)``. Both cells may import what they need; ``np`` and
  ``torch`` are assumed imported by the notebook.
- The check cell calls exactly one registered check with the function. The function's name
  must not appear in any other cell: later cells use the package's implementation, so a
  student notebook with unsolved stubs still runs to the end (only exercise and check cells fail,
  with ``NotImplementedError``).
- In the chapter, the solution runs after the stub, so the book executes cleanly and shows the
  check passing. The student edition drops the solution cells; the instructor edition keeps
  them unfolded.

Adding an exercise (e.g. for the MtM or VQ chapter)
---------------------------------------------------
1. Write the check in the chapter's module (:mod:`mini_decoders.course.checks_chapters_1_3`,
   ``_4_6``, ``_7_9``, ``checks_chapter_10``), decorated with ``@exercise(function="my_fn",
   source="06_mtm_...", reference="mini_decoders.masking.<the function>")``. Build inputs from
   :func:`fresh_seed`, call the student with :func:`call_student`, compare with :func:`compare`,
   end with :func:`passed`.
2. Add the four cells above to the chapter (``make_nb.py`` keeps tags given as
   ``# %% tags=["exercise"]``).
3. ``mini-decoders course verify`` must pass; ``tests/test_course.py`` then runs the new
   solution against its check, the stub against it, and a perturbed answer against it.
"""

from mini_decoders.course.checking import CheckFailed, ExerciseNotImplemented, call_student, compare, fresh_seed, passed
from mini_decoders.course.registry import ASSIGNMENTS, EXERCISES, Assignment, Exercise, exercise, exercises_in
from mini_decoders.course.checks_chapters_1_3 import (  # noqa: E402  (registers the chapters' exercises)
    check_bin_spikes, check_bits_per_spike, check_causal_history, check_masked_poisson_loss, check_r2, check_smooth,
    check_temporal_mask)
from mini_decoders.course.checks_chapters_4_6 import (  # noqa: E402
    check_inter_region_mask, check_intra_region_mask, check_keep_new_rows, check_latent_cross_attention,
    check_mae_loss, check_mae_visible, check_neuron_bps, check_patch_embedding, check_rotate_by_time)
from mini_decoders.course.checks_chapters_7_9 import (  # noqa: E402
    check_ema_update, check_judge, check_scaling_exponent, check_spikes_from_counts, check_stratified_splits,
    check_vq_quantise)
from mini_decoders.course.checks_chapter_10 import check_lab_tokens_per_second, check_match_width  # noqa: E402
from mini_decoders.course.assignment_1_checks import (  # noqa: E402  (registers the assignments' items)
    check_bin_tokens, check_choose_bin_size, check_patch_grid, check_spike_tokens, check_tokens_per_second)
from mini_decoders.course.assignment_2_checks import (  # noqa: E402
    check_adapt_to_session, check_layer_lr_multipliers, check_unit_id_parameter_count)
from mini_decoders.course.assignment_3_checks import (  # noqa: E402
    check_my_masking_scheme, check_neuron_mask, check_region_mask, check_span_selection)
from mini_decoders.course.notebooks import verify  # noqa: E402
from mini_decoders.course.editions import build_editions  # noqa: E402
from mini_decoders.course.grading import grade  # noqa: E402

__all__ = [
    "ASSIGNMENTS", "EXERCISES", "Assignment", "CheckFailed", "Exercise", "ExerciseNotImplemented", "build_editions",
    "call_student", "compare", "exercise", "exercises_in", "fresh_seed", "grade", "passed", "verify",
    *[f"check_{key}" for key in EXERCISES],
]
