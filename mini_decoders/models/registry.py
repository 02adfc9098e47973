"""The one list of models: name -> the module that defines it.

Everything that names models reads this list: the Run API (:func:`get_model`), the command line
(its help is written from :data:`MODELS`), the benchmark, the transfer experiment and the recipe
ladder. What a model *is* (its token, the metric it is judged on, its classic baseline, how it
adapts to new units) is declared on its class (see :class:`~mini_decoders.models.base.Decoder`),
so adding a model is one module under ``models/`` and one line here (plus its chapter and tests).

This module imports no model, and no torch: the command line lists the names before the heavy
libraries load, and a model module is imported only when its class is asked for.
"""

from __future__ import annotations

import importlib
import importlib.util

from mini_decoders.errors import RunError

MODEL_MODULES = {
    "ridge": "mini_decoders.models.baselines",
    "gru": "mini_decoders.models.baselines",
    "smoothing": "mini_decoders.models.baselines",
    "ndt1": "mini_decoders.models.ndt1",
    "ndt2": "mini_decoders.models.ndt2",
    "poyo": "mini_decoders.models.poyo",
    "mtm": "mini_decoders.models.mtm",
    "vq": "mini_decoders.models.vq",
}

# name -> model class, filled in on first use (None = not imported yet).
MODELS: dict[str, type | None] = {name: None for name in MODEL_MODULES}


def get_model(name: str) -> type:
    """The model class (a :class:`~mini_decoders.models.base.Decoder` subclass) registered as ``name``.

    Raises:
        RunError: the name is unknown (the message lists the valid names) or the model is not
            implemented in this version.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise RunError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    if MODELS[key] is None:
        MODELS[key] = _find_model(key)
    return MODELS[key]


def model_classes() -> dict[str, type]:
    """Every registered model's class, by name (imports every model module)."""
    return {name: get_model(name) for name in MODELS}


def adaptable_models() -> list[str]:
    """The models that adapt to new units (their class has finetune modes, ``ADAPTS``)."""
    return [name for name, model_class in model_classes().items() if model_class.ADAPTS]


def classic_baseline(metric: str) -> str | None:
    """The classic model every model judged on ``metric`` is compared with (``co_bps`` -> ``smoothing``).

    Read from the models' own ``BASELINE``; None when no model judged on ``metric`` names one.
    """
    return next((cls.BASELINE for cls in model_classes().values() if cls.JUDGED_ON == metric and cls.BASELINE),
                None)


def _find_model(key: str) -> type:
    """The class in ``key``'s module whose ``name`` is ``key``."""
    module_name = MODEL_MODULES[key]
    available = [name for name, module in MODEL_MODULES.items() if name != key and importlib.util.find_spec(module)]
    not_yet = RunError(f"model {key!r} is not implemented yet in this version of mini-decoders; "
                       f"available now: {', '.join(available)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise not_yet from None
        raise  # the module exists but one of *its* imports is missing: that is a real bug
    for value in vars(module).values():
        # a model class: it builds itself from data (no import of models.base here, see the docstring)
        if isinstance(value, type) and getattr(value, "name", None) == key and callable(getattr(value, "build", None)):
            return value
    raise not_yet
