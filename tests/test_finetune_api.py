"""Run.finetune and `mini-decoders finetune`: refusals are clear, and the source run is never touched."""

import subprocess
import sys

import numpy as np
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
    with pytest.raises(RunError, match="This ridge run cannot be adapted to new units: train one on the new recording"):
        run.evaluate([paths[1]])


@pytest.fixture(scope="module")
def poyo_run(tmp_path_factory):
    data = simulate(n_sessions=2, n_trials=24, n_units=20, seed=5)
    old, new = data.sessions
    folder = tmp_path_factory.mktemp("poyo")
    return md.train("poyo", [old], profile="tiny", out=folder / "poyo", progress=False), old, new


def test_unit_identification_on_a_session_the_run_knows_is_refused(poyo_run, tmp_path):
    run, old, _ = poyo_run
    with pytest.raises(RunError, match=r"this run was trained on 'sim_s0': --mode units learns embeddings for new "
                                       r"units only, so it would change nothing.*--mode full"):
        run.finetune([old], mode="units", out=tmp_path / "same", max_steps=2, progress=False)
    assert not (tmp_path / "same").exists()


def test_poyo_unit_identification_through_run_finetune(poyo_run, tmp_path):
    """A real adaptation: the new RUN knows both sessions, the source RUN folder is untouched,
    and every weight other than the new sessions' embeddings is bit-identical."""
    import torch

    run, old, new = poyo_run
    tmp_path = run.path.parent
    before = (tmp_path / "poyo" / "checkpoint.pt").read_bytes()
    adapted = run.finetune([new], mode="units", out=tmp_path / "poyo-new", profile="tiny", max_steps=3,
                           progress=False)
    assert (tmp_path / "poyo" / "checkpoint.pt").read_bytes() == before
    reloaded = md.load_run(tmp_path / "poyo-new")
    assert [s["id"] for s in reloaded.config["sessions"]] == [old.id, new.id]
    assert reloaded.config["finetune_mode"] == "units"
    np.testing.assert_allclose(reloaded.predict([new])[new.id]["hand_vel"], adapted.predict([new])[new.id]["hand_vel"],
                               rtol=1e-5, atol=1e-6, equal_nan=True)
    old_state, new_state = run.model.state_dict(), reloaded.model.state_dict()
    grown = ("tokenizer.unit_vocab.weight", "session_vocab.weight")  # new rows appended for the new session
    for name, value in old_state.items():
        if not isinstance(value, torch.Tensor) or name.endswith("_extra_state"):  # vocabularies' id lists
            continue
        if name in grown:
            assert new_state[name].shape[0] > value.shape[0], name
            assert torch.equal(value, new_state[name][: value.shape[0]]), name  # old rows untouched
        else:
            assert torch.equal(value, new_state[name]), name
    assert np.isfinite(reloaded.evaluate([new])["mean"]["vel_r2"])
