"""mini-decoders: transformers for brain decoding, from scratch, side by side.

The Python API mirrors the command line::

    import mini_decoders as md
    run = md.train("ridge", sessions, profile="quick", out="runs/ridge")
    run.evaluate(sessions)          # co-bps, vel R², PSTH R² per session and mean
    run.write_predictions(sessions, "PRED.h5")
    md.load_run("runs/ridge")
"""

import time as _time

from mini_decoders.version import __version__

# When the package was first imported: a chapter states its run time from here (see
# `mini_decoders.run_time`), so the Colab install cell before it is not counted.
IMPORTED_AT = _time.monotonic()

# `Run`, `load_run` and `train` live in `mini_decoders.run` and are looked up there on first use:
# importing the package stays instant, so `mini-decoders` starts, and handles Ctrl-C, before torch
# loads. (The training machinery is the subpackage `mini_decoders.training`; `mini_decoders.train`
# is only ever the API function.)
_API = ("Run", "load_run", "train")
__all__ = ["Run", "__version__", "load_run", "train"]


def __getattr__(name: str):
    if name in _API:
        from mini_decoders import run

        value = getattr(run, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mini_decoders' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
