"""The command line: the acceptance path of `data synth`, and one-line errors with non-zero exits."""

import subprocess
import sys
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
