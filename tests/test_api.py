"""The package's top-level API stays what DESIGN §6 promises, whatever was imported before."""

import importlib


def test_train_is_the_api_function_even_after_importing_the_training_package():
    import mini_decoders as md

    importlib.import_module("mini_decoders.training.trainer")
    importlib.import_module("mini_decoders.training.schedule")
    from mini_decoders.training.profiles import resolve_profile  # noqa: F401

    assert callable(md.train) and md.train.__module__ == "mini_decoders.run"
    assert md.load_run.__module__ == "mini_decoders.run"


def test_design_api_names_exist():
    import mini_decoders.data as data

    for name in ("read_nwb", "write_nwb", "simulate", "Session"):
        assert hasattr(data, name), name
    assert hasattr(data.Session, "from_binned")
