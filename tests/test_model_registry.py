"""The registry is the one list of models, and each model class carries its own facts."""

import pytest

from mini_decoders.cli import build_parser
from mini_decoders.metrics import SCORED_BY
from mini_decoders.models import registry


@pytest.mark.parametrize("name", list(registry.MODELS))
def test_each_registered_model_states_its_facts(name):
    model_class = registry.get_model(name)
    assert model_class.name == name
    assert model_class.TOKEN, "say what one token is (TOKEN)"
    assert model_class.JUDGED_ON in SCORED_BY, "JUDGED_ON is the metric the model is judged on"
    if model_class.BASELINE is not None:
        baseline = registry.get_model(model_class.BASELINE)
        assert baseline.CLASSIC and baseline.JUDGED_ON == model_class.JUDGED_ON, "a baseline of the same metric"
    assert model_class.MODEL_BAR > 0
    # a model adapts to new units exactly when it can fine-tune, and says what that learns
    assert bool(model_class.ADAPTS) == callable(getattr(model_class, "finetune", None))
    assert set(model_class.ADAPTS) <= {"units", "full"}
    assert bool(model_class.ADAPTATION) == bool(model_class.ADAPTS)


def test_every_judged_metric_has_one_classic_baseline():
    for metric in SCORED_BY:
        baseline = registry.classic_baseline(metric)
        assert baseline is not None and registry.get_model(baseline).BASELINE is None
        judged = [cls for cls in registry.model_classes().values() if cls.JUDGED_ON == metric and cls.BASELINE]
        assert {cls.BASELINE for cls in judged} == {baseline}


def test_the_command_line_help_is_written_from_the_registry():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    model_help = next(action.help for action in train._actions if action.dest == "model")
    assert all(name in model_help for name in registry.MODELS)
