"""Model names -> model classes: the one list the CLI, the Run API and the benchmarks share."""

from __future__ import annotations

import importlib
import importlib.util

from mini_decoders.errors import RunError
from mini_decoders.models.base import Decoder
from mini_decoders.models.baselines import GRUDecoder, RidgeDecoder, SmoothingModel

# The transformer chapters live in their own modules, imported only when asked for (they are
# bigger, and a missing one must not break the baselines). None = not looked up yet.
MODEL_MODULES = {
    "ndt1": "mini_decoders.models.ndt1",
    "ndt2": "mini_decoders.models.ndt2",
    "mtm": "mini_decoders.models.mtm",
    "poyo": "mini_decoders.models.poyo",
    "vq": "mini_decoders.models.vq",
}

MODELS: dict[str, type[Decoder] | None] = {
    "ridge": RidgeDecoder,
    "gru": GRUDecoder,
    "smoothing": SmoothingModel,
    **{name: None for name in MODEL_MODULES},
}


def get_model(name: str) -> type[Decoder]:
    """The model class registered as ``name``.

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


def _find_model(key: str) -> type[Decoder]:
    """The :class:`Decoder` subclass whose ``name`` is ``key`` in that model's module."""
    module_name = MODEL_MODULES[key]
    written = [name for name, module in MODEL_MODULES.items() if name != key and importlib.util.find_spec(module)]
    not_yet = RunError(f"model {key!r} is not implemented yet in this version of mini-decoders; "
                       f"available now: {', '.join(['ridge', 'gru', 'smoothing'] + written)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise not_yet from None
        raise  # the module exists but one of *its* imports is missing: that is a real bug
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Decoder) and value.name == key:
            return value
    raise not_yet
