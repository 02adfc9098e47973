"""The command line: the acceptance path of `data synth`, and one-line errors with non-zero exits."""

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from mini_decoders.cli import main


def run_cli(*args):
    """Run the real console entry point in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "mini_decoders.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", "--out", str(out), "--sessions", "3", "--trials", "40"]) == 0
    return out


def test_synth_writes_nwb_that_nlb_tools_opens(synth_dir):
    from nlb_tools.nwb_interface import NWBDataset

    files = sorted(synth_dir.glob("*.nwb"))
    assert len(files) == 3 and len(list(synth_dir.glob("*_truth.h5"))) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = NWBDataset(str(files[0]))
    columns = set(dataset.data.columns.get_level_values(0))
    assert {"spikes", "heldout_spikes", "hand_vel"} <= columns
    assert dataset.data["heldout_spikes"].to_numpy().sum() > 0
    assert set(dataset.trial_info["split"]) >= {"train", "val", "test"}


def test_synth_is_reproducible_and_sessions_differ(synth_dir, tmp_path):
    from mini_decoders.data.nwb import read_nwb

    assert main(["data", "synth", "--out", str(tmp_path), "--sessions", "1", "--trials", "40"]) == 0
    again = read_nwb(next(tmp_path.glob("*.nwb")))
    first = read_nwb(sorted(synth_dir.glob("*.nwb"))[0])
    np.testing.assert_array_equal(again.spike_times, first.spike_times)
    second = read_nwb(sorted(synth_dir.glob("*.nwb"))[1])
    assert set(first.units.ids).isdisjoint(second.units.ids)


def test_synth_array_drift_records_one_array_per_subject(tmp_path):
    import json

    from mini_decoders.data.nwb import read_nwb

    assert main(["data", "synth", "--out", str(tmp_path), "--sessions", "3", "--trials", "20", "--array-drift", "0.3"]) == 0
    first, other, first_again = (read_nwb(tmp_path / f"sim_s{k}.nwb") for k in range(3))
    assert first.subject == first_again.subject != other.subject
    np.testing.assert_array_equal(first.units.heldout, first_again.units.heldout)
    assert json.loads((tmp_path / "simulation.json").read_text())["array_drift"] == 0.3


def test_info_describes_a_file(synth_dir):
    result = run_cli("data", "info", str(sorted(synth_dir.glob("*.nwb"))[0]))
    assert result.returncode == 0, result.stderr
    assert "hand_vel" in result.stdout and "held" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["data", "info", "does_not_exist.nwb"], "does_not_exist.nwb"),
    (["data", "synth", "--out", "x", "--array-drift", "2"], "array_drift must be None or in [0, 1]"),
    (["data", "fetch", "no_such_dataset"], "no_such_dataset"),
    (["train", "no_such_model", "--data", "x.nwb"], "no_such_model"),
    (["predict", "no_such_run", "--data", "x.nwb", "--out", "p.h5"], "no_such_run"),
])
def test_errors_are_one_line_without_traceback(args, message, tmp_path):
    result = run_cli(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and message in result.stderr


def test_truncated_file_is_reported(synth_dir, tmp_path):
    broken = tmp_path / "broken.nwb"
    broken.write_bytes(sorted(synth_dir.glob("*.nwb"))[0].read_bytes()[:2000])
    result = run_cli("data", "info", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr and "broken.nwb" in result.stderr


# --------------------------------------------------------------------------- messages that say what is wrong

@pytest.fixture(scope="module")
def ridge_dir(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_runs") / "ridge"
    data = [str(p) for p in sorted(synth_dir.glob("*.nwb"))[:1]]
    assert main(["train", "ridge", "--data", *data, "--out", str(out), "--profile", "tiny", "--quiet"]) == 0
    return out, data


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_predict_and_eval_into_a_folder_name_the_folder(ridge_dir, tmp_path, capsys):
    run, data = ridge_dir
    folder = tmp_path / "somewhere"
    folder.mkdir()
    assert main(["predict", str(run), "--data", *data, "--out", str(folder)]) == 2
    err = one_line_error(capsys)
    assert f"{folder} is a folder; expected the path of the .h5 file to write" in err and ".tmp" not in err
    assert main(["eval", str(run), "--data", *data, "--json", str(folder)]) == 2
    err = one_line_error(capsys)
    assert f"{folder} is a folder; expected the path of a .json file to write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somewhere"] and not any(folder.iterdir())


def test_train_out_an_existing_file_is_a_plain_error(synth_dir, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    data = [str(p) for p in sorted(synth_dir.glob("*.nwb"))[:1]]
    assert main(["train", "ridge", "--data", *data, "--out", str(taken), "--profile", "tiny"]) == 2
    err = one_line_error(capsys)
    assert "exists and is not a folder" in err and "unexpected" not in err
    assert taken.read_text() == "mine"


def test_two_trains_into_one_folder_at_once_exactly_one_succeeds(synth_dir, tmp_path):
    data = [str(p) for p in sorted(synth_dir.glob("*.nwb"))[:1]]
    args = ["train", "ridge", "--data", *data, "--out", str(tmp_path / "R"), "--profile", "tiny", "--quiet", "--resume"]
    # The first writer pauses inside its run (after training, before scoring) until the second has
    # finished, so the two overlap for sure: the second must be refused, not run alongside.
    first = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, sys, time\n"
        "import mini_decoders.run as run_module\n"
        "from mini_decoders.cli import main\n"
        "signals = pathlib.Path(sys.argv[1])\n"
        "evaluate = run_module.Run.evaluate\n"
        "def paused(self, *args, **kwargs):\n"
        "    (signals / 'first_is_writing').touch()\n"
        "    deadline = time.time() + 120\n"
        "    while not (signals / 'second_done').exists() and time.time() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return evaluate(self, *args, **kwargs)\n"
        "run_module.Run.evaluate = paused\n"
        "sys.exit(main(sys.argv[2:]))\n"), str(tmp_path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "first_is_writing").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    second = run_cli(*args)
    (tmp_path / "second_done").touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 2, (second.stdout, second.stderr)
    assert second.stderr.startswith("error:") and second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert "is in use by another process (pid" in second.stderr
    assert sorted(p.name for p in (tmp_path / "R").iterdir()) == ["checkpoint.pt", "config.json", "metrics.json"]


def test_ctrl_c_while_the_program_starts_is_one_line(tmp_path):
    # A KeyboardInterrupt while the heavy libraries load, as a Ctrl-C in the first second would raise.
    code = ("import builtins, runpy, sys\n"
            "real = builtins.__import__\n"
            "def slow_import(name, *args, **kwargs):\n"
            "    if name == 'torch' or name.startswith('torch.'):\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = slow_import\n"
            "sys.argv = ['mini-decoders', 'train', 'ridge', '--data', 'x.nwb']\n"
            "runpy.run_module('mini_decoders.cli', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "interrupted\n"


def test_synth_files_are_readable_like_the_nwb_files(tmp_path):
    import os
    import stat

    from mini_decoders.data.synth import write_synthetic

    previous = os.umask(0o022)
    try:
        write_synthetic(tmp_path, n_sessions=1, n_trials=10)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"sim_s0.nwb": 0o644, "sim_s0_truth.h5": 0o644, "simulation.json": 0o644}


def test_resume_takes_the_runs_seed_and_refuses_another(synth_dir, tmp_path, capsys):
    data = [str(p) for p in sorted(synth_dir.glob("*.nwb"))[:1]]
    common = ["train", "gru", "--data", *data, "--out", str(tmp_path / "gru"), "--profile", "tiny", "--quiet",
              "--device", "cpu"]
    assert main([*common, "--seed", "3", "--max-steps", "2"]) == 0
    assert main([*common, "--resume", "--max-steps", "3"]) == 0  # no --seed: the run's own seed 3
    capsys.readouterr()
    assert main([*common, "--resume", "--max-steps", "4", "--seed", "4"]) == 2
    err = one_line_error(capsys)
    assert "it was trained with seed 3" in err and "drop --seed or pass --seed 3" in err
