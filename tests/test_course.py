"""Coursework: every solution passes its check, every stub fails it with a friendly message, wrong
answers are caught with a message that locates them; the verifier catches a drifted signature;
editions are built right; a student edition runs to the end failing only with NotImplementedError
in exercise and check cells; the autograder scores a solution 100% and a student edition 0%."""

import json
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from mini_decoders import __version__
from mini_decoders.book_settings import colab_url, install_cell
from mini_decoders.cli import main
from mini_decoders.course import (ASSIGNMENTS, EXERCISES, CheckFailed, ExerciseNotImplemented, build_editions, grade,
                                  verify)
from mini_decoders.course.notebooks import cell_tags, default_sources, find_exercises, read_notebook

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SOURCES = default_sources(ROOT)
CH01 = ROOT / "notebooks" / "01_neural_data_and_tokens.ipynb"
A3 = ROOT / ASSIGNMENTS[3].notebook
NOT_DONE = {"NotImplementedError", "ExerciseNotImplemented"}


def _exercises():
    for path in SOURCES:
        nb = read_notebook(path)
        for entry in find_exercises(path, nb)[0]:
            if entry.solution is None or entry.check_name is None:
                continue  # a broken convention: the verifier test says what is wrong
            item = next(i for i in EXERCISES.values() if i.check_name == entry.check_name)
            yield pytest.param(item, nb.cells[entry.stub].source, nb.cells[entry.solution].source,
                               id=f"{path.stem}:{entry.function}")


EXERCISE_CELLS = list(_exercises())


def _define(source: str, name: str):
    namespace = {"np": np, "torch": torch}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def test_every_registered_exercise_is_in_a_notebook_and_exported():
    import mini_decoders.course as course

    in_notebooks = {param.values[0].key for param in EXERCISE_CELLS}
    for item in EXERCISES.values():
        assert item.planned or item.key in in_notebooks, item.key
        assert getattr(course, item.check_name) is item.check
    for number, assignment in ASSIGNMENTS.items():
        assert assignment.total_points == 100 and len(assignment.items) >= 3, number
    for chapter in ("01_neural_data_and_tokens", "02_classic_decoders", "03_ndt1_masked_modelling",
                    "04_poyo_spike_tokens", "05_ndt2_multicontext"):
        assert 2 <= sum(item.source == chapter for item in EXERCISES.values()) <= 4, chapter


@pytest.mark.parametrize("item,stub,solution", EXERCISE_CELLS)
def test_solution_passes_its_check(item, stub, solution, capsys):
    item.check(_define(solution, item.function))
    assert capsys.readouterr().out.startswith(f"✓ {item.function} matches")


@pytest.mark.parametrize("item,stub,solution", EXERCISE_CELLS)
def test_stub_fails_its_check_with_a_friendly_message(item, stub, solution):
    with pytest.raises(ExerciseNotImplemented) as caught:
        item.check(_define(stub, item.function))
    assert isinstance(caught.value, NotImplementedError) and isinstance(caught.value, AssertionError)
    message = str(caught.value)
    assert f"`{item.function}` is not written yet" in message and "raise NotImplementedError" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained stub traceback


def _perturb(value):
    """The same answer with one entry (of every output) slightly wrong."""
    if isinstance(value, tuple):
        return tuple(_perturb(v) for v in value)
    if isinstance(value, dict):
        return {k: _perturb(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        wrong = value.detach().clone().contiguous() if value.dtype == torch.bool else value.clone().contiguous()
        flat = wrong.view(-1)
        if value.dtype == torch.bool:
            flat[0] = ~flat[0]
        else:
            flat[0] = flat[0] + 0.5
        return wrong
    if isinstance(value, np.ndarray):
        wrong = value.copy()
        if wrong.dtype.kind in "UO":  # labels (e.g. "train" / "val" / "test"): the first gets another label
            wrong = wrong.astype(object)
            wrong.flat[0] = next(label for label in (*sorted(set(value.tolist())), "?") if label != value.flat[0])
        elif wrong.dtype == bool:
            wrong.flat[0] = not wrong.flat[0]
        else:
            wrong.flat[0] += 1
        return wrong
    if isinstance(value, (int, float, np.floating, np.integer)):
        return value + 1
    raise TypeError(type(value))


@pytest.mark.parametrize("item,stub,solution", [p for p in EXERCISE_CELLS if p.values[0].key != "adapt_to_session"])
def test_an_answer_off_by_one_entry_is_caught(item, stub, solution):
    right = _define(solution, item.function)

    def almost(*args):
        return _perturb(right(*args))

    almost.__name__ = item.function
    with pytest.raises(CheckFailed) as caught:
        item.check(almost)
    assert not isinstance(caught.value, NotImplementedError)
    assert re.search(r"entry|is [-\d.e+]+, expected|returned|should|changes over time|hides units", str(caught.value))


# ------------------------------------------------------------------------------ typical mistakes
def _solution_of(key: str):
    param = next(p for p in EXERCISE_CELLS if p.values[0].key == key)
    return _define(param.values[2], EXERCISES[key].function)


def test_typical_mistakes_get_a_message_that_points_at_them():
    from mini_decoders.course import (check_bits_per_spike, check_causal_history, check_keep_new_rows,
                                      check_masked_poisson_loss, check_patch_embedding, check_r2)

    bps = _solution_of("bits_per_spike")
    with pytest.raises(CheckFailed, match="ln 2"):
        check_bits_per_spike(lambda rates, spikes: bps(rates, spikes) * np.log(2))
    with pytest.raises(CheckFailed, match="sign is flipped"):
        check_bits_per_spike(lambda rates, spikes: -bps(rates, spikes))

    def lag_major(counts, n_lags):  # feature k*U + u instead of u*H + k
        n, t, u = counts.shape
        return _solution_of("causal_history")(counts, n_lags).reshape(n, t, u, n_lags).transpose(0, 1, 3, 2).reshape(n, t, -1)
    with pytest.raises(CheckFailed, match=r"the lagged features .*entry \(.*expected.*\n  hint: feature u\*H \+ k"):
        check_causal_history(lag_major)

    def pooled(pred, true):
        return 1 - np.sum((true - pred) ** 2) / np.sum((true - true.mean(0)) ** 2)
    with pytest.raises(CheckFailed, match="pooled the columns"):
        check_r2(pooled)

    def mean_over_everything(log_rates, targets, scored):
        return (torch.exp(log_rates) - targets * log_rates).mean()
    with pytest.raises(CheckFailed, match="scored entries only"):
        check_masked_poisson_loss(mean_over_everything)

    def as_number(log_rates, targets, scored):
        return (((torch.exp(log_rates) - targets * log_rates) * scored).sum() / scored.sum()).detach().item()
    with pytest.raises(CheckFailed, match="carries gradients"):
        check_masked_poisson_loss(as_number)

    def in_place(grad, n_old):
        grad[:n_old] = 0
        return grad
    with pytest.raises(CheckFailed, match="in place"):
        check_keep_new_rows(in_place)

    def padding_with_row_zero(counts, table, neurons_per_token, max_count):
        n_bins, n_units = counts.shape
        n_patches = -(-n_units // neurons_per_token)
        padded = np.zeros((n_bins, n_patches * neurons_per_token), dtype=np.int64)
        padded[:, :n_units] = np.clip(np.round(counts), 0, max_count)
        return table[padded].reshape(n_bins * n_patches, -1)
    with pytest.raises(CheckFailed, match="the patch tokens .*entry"):
        check_patch_embedding(padding_with_row_zero)


# ------------------------------------------------------------------------------ chapters 4-6 (issue 20)
CHAPTERS_4_TO_6 = {"04_poyo_spike_tokens": {"rotate_by_time", "latent_cross_attention", "keep_new_rows"},
                   "05_ndt2_multicontext": {"patch_embedding", "mae_visible", "mae_loss"},
                   "06_mtm_universal_translator": {"inter_region_mask", "intra_region_mask", "neuron_bps"}}


def test_chapters_4_to_6_have_their_exercises_in_the_notebooks():
    in_notebooks = {param.values[0].key for param in EXERCISE_CELLS}
    for chapter, keys in CHAPTERS_4_TO_6.items():
        registered = {item.key for item in EXERCISES.values() if item.source == chapter}
        assert registered == keys and keys <= in_notebooks, chapter
        assert not any(EXERCISES[key].planned for key in keys), chapter


def test_typical_mistakes_in_chapters_4_to_6_get_a_message_that_points_at_them():
    from mini_decoders.course import (check_intra_region_mask, check_latent_cross_attention, check_mae_loss,
                                      check_neuron_bps)
    from mini_decoders.course.checks_chapters_4_6 import _cross_attention_variant
    from mini_decoders.metrics import bits_per_spike

    # POYO's encoder: each variant is one step of the recipe left out.
    for flags, message in (({"scale": False}, "not scaled"), ({"mask": False}, "padding spike tokens"),
                           ({"rotate_values": False}, "also rotates the values"),
                           ({"rotate_back": False}, "turn the attention output back"),
                           ({"softmax_dim": 0}, "softmax runs over the spikes")):
        with pytest.raises(CheckFailed, match=message):
            check_latent_cross_attention(lambda *args, flags=flags: _cross_attention_variant(*args, **flags))

    def keys_by_latent_time(latents, spikes, spike_mask, latent_times, spike_times, w_q, w_k, w_v, rotate):
        return rotate(spikes @ w_k, latent_times)
    with pytest.raises(CheckFailed, match=r"raised ValueError: rotate\(x, times\) takes x of shape \(M, \d+\)"):
        check_latent_cross_attention(keys_by_latent_time)

    # NDT2's MAE loss: what is scored, and what it is divided by.
    def nll(log_rates, counts):
        return torch.exp(log_rates) - counts * log_rates
    with pytest.raises(CheckFailed, match="padded neurons"):
        check_mae_loss(lambda log_rates, counts, hidden, mask: nll(log_rates, counts)[hidden].mean())
    with pytest.raises(CheckFailed, match="visible tokens were scored"):
        check_mae_loss(lambda log_rates, counts, hidden, mask: nll(log_rates, counts)[mask].mean())
    with pytest.raises(CheckFailed, match="not of hidden tokens"):
        check_mae_loss(lambda log_rates, counts, hidden, mask:
                       (nll(log_rates, counts) * (hidden[..., None] & mask)).sum() / hidden.sum().clamp_min(1))
    with pytest.raises(CheckFailed, match=r"nothing hidden.*is nan.*\n  hint: .*max\(1"):
        check_mae_loss(lambda log_rates, counts, hidden, mask: (nll(log_rates, counts) * (hidden[..., None] & mask)).sum()
                       / (hidden[..., None] & mask).sum())
    solution = _solution_of("mae_loss")
    with pytest.raises(CheckFailed, match="carries gradients"):
        check_mae_loss(lambda *args: solution(*args).item())

    # MtM's intra-region mask: hidden is not scored.
    intra = _solution_of("intra_region_mask")
    with pytest.raises(CheckFailed, match=r"the scored units .*\n  hint: the other regions are hidden but \*not\* scored"):
        check_intra_region_mask(lambda regions, target, noise, ratio: (intra(regions, target, noise, ratio)[0],) * 2)
    def hides_above_ratio(regions, target, noise, ratio):
        real = regions >= 0
        in_target = (regions == target[:, None]) & real
        scored = in_target & (noise >= ratio)
        return (real & ~in_target) | scored, scored
    with pytest.raises(CheckFailed, match=r"noise is \*below\* ratio"):
        check_intra_region_mask(hides_above_ratio)

    def hides_padding(regions, target, noise, ratio):
        hidden, scored = intra(regions, target, noise, ratio)
        return hidden | (regions < 0), scored
    with pytest.raises(CheckFailed, match=r"the hidden units .*\n  hint: .*padding \(-1\) is never hidden"):
        check_intra_region_mask(hides_padding)

    # The paper's per-neuron bits/spike.
    with pytest.raises(CheckFailed, match="you pooled the neurons"):
        check_neuron_bps(lambda rates, counts, scored: bits_per_spike(np.where(scored, rates, 1.0),
                                                                      np.where(scored, counts, np.nan)))
    bps = _solution_of("neuron_bps")

    def with_silent_neurons(rates, counts, scored):
        spikes = np.where(scored, counts, 0.0).sum((0, 1))
        if (spikes > 0).all():
            return bps(rates, counts, scored)
        return float("nan")  # what np.mean over every neuron gives once one has no spike
    with pytest.raises(CheckFailed, match="leave it out of the mean"):
        check_neuron_bps(with_silent_neurons)

    def null_from_every_entry(rates, counts, scored):  # the null's mean over all entries, scored or not
        spikes, lam = np.where(scored, counts, 0.0), np.where(scored, rates, 1.0)
        n_scored, total, mean = scored.sum((0, 1)), spikes.sum((0, 1)), counts.mean((0, 1))
        keep = total > 0
        nll_model = (np.where(scored, lam, 0.0) - spikes * np.log(lam)).sum((0, 1))[keep]
        nll_null = n_scored[keep] * mean[keep] - total[keep] * np.log(mean[keep])
        return float(np.mean((nll_null - nll_model) / (total[keep] * np.log(2))))
    with pytest.raises(CheckFailed, match=r"mean count over its \*scored\* entries"):
        check_neuron_bps(null_from_every_entry)


def test_wrong_calls_and_crashes_are_explained():
    from mini_decoders.course import check_smooth

    with pytest.raises(CheckFailed, match="cannot be called with the check's arguments"):
        check_smooth(lambda counts, bin_size: counts)
    with pytest.raises(CheckFailed, match="expected a function"):
        check_smooth(np.zeros(3))

    def crashes(counts, bin_size, kern_sd):
        raise ValueError("kernel too wide")
    with pytest.raises(CheckFailed, match=r"raised ValueError: kernel too wide\n  inputs \(kern_sd"):
        check_smooth(crashes)
    with pytest.raises(CheckFailed, match=r"has shape \(4, 40\), expected \(4, 40, 5\)"):
        check_smooth(lambda counts, bin_size, kern_sd: counts.sum(-1))


def test_checks_of_the_chapters_being_written():
    """MtM's inter-region mask and VQ's straight-through quantiser, checked before their chapters exist."""
    masking = pytest.importorskip("mini_decoders.masking")
    if not hasattr(masking, "inter_region_selection"):
        pytest.skip("mini_decoders.masking has no inter_region_selection yet")
    pytest.importorskip("mini_decoders.nn.quantize")
    from mini_decoders.course import check_inter_region_mask, check_vq_quantise

    check_inter_region_mask(lambda regions, target: (regions == target[:, None]) & (regions >= 0))
    with pytest.raises(CheckFailed, match="padding"):
        check_inter_region_mask(lambda regions, target: regions == target[:, None])

    def quantise(z, codebook):
        codes = ((z[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)
        return z + (codebook[codes] - z).detach(), codes
    check_vq_quantise(quantise)
    with pytest.raises(CheckFailed, match="straight-through"):
        check_vq_quantise(lambda z, codebook: (lambda q, c: (q.detach(), c))(*quantise(z, codebook)))


# ------------------------------------------------------------------------------ verifier
def test_the_repository_follows_the_convention():
    assert verify(root=ROOT) == []
    assert main(["course", "verify"]) == 0


def _edit_copy(tmp_path, source: Path, edit) -> Path:
    nb = read_notebook(source)
    edit(nb)
    target = tmp_path / source.name  # same stem: the registry still matches
    nbformat.write(nb, str(target))
    return target


def test_a_drifted_signature_fails_the_verifier(tmp_path, capsys):
    def drift(nb):
        cell = next(c for c in nb.cells if "solution" in cell_tags(c) and "my_bin_spikes" in c.source)
        cell.source = cell.source.replace("bin_size: float) -> np.ndarray", "bin_size: float = 0.02) -> np.ndarray", 1)
    drifted = _edit_copy(tmp_path, CH01, drift)
    problems = verify([drifted])
    assert len(problems) == 1 and "signature of `my_bin_spikes` drifted" in problems[0]
    assert "bin_size: float=0.02" in problems[0]
    assert main(["course", "verify", str(drifted)]) == 1
    assert "drifted" in capsys.readouterr().out


def test_the_verifier_catches_broken_conventions(tmp_path):
    def break_it(nb):
        for cell in nb.cells:
            if "exercise" in cell_tags(cell) and "my_bits_per_spike" in cell.source:
                cell.source = cell.source.replace('raise NotImplementedError("write my_bits_per_spike")', "return 0.0")
            if "check" in cell_tags(cell) and "my_bin_spikes" in cell.source:
                cell.metadata["tags"] = []
        nb.cells.append(nbformat.v4.new_code_cell("print(my_bits_per_spike(1, 2))"))
        nb.cells[1].source = nb.cells[1].source.replace(f"mini-decoders=={__version__}", "mini-decoders==0.0.1")
    problems = "\n".join(verify([_edit_copy(tmp_path, CH01, break_it)]))
    assert "must raise NotImplementedError" in problems
    assert "must be followed by a cell tagged 'check'" in problems
    assert "uses the exercise function `my_bits_per_spike` outside its exercise" in problems
    assert "check_bin_spikes) is missing" in problems
    assert f"pins mini-decoders 0.0.1, but the package is {__version__}" in problems


# ------------------------------------------------------------------------------ editions
def test_editions_have_stubs_or_solutions_badges_pins_and_a_gpu(tmp_path, capsys):
    out = tmp_path / "editions"
    assert main(["course", "editions", "--out", str(out)]) == 0
    n_sources = len(list((ROOT / "notebooks").glob("*.ipynb"))) + len(list((ROOT / "coursework").glob("*.ipynb")))
    assert f"student: {n_sources} notebooks" in capsys.readouterr().out
    for source in [p for p in SOURCES if "drafts" not in p.parts]:
        original = read_notebook(source)
        n_solutions = sum("solution" in cell_tags(c) for c in original.cells)
        for edition in ("student", "instructor"):
            nb = read_notebook(out / edition / source.name)
            solutions = [c for c in nb.cells if "solution" in cell_tags(c)]
            assert len(solutions) == (0 if edition == "student" else n_solutions), (edition, source.name)
            assert all("hide-input" not in cell_tags(c) for c in solutions)
            assert sum("exercise" in cell_tags(c) for c in nb.cells) == n_solutions
            assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
            badge = re.search(r"\((https://colab\.research\.google\.com/github/\S+?)\)", nb.cells[0].source).group(1)
            assert badge == colab_url(f"editions/{edition}/{source.name}"), badge
            install = nb.cells[1].source
            assert nb.cells[1].cell_type == "code" and "google.colab" in install
            assert install == install_cell() and f"mini-decoders=={__version__}" in install and "cuda" in install
            assert nb.metadata["accelerator"] == "GPU" and nb.metadata["mini_decoders"]["edition"] == edition
        student_stubs = [c.source for c in read_notebook(out / "student" / source.name).cells if "exercise" in cell_tags(c)]
        assert all("raise NotImplementedError" in stub for stub in student_stubs)


def _run_cells(nb, cwd: Path):
    """Execute a notebook like a student would (errors do not stop it); (cell index, tags, ename) per error."""
    from nbclient import NotebookClient

    from mini_decoders.course.grading import _environment

    with _environment(MINI_DECODERS_PROFILE="tiny", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
        NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    return [(i, cell_tags(cell), output["ename"]) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for output in cell.outputs if output.get("output_type") == "error"]


def test_student_chapter_runs_to_the_end_failing_only_in_exercises(tmp_path):
    build_editions(tmp_path, sources=[CH01], root=ROOT)
    nb = read_notebook(tmp_path / "student" / CH01.name)
    errors = _run_cells(nb, tmp_path)
    check_cells = [i for i, cell in enumerate(nb.cells) if "check" in cell_tags(cell)]
    assert [i for i, _, _ in errors] == check_cells  # every check fails, nothing else does
    assert all(name in NOT_DONE and ("check" in tags or "exercise" in tags) for _, tags, name in errors), errors
    last = nb.cells[-1]  # the chapter's last cell (its run time) still ran
    assert last.cell_type == "code" and last.execution_count is not None and "state_run_time" in last.source


def test_autograder_scores_student_edition_0_and_solution_100(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "tiny")  # the CLI grades in the environment's profile
    build_editions(tmp_path, sources=[A3], root=ROOT)
    student = grade(tmp_path / "student" / A3.name, 3, profile="tiny")
    assert student.total == 0 and student.max_total == 100
    assert [item.status for item in student.items] == ["not implemented"] * 4
    assert {e["ename"] for e in student.cell_errors} <= NOT_DONE and len(student.cell_errors) == 4
    text = student.text()
    assert "total: 0/100 (0%)" in text and "[  0/25 ] 3.2 span_selection" in text and "not written yet" in text
    assert "justification: not written" in text

    report_json = tmp_path / "report.json"
    assert main(["course", "grade", str(tmp_path / "instructor" / A3.name), "--assignment", "3",
                 "--json", str(report_json)]) == 0
    printed = capsys.readouterr().out
    assert "total: 100/100 (100%)" in printed and "ran top to bottom without errors" in printed
    report = json.loads(report_json.read_text())
    assert report["percent"] == 100 and report["cell_errors"] == []  # the instructor edition executes clean
    assert [item["status"] for item in report["items"]] == ["passed"] * 4


def test_autograder_scores_a_partial_submission_item_by_item():
    from mini_decoders.course.grading import GradeReport, ItemResult, grade_namespace

    namespace = {item.function: _solution_of(item.key) for item in ASSIGNMENTS[3].items}
    namespace["span_selection"] = _define(next(p.values[1] for p in EXERCISE_CELLS if p.values[0].key == "span_selection"),
                                          "span_selection")  # the stub
    namespace["region_mask"] = lambda counts, regions, generator: (counts, torch.zeros(counts.shape, dtype=torch.bool))
    del namespace["neuron_mask"]
    namespace["my_masking_scheme"] = _chapter_3_scheme  # co-smoothing only: half the part's points
    results = grade_namespace(3, namespace)
    assert [(r["function"], r["points"], r["status"]) for r in results] == [
        ("neuron_mask", 0, "missing"), ("span_selection", 0, "not implemented"), ("region_mask", 0, "failed"),
        ("my_masking_scheme", 20, "partial")]
    namespace["neuron_mask"] = _solution_of("neuron_mask")
    report = GradeReport(3, ASSIGNMENTS[3].title, "partial.ipynb", [ItemResult(**r) for r in grade_namespace(3, namespace)])
    assert report.total == 40 and "total: 40/100 (40%)" in report.text()
    assert "is not exactly one region" in report.items[2].message
    assert "inter-region bits/spike (test trials)" in report.items[3].message and "no points" in report.items[3].message


def test_grader_refuses_unknown_assignments_and_files(tmp_path, capsys):
    assert main(["course", "grade", str(A3), "--assignment", "7"]) == 2
    assert "--assignment must be one of [1, 2, 3]" in capsys.readouterr().err
    assert main(["course", "grade", str(tmp_path / "missing.ipynb"), "--assignment", "1"]) == 2
    (tmp_path / "bad.ipynb").write_text("not json")
    assert main(["course", "grade", str(tmp_path / "bad.ipynb"), "--assignment", "1"]) == 2
    assert "not a readable notebook" in capsys.readouterr().err


def test_rubric_lists_every_graded_item_with_its_points():
    rubric = (ROOT / "coursework" / "rubric.md").read_text()
    rows = re.findall(r"^\|\s*(\d)\.(\d)\s*\|\s*`(\w+)`\s*\|\s*(\d+)\s*\|", rubric, flags=re.M)
    listed = {(int(a), int(n), name, int(points)) for a, n, name, points in rows}
    expected = {(number, position, item.function, item.points) for number, assignment in ASSIGNMENTS.items()
                for position, item in enumerate(assignment.items, 1)}
    assert listed == expected
    for assignment in ASSIGNMENTS.values():
        assert (ROOT / assignment.notebook).exists()
        assert f"--assignment {assignment.number}" in rubric


# ------------------------------------------------------------------------------ chapters 7-9
CHAPTERS_7_TO_9 = ("07_vq_tokens", "08_side_by_side", "09_real_data")


def test_chapters_7_to_9_have_checked_exercises_and_no_stray_solutions(tmp_path):
    """Two or more registered, non-planned exercises each; the student edition drops every solution body."""
    in_notebooks = {param.values[0].key for param in EXERCISE_CELLS}
    for chapter in CHAPTERS_7_TO_9:
        items = [item for item in EXERCISES.values() if item.source == chapter]
        assert len(items) >= 2 and not any(item.planned for item in items), chapter
        assert {item.key for item in items} <= in_notebooks, chapter
    sources = [ROOT / "notebooks" / f"{chapter}.ipynb" for chapter in CHAPTERS_7_TO_9]
    build_editions(tmp_path, sources=sources, root=ROOT)
    for source in sources:
        original = read_notebook(source)
        # A cell written as a solution must be tagged as one (chapter 7's once was not, and shipped).
        for cell in original.cells:
            if cell.cell_type == "code" and cell.source.lstrip().startswith("# Solution"):
                assert "solution" in cell_tags(cell), (source.name, cell.source[:80])
        bodies = [c.source.split("\n", 1)[1] for c in original.cells if "solution" in cell_tags(c)]
        student = "\n".join(c.source for c in read_notebook(tmp_path / "student" / source.name).cells)
        assert bodies and not [body for body in bodies if body.strip() in student], source.name


def test_typical_mistakes_in_chapters_7_to_9_get_a_message_that_points_at_them():
    from mini_decoders.course import (check_ema_update, check_judge, check_scaling_exponent,
                                      check_spikes_from_counts, check_stratified_splits, check_vq_quantise)

    # chapter 7: the quantiser
    def by_dot_product(z, codebook):
        codes = (z @ codebook.t()).argmax(1)
        return z + (codebook[codes] - z).detach(), codes
    with pytest.raises(CheckFailed, match="largest dot product"):
        check_vq_quantise(by_dot_product)
    quantise = _solution_of("vq_quantise")
    with pytest.raises(CheckFailed, match="codes first"):
        check_vq_quantise(lambda z, codebook: quantise(z, codebook)[::-1])
    with pytest.raises(CheckFailed, match="carry no gradient"):
        check_vq_quantise(lambda z, codebook: (codebook[quantise(z, codebook)[1]], quantise(z, codebook)[1]))

    def no_detach(z, codebook):
        codes = quantise(z, codebook)[1]
        return z + (codebook[codes] - z), codes
    with pytest.raises(CheckFailed, match=r"the gradient reaching z(.|\n)*without \.detach\(\)"):
        check_vq_quantise(no_detach)

    # chapter 7: the EMA codebook update
    ema = _solution_of("ema_update")
    with pytest.raises(CheckFailed, match=r"the new ema_count(.|\n)*weighs the \*old\* statistics"):
        check_ema_update(lambda z, codes, codebook, count, sums, decay=0.99, eps=1e-5:
                         ema(z, codes, codebook, count, sums, 1 - decay, eps))

    def no_mass_rule(z, codes, codebook, count, sums, decay=0.99, eps=1e-5):
        _, new_count, new_sum = ema(z, codes, codebook, count, sums, decay, eps)
        return new_sum / new_count.clamp_min(eps)[:, None], new_count, new_sum
    with pytest.raises(CheckFailed, match="keeps its old row"):
        check_ema_update(no_mass_rule)

    def batch_means(z, codes, codebook, count, sums, decay=0.99, eps=1e-5):
        n = torch.bincount(codes, minlength=len(codebook)).float()
        s = torch.zeros_like(sums).index_add_(0, codes, z)
        return torch.where(n[:, None] > 0, s / n.clamp_min(1)[:, None], codebook), n, s
    with pytest.raises(CheckFailed, match=r"the new ema_count .*entry"):
        check_ema_update(batch_means)

    # chapter 8: the scaling exponent
    exponent = _solution_of("scaling_exponent")

    def swapped(x, seconds):
        kept = [(a, t) for a, t in zip(x, seconds) if t is not None and t > 0]
        return None if len(kept) < 2 else float(np.polyfit(*np.log(np.array(kept)).T[::-1], 1)[0])
    with pytest.raises(CheckFailed, match="axes are swapped"):
        check_scaling_exponent(swapped)
    with pytest.raises(CheckFailed, match="should be None"):
        check_scaling_exponent(lambda x, seconds: exponent(x, seconds) or 0.0)
    with pytest.raises(CheckFailed, match="raised TypeError"):  # None times are not skipped
        check_scaling_exponent(lambda x, seconds: float(np.polyfit(np.log(x), np.log(seconds), 1)[0]))

    # chapter 8: the verdict of a row
    judge = _solution_of("judge")

    def ratio_to_any_baseline(score, baseline_score, oracle_score, bar=1.0):
        verdict = judge(score, baseline_score, oracle_score, bar)
        if baseline_score is not None:
            verdict["ratio_to_baseline"] = score / baseline_score
        return verdict
    with pytest.raises(CheckFailed, match=r"ratio_to_baseline \(a negative baseline.*should be None"):
        check_judge(ratio_to_any_baseline)

    def ties_win(score, baseline_score, oracle_score, bar=1.0):
        verdict = judge(score, baseline_score, oracle_score, bar)
        if baseline_score is not None:
            verdict["beats_baseline"] = score >= baseline_score
        return verdict
    with pytest.raises(CheckFailed, match="a tie does not beat"):
        check_judge(ties_win)
    with pytest.raises(CheckFailed, match=r"meets_model_bar \(VQ's bar 0.9(.|\n)*bar · baseline_score"):
        check_judge(lambda score, baseline_score, oracle_score, bar=1.0: judge(score, baseline_score, oracle_score))

    # chapter 9: spike times from counts
    unbin = _solution_of("spikes_from_counts")

    def at_centres(counts, bin_size, t_start=0.0):
        bins, units = np.nonzero(counts)
        n = counts[bins, units]
        return t_start + (np.repeat(bins, n) + 0.5) * bin_size, np.repeat(units, n)
    with pytest.raises(CheckFailed, match="bin's centre"):
        check_spikes_from_counts(at_centres)

    def unsorted(counts, bin_size, t_start=0.0):
        times, units = unbin(counts, bin_size, t_start)
        order = np.lexsort((times, units))  # unit by unit, as a per-neuron file lists them
        return times[order], units[order]
    with pytest.raises(CheckFailed, match="sorted in time"):
        check_spikes_from_counts(unsorted)
    with pytest.raises(CheckFailed, match=r"the spike times \(in time order\).*entry"):
        check_spikes_from_counts(lambda counts, bin_size, t_start=0.0: unbin(counts, bin_size))

    # chapter 9: splits within each condition
    def global_split(condition, fractions=(0.7, 0.1, 0.2), seed=0):
        return _solution_of("stratified_splits")(np.zeros(len(condition)), fractions, seed)
    with pytest.raises(CheckFailed, match="every condition on their own"):
        check_stratified_splits(global_split)

    def no_shuffle(condition, fractions=(0.7, 0.1, 0.2), seed=0):
        condition = np.asarray(condition).astype(str)
        split = np.full(len(condition), "test", dtype=object)
        for label in np.unique(condition):
            members = np.flatnonzero(condition == label)
            n_train, n_val = round(fractions[0] * len(members)), round(fractions[1] * len(members))
            split[members[:n_train]], split[members[n_train:n_train + n_val]] = "train", "val"
        return split.astype(str)
    with pytest.raises(CheckFailed, match="the same for seeds"):
        check_stratified_splits(no_shuffle)

    def truncating(condition, fractions=(0.7, 0.1, 0.2), seed=0):
        condition = np.asarray(condition).astype(str)
        rng = np.random.default_rng(seed)
        split = np.full(len(condition), "test", dtype=object)
        for label in np.unique(condition):
            members = rng.permutation(np.flatnonzero(condition == label))
            n_train, n_val = int(fractions[0] * len(members)), int(fractions[1] * len(members))
            split[members[:n_train]], split[members[n_train:n_train + n_val]] = "train", "val"
        return split.astype(str)
    with pytest.raises(CheckFailed, match=r"should have .* train .*\n  hint: n_train = round"):
        check_stratified_splits(truncating)




def test_typical_mistakes_in_chapter_10_get_a_message_that_points_at_them():
    from mini_decoders.course import check_lab_tokens_per_second, check_match_width

    rates = _solution_of("lab_tokens_per_second")

    def per_window(n_neurons, rate_hz, window_s, *rest):
        return {kind: value * window_s for kind, value in rates(n_neurons, rate_hz, window_s, *rest).items()}
    with pytest.raises(CheckFailed, match=r"tokens per \*window\*"):
        check_lab_tokens_per_second(per_window)

    def no_start_end(n_neurons, rate_hz, window_s, *rest):
        return {**rates(n_neurons, rate_hz, window_s, *rest), "spikes": n_neurons * rate_hz}
    with pytest.raises(CheckFailed, match="start and an end token"):
        check_lab_tokens_per_second(no_start_end)

    match = _solution_of("match_width")
    with pytest.raises(CheckFailed, match=r"\*absolute\* difference"):
        check_match_width(lambda count, target, widths: min(widths, key=lambda w: count(w) - target))

    def stops_early(count, target, widths):
        best = widths[0]
        for width in widths[1:]:
            if abs(count(width) - target) >= abs(count(best) - target):
                break
            best = width
        return best
    with pytest.raises(CheckFailed, match="not monotonic"):
        check_match_width(stops_early)
    with pytest.raises(CheckFailed, match="the width itself"):
        check_match_width(lambda count, target, widths: count(match(count, target, widths)))


# ==============================================================================================
# Issue 20 (coursework): student editions without solution code, outcome-graded parts with
# partial credit, a grader that survives timeouts and failing cells.

def _solution_bodies(nb) -> list[tuple[int, str]]:
    """(cell, line) of every solution line a student must not see.

    A solution is any code cell, other than the stub, that defines an exercise's function, or that
    is tagged ``solution``: found without trusting the tag, so a cell that lost it is still found.
    Lines shared with the stub (signature, docstring), the ``# Solution`` marker and lines of
    under 10 characters (``else:``, ``)``) give nothing away and are skipped.
    """
    from mini_decoders.course.notebooks import top_level_functions

    stubs = {name: cell.source for cell in nb.cells if cell.cell_type == "code" and "exercise" in cell_tags(cell)
             for name in top_level_functions(cell.source)}
    lines = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "exercise" in cell_tags(cell):
            continue
        defines = set(top_level_functions(cell.source)) & set(stubs)
        if not defines and "solution" not in cell_tags(cell):
            continue
        shared = {line.strip() for name in defines for line in stubs[name].splitlines()}
        lines += [(index, line.strip()) for line in cell.source.splitlines()
                  if len(line.strip()) >= 10 and line.strip() not in shared and line.strip() != "# Solution"]
    return lines


def _leaks(source_nb, student_nb) -> list[tuple[int, str]]:
    """Solution lines the student edition shows; a line the chapter also has outside its solutions
    (``return None`` in another cell) gives nothing away."""
    bodies = _solution_bodies(source_nb)
    solution_cells = {index for index, _ in bodies}
    public = {line.strip() for index, cell in enumerate(source_nb.cells) if index not in solution_cells
              for line in cell.source.splitlines()}
    shown = {line.strip() for cell in student_nb.cells for line in cell.source.splitlines()}
    return [(index, line) for index, line in bodies if line in shown and line not in public]


def test_student_editions_contain_no_solution_code(tmp_path):
    build_editions(tmp_path, sources=SOURCES, root=ROOT)
    checked = 0
    for source in SOURCES:
        original = read_notebook(source)
        student = read_notebook(tmp_path / "student" / source.name)
        leaks = _leaks(original, student)
        assert not leaks, f"{source.name}: the student edition shows solution code: {leaks[:3]}"
        checked += len(_solution_bodies(original))
        if source.parent.name == "coursework":
            assert _solution_bodies(original), f"{source.name}: no solution found to check"
    assert checked > 100  # the detector looks at real solutions


def test_a_solution_that_lost_its_tag_is_caught(tmp_path):
    def untag(nb):
        cell = next(c for c in nb.cells if "solution" in cell_tags(c) and "def my_masking_scheme" in c.source)
        cell.metadata["tags"] = ["hide-input"]
    broken = _edit_copy(tmp_path, A3, untag)
    build_editions(tmp_path / "editions", sources=[broken], root=ROOT)
    leaks = _leaks(read_notebook(broken), read_notebook(tmp_path / "editions" / "student" / A3.name))
    assert leaks and all("my_masking_scheme" in read_notebook(broken).cells[i].source for i, _ in leaks)
    assert any("inter_region_selection" in line for _, line in leaks)
    assert any("must be followed by a code cell tagged 'solution'" in p for p in verify([broken]))


def test_instructor_editions_show_the_assignments_solutions(tmp_path):
    build_editions(tmp_path, sources=[A3], root=ROOT)
    solutions = [c for c in read_notebook(tmp_path / "instructor" / A3.name).cells if "solution" in cell_tags(c)]
    assert solutions and all(not {"hide-input", "remove-cell"} & set(cell_tags(c)) for c in solutions)


OUTCOME_KEYS = ("choose_bin_size", "adapt_to_session", "my_masking_scheme")


def test_every_assignment_has_an_outcome_graded_part():
    from mini_decoders.course.outcomes import TARGETS

    for number, assignment in ASSIGNMENTS.items():
        outcomes = [item for item in assignment.items if item.outcome]
        assert outcomes, f"assignment {number} has no outcome-graded part"
        for item in outcomes:
            assert set(TARGETS[item.key]) == {"tiny", "quick"}
            for targets in TARGETS[item.key].values():
                assert abs(sum(target.share for target in targets) - 1) < 1e-9
                assert all(target.full > target.half for target in targets)
    assert {item.key for item in EXERCISES.values() if item.outcome} == set(OUTCOME_KEYS)


def test_the_stated_quick_targets_are_the_graders():
    """The assignments and the rubric state the quick targets (real grading); they must be the code's."""
    from mini_decoders.course.outcomes import TARGETS

    rubric = (ROOT / "coursework" / "rubric.md").read_text()
    for key in OUTCOME_KEYS:
        item = EXERCISES[key]
        notebook = ROOT / ASSIGNMENTS[item.assignment].notebook
        text = "\n".join(c.source for c in read_notebook(notebook).cells if c.cell_type == "markdown")
        for target in TARGETS[key]["quick"]:
            for value in (target.full, target.half):
                assert f"≥ {value:g}" in text, f"{notebook.name} does not state the quick target {value:g} ({key})"
                assert f"≥ {value:g}" in rubric, f"rubric.md does not state the quick target {value:g} ({key})"


def test_the_grader_uses_quick_unless_told(monkeypatch):
    from mini_decoders.course.outcomes import outcome_setting
    from mini_decoders.course.grading import grading_profile

    monkeypatch.delenv("MINI_DECODERS_PROFILE", raising=False)
    assert grading_profile() == "quick" and grading_profile("tiny") == "tiny"
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "tiny")
    assert grading_profile() == "tiny" and outcome_setting() == "tiny"
    assert outcome_setting("full") == "quick"  # on a GPU the stated (quick) targets apply


def _chapter_3_scheme(counts, regions, generator):
    from mini_decoders.masking import MaskConfig, mask_counts

    return mask_counts(counts, MaskConfig("temporal", ratio=0.25), generator=generator)


def _outcome(check, answer):
    """(fraction of the points, message) the check gives ``answer``."""
    from mini_decoders.course.outcomes import PartialCredit

    try:
        check(answer)
    except PartialCredit as partial:
        return partial.fraction, str(partial)
    except CheckFailed as failed:
        return 0.0, str(failed)
    return 1.0, ""


def test_choose_bin_size_is_graded_on_the_measured_r2(monkeypatch, capsys):
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "tiny")
    from mini_decoders.course import check_choose_bin_size

    assert _outcome(check_choose_bin_size, _solution_of("choose_bin_size")) == (1.0, "")
    assert "velocity R² (test trials)" in capsys.readouterr().out
    fraction, message = _outcome(check_choose_bin_size, lambda session, context_tokens: 0.02)  # chapter 1's bins
    assert fraction == 0 and "no points" in message and "hint:" in message
    fraction, message = _outcome(check_choose_bin_size, lambda session, context_tokens: 0.2)
    assert fraction == 0.5 and "half points" in message and "50% of the points" in message
    for wrong in (0.03, 0.0, 0.5, "0.1"):
        fraction, message = _outcome(check_choose_bin_size, lambda session, context_tokens, b=wrong: b)
        assert fraction == 0 and ("multiple of 20 ms" in message or "one number" in message), message

    def peeks(session, context_tokens):
        assert "test" not in set(session.trials.split.tolist())
        return 0.1
    assert _outcome(check_choose_bin_size, peeks)[0] > 0  # the procedure never sees the test trials


def test_my_masking_scheme_is_graded_on_two_measured_questions(monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "tiny")
    from mini_decoders.course import check_my_masking_scheme

    fraction, message = _outcome(check_my_masking_scheme, _chapter_3_scheme)
    assert fraction == 0.5 and "co-smoothing" in message and "inter-region" in message and "hint:" in message
    fraction, message = _outcome(check_my_masking_scheme,
                                 lambda counts, regions, generator: (torch.zeros_like(counts),
                                                                     torch.ones(counts.shape, dtype=torch.bool)))
    assert fraction == 0, message  # hiding everything teaches nothing
    fraction, message = _outcome(check_my_masking_scheme,
                                 lambda counts, regions, generator: (counts, torch.zeros(counts.shape, dtype=torch.bool)))
    assert fraction == 0 and "hides nothing" in message
    fraction, message = _outcome(check_my_masking_scheme,
                                 lambda counts, regions, generator: (counts, torch.rand(counts.shape) < 0.3))
    assert fraction == 0 and "hidden but not 0" in message  # the answer leaks into the input
    fraction, message = _outcome(check_my_masking_scheme, lambda counts, regions, generator: counts)
    assert fraction == 0 and "should return two values" in message


def test_adapt_to_session_is_graded_on_the_measured_r2_within_the_budget(monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_PROFILE", "tiny")
    from mini_decoders.course import check_adapt_to_session

    def full_finetune(model, session, max_steps):
        model.finetune([session], mode="full", config={"finetune_steps": max_steps}, progress=False)
        return model
    fraction, message = _outcome(check_adapt_to_session, full_finetune)
    assert fraction == 0.5 and "half points" in message and "100 of 100 optimiser steps" in message

    def over_budget(model, session, max_steps):
        model.finetune([session], mode="units", config={"finetune_steps": max_steps + 1}, progress=False)
        return model
    fraction, message = _outcome(check_adapt_to_session, over_budget)
    assert fraction == 0 and "the budget is" in message
    fraction, message = _outcome(check_adapt_to_session, lambda model, session, max_steps: model)
    assert fraction == 0 and "still refuses the new session" in message
    fraction, message = _outcome(check_adapt_to_session, lambda model, session, max_steps: None)
    assert fraction == 0 and "should return the adapted POYO" in message


def test_grader_reports_a_timed_out_part_and_a_failing_cell(tmp_path):
    """A part that runs past the timeout scores 0, "timed out"; a failing cell is reported with its part."""
    def slow_and_broken(nb):
        stub = next(c for c in nb.cells if "exercise" in cell_tags(c) and "def my_masking_scheme" in c.source)
        stub.source = ("import time\n\ndef my_masking_scheme(counts, regions, generator):\n"
                       "    time.sleep(60)\n    return counts, counts > 0\n")
        stub.metadata["tags"] = []
        check = next(i for i, c in enumerate(nb.cells) if "check" in cell_tags(c) and "check_region_mask" in c.source)
        nb.cells.insert(check, nbformat.v4.new_code_cell("raise ValueError('my helper broke')"))
        nb.cells = [c for c in nb.cells if "first_try = masking_outcome" not in c.source]
    build_editions(tmp_path / "editions", sources=[A3], root=ROOT)
    submission = _edit_copy(tmp_path, tmp_path / "editions" / "student" / A3.name, slow_and_broken)
    report = grade(submission, 3, profile="tiny", cell_timeout=10)
    by_function = {item.function: item for item in report.items}
    assert by_function["my_masking_scheme"].status == "timed out" and by_function["my_masking_scheme"].points == 0
    assert "ran longer than the per-cell timeout" in by_function["my_masking_scheme"].message
    assert "raised ValueError: my helper broke" in by_function["region_mask"].message
    assert "timed out" in report.text() and report.total == 0



@pytest.mark.parametrize("number", [1, 2])  # assignment 3: test_autograder_scores_student_edition_0_and_solution_100
def test_the_other_assignments_grade_0_as_given_and_100_solved(number, tmp_path):
    """Both editions run top to bottom in the tiny profile (nbval does not run coursework/), the
    outcome parts included; the student edition fails only in its exercise and check cells."""
    source = ROOT / ASSIGNMENTS[number].notebook
    build_editions(tmp_path, sources=[source], root=ROOT)
    student = grade(tmp_path / "student" / source.name, number, profile="tiny")
    assert student.total == 0 and {item.status for item in student.items} == {"not implemented"}
    assert {e["ename"] for e in student.cell_errors} <= NOT_DONE
    instructor = grade(tmp_path / "instructor" / source.name, number, profile="tiny")
    assert instructor.total == 100 and instructor.cell_errors == [], instructor.text()
