"""mini-decoders: transformers for brain decoding, from scratch, side by side.

The Python API mirrors the command line::

    import mini_decoders as md
    run = md.train("ridge", sessions, profile="quick", out="runs/ridge")
    run.evaluate(sessions)          # co-bps, vel R², PSTH R² per session and mean
    run.write_predictions(sessions, "PRED.h5")
    md.load_run("runs/ridge")
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import mini_decoders` stays cheap (no torch import) until a run is needed.
    if name in {"train", "load_run", "Run"}:
        from mini_decoders import run

        return getattr(run, name)
    raise AttributeError(f"module 'mini_decoders' has no attribute {name!r}")


__all__ = ["Run", "__version__", "load_run", "train"]
