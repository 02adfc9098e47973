"""The published book is complete: the publish workflow fetches the small real recordings, makes the
recipe ladder and the side-by-side table of every model with the Makefile's targets, and builds the
book with all three; chapter 8 says how and when a table it loads was made.

The workflow's jobs are replayed here as GitHub would run them, step by step in a scratch folder,
with the real Makefile and stand-ins for the programs it calls (`mini-decoders`, `jupyter-book`),
which record their arguments and the MINI_DECODERS_* variables they were given. Names come from the
registries, never from a list typed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"
CHAPTER_8 = ROOT / "notebooks" / "08_side_by_side.ipynb"

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

# A stand-in for a program of the virtual environment: it logs one JSON line per call and leaves
# behind what the real one would (a fetched dataset's folder, a benchmark's table).
STAND_IN = """#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"program": Path(sys.argv[0]).name, "args": args, "cwd": os.getcwd(),
                          "env": {{k: v for k, v in os.environ.items() if k.startswith("MINI_DECODERS_")}}}}) + "\\n")
if args[:2] == ["data", "fetch"]:
    Path(args[args.index("--cache") + 1], args[2]).mkdir(parents=True, exist_ok=True)
if args[:1] == ["benchmark"]:
    table = Path(args[args.index("--json") + 1])
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("{{}}")
"""


def workflow() -> dict:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text())


def make_commands(step: dict) -> list[list[str]]:
    """The `make ...` command lines of a step, split into words."""
    return [shlex.split(line) for line in str(step.get("run", "")).splitlines() if line.strip().startswith("make ")]


def make_targets(step: dict) -> list[str]:
    return [word for command in make_commands(step) for word in command[1:]
            if "=" not in word and not word.startswith("-")]


def job_running(target: str) -> tuple[str, dict]:
    """The one job with a step that runs ``make <target>``."""
    jobs = [(name, job) for name, job in workflow()["jobs"].items()
            if any(target in make_targets(step) for step in job.get("steps", []))]
    assert len(jobs) == 1, f"publish.yml: expected one job that runs `make {target}`, found {[n for n, _ in jobs]}"
    return jobs[0]


def step_index(job: dict, target: str) -> int:
    return next(i for i, step in enumerate(job["steps"]) if target in make_targets(step))


@pytest.fixture
def replay(tmp_path):
    """Run a job's steps (make lines, artifact downloads) in a scratch checkout; returns the calls logged."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.jsonl"
    for program in ("mini-decoders", "jupyter-book", "execute-chapters"):
        path = venv / "bin" / program
        path.write_text(STAND_IN.format(python=sys.executable, log=str(log)))
        path.chmod(0o755)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    uploads = {step["with"]["name"]: step["with"]["path"] for job in workflow()["jobs"].values()
               for step in job.get("steps", []) if step.get("uses", "").startswith("actions/upload-artifact@")}
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINI_DECODERS_")}
    env["PYTHONPATH"] = str(ROOT)  # the Makefile reads the registries with $(PY)

    def run(job: dict) -> list[dict]:
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/download-artifact@"):
                # the file the other job uploaded, where this job asks for it
                name = step["with"]["name"]
                assert name in uploads, f"publish.yml downloads artifact {name!r}, which no job uploads"
                target = checkout / step["with"]["path"] / Path(uploads[name]).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("{}")
            for command in make_commands(step):
                # the real Makefile; no install (STAMP), no machine-wide kernel lock, no ../shared beside it
                overrides = [f"VENV={venv}", f"PY={sys.executable}", "STAMP=", "KERNEL_LOCK=",
                             f"EXECUTE_CHAPTERS={venv / 'bin' / 'execute-chapters'}",
                             f"SHARED_DATA={tmp_path / 'no-shared-folder'}"]
                done = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), *command[1:], *overrides],
                                      cwd=checkout, env=env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    run.checkout = checkout
    return run


def test_the_build_fetches_every_small_recording_then_builds_with_both_tables_and_the_data(replay):
    from mini_decoders.data.registry import DataEntry, names

    name, job = job_running("book")
    assert step_index(job, "data") < step_index(job, "book"), f"publish.yml job {name}: fetch the data before the book"
    calls = replay(job)
    fetches = [call for call in calls if call["args"][:2] == ["data", "fetch"]]
    assert sorted(call["args"][2] for call in fetches) == sorted(names(DataEntry))
    books = [call for call in calls if call["program"] == "jupyter-book"]
    assert len(books) == 1 and calls.index(books[0]) > calls.index(fetches[-1])
    # the chapters execute (side by side) before jupyter-book renders them, with the same data and tables
    executions = [call for call in calls if call["program"] == "execute-chapters"]
    assert len(executions) == 1 and calls.index(fetches[-1]) < calls.index(executions[0]) < calls.index(books[0])
    given = books[0]["env"]
    assert {key: value for key, value in executions[0]["env"].items() if key.startswith("MINI_DECODERS_")} == {
        key: value for key, value in given.items() if key.startswith("MINI_DECODERS_")}
    cache = Path(fetches[0]["cwd"], fetches[0]["args"][fetches[0]["args"].index("--cache") + 1]).resolve()
    assert all(call["args"][3:] == ["--cache", fetches[0]["args"][4]] for call in fetches)
    assert Path(given.get("MINI_DECODERS_DATA", "")).resolve() == cache, given
    for variable in ("MINI_DECODERS_LADDER_JSON", "MINI_DECODERS_BENCHMARK_JSON"):
        assert Path(given.get(variable, "")).is_file(), f"`make book` in job {name} is not given {variable}: {given}"


def test_the_execution_cache_is_restored_only_for_the_same_package_and_tables():
    """Jupyter's execution cache re-runs a chapter only when its code changes: restored from a build
    with another package or other tables, chapters 3-9 would keep the old outputs."""
    name, job = job_running("book")
    uploads = {step["with"]["name"]: step["with"]["path"] for other in workflow()["jobs"].values()
               for step in other.get("steps", []) if step.get("uses", "").startswith("actions/upload-artifact@")}
    tables = [(Path(step["with"]["path"]) / Path(uploads[step["with"]["name"]]).name).as_posix()
              for step in job["steps"] if step.get("uses", "").startswith("actions/download-artifact@")]
    assert len(tables) == 2, f"job {name} downloads {tables}: expected the ladder's and the benchmark's tables"
    [cache] = [step for step in job["steps"] if step.get("uses", "").startswith("actions/cache@")]
    assert ".jupyter_cache" in cache["with"]["path"]
    prefix = cache["with"].get("restore-keys", cache["with"]["key"])
    assert cache["with"]["key"].startswith(prefix)
    for source in ["mini_decoders/**/*.py", "pyproject.toml", *tables]:
        assert f"'{source}'" in prefix, f"publish.yml: the book's cache can be restored with another {source}"
    assert job["steps"].index(cache) < step_index(job, "book")


@pytest.mark.parametrize("target", ["benchmark-json", "ladder"])
def test_each_table_is_made_by_its_make_target_cached_on_the_package_and_uploaded(replay, target):
    name, job = job_running(target)
    assert name != job_running("book")[0], f"`make {target}` takes hours: its own job, not the book's"
    run = job["steps"][step_index(job, target)]
    calls = [call for call in replay(job) if call["args"][:1] == ["benchmark"]]
    assert len(calls) == 1
    written = Path(calls[0]["cwd"], calls[0]["args"][calls[0]["args"].index("--json") + 1])
    uploaded = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert [replay.checkout / step["with"]["path"] for step in uploaded] == [written]
    cache = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert replay.checkout / cache["with"]["path"] == written and job["steps"].index(cache) < job["steps"].index(run)
    key = cache["with"]["key"]
    assert "hashFiles(" in key and "'mini_decoders/**/*.py'" in key and "'pyproject.toml'" in key, key
    assert "restore-keys" not in cache["with"], "a table made by other sources must never be restored"
    assert run.get("if") == f"steps.{cache['id']}.outputs.cache-hit != 'true'"


def test_the_side_by_side_table_covers_every_registered_model_with_the_transfer(replay):
    from mini_decoders.models.registry import MODELS

    _, job = job_running("benchmark-json")
    [call] = [call for call in replay(job) if call["args"][:1] == ["benchmark"]]
    args = call["args"]
    assert args[args.index("--models") + 1].split(",") == list(MODELS)
    assert args[args.index("--profile") + 1] == "quick" and "--transfer" in args


def test_the_book_step_gets_nothing_the_makefile_did_not_find():
    """Without the tables and the data, `make book` sets no table or data variable (the chapters run
    live or skip); only the run cache, which every build has."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINI_DECODERS_")}
    printed = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), "book", "STAMP=", "KERNEL_LOCK=",
                              "SHARED_DATA=/no/such/folder", "DATA_CACHE=/no/such/cache"],
                             cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and "jupyter-book build" in printed.stdout, printed.stderr
    assert set(re.findall(r"MINI_DECODERS_\w+", printed.stdout)) == {"MINI_DECODERS_RUN_CACHE"}, printed.stdout


def test_the_book_the_benchmark_and_the_ladder_share_one_run_cache():
    """Chapter 8 reuses the chapters' runs, and `make ladder` / `make benchmark-json` fill the same cache."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MINI_DECODERS_")}
    folders = {}
    for target in ("book", "ladder", "benchmark-json"):
        printed = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), target, "STAMP=", "KERNEL_LOCK=",
                                  "PAPER_MODELS=ndt1", "ALL_MODELS=ridge", "RUN_CACHE=/some/cache"],
                                 cwd="/", env=env, capture_output=True, text=True, timeout=60)
        assert printed.returncode == 0, printed.stderr
        folders[target] = set(re.findall(r"MINI_DECODERS_RUN_CACHE=(\S+)", printed.stdout))
    assert folders == {target: {"/some/cache"} for target in folders}, folders


# ---------------------------------------------------------------------------- provenance
TABLE = {"command": "mini-decoders benchmark --profile quick --models ridge,ndt1 --json B.json",
         "created": "2026-01-02T03:04:05", "package_version": "9.8.7", "profile": "quick", "seed": 3,
         "rows": [{"model": "ridge"}, {"model": "ndt1"}],
         "data": [{"session": "sim_s0", "trials": {"train": 70}}, {"session": "sim_s1", "trials": {"train": 70}}],
         "oracle": {"co_bps": 0.3}}


def test_table_provenance_names_the_command_date_version_profile_models_and_data():
    from mini_decoders.experiments.report import table_provenance

    line = table_provenance(TABLE)
    assert "\n" not in line
    for part in ("`mini-decoders benchmark --profile quick --models ridge,ndt1 --json B.json`", "2026-01-02T03:04:05",
                 "mini-decoders 9.8.7", "profile quick", "seed 3", "2 models: ridge, ndt1",
                 "2 simulated sessions (sim_s0, sim_s1) with 140 training trials"):
        assert part in line, (part, line)
    unrecorded = {key: value for key, value in TABLE.items() if key != "command"}
    assert "`mini-decoders benchmark` on 2026" in table_provenance(unrecorded)
    assert "`made by hand` on" in table_provenance(unrecorded, "made by hand")


def chapter_8_cell(marker: str) -> str:
    cells = [source for cell in json.loads(CHAPTER_8.read_text())["cells"] if cell["cell_type"] == "code"
             for source in ["".join(cell["source"])] if re.search(marker, source, flags=re.M)]
    assert len(cells) == 1, f"chapter 8: {len(cells)} code cells match {marker!r}"
    return cells[0]


def test_chapter_8_prints_how_and_when_a_saved_table_was_made(tmp_path, monkeypatch, capsys):
    from mini_decoders.cli import main
    from mini_decoders.experiments.report import table_provenance

    saved = tmp_path / "B.json"
    assert main(["benchmark", "--models", "ridge,smoothing", "--profile", "tiny", "--json", str(saved),
                 "--in-process", "--no-costs", "--threads", "1", "--quiet"]) == 0
    table = json.loads(saved.read_text())
    assert table["command"] == f"mini-decoders benchmark --models ridge,smoothing --profile tiny --json {saved} " \
                               "--in-process --no-costs --threads 1 --quiet"
    capsys.readouterr()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the cell's scratch folder
    monkeypatch.setenv("MINI_DECODERS_BENCHMARK_JSON", str(saved))
    monkeypatch.delenv("MINI_DECODERS_TRANSFER_JSON", raising=False)
    namespace: dict = {}
    exec(chapter_8_cell(r"^SAVED = "), namespace)  # noqa: S102 - the chapter's own set-up and table cells
    exec(chapter_8_cell(r"^if SAVED:"), namespace)  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    line = next((line for line in printed if line.startswith(f"loaded from {saved}")), None)
    assert line is not None and line.endswith(table_provenance(table)), printed
    assert "2 models: ridge, smoothing" in line and table["created"] in line and "profile tiny" in line


def test_chapter_8_stops_at_a_saved_table_that_is_not_there(tmp_path, monkeypatch):
    monkeypatch.setenv("MINI_DECODERS_BENCHMARK_JSON", str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="MINI_DECODERS_BENCHMARK_JSON=.*missing.json is not a file"):
        exec(chapter_8_cell(r"^SAVED = "), {})  # noqa: S102
