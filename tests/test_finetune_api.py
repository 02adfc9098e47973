"""Run.finetune and `mini-decoders finetune`: refusals are clear, and the source run is never touched."""

import subprocess
import sys

import pytest

import mini_decoders as md
from mini_decoders.data import simulate, write_nwb
from mini_decoders.errors import RunError


@pytest.fixture(scope="module")
def ridge_run(tmp_path_factory):
    data = simulate(n_sessions=2, n_trials=40, n_units=30, seed=3)
    folder = tmp_path_factory.mktemp("ft")
    paths = [write_nwb(s, folder / f"{s.id}.nwb") for s in data.sessions]
    run = md.train("ridge", [paths[0]], profile="tiny", out=folder / "ridge", progress=False)
    return run, paths


def test_closed_form_runs_say_how_to_adapt(ridge_run, tmp_path):
    run, paths = ridge_run
    with pytest.raises(RunError, match="cannot be fine-tuned"):
        run.finetune([paths[1]], mode="units", out=tmp_path / "ft")
    with pytest.raises(RunError, match="'units' or 'full'"):
        run.finetune([paths[1]], mode="everything", out=tmp_path / "ft")


def test_cli_finetune_refusal_is_one_line(ridge_run, tmp_path):
    run, paths = ridge_run
    result = subprocess.run([sys.executable, "-m", "mini_decoders.cli", "finetune", str(run.path), "--data",
                             str(paths[1]), "--mode", "units", "--out", str(tmp_path / "ft")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    assert not (tmp_path / "ft").exists()


def test_unseen_units_are_refused_with_the_way_to_adapt(ridge_run):
    run, paths = ridge_run
    with pytest.raises(RunError, match="finetune"):
        run.evaluate([paths[1]])
