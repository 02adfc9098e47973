"""The Run API: RUN folder, load_run round trip, PRED.h5 layout, evaluate, and every refusal."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import mini_decoders
import mini_decoders.errors
from mini_decoders.data.binning import bin_trials
from mini_decoders.data.nwb import write_nwb
from mini_decoders.data.session import Session, Units
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import RunError
from mini_decoders.metrics import bits_per_spike
from mini_decoders.run import FORMAT_VERSION, load_run, train


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sessions():
    # Unequal trial lengths (0.9-1.1 s), so PRED.h5 padding is exercised.
    return simulate(n_sessions=2, n_trials=60, n_units=40, seed=1, trial_length=(0.9, 1.1)).sessions


@pytest.fixture(scope="module")
def ridge_run(sessions, tmp_path_factory):
    return train("ridge", sessions, profile="tiny", out=tmp_path_factory.mktemp("runs") / "ridge", progress=False)


@pytest.fixture(scope="module")
def smoothing_run(sessions, tmp_path_factory):
    return train("smoothing", sessions, profile="tiny", out=tmp_path_factory.mktemp("runs") / "smoothing",
                 progress=False)


def copy_run(run, destination):
    destination.mkdir()
    for name in ("config.json", "checkpoint.pt", "metrics.json"):
        (destination / name).write_bytes((run.path / name).read_bytes())
    return destination


# ------------------------------------------------------------------ RUN folder and round trip

def test_train_writes_the_three_files_with_the_documented_content(ridge_run, sessions):
    assert sorted(p.name for p in ridge_run.path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.json"]
    config = json.loads((ridge_run.path / "config.json").read_text())
    assert config["model"] == "ridge" and config["profile"] == "tiny"
    assert config["format_version"] == FORMAT_VERSION and config["package_version"] == mini_decoders.__version__
    assert config["bin_size"] == 0.02
    assert [s["id"] for s in config["sessions"]] == [s.id for s in sessions]
    assert config["sessions"][0]["unit_ids"] == list(sessions[0].units.ids)
    assert config["sessions"][0]["behavior_dims"] == {"hand_vel": 2}
    metrics = json.loads((ridge_run.path / "metrics.json").read_text())
    assert set(metrics["sessions"]) == {s.id for s in sessions}
    assert metrics["mean"]["vel_r2"] == pytest.approx(np.mean([m["vel_r2"] for m in metrics["sessions"].values()]))
    assert metrics["params"] == sum(40 * 8 * 2 + 2 for _ in sessions)  # weights + intercept per session
    assert metrics["train_seconds"] > 0 and metrics["samples_per_second"] > 0
    # A checkpoint must load without unpickling arbitrary objects.
    torch.load(ridge_run.path / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("run_name", ["ridge_run", "smoothing_run"])
def test_load_run_gives_identical_predictions(run_name, sessions, request):
    run = request.getfixturevalue(run_name)
    loaded = load_run(run.path)
    before, after = run.predict(sessions), loaded.predict(sessions)
    for session in sessions:
        assert before[session.id].keys() == after[session.id].keys()
        for key, value in before[session.id].items():
            np.testing.assert_array_equal(after[session.id][key], value)


def test_training_twice_into_the_same_folder_needs_resume(ridge_run, sessions):
    with pytest.raises(RunError, match="already holds a run.*resume"):
        train("ridge", sessions, profile="tiny", out=ridge_run.path, progress=False)


def test_train_accepts_nwb_paths(sessions, tmp_path):
    path = write_nwb(sessions[0], tmp_path / "one.nwb")
    run = train("ridge", [path], profile="tiny", out=tmp_path / "run", progress=False)
    np.testing.assert_allclose(run.predict([path])[sessions[0].id]["hand_vel"],
                               run.predict([sessions[0]])[sessions[0].id]["hand_vel"], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ PRED.h5

@pytest.mark.parametrize("run_name, datasets", [("ridge_run", {"hand_vel"}),
                                                ("smoothing_run", {"rates_heldin", "rates_heldout"})])
def test_pred_h5_layout(run_name, datasets, sessions, request, tmp_path):
    run = request.getfixturevalue(run_name)
    path = run.write_predictions(sessions, tmp_path / "PRED.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["PRED.h5"]  # no temp file left behind
    with h5py.File(path, "r") as file:
        assert sorted(file) == sorted(s.id for s in sessions)
        assert file.attrs["bin_size_s"] == pytest.approx(0.02)
        for session in sessions:
            group = file[session.id]
            assert set(group) == {"trial_id", "split"} | datasets
            assert group.attrs["bin_size_s"] == pytest.approx(0.02)
            n_trials = len(session.trials)
            lengths = np.floor(session.trials.duration / 0.02 + 1e-6).astype(int)
            assert group["trial_id"].dtype == np.int64
            np.testing.assert_array_equal(group["trial_id"][()], np.arange(n_trials))
            assert h5py.check_string_dtype(group["split"].dtype) is not None
            np.testing.assert_array_equal(group["split"].asstr()[()], session.trials.split)
            widths = {"hand_vel": 2, "rates_heldin": int((~session.units.heldout).sum()),
                      "rates_heldout": int(session.units.heldout.sum())}
            assert len(set(lengths)) > 1, "the fixture should have unequal trials"
            for name in datasets:
                values = group[name][()]
                assert values.dtype == np.float32
                assert values.shape == (n_trials, lengths.max(), widths[name])
                real = np.arange(lengths.max())[None, :] < lengths[:, None]
                assert np.isfinite(values[real]).all()
                assert np.isnan(values[~real]).all()
            if "rates_heldout" in datasets:
                assert (group["rates_heldout"][()][real] >= 0).all()


# ------------------------------------------------------------------ evaluate

def test_evaluate_scores_are_finite_and_match_direct_computation(smoothing_run, ridge_run, sessions):
    scores = smoothing_run.evaluate(sessions)
    assert scores["split"] == "test"
    for session in sessions:
        per_session = scores["sessions"][session.id]
        assert set(per_session) == {"co_bps", "vel_r2", "psth_r2"}  # no fp_bps: the baseline does not forecast
        assert all(np.isfinite(v) for v in per_session.values())
        assert per_session["co_bps"] > 0
        # co-bps by hand from PRED-style predictions of the test trials
        binned = bin_trials(session, 0.02, split="test", behavior=())
        predicted = smoothing_run.predict([session])[session.id]
        test = predicted["split"] == "test"
        spikes = np.where(binned.mask[:, :, None], binned.counts, np.nan)[..., session.units.heldout]
        expected = bits_per_spike(predicted["rates_heldout"][test][:, :spikes.shape[1]], spikes)
        assert per_session["co_bps"] == pytest.approx(expected, rel=1e-4)
    assert set(scores["mean"]) == {"co_bps", "vel_r2", "psth_r2"}
    assert scores["params"] > 0 and scores["train_seconds"] > 0
    ridge_scores = ridge_run.evaluate(sessions)
    assert set(ridge_scores["mean"]) == {"vel_r2"}
    assert ridge_scores["mean"]["vel_r2"] > 0.1


# ------------------------------------------------------------------ refusals

def test_unknown_and_unimplemented_model_names(sessions, tmp_path, monkeypatch):
    from mini_decoders.models import registry

    with pytest.raises(RunError, match=r"unknown model 'lstm'; expected one of: ridge, gru, smoothing, ndt1"):
        train("lstm", sessions, out=tmp_path / "a", progress=False)
    # A chapter whose module is not written yet is refused with a friendly message.
    monkeypatch.setitem(registry.MODEL_MODULES, "vq", "mini_decoders.models.not_written_yet")
    monkeypatch.setitem(registry.MODELS, "vq", None)
    with pytest.raises(RunError, match="'vq' is not implemented yet"):
        train("vq", sessions, out=tmp_path / "b", progress=False)
    assert registry.get_model("RIDGE").name == "ridge"


def test_missing_run_folder_and_missing_config(tmp_path):
    with pytest.raises(RunError, match="run folder .*nowhere does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="is not a run folder: config.json is missing"):
        load_run(tmp_path / "empty")


def test_invalid_config_json(ridge_run, tmp_path):
    folder = copy_run(ridge_run, tmp_path / "run")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="config.json is not valid JSON"):
        load_run(folder)


def test_corrupt_and_missing_checkpoint(ridge_run, tmp_path):
    folder = copy_run(ridge_run, tmp_path / "run")
    data = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match="truncated or corrupt"):
        load_run(folder)
    (folder / "checkpoint.pt").unlink()
    with pytest.raises(RunError, match="checkpoint.pt is missing; training did not finish"):
        load_run(folder)


def test_run_from_another_format_version(ridge_run, tmp_path):
    folder = copy_run(ridge_run, tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=rf"format version {FORMAT_VERSION + 1} is not supported.*retrain"):
        load_run(folder)


def test_checkpoint_that_does_not_match_the_config(ridge_run, tmp_path):
    folder = copy_run(ridge_run, tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    config["model_config"]["history_bins"] = 4  # a filter of another shape
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="does not match config.json"):
        load_run(folder)


def test_data_with_other_units_is_refused_with_how_to_adapt(ridge_run, sessions):
    session = sessions[0]
    other = Session(session.id, session.spike_times, session.spike_units,
                    Units([f"new/{i}" for i in range(session.n_units)], session.units.region, session.units.heldout),
                    session.behavior, session.trials)
    for call in (ridge_run.predict, ridge_run.evaluate):
        # ridge has nothing to fine-tune: the advice is to train on the new recording, never `finetune`.
        with pytest.raises(RunError, match=r"trained on other units.*This ridge run cannot be adapted to new units: "
                                           r"train one on the new recording \(`mini-decoders train ridge --data "
                                           r"NEW.nwb`\), or use a model that adapts \(ndt2, poyo, mtm\)") as error:
            call([other])
        assert "finetune" not in str(error.value)
    renamed = Session("another_day", session.spike_times, session.spike_units,
                      Units([f"another_day/{i}" for i in range(session.n_units)], session.units.region,
                            session.units.heldout), session.behavior, session.trials)
    with pytest.raises(RunError, match="trained on other units.*'another_day' .* is not one of them"):
        ridge_run.predict([renamed])
    fewer = session.select_units(np.arange(session.n_units - 1))
    with pytest.raises(RunError, match="39 units, the run expects 40 .*missing"):
        ridge_run.predict([fewer])


# ------------------------------------------------------------------ GRU through the Run API

def test_gru_run_round_trip(sessions, tmp_path):
    run = train("gru", sessions, profile="tiny", out=tmp_path / "gru", device="cpu", max_steps=10, progress=False)
    assert {"vel_r2"} == set(run.metrics["mean"])
    assert run.metrics["training"]["history"]["steps"] >= 1
    loaded = load_run(tmp_path / "gru")
    for session in sessions:
        np.testing.assert_allclose(loaded.predict([session])[session.id]["hand_vel"],
                                   run.predict([session])[session.id]["hand_vel"], rtol=1e-6, atol=1e-6)


def test_fp_bps_is_scored_for_models_that_forecast(smoothing_run, sessions, tmp_path):
    from mini_decoders.data.binning import bin_intervals
    from mini_decoders.models.baselines import SmoothingModel
    from mini_decoders.run import Run

    class MeanForecast(SmoothingModel):
        """Smoothing plus a forecast: each unit's mean count per bin, for the 10 bins after a trial."""

        def predict_trials(self, session, binned):
            out = super().predict_trials(session, binned)
            mean = session.mean_rates() * binned.bin_size
            order = np.concatenate([session.units.heldin_index, session.units.heldout_index])
            out["rates_forward"] = np.broadcast_to(mean[order], (len(binned.starts), 10, len(order))).copy()
            return out

    model = MeanForecast(smoothing_run.model.specs, smoothing_run.model.config)
    model.load_state_dict(smoothing_run.model.state_dict())
    run = Run(None, model, smoothing_run.config)
    session = sessions[0]
    scores = run.evaluate([session])["sessions"][session.id]
    binned = bin_trials(session, 0.02, split="test", behavior=())
    forecast = model.predict_trials(session, binned)["rates_forward"]
    future = bin_intervals(session.spike_times, session.spike_units, session.n_units,
                           binned.starts + binned.lengths * 0.02, 10, 0.02)
    order = np.concatenate([session.units.heldin_index, session.units.heldout_index])
    assert scores["fp_bps"] == pytest.approx(bits_per_spike(forecast, future[..., order]), rel=1e-5)
    # Forecasts are scored, not written: PRED.h5 holds exactly the documented datasets.
    with h5py.File(run.write_predictions([session], tmp_path / "PRED.h5"), "r") as file:
        assert set(file[session.id]) == {"trial_id", "split", "rates_heldin", "rates_heldout"}


# ------------------------------------------------------------------ one writer, nothing left half-done

def test_a_locked_run_folder_refuses_a_second_writer(sessions, tmp_path):
    from mini_decoders.files import FolderLock

    folder = tmp_path / "busy"
    folder.mkdir()
    with FolderLock(folder, "run folder"):  # another `train --out busy` holds it
        with pytest.raises(RunError, match=r"run folder .*busy is in use by another process \(pid \d+"):
            train("ridge", sessions, profile="tiny", out=folder, progress=False)
        assert folder.is_dir()  # the holder's folder is never cleaned up by the refused writer
    run = train("ridge", sessions, profile="tiny", out=folder, progress=False)
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.json"]


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    import subprocess
    import sys

    from mini_decoders.files import FolderLock

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mini_decoders.files import FolderLock; "
                               f"FolderLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunError, match="in use by another process"):
        FolderLock(tmp_path).acquire()
    holder.kill()  # kill -9: no clean-up runs, the lock file stays behind
    holder.wait()
    assert (tmp_path / ".lock").exists()
    with FolderLock(tmp_path):
        pass
    assert not (tmp_path / ".lock").exists()


def test_resume_refuses_another_seed(sessions, tmp_path):
    folder = tmp_path / "gru"
    train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=3, seed=1, progress=False)
    with pytest.raises(RunError, match=r"cannot resume .*gru with --seed 2: it was trained with seed 1"):
        train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=4, seed=2, resume=True,
              progress=False)
    run = train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=4, resume=True, progress=False)
    assert run.config["model_config"]["seed"] == 1 and run.config["model_config"]["max_steps"] == 4


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(sessions, tmp_path, capsys):
    folder = tmp_path / "gru"
    train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=3, progress=False)
    (folder / "checkpoint.pt").unlink()  # what `kill -9` before the first checkpoint leaves
    (folder / "metrics.json").unlink()
    with pytest.raises(RunError, match=r"holds an unfinished run with no checkpoint.*--resume.*step 0"):
        train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=3, progress=False)
    train("gru", sessions, profile="tiny", out=folder, device="cpu", max_steps=3, resume=True, progress=False)
    assert "has no checkpoint to resume from: training starts again from step 0" in capsys.readouterr().err


def with_splits(session: Session, mapping: dict[str, str]) -> Session:
    split = session.trials.split.copy()
    for old, new in mapping.items():
        split[session.trials.split == old] = new
    trials = session.trials.subset(np.arange(len(split)))
    trials.split = split
    return Session(session.id, session.spike_times, session.spike_units, session.units, dict(session.behavior),
                   trials, session.subject, session.task, session.source)


def without_velocity(session: Session) -> Session:
    from mini_decoders.data.session import TimeSeries

    velocity = session.behavior["hand_vel"]
    behavior = {"hand_vel": TimeSeries(velocity.timestamps, np.full_like(velocity.values, np.nan), velocity.unit)}
    return Session(session.id, session.spike_times, session.spike_units, session.units, behavior, session.trials)


@pytest.mark.parametrize("model, change, options, message", [
    ("gru", None, {"max_steps": 0}, r"--max-steps must be >= 1, got 0"),
    ("gru", None, {"device": "banana"}, r"unknown device 'banana'"),
    ("ridge", None, {"device": "banana"}, r"unknown device 'banana'"),
    ("ridge", None, {"max_steps": -3}, r"ridge is fitted in closed form: --max-steps does not apply"),
    ("ndt1", {"train": "none"}, {}, r"session 'sim_s0'.* has no 'train' trials"),
    ("smoothing", {"test": "train"}, {}, r"session 'sim_s0'.* has no 'test' trials .*metrics.json"),
    ("ridge", "nan", {}, r"session 'sim_s0'.*'hand_vel' is NaN in every bin of its train trials"),
])
def test_a_failed_train_leaves_nothing_that_blocks_a_rerun(sessions, tmp_path, model, change, options, message):
    broken = with_splits(sessions[0], change) if isinstance(change, dict) else (
        without_velocity(sessions[0]) if change == "nan" else sessions[0])
    out = tmp_path / "runs" / model
    with pytest.raises((RunError, mini_decoders.errors.DataError), match=message):
        train(model, [broken], profile="tiny", out=out, progress=False, **options)
    assert not out.exists()
    # The same command with the input fixed runs.
    fixed = {key: value for key, value in options.items() if key == "max_steps" and model != "ridge"}
    train(model, [sessions[0]], profile="tiny", out=out, progress=False, **{k: 2 for k in fixed})
    assert (out / "metrics.json").is_file()


def test_a_failure_during_training_removes_only_what_this_call_wrote(sessions, tmp_path, monkeypatch):
    from mini_decoders.models.baselines import GRUDecoder

    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(GRUDecoder, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="fell off"):
        train("gru", sessions, profile="tiny", out=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(RuntimeError, match="fell off"):
        train("gru", sessions, profile="tiny", out=mine, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_out_that_is_a_file_is_refused(sessions, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(RunError, match=r"taken exists and is not a folder"):
        train("ridge", sessions, profile="tiny", out=target, progress=False)
    assert target.read_text() == "not a folder"


def test_run_files_and_predictions_are_readable_like_other_new_files(sessions, tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        run = train("smoothing", sessions, profile="tiny", out=tmp_path / "run", progress=False)
        pred = run.write_predictions(sessions, tmp_path / "PRED.h5")
        nwb = write_nwb(sessions[0], tmp_path / "s.nwb")
        os.umask(0o077)
        private = run.write_predictions(sessions, tmp_path / "private.h5")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*run.path.iterdir(), pred, nwb, private]}
    assert modes == {"config.json": 0o644, "checkpoint.pt": 0o644, "metrics.json": 0o644, "PRED.h5": 0o644,
                     "s.nwb": 0o644, "private.h5": 0o600}


def test_a_trial_longer_than_the_model_takes_is_named_before_training(sessions, tmp_path):
    session = with_splits(sessions[0], {})
    session.trials.stop[3] = session.trials.start[3] + 11.0  # 550 bins of 20 ms; NDT1's max_bins is 512
    with pytest.raises(mini_decoders.errors.DataError,
                       match=r"session 'sim_s0' .*: trial 3 \(.* s\) is 550 bins of 0.02 s, longer than ndt1's "
                             r"max_bins=512"):
        train("ndt1", [session], profile="tiny", out=tmp_path / "ndt1", progress=False)
    assert not (tmp_path / "ndt1").exists()


def test_other_units_in_an_adaptable_run_point_to_finetune(sessions):
    from mini_decoders.models.mtm import MtM

    model = MtM.build(sessions[:1], MtM.recipe_config("tiny"))
    other = Session("new", sessions[1].spike_times, sessions[1].spike_units,
                    Units([f"new/{i}" for i in range(sessions[1].n_units)]), trials=sessions[1].trials)
    with pytest.raises(RunError, match=r"finetune RUN --data NEW.nwb --mode units"):
        model.spec_for(other)


def test_behaviour_under_another_name_says_to_rename_it(sessions, tmp_path):
    session = sessions[0]
    renamed = Session(session.id, session.spike_times, session.spike_units, session.units,
                      {"cursor_vel": session.behavior["hand_vel"]}, session.trials)
    with pytest.raises(mini_decoders.errors.DataError) as error:
        train("ridge", [renamed], profile="tiny", out=tmp_path / "r", progress=False)
    message = str(error.value)
    assert "ridge decodes behavior 'hand_vel', but session 'sim_s0' has ['cursor_vel']" in message
    assert "session.behavior['hand_vel'] = session.behavior.pop('cursor_vel')" in message
    assert "without behaviour" not in message
    assert not (tmp_path / "r").exists()


def test_fit_and_tune_message_counts_each_split():
    from mini_decoders.models.baselines import fit_and_tune_positions

    with pytest.raises(mini_decoders.errors.DataError, match=r"found 0 train and 32 val trials"):
        fit_and_tune_positions(np.array(["val"] * 32))
    with pytest.raises(mini_decoders.errors.DataError, match=r"found 1 train and 0 val trials"):
        fit_and_tune_positions(np.array(["train"]))


def test_train_without_sessions_is_a_data_error(tmp_path):
    with pytest.raises(mini_decoders.errors.DataError, match=r"sessions must be a Session, an NWB path, or a list "
                                                             r"of them; got NoneType"):
        train("ridge", None, profile="tiny", out=tmp_path / "r", progress=False)
    with pytest.raises(mini_decoders.errors.DataError, match=r"sessions must be Session objects or NWB paths; got a "
                                                             r"int"):
        train("ridge", [3], profile="tiny", out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_ctrl_c_inside_an_optimizer_step_then_resume_gives_the_uninterrupted_run(sessions, tmp_path, monkeypatch):
    import signal

    straight = train("gru", sessions, profile="tiny", out=tmp_path / "straight", device="cpu", max_steps=12,
                     progress=False)
    original, calls = torch.optim.AdamW.step, [0]

    def step_then_ctrl_c(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 7:  # after the weights of step 7 changed, before the step is counted
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train("gru", sessions, profile="tiny", out=tmp_path / "cut", device="cpu", max_steps=12, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()  # kept for --resume
    resumed = train("gru", sessions, profile="tiny", out=tmp_path / "cut", device="cpu", max_steps=12, resume=True,
                    progress=False)
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.metrics["mean"] == straight.metrics["mean"]
