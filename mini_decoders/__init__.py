"""mini-decoders: transformers for brain decoding, from scratch, side by side.

The Python API mirrors the command line::

    import mini_decoders as md
    run = md.train("ridge", sessions, profile="quick", out="runs/ridge")
    run.evaluate(sessions)          # co-bps, vel R², PSTH R² per session and mean
    run.write_predictions(sessions, "PRED.h5")
    md.load_run("runs/ridge")
"""

__version__ = "0.1.0"

import time as _time  # noqa: E402

# When the package was first imported: a chapter states its run time from here (see
# `mini_decoders.run_time`), so the Colab install cell before it is not counted.
IMPORTED_AT = _time.monotonic()

# `mini_decoders.train` is both the training subpackage (DESIGN §2) and the API function
# (DESIGN §6). The subpackage is imported here (its __init__ imports nothing), so later imports of
# `mini_decoders.train.*` find it in sys.modules and never rebind the package attribute; the name
# is then removed, and `md.train` (like `Run`, `load_run`) is looked up in `mini_decoders.run` on
# first use. Importing the package stays instant: `mini-decoders` starts, and handles Ctrl-C, before
# torch loads.
from mini_decoders import train as _training_package  # noqa: E402,F401

del train

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
