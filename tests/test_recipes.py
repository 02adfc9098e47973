"""Recipes: the paper's method and this book's, one named change apart at a time."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mini_decoders.experiments.cells import cell_label, recipe_labels, split_label
from mini_decoders.errors import RunError
from mini_decoders.models.recipes import DEFAULT, PAPER, Departure, apply_recipe, check_departures, ladder, parse_recipe
from mini_decoders.models.registry import MODELS, get_model
from mini_decoders.training.lamb import Lamb
from mini_decoders.training.schedule import lr_at
from mini_decoders.training.trainer import TrainConfig

TRANSFORMERS = ("ndt1", "ndt2", "mtm", "poyo", "vq")
KERNEL = Departure("kernel", "temporal kernel", ("kernel_bins",), "none", "9 bins", "smoothing to start from")
WIDTH = Departure("relu", "activation", ("activation", "ffn_dim"), "ReLU", "GELU", "")
PAPER_VALUES = {"kernel_bins": 0, "activation": "relu", "ffn_dim": 128}
DEFAULTS = {"kernel_bins": 9, "activation": "gelu", "ffn_dim": 256, "dim": 64}


def test_parse_recipe_names_and_errors():
    assert parse_recipe(None, (KERNEL,)) == (DEFAULT, [])
    assert parse_recipe(" Paper ", (KERNEL,)) == (PAPER, [])
    assert parse_recipe("paper+kernel+kernel", (KERNEL, WIDTH)) == (PAPER, ["kernel"])
    assert parse_recipe("default-relu-kernel", (KERNEL, WIDTH)) == (DEFAULT, ["relu", "kernel"])
    with pytest.raises(RunError, match="unknown change.*'factors'.*kernel, relu"):
        parse_recipe("paper+factors", (KERNEL, WIDTH))
    with pytest.raises(RunError, match="unknown recipe 'best'"):
        parse_recipe("best", (KERNEL,))
    with pytest.raises(RunError, match="unknown recipe"):
        parse_recipe("paper-kernel", (KERNEL,))  # a change is added to the paper, removed from the default


def test_apply_recipe_moves_exactly_the_departures_keys():
    departures = (KERNEL, WIDTH)
    paper = apply_recipe(DEFAULTS, PAPER_VALUES, departures, "paper")
    assert paper == {**DEFAULTS, **PAPER_VALUES, "recipe": "paper"}
    plus = apply_recipe(DEFAULTS, PAPER_VALUES, departures, "paper+kernel")
    assert plus == {**paper, "kernel_bins": 9, "recipe": "paper+kernel"}
    minus = apply_recipe(DEFAULTS, PAPER_VALUES, departures, "default-relu")
    assert minus == {**DEFAULTS, "activation": "relu", "ffn_dim": 128, "recipe": "default-relu"}
    assert apply_recipe(DEFAULTS, PAPER_VALUES, departures, "paper+kernel+relu") == {**DEFAULTS, "recipe":
                                                                                     "paper+kernel+relu"}
    assert DEFAULTS["kernel_bins"] == 9  # the input is not modified
    assert ladder(departures) == ["paper", "paper+kernel", "paper+relu", "default"]


def test_check_departures_catches_unaccounted_keys():
    check_departures("toy", PAPER_VALUES, (KERNEL, WIDTH))
    with pytest.raises(RunError, match=r"without a departure \['ffn_dim'\]"):
        check_departures("toy", PAPER_VALUES, (KERNEL, Departure("relu", "", ("activation",), "", "", "")))
    with pytest.raises(RunError, match="'kernel_bins' is in departures"):
        check_departures("toy", PAPER_VALUES, (KERNEL, WIDTH, Departure("k2", "", ("kernel_bins",), "", "", "")))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_every_transformer_has_a_paper_recipe_one_named_change_at_a_time(name):
    """The paper's recipe plus all departures is the default recipe, key for key, in every profile."""
    model = get_model(name)
    assert model.PAPER and model.DEPARTURES, f"{name} has no paper recipe"
    check_departures(name, model.PAPER, model.DEPARTURES)
    for departure in model.DEPARTURES:
        assert departure.title and departure.paper and departure.ours and departure.why, departure.key
    every = "+".join(d.key for d in model.DEPARTURES)
    for profile in ("tiny", "quick", "full"):
        default = model.recipe_config(profile, "default")
        paper = model.recipe_config(profile, "paper")
        assert {k: v for k, v in model.recipe_config(profile, f"paper+{every}").items() if k != "recipe"} == \
            {k: v for k, v in default.items() if k != "recipe"}
        assert {k: v for k, v in model.recipe_config(profile, f"default-{every.replace('+', '-')}").items()
                if k != "recipe"} == {k: v for k, v in paper.items() if k != "recipe"}
        # sizes are the profile's, in both recipes
        for size_key in ("max_steps", "batch_size", "dim"):
            if size_key in default:
                assert paper[size_key] == default[size_key], (name, profile, size_key)
    # in the quick profile (the book's), the paper's recipe really differs from the default
    quick_default, quick_paper = model.recipe_config("quick"), model.recipe_config("quick", "paper")
    assert any(quick_paper[k] != quick_default.get(k) for k in model.PAPER)


@pytest.mark.parametrize("name", ("ridge", "gru", "smoothing"))
def test_classic_baselines_are_their_own_paper(name):
    model = get_model(name)
    assert model.PAPER == {} and model.DEPARTURES == ()
    assert {k: v for k, v in model.recipe_config("tiny", "paper").items() if k != "recipe"} == \
        {k: v for k, v in model.recipe_config("tiny").items() if k != "recipe"}


def test_benchmark_cells():
    assert cell_label("ndt1") == "ndt1" and cell_label("ndt1", "default") == "ndt1"
    assert cell_label("ndt1", "paper+kernel") == "ndt1@paper+kernel"
    assert split_label("ndt1@paper+kernel") == ("ndt1", "paper+kernel") and split_label("ridge") == ("ridge", "default")
    assert recipe_labels(["ridge", "ndt1"], "paper") == ["ridge", "ndt1@paper"]
    assert recipe_labels(["ridge", "ndt1"]) == ["ridge", "ndt1"]
    steps = recipe_labels(["smoothing", "ndt1"], ladder=True)
    departures = get_model("ndt1").DEPARTURES
    assert steps == ["smoothing", "ndt1@paper"] + [f"ndt1@paper+{d.key}" for d in departures] + ["ndt1"]
    with pytest.raises(RunError, match="unknown recipe"):
        recipe_labels(["ndt1"], "bogus")


def test_train_records_the_recipe_and_resume_refuses_another(tmp_path):
    from mini_decoders.data.simulate import simulate
    from mini_decoders.run import load_run, train

    sessions = simulate(n_sessions=1, n_trials=24, n_units=20, seed=0).sessions
    run = train("ndt1", sessions, profile="tiny", out=tmp_path / "r", recipe="paper", max_steps=2, progress=False)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["recipe"] == "paper" and config["model_config"]["recipe"] == "paper"
    for key, value in get_model("ndt1").PAPER.items():
        assert config["model_config"][key] == value
    assert load_run(tmp_path / "r").config["recipe"] == "paper" and run.metrics["mean"]
    with pytest.raises(RunError, match="trained with recipe 'paper', not 'default'"):
        train("ndt1", sessions, profile="tiny", out=tmp_path / "r", resume=True, progress=False)


def test_cli_train_recipe(tmp_path, capsys):
    from mini_decoders.cli import main
    from mini_decoders.data.synth import write_synthetic

    paths = write_synthetic(tmp_path / "d", n_sessions=1, seed=0, n_trials=24, n_units=20)
    assert main(["train", "ndt1", "--data", str(paths[0]), "--profile", "tiny", "--recipe", "paper",
                 "--max-steps", "2", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["recipe"] == "paper"
    assert main(["train", "ndt1", "--data", str(paths[0]), "--profile", "tiny", "--recipe", "paper+bogus",
                 "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    assert "unknown change(s) ['bogus']" in capsys.readouterr().err


# ------------------------------------------------------------------ POYO's optimiser and schedule

def test_lamb_step_is_adam_scaled_by_the_trust_ratio():
    """First step, closed form: Adam's update is sign(g) (m_hat/sqrt(v_hat) = g/|g|), plus decay."""
    weight = torch.nn.Parameter(torch.tensor([3.0, -4.0]))  # norm 5
    weight.grad = torch.tensor([0.5, 2.0])
    Lamb([weight], lr=0.1, eps=0.0, weight_decay=0.5).step()
    update = torch.tensor([1.0, 1.0]) + 0.5 * torch.tensor([3.0, -4.0])  # [2.5, -1.0]
    expected = torch.tensor([3.0, -4.0]) - 0.1 * (5.0 / update.norm()) * update
    assert torch.allclose(weight.detach(), expected, atol=1e-6)
    zero = torch.nn.Parameter(torch.zeros(3))  # norm 0: the plain Adam step
    zero.grad = torch.tensor([1.0, -1.0, 2.0])
    Lamb([zero], lr=0.1, eps=0.0).step()
    assert torch.allclose(zero.detach(), torch.tensor([-0.1, 0.1, -0.1]))


def test_trainer_builds_the_configured_optimizer():
    with pytest.raises(RunError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(RunError, match="schedule must be one of"):
        TrainConfig(schedule="linear")


def test_flat_cosine_schedule():
    config = TrainConfig(lr=1.0, max_steps=100, warmup_steps=10, min_lr_ratio=0.0, schedule="flat_cosine")
    assert lr_at(0, config) == 1.0 and lr_at(49, config) == 1.0  # no warm-up: flat for the first half
    assert math.isclose(lr_at(75, config), 0.5, abs_tol=1e-9)  # half-way down the cosine
    assert lr_at(100, config) == 0.0 and lr_at(120, config) == 0.0
    warm = TrainConfig(lr=1.0, max_steps=100, warmup_steps=10, min_lr_ratio=0.0)
    assert lr_at(0, warm) == 0.1 and lr_at(9, warm) == 1.0


def test_registry_lists_every_model_once():
    assert set(TRANSFORMERS) <= set(MODELS)


def test_recipe_ladder_rows_and_the_departures_table(tmp_path):
    """One benchmark row per ladder step; the table says what each change did on its own."""
    from mini_decoders.data.synth import write_synthetic
    from mini_decoders.experiments.recipes import departures_markdown, ladder_effects, load_ladder, run_ladder

    paths = write_synthetic(tmp_path / "d", n_sessions=1, seed=0, n_trials=30, n_units=24)
    table = run_ladder(["ndt1"], paths, profile="tiny", json_path=tmp_path / "L.json", threads=1, isolate=False,
                       log=None)
    ndt1 = get_model("ndt1")
    labels = [row["label"] for row in table["rows"]]
    assert labels == ["smoothing", "ndt1@paper"] + [f"ndt1@paper+{d.key}" for d in ndt1.DEPARTURES] + ["ndt1"]
    assert all(row["status"] == "ok" for row in table["rows"]), [row.get("error") for row in table["rows"]]
    rows = {row["label"]: row for row in table["rows"]}
    assert rows["ndt1@paper"]["recipe"] == "paper" and rows["ndt1"]["recipe"] == "default"
    # a ladder step really trained with its own config: the paper's has no kernel, paper+kernel has one
    from mini_decoders.run import load_run

    assert load_run(rows["ndt1@paper"]["run"]).config["model_config"]["kernel_bins"] == 0
    assert load_run(rows["ndt1@paper+kernel"]["run"]).config["model_config"]["kernel_bins"] == \
        ndt1.recipe_config("tiny")["kernel_bins"]
    effects = ladder_effects(load_ladder(tmp_path / "L.json"), "ndt1")
    assert effects["paper"] == rows["ndt1@paper"]["co_bps"] and effects["default"] == rows["ndt1"]["co_bps"]
    assert effects["changes"]["kernel"]["effect"] == pytest.approx(rows["ndt1@paper+kernel"]["co_bps"] - effects["paper"])
    text = departures_markdown("ndt1", table=table)
    assert text.count("\n| **") == len(ndt1.DEPARTURES) and f"{effects['changes']['factors']['effect']:+.4f}" in text
    assert "`kernel_bins` 0 → 5" in text and "profile tiny" in text
    assert departures_markdown("ndt1", "quick").count("–") >= len(ndt1.DEPARTURES)  # no ladder: no effects
