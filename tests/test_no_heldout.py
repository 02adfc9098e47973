"""Data without held-out units (e.g. ``Session.from_binned`` without ``heldout``): every model trains,
predicts and evaluates; co-bps is absent, not an error; a model that needs held-out units says so in
one line."""

from contextlib import nullcontext

import h5py
import numpy as np
import pytest
import torch

from mini_decoders.data.session import Session, Trials
from mini_decoders.errors import DataError
from mini_decoders.run import train

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

N_TRIALS, N_BINS, N_UNITS = 20, 30, 12


@pytest.fixture(scope="module")
def session() -> Session:
    rng = np.random.default_rng(0)
    t = np.arange(N_TRIALS * N_BINS)
    rates = 0.3 + 0.25 * np.sin(t[:, None] / 5.0 + np.arange(N_UNITS)[None, :])  # (T, U)
    velocity = np.stack([np.sin(t / 5.0), np.cos(t / 5.0)], 1) + 0.1 * rng.standard_normal((len(t), 2))
    starts = np.arange(N_TRIALS) * N_BINS * 0.02
    split = np.array(["train", "train", "train", "val", "test"] * (N_TRIALS // 5))
    trials = Trials(starts, starts + N_BINS * 0.02, split)
    return Session.from_binned(rng.poisson(rates), 0.02, behavior={"hand_vel": velocity}, trials=trials)


@pytest.mark.parametrize("model", ["ndt2", "ndt1", "mtm", "vq", "ridge", "gru", "poyo"])
def test_trains_predicts_and_evaluates_without_heldout_units(session, model, tmp_path):
    assert not session.units.heldout.any()
    torch.manual_seed(0)
    # These data have no region labels either: MtM says it trains without its region schemes.
    expected = pytest.warns(UserWarning, match="labelled regions") if model == "mtm" else nullcontext()
    with expected:
        steps = None if model == "ridge" else 3  # ridge is fitted in closed form: it refuses a step count
        run = train(model, [session], profile="tiny", out=tmp_path / "run", max_steps=steps, progress=False)
    predicted = run.predict([session])[session.id]
    if "rates" in run.model.predicts:  # as NDT1 always did: held-in rates, and held-out rates of 0 units
        assert predicted["rates_heldin"].shape == (N_TRIALS, N_BINS, N_UNITS)
        assert predicted["rates_heldout"].shape == (N_TRIALS, N_BINS, 0)
        assert np.isfinite(predicted["rates_heldin"]).all()
    path = run.write_predictions([session], tmp_path / "pred.h5")
    with h5py.File(path, "r") as file:
        group = file[session.id]
        assert set(group) - {"trial_id", "split"} == set(predicted) - {"trial_id", "split"}
    scores = run.evaluate([session])
    assert scores["mean"].get("co_bps") is None  # nothing held out: no co-bps, and no error
    assert scores["mean"]["vel_r2"] is not None
    # The checkpoint was chosen by a number, not by a NaN co-bps.
    last = run.metrics["training"]["history"].get("last", {})
    assert all(np.isfinite(value) for key, value in last.items() if key.startswith("val_"))
    if model in ("ndt1", "ndt2"):
        assert {"ndt1": "val_masked_bps", "ndt2": "val_heldin_bps"}[model] in last


def test_smoothing_needs_heldout_units_and_says_so_in_one_line(session, tmp_path):
    with pytest.raises(DataError, match="held-out") as error:
        train("smoothing", [session], profile="tiny", out=tmp_path / "run", progress=False)
    assert "\n" not in str(error.value) and "heldout" in str(error.value)
