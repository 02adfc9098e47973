"""The data-scaling curve: test score against the number of training trials, seeds, crossings.

One tiny run (seconds, one thread) is shared by the tests; the command-line test reuses its work
folder, so its cells are read back rather than trained again.
"""

import json

import numpy as np
import pytest

from mini_decoders.cli import main
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import DataError, RunError
from mini_decoders.experiments.scaling import (FORMAT, SCALING_PROFILES, crossing_points, run_scaling,
                                               train_subsets)
from mini_decoders.experiments.transfer import keep_train_trials

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    work = tmp_path_factory.mktemp("scaling") / "S.work"
    return run_scaling(profile="tiny", work=work, log=None), work


@pytest.fixture(scope="module")
def session():
    return simulate(n_sessions=1, n_trials=40, n_units=12, seed=3).sessions[0]


def test_every_point_holds_one_score_per_seed_and_their_mean_and_std(tiny):
    table, _ = tiny
    assert table["format"] == FORMAT and len(table["seeds"]) >= 3
    assert table["trial_counts"] == list(SCALING_PROFILES["tiny"]["trial_counts"])
    assert not table["errors"]
    for curve in table["curves"]:
        assert [p["n_trials"] for p in curve["points"]] == table["trial_counts"]
        for point in curve["points"]:
            scores = point["scores"]
            assert len(scores) == len(table["seeds"]) and all(np.isfinite(s) for s in scores), curve["model"]
            assert point["mean"] == pytest.approx(np.mean(scores))
            assert point["std"] == pytest.approx(np.std(scores, ddof=1))
            assert len(set(scores)) > 1, f"{curve['model']} n={point['n_trials']}: seeds gave the same score"


def test_the_curves_are_the_models_their_baselines_and_the_pretrained_adapters(tiny):
    table, _ = tiny
    curves = {(c["model"], c["pretrained"]): c for c in table["curves"]}
    assert set(curves) == {("smoothing", False), ("ridge", False), ("ndt1", False), ("poyo", False), ("poyo", True)}
    assert curves[("smoothing", False)]["baseline"] is None and curves[("ridge", False)]["baseline"] is None
    assert curves[("ndt1", False)]["metric"] == "co_bps" and curves[("ndt1", False)]["baseline"] == "smoothing"
    assert curves[("poyo", True)]["metric"] == "vel_r2" and curves[("poyo", True)]["baseline"] == "ridge"
    # pretrained on the other session(s) only, never on the target
    assert table["pretrain_sessions"] and table["target_session"] not in table["pretrain_sessions"]
    assert table["crossings"] == crossing_points(table)
    assert {(c["model"], c["pretrained"]) for c in table["crossings"]} == {("ndt1", False), ("poyo", False),
                                                                          ("poyo", True)}


def test_every_model_of_a_seed_trains_on_the_same_nested_train_trials(tiny):
    table, work = tiny
    seen = {}
    for row_path in (work / "rows").glob("*__n*__s*.json"):
        row = json.loads(row_path.read_text())
        seen.setdefault((row["seed"], row["n_trials"]), set()).add(tuple(row["train_trials"]))
    assert set(seen) == {(s, n) for s in table["seeds"] for n in table["trial_counts"]}
    assert all(len(trials) == 1 for trials in seen.values()), "two models of one seed saw different trials"
    for seed in table["seeds"]:
        small, large = (set(next(iter(seen[(seed, n)]))) for n in table["trial_counts"][:2])
        assert small < large


def test_subsets_are_of_the_asked_size_drawn_from_train_trials_nested_and_seeded(session):
    split = np.asarray(session.trials.split)
    train_rows = set(np.flatnonzero(split == "train").tolist())
    counts = (4, 8, 16, 1000)
    by_seed = {seed: train_subsets(session, counts, seed) for seed in (0, 1, 2)}
    for seed, subsets in by_seed.items():
        assert sorted(subsets) == [4, 8, 16]  # more than there are is left out
        for n, rows in subsets.items():
            assert len(rows) == len(set(rows.tolist())) == n
            assert set(rows.tolist()) <= train_rows
        assert set(subsets[4]) < set(subsets[8]) < set(subsets[16])
    assert len({tuple(s[8]) for s in by_seed.values()}) == 3
    np.testing.assert_array_equal(train_subsets(session, counts, 1)[8], by_seed[1][8])


def test_the_test_and_val_trials_are_the_same_at_every_count(session):
    split = np.asarray(session.trials.split)
    kept_starts = {name: session.trials.start[split == name] for name in ("val", "test")}
    for seed in (0, 1, 2):
        for n, rows in train_subsets(session, (4, 8, 16), seed).items():
            few = keep_train_trials(session, rows)
            few_split = np.asarray(few.trials.split)
            assert (few_split == "train").sum() == n
            np.testing.assert_array_equal(np.sort(few.trials.start[few_split == "train"]),
                                          np.sort(session.trials.start[rows]))
            for name, starts in kept_starts.items():
                np.testing.assert_array_equal(few.trials.start[few_split == name], starts)
    with pytest.raises(DataError, match="train trials"):
        keep_train_trials(session, np.flatnonzero(split == "test")[:2])


def _table(curves):
    return {"curves": [dict(model=m, pretrained=pre, metric=metric, baseline=base, classic=base is None,
                            points=[{"n_trials": n, "mean": v} for n, v in zip((25, 50, 100, 200), means)])
                       for m, pre, metric, base, means in curves]}


def test_crossing_points_find_where_a_model_stays_above_its_baseline():
    table = _table([
        ("smoothing", False, "co_bps", None, (0.10, 0.12, 0.14, 0.15)),
        ("ridge", False, "vel_r2", None, (0.50, 0.55, 0.60, 0.62)),
        ("ndt1", False, "co_bps", "smoothing", (0.05, 0.13, 0.15, 0.18)),   # above from 50 on
        ("ndt2", False, "co_bps", "smoothing", (0.11, 0.11, 0.15, 0.16)),   # above at 25, dips, above from 100
        ("poyo", False, "vel_r2", "ridge", (0.40, 0.56, 0.61, 0.61)),       # above at 50, 100, below at 200: never
        ("poyo", True, "vel_r2", "ridge", (0.51, 0.60, 0.70, 0.72)),        # above everywhere
        ("mtm", False, "co_bps", "smoothing", (None, 0.20, 0.20, 0.20)),    # failed at 25: from 50
    ])
    found = {(c["model"], c["pretrained"]): c for c in crossing_points(table)}
    assert set(found) == {("ndt1", False), ("ndt2", False), ("poyo", False), ("poyo", True), ("mtm", False)}
    assert found[("ndt1", False)]["n_trials"] == 50
    assert found[("ndt2", False)]["n_trials"] == 100
    assert found[("poyo", False)]["n_trials"] is None
    assert found[("poyo", True)]["n_trials"] == 25
    assert found[("mtm", False)]["n_trials"] == 50
    assert found[("ndt1", False)]["margin_at_largest"] == pytest.approx(0.03)
    assert found[("poyo", False)]["margin_at_largest"] == pytest.approx(-0.01)
    assert found[("poyo", True)]["baseline"] == "ridge" and found[("poyo", True)]["metric"] == "vel_r2"


def test_counts_larger_than_the_recording_are_left_out_and_said(tiny, tmp_path):
    table, work = tiny
    lines = []
    small = run_scaling(table["data"], "tiny", trial_counts=(6, 999), models="ridge", work=tmp_path / "w",
                        log=lines.append)
    assert small["trial_counts"] == [6] and small["skipped_trial_counts"] == [999]
    assert any("999" in line and "left out" in line for line in lines)
    assert [c["model"] for c in small["curves"]] == ["ridge"] and small["crossings"] == []
    with pytest.raises(RunError, match="3 distinct seeds"):
        run_scaling(table["data"], "tiny", seeds=[0, 1], models="ridge", work=tmp_path / "w", log=None)


def test_a_rerun_reuses_every_finished_cell_and_a_new_model_trains_only_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative work folder: the rerun finds the data by another path
    first, again, more = [], [], []
    run_scaling(profile="tiny", models="ridge", work="w", log=first.append)
    table = run_scaling(profile="tiny", models="ridge", work="w", log=again.append)
    trained = [line for line in first if line.startswith("  scaling: ")]
    assert len(trained) == 3 * len(table["trial_counts"])
    assert not [line for line in again if line.startswith("  scaling: ")]
    run_scaling(profile="tiny", models="ridge,smoothing", work="w", log=more.append)
    assert {line.split("__")[0].split()[-1] for line in more if line.startswith("  scaling: ")} == {"smoothing"}


def test_the_cli_writes_json_and_png_and_prints_one_row_per_curve(tiny, tmp_path, capsys):
    table, work = tiny
    out = tmp_path / "S.json"
    assert main(["benchmark", "--scaling", "--profile", "tiny", "--work", str(work), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["format"] == FORMAT and written["command"].startswith("mini-decoders benchmark --scaling")
    assert all(len(p["scores"]) >= 3 for c in written["curves"] for p in c["points"])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.splitlines()
    labels = [c["model"] + ("+pretrained" if c["pretrained"] else "") for c in written["curves"]]
    start = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert [line.split()[0] for line in lines[start + 1:start + 1 + len(labels)]] == labels
    assert lines[start + 1 + len(labels)].startswith("oracle")
    elsewhere = tmp_path / "pictures" / "curve.png"
    assert main(["benchmark", "--scaling", "--profile", "tiny", "--work", str(work), "--json", str(out),
                 "--plot", str(elsewhere)]) == 0
    assert elsewhere.read_bytes()[:4] == b"\x89PNG"


def test_the_cli_refuses_an_unknown_model_in_one_line(tmp_path, capsys):
    code = main(["benchmark", "--scaling", "--profile", "tiny", "--models", "ndt1,transformerx",
                 "--work", str(tmp_path / "w"), "--json", str(tmp_path / "S.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:") and "transformerx" in err[0]
    assert not (tmp_path / "S.json").exists()
