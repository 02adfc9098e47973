"""Write simulated sessions to disk: one NLB-layout NWB file per session plus its true rates.

This is what ``mini-decoders data synth`` runs. The true rates go in a separate
``<session>_truth.h5`` next to each NWB file, so the NWB files look exactly like real NLB
data to any reader, while the oracle stays available to the book.
"""

from __future__ import annotations

import json
from pathlib import Path

from mini_decoders.data.nwb import write_nwb
from mini_decoders.data.simulate import simulate
from mini_decoders.errors import DataError
from mini_decoders.files import write_text_atomic


def write_synthetic(out: str | Path, n_sessions: int = 3, seed: int = 0, n_trials: int | None = None,
                    **simulate_kwargs) -> list[Path]:
    """Simulate ``n_sessions`` sessions and write them to ``out``.

    Returns:
        The NWB paths, one per session (``<out>/<session id>.nwb``); each has a
        ``<session id>_truth.h5`` beside it and ``<out>/simulation.json`` records every simulator setting.
    """
    if n_sessions < 1:
        raise DataError(f"data synth: --sessions must be >= 1, got {n_sessions}")
    if n_trials is not None:
        simulate_kwargs["n_trials"] = n_trials
    dataset = simulate(n_sessions=n_sessions, seed=seed, **simulate_kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for session in dataset.sessions:
        path = write_nwb(session, out / f"{session.id}.nwb")
        dataset.truth[session.id].save(out / f"{session.id}_truth.h5")
        paths.append(Path(path))
    write_text_atomic(out / "simulation.json", json.dumps(dataset.config_dict(), indent=2))
    return paths
