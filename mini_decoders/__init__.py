"""mini-decoders: transformers for brain decoding, from scratch, side by side.

The Python API mirrors the command line::

    import mini_decoders as md
    run = md.train("ridge", sessions, profile="quick", out="runs/ridge")
    run.evaluate(sessions)          # co-bps, vel R², PSTH R² per session and mean
    run.write_predictions(sessions, "PRED.h5")
    md.load_run("runs/ridge")
"""

__version__ = "0.1.0"

# `mini_decoders.train` is both the training subpackage (DESIGN §2) and the API function
# (DESIGN §6). Importing `run` first imports the subpackage, which binds the attribute to the
# module; binding the function afterwards makes `md.train(...)` the function for good (later
# imports of `mini_decoders.train.*` find the subpackage in sys.modules and do not rebind it).
from mini_decoders import run as _run  # noqa: E402
from mini_decoders.run import Run, load_run, train  # noqa: E402

__all__ = ["Run", "__version__", "load_run", "train"]
