"""The side-by-side benchmark and the transfer experiment, in the tiny profile.

The command is run as a user runs it (a subprocess, data written by `mini-decoders data synth`'s
function), then its JSON table is checked against things computed independently: the oracle
against the simulator's own oracle helper, each row against its RUN folder's metrics.json, the
baseline comparison against the two rows. Resumability is checked by tampering with a saved row
(a rerun must reuse it, not retrain) and by killing a benchmark half-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mini_decoders.errors import RunError
from mini_decoders.experiments.benchmark import parse_models, run_benchmark
from mini_decoders.experiments.budget import steps_for_budget, steps_from_probes
from mini_decoders.experiments.cells import BenchmarkSettings
from mini_decoders.experiments.cost import PeakMemory, inference_cost, scaling_exponent
from mini_decoders.experiments.transfer import few_train_trials, parse_fractions, transfer_experiment
from mini_decoders.metrics import METRICS
from mini_decoders.models.registry import get_model

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

SIM = dict(n_sessions=3, n_trials=40, n_units=24, seed=0)
ROW_KEYS = {"model", "status", "token", "judged_on", "scored_by", "co_bps", "fp_bps", "vel_r2", "psth_r2", "params",
            "train_seconds", "samples_per_second", "steps", "budget", "peak_memory_mb", "memory_kind", "cost",
            "sessions", "baseline", "baseline_score", "beats_baseline", "run", "key"}


def bench_cli(*args, **popen):
    command = [sys.executable, "-m", "mini_decoders.cli", "benchmark", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, **popen)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mini_decoders.data.synth import write_synthetic

    folder = tmp_path_factory.mktemp("sim")
    return [str(p) for p in write_synthetic(folder, **{k: v for k, v in SIM.items() if k != "seed"}, seed=SIM["seed"])]


@pytest.fixture(scope="module")
def cli_table(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = bench_cli("--data", *data[:2], "--models", "ridge,smoothing,ndt1", "--profile", "tiny",
                       "--json", str(out / "B.json"), "--plot", str(out / "B.png"), "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "B.json").read_text()), result.stdout


# ------------------------------------------------------------------------------ the table
def test_table_has_a_finite_row_per_model_and_the_oracle(cli_table):
    out, table, stdout = cli_table
    assert table["format"] == "mini_decoders.benchmark/1" and table["profile"] == "tiny"
    assert [row["model"] for row in table["rows"]] == ["ridge", "smoothing", "ndt1"]
    for row in table["rows"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["status"] == "ok" and row["params"] > 0 and row["train_seconds"] > 0
        assert row["peak_memory_mb"] > 0 and row["memory_kind"].startswith(("cpu", "cuda"))
        judged = row[row["judged_on"]]
        assert judged is not None and np.isfinite(judged)
        assert all(row[m] is None or np.isfinite(row[m]) for m in METRICS)
        for sweep in ("length", "spikes", "units"):
            assert len(row["cost"][sweep]["x"]) == len(row["cost"][sweep]["seconds"]) == 2
    assert table["summary"]["every_row_finite"] is True
    assert {row["model"]: row["judged_on"] for row in table["rows"]} == {"ridge": "vel_r2", "smoothing": "co_bps",
                                                                        "ndt1": "co_bps"}
    assert (out / "B.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "every row finite: True" in stdout and "oracle" in stdout


def test_rows_are_the_runs_own_evaluation(cli_table):
    _, table, _ = cli_table
    for row in table["rows"]:
        metrics = json.loads((open(os.path.join(row["run"], "metrics.json")).read()))
        for metric in METRICS:
            assert row[metric] == metrics["mean"].get(metric)
        assert row["params"] == metrics["params"]


def test_baseline_comparison_follows_the_rows(cli_table):
    _, table, _ = cli_table
    rows = {row["model"]: row for row in table["rows"]}
    ndt1, smoothing = rows["ndt1"], rows["smoothing"]
    assert ndt1["baseline"] == "smoothing" and ndt1["baseline_score"] == smoothing["co_bps"]
    assert ndt1["beats_baseline"] == (ndt1["co_bps"] > smoothing["co_bps"])
    assert np.isclose(ndt1["ratio_to_baseline"], ndt1["co_bps"] / smoothing["co_bps"])
    assert rows["ridge"]["baseline"] is None and rows["smoothing"]["baseline"] is None  # a baseline is not judged against itself
    assert table["summary"]["beats_baseline"] == {"ndt1": ndt1["beats_baseline"]}


def test_oracle_row_equals_the_simulators_oracle(cli_table):
    from mini_decoders.data.simulate import oracle_bits_per_spike, simulate

    _, table, _ = cli_table
    dataset = simulate(**{**SIM, "n_sessions": 2})
    oracle = table["oracle"]
    for session in dataset.sessions:
        assert np.isclose(oracle["sessions"][session.id]["co_bps"], oracle_bits_per_spike(dataset, session.id, "test"),
                          rtol=1e-9, atol=1e-12)
    assert np.isclose(oracle["co_bps"], np.mean([oracle["sessions"][s.id]["co_bps"] for s in dataset.sessions]))
    assert 0.5 < oracle["vel_r2"] <= 1.0 and oracle["fp_bps"] is not None
    smoothing = next(row for row in table["rows"] if row["model"] == "smoothing")
    assert oracle["co_bps"] > smoothing["co_bps"]  # the true rates beat an estimate of them


# ------------------------------------------------------------------------------ resumable
def test_rerun_reuses_saved_rows_and_retrains_when_settings_change(cli_table, data):
    out, table, _ = cli_table
    work = out / "B.work"
    row_path = work / "rows" / "ridge.json"
    row = json.loads(row_path.read_text())
    row["vel_r2"] = 0.123456  # a value training could not produce: if it comes back, the row was reused
    row_path.write_text(json.dumps(row))
    checkpoint = work / "runs" / "ridge" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    lines = []
    again = run_benchmark(data[:2], "ridge,smoothing", "tiny", out / "again.json", work=work, threads=1,
                          isolate=False, log=lines.append)
    assert [r["model"] for r in again["rows"]] == ["ridge", "smoothing"]
    assert again["rows"][0]["vel_r2"] == 0.123456 and checkpoint.stat().st_mtime_ns == before
    assert sum("reused" in line for line in lines) == 2
    other_seed = run_benchmark(data[:2], "ridge", "tiny", out / "seed1.json", work=work, seed=1, threads=1,
                               isolate=False, log=None)
    assert other_seed["rows"][0]["vel_r2"] != 0.123456 and other_seed["seed"] == 1

    # Leaving the cost sweeps out is another setting: the saved row (with costs) is not reused,
    # and the new row has empty sweeps.
    no_costs = run_benchmark(data[:2], "ridge", "tiny", out / "nocost.json", work=work, threads=1, isolate=False,
                             costs=False, log=None)
    row = no_costs["rows"][0]
    assert row["vel_r2"] != 0.123456 and row["key"] != again["rows"][0]["key"]
    assert all(row["cost"][sweep]["x"] == [] for sweep in ("length", "spikes", "units"))
    assert table["rows"][0]["cost"]["units"]["x"]  # the CLI's default run measured them


def test_a_row_is_retrained_when_its_models_recipe_changes(data, tmp_path, monkeypatch):
    def bench(lines):
        return run_benchmark(data[:1], "ridge", "tiny", tmp_path / "B.json", threads=1, isolate=False, costs=False,
                             log=lines.append)["rows"][0]

    first, again, changed = [], [], []
    row = bench(first)
    assert bench(again)["key"] == row["key"] and any("reused" in line for line in again)
    ridge = get_model("ridge")
    monkeypatch.setattr(ridge, "CONFIGS", {**ridge.CONFIGS, "tiny": {**ridge.CONFIGS["tiny"], "history_bins": 4}})
    retrained = bench(changed)
    assert retrained["key"] != row["key"] and not any("reused" in line for line in changed)
    assert retrained["vel_r2"] != row["vel_r2"]  # 4 bins of history, not 8: another decoder


def test_a_rows_key_ignores_the_fine_tuning_recipe(data, monkeypatch):
    settings = BenchmarkSettings(data=[str(path) for path in data[:1]], profile="tiny")
    before = settings.row_key("ndt2")
    ndt2 = get_model("ndt2")
    tiny = ndt2.CONFIGS["tiny"]
    monkeypatch.setattr(ndt2, "CONFIGS", {**ndt2.CONFIGS, "tiny": {**tiny, "finetune_steps": 999}})
    assert settings.row_key("ndt2") == before  # a benchmark row only pretrains
    monkeypatch.setattr(ndt2, "CONFIGS", {**ndt2.CONFIGS, "tiny": {**tiny, "mask_ratio": 0.3}})
    assert settings.row_key("ndt2") != before

def test_killed_benchmark_reruns_only_what_is_missing(data, tmp_path):
    args = ["--data", *data[:2], "--models", "ridge,smoothing,ndt1", "--profile", "tiny", "--json",
            str(tmp_path / "B.json"), "--threads", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mini_decoders.cli", "benchmark", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    ridge_row = tmp_path / "B.work" / "rows" / "ridge.json"
    deadline = time.time() + 300
    while not ridge_row.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the benchmark and the model process it is running
    process.wait()
    assert ridge_row.exists(), "the first row was never written"
    saved = ridge_row.read_text()
    assert not (tmp_path / "B.json").exists()
    result = bench_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ridge_row.read_text() == saved  # not retrained
    assert "ridge: done before, reused" in result.stdout
    table = json.loads((tmp_path / "B.json").read_text())
    assert [row["status"] for row in table["rows"]] == ["ok", "ok", "ok"]


# ------------------------------------------------------------------------------ failures
@pytest.fixture(scope="module")
def no_behaviour_file(data, tmp_path_factory):
    from mini_decoders.data.nwb import read_nwb, write_nwb

    session = read_nwb(data[0])
    session.behavior = {}
    return str(write_nwb(session, tmp_path_factory.mktemp("nobehaviour") / f"{session.id}.nwb"))


def test_a_failing_model_is_an_error_row_not_a_crash(no_behaviour_file, tmp_path):
    result = bench_cli("--data", no_behaviour_file, "--models", "gru,smoothing", "--profile", "tiny",
                       "--json", str(tmp_path / "B.json"), "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((tmp_path / "B.json").read_text())
    gru, smoothing = table["rows"]
    assert gru["status"] == "error" and "hand_vel" in gru["error"] and gru["vel_r2"] is None
    assert smoothing["status"] == "ok" and np.isfinite(smoothing["co_bps"])
    assert set(table["summary"]["failed"]) == {"gru"} and table["summary"]["every_row_finite"] is False
    lines = []  # an error row is retried on a rerun; the good row is reused
    run_benchmark([no_behaviour_file], "gru,smoothing", "tiny", tmp_path / "B.json", threads=1, isolate=False,
                  log=lines.append)
    assert any(line.startswith("[1/2] gru: training") for line in lines)
    assert any(line.startswith("[2/2] smoothing: done before") for line in lines)


def test_a_model_process_that_dies_is_an_error_row(data, tmp_path, monkeypatch):
    # Every new Python process started now exits at once (sitecustomize runs at start-up): the
    # model's process dies without writing its row, as after a segfault or the OOM killer.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    table = run_benchmark(data[:1], "ridge", "tiny", tmp_path / "B.json", threads=1, isolate=True, log=None)
    row = table["rows"][0]
    assert row["status"] == "error" and "exited with code 3" in row["error"]


@pytest.mark.parametrize("args,message", [
    (["--models", "ridge,nope"], "nope"),
    (["--models", "ridge", "--max-steps", "0"], "--max-steps"),
    (["--models", "ridge", "--max-steps", "5", "--budget-seconds", "10"], "not both"),
    (["--models", "ridge", "--data", "missing.nwb"], "missing.nwb"),
    (["--models", "ridge", "--threads", "0"], "--threads"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    result = bench_cli(*args, "--profile", "tiny", "--json", str(tmp_path / "B.json"), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_parse_models():
    assert parse_models("ridge, NDT1,ridge") == ["ridge", "ndt1"]
    assert parse_models(None)[:3] == ["ridge", "gru", "smoothing"]
    with pytest.raises(RunError, match="unknown"):
        parse_models(["ridge", "bert"])


# ------------------------------------------------------------------------------ measurements
def test_peak_memory_sees_an_allocation_and_resets():
    with PeakMemory("cpu") as big:
        block = np.ones(40_000_000)  # 320 MB
        block[::4096] += 1
        del block
    with PeakMemory("cpu") as small:
        np.ones(10)
    assert big.peak_mb > 250
    if big.kind == "cpu_peak_rss_growth":  # Linux: the peak is reset per stretch of work
        assert small.peak_mb < 50


def test_scaling_exponent_of_a_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert np.isclose(scaling_exponent(x, 3e-3 * x ** 1.5), 1.5)
    assert np.isclose(scaling_exponent(x, [2.0, None, 2.0, 2.0]), 0.0)
    assert scaling_exponent([1.0], [1.0]) is None


def test_inference_cost_thins_spikes_and_keeps_bins(cli_table, data):
    from mini_decoders.run import as_sessions, load_run

    _, table, _ = cli_table
    run = load_run(next(row["run"] for row in table["rows"] if row["model"] == "ndt1"))
    session = as_sessions(data[0])[0]
    cost = inference_cost(run.model, session, lengths=(0.5, 1.0), fractions=(0.25, 1.0), units=(10, 20),
                          n_windows=4, repeats=1)
    spikes = cost["spikes"]["x"]
    assert 0.15 < spikes[0] / spikes[1] < 0.35  # a quarter of the spikes are kept
    assert cost["length"]["spikes"][1] > cost["length"]["spikes"][0]
    assert all(s is not None and s > 0 for sweep in ("length", "spikes", "units") for s in cost[sweep]["seconds"])
    assert cost["errors"] == []


def test_the_units_sweep_fits_a_model_that_needs_it_for_one_step_not_its_recipe(data, monkeypatch):
    """NDT2 learns its session context in fit, so the units sweep fits each fresh model once: one step,
    not the recipe's (a quick-profile chapter 8 spent four minutes training NDT2 four times here)."""
    from mini_decoders.models.ndt2 import NDT2
    from mini_decoders.run import as_sessions

    session = as_sessions(data[0])[0]
    model = NDT2.build([session], NDT2.recipe_config("tiny"))
    assert model.config["max_steps"] > 1
    steps = []
    fit = NDT2.fit

    def counted(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        steps.append(history["steps"])
        return history

    monkeypatch.setattr(NDT2, "fit", counted)
    cost = inference_cost(model, session, lengths=(), fractions=(), units=(10, 20), n_windows=2, repeats=1)
    assert steps == [1, 1]
    assert all(s is not None and s > 0 for s in cost["units"]["seconds"]) and cost["errors"] == []


def test_steps_for_budget_caps_at_the_recipe(data):
    from mini_decoders.run import as_sessions

    sessions = as_sessions(data[0])
    generous = steps_for_budget("gru", sessions, "tiny", 1e6)
    assert generous["steps"] == generous["recipe_steps"] == 40 and generous["seconds_per_step"] > 0
    assert steps_for_budget("gru", sessions, "tiny", 1e-3)["steps"] == 1


def test_steps_from_probes_keeps_the_budget_when_noise_inverts_the_probes():
    # 3 steps in 2 s, 23 steps in 4 s: 0.1 s per step, 1.7 s fixed -> floor((60 - 1.7) / 0.1) = 583 steps
    clean = steps_from_probes([2.0, 4.0], (3, 23), 60.0, 2000)
    assert clean["steps"] == 582 or clean["steps"] == 583
    assert clean["seconds_per_step"] == pytest.approx(0.1) and clean["fixed_seconds"] == pytest.approx(1.7)
    # A loaded machine slowed the short probe: the difference is negative. The long probe's own
    # rate (4.2 s / 23 steps) is used, so the planned steps take at most the budget.
    noisy = steps_from_probes([5.0, 4.2], (3, 23), 60.0, 2000)
    assert noisy["seconds_per_step"] == pytest.approx(4.2 / 23)
    assert noisy["steps"] * noisy["seconds_per_step"] <= 60.0 and noisy["steps"] == int(60.0 / (4.2 / 23))
    assert steps_from_probes([5.0, 4.2], (3, 23), 1e6, 2000)["steps"] == 2000  # never past the recipe
    # With the long fit's loop time (2.3 s of its 4.2 s), the rest is fixed cost: 0.1 s per step.
    timed = steps_from_probes([5.0, 4.2], (3, 23), 60.0, 2000, loop_seconds=2.3)
    assert timed["seconds_per_step"] == pytest.approx(0.1) and timed["fixed_seconds"] == pytest.approx(1.9)
    assert timed["steps"] in (580, 581)  # floor((60 - 1.9) / 0.1)


# ------------------------------------------------------------------------------ transfer
def test_few_train_trials_keeps_val_and_test(data):
    from mini_decoders.run import as_sessions

    session = as_sessions(data[0])[0]
    split = session.trials.split
    half = few_train_trials(session, 0.5, seed=0)
    assert (half.trials.split == "train").sum() == round(0.5 * (split == "train").sum())
    assert (half.trials.split != "train").sum() == (split != "train").sum()
    assert np.array_equal(few_train_trials(session, 0.5, seed=0).trials.start, half.trials.start)
    assert (few_train_trials(session, 1e-6).trials.split == "train").sum() == 2
    with pytest.raises(RunError, match="fraction"):
        few_train_trials(session, 1.5)
    with pytest.raises(RunError, match="fractions"):
        parse_fractions("0.1,2")


def test_transfer_experiment_tiny_and_resumable(data, tmp_path, monkeypatch):
    lines = []
    table = run_benchmark(data, "ridge,ndt2", "tiny", tmp_path / "T.json", tmp_path / "T.png", threads=1,
                          isolate=False, log=lines.append,
                          transfer={"only": True, "pretrain_counts": (1, 2), "fractions": (0.5, 1.0)})
    assert table["rows"] == [] and (tmp_path / "T.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "T.json").read_text())["transfer"]["models"].keys() == {"ndt2"}
    result = table["transfer"]
    entry = result["models"]["ndt2"]
    assert result["new_session"] == "sim_s2" and result["pool"] == ["sim_s0", "sim_s1"]
    assert entry["metric"] == "co_bps" and entry["mode"] == "units"
    assert sorted((p["n_sessions"], p["fraction"]) for p in entry["adapted"]) == [(1, 0.5), (1, 1.0), (2, 0.5), (2, 1.0)]
    assert [p["fraction"] for p in entry["scratch"]] == [0.5, 1.0]
    assert all(np.isfinite(p["score"]) for p in entry["adapted"] + entry["scratch"])
    assert result["n_train_trials"][0] < result["n_train_trials"][1]
    assert [p["fraction"] for p in result["baselines"]["smoothing"]["points"]] == [0.5, 1.0]
    assert result["oracle"]["co_bps"] > max(p["score"] for p in result["baselines"]["smoothing"]["points"])
    assert result["errors"] == []
    work = tmp_path / "T.work" / "transfer"
    rows = sorted((work / "rows").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in rows]
    lines.clear()
    again = transfer_experiment(data, ["ndt2"], pretrain_counts=(1, 2), fractions=(0.5, 1.0), profile="tiny",
                                work=work, log=lines.append)
    assert [p.stat().st_mtime_ns for p in rows] == stamps  # every cell reused
    assert not any(line.startswith("  transfer:") for line in lines)
    assert again["models"]["ndt2"]["adapted"] == entry["adapted"]
    # A new ndt2 recipe retrains ndt2's cells, and only those: the baseline's cells are reused.
    ndt2 = get_model("ndt2")
    monkeypatch.setattr(ndt2, "CONFIGS", {**ndt2.CONFIGS, "tiny": {**ndt2.CONFIGS["tiny"], "mask_ratio": 0.3}})
    lines.clear()
    transfer_experiment(data, ["ndt2"], pretrain_counts=(1, 2), fractions=(0.5, 1.0), profile="tiny",
                        work=work, log=lines.append)
    retrained = {line.split()[-1] for line in lines if line.startswith("  transfer:")}
    assert {"ndt2__pretrain__N1", "ndt2__adapt__N2__k0.5", "ndt2__scratch__k1"} <= retrained
    assert all(name.startswith("ndt2__") for name in retrained)


@pytest.mark.parametrize("vq_r2, meets", [(0.76, True), (0.70, False)])
def test_model_bars_judge_vq_at_its_issues_ratio_and_the_rest_at_beating(vq_r2, meets):
    from mini_decoders.experiments.benchmark import build_table

    def row(model, judged, score):
        return {"model": model, "status": "ok", "judged_on": judged, judged: score}

    rows = [row("ridge", "vel_r2", 0.80), row("smoothing", "co_bps", 0.30), row("ndt1", "co_bps", 0.29),
            row("vq", "vel_r2", vq_r2)]
    table = build_table(rows, None, BenchmarkSettings(data=[], profile="tiny"), [])
    by_name = {r["model"]: r for r in table["rows"]}
    assert by_name["vq"]["beats_baseline"] is False and by_name["vq"]["model_bar"] == 0.9
    assert by_name["vq"]["meets_model_bar"] is meets  # 0.9 x 0.80 = 0.72
    assert by_name["ndt1"]["meets_model_bar"] is by_name["ndt1"]["beats_baseline"] is False
    assert by_name["ridge"]["model_bar"] is None
    assert table["summary"]["transformers_meet_model_bars"] is False


def test_judge_score_is_the_verdict_build_table_writes():
    """A ratio only to a positive baseline or oracle, ties do not beat, the bar is a ratio; no reference, no verdict."""
    from mini_decoders.experiments.benchmark import judge_score

    assert judge_score(0.375, 0.25, 0.75) == {"beats_baseline": True, "ratio_to_baseline": 1.5,
                                              "meets_model_bar": True, "fraction_of_oracle": 0.5}
    assert judge_score(0.2, 0.2, None)["beats_baseline"] is False  # a tie
    assert judge_score(0.2, -0.1, 0.0) == {"beats_baseline": True, "ratio_to_baseline": None, "meets_model_bar": True,
                                           "fraction_of_oracle": None}
    assert judge_score(0.19, 0.2, bar=0.9)["meets_model_bar"] is True
    assert judge_score(0.17, 0.2, bar=0.9)["meets_model_bar"] is False
    assert set(judge_score(0.3, None, None).values()) == {None}
