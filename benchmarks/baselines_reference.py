"""Issue acceptance for the classic baselines: our `ridge` and `smoothing` vs independent references.

Reference Wiener filter: scikit-learn RidgeCV on 160 ms (8 x 20 ms bins) of causal spike-count
history of every unit, fitted on train+val trials. Reference co-smoothing: the NLB recipe
(Gaussian-smoothed held-in spikes -> one scikit-learn PoissonRegressor per held-out neuron),
with the kernel width and penalty our model chose. Both scored on the same test trials.

    mini-decoders data synth --out D --sessions 3
    python benchmarks/baselines_reference.py --data D/*.nwb [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from sklearn.linear_model import PoissonRegressor, RidgeCV
from sklearn.metrics import r2_score

import mini_decoders as md
from mini_decoders.data import bin_trials, read_nwb
from mini_decoders.metrics import bits_per_spike, smooth_spikes

HISTORY_BINS = 8  # 160 ms of 20 ms bins, including the current one


def reference_wiener_r2(session) -> float:
    binned = bin_trials(session, 0.02, behavior=("hand_vel",))
    velocity = binned.behavior["hand_vel"]
    rows = binned.mask & np.isfinite(velocity).all(-1)
    n_trials, n_bins, _ = binned.counts.shape
    design = np.concatenate([np.pad(binned.counts, ((0, 0), (lag, 0), (0, 0)))[:, :n_bins]
                             for lag in range(HISTORY_BINS)], -1)  # (N, T, U * H) causal history
    fit = np.isin(binned.split, ["train", "val"])[:, None] & rows
    test = (binned.split == "test")[:, None] & rows
    model = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(design[fit], velocity[fit])
    return float(r2_score(velocity[test], model.predict(design[test])))


def reference_smoothing_bps(session, kern_sd: float, alpha: float) -> float:
    binned = bin_trials(session, 0.02)
    counts = np.where(binned.mask[..., None], binned.counts, np.nan)
    heldin, heldout = session.units.heldin_index, session.units.heldout_index
    smoothed = smooth_spikes(counts[..., heldin], 0.02, kern_sd)
    fit = np.isin(binned.split, ["train", "val"])[:, None] & binned.mask
    test = np.flatnonzero(binned.split == "test")
    inputs = np.nan_to_num(smoothed[test]).reshape(-1, len(heldin))
    rates = np.stack([PoissonRegressor(alpha=alpha, max_iter=1000).fit(smoothed[fit], binned.counts[..., unit][fit])
                      .predict(inputs) for unit in heldout], -1).reshape(len(test), -1, len(heldout))
    return float(bits_per_spike(rates, counts[test][..., heldout]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sessions = [read_nwb(path) for path in args.data]
    out = tempfile.mkdtemp()
    rows = {}
    started = time.perf_counter()
    ridge = md.train("ridge", sessions, profile=args.profile, out=f"{out}/ridge", progress=False)
    rows["ridge_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    smoothing = md.train("smoothing", sessions, profile=args.profile, out=f"{out}/smoothing", progress=False)
    rows["smoothing_seconds"] = time.perf_counter() - started
    choices = smoothing.metrics["training"]["history"]["sessions"]
    print(f"{'session':>10} {'ridge R2':>9} {'ref R2':>8} {'ratio':>6} {'smooth bps':>11} {'ref bps':>8} {'ratio':>6}")
    for session, choice in zip(sessions, choices):
        ours_r2 = ridge.metrics["sessions"][session.id]["vel_r2"]
        ours_bps = smoothing.metrics["sessions"][session.id]["co_bps"]
        ref_r2 = reference_wiener_r2(session)
        ref_bps = reference_smoothing_bps(session, choice["kern_sd"], choice["alpha"])
        rows[session.id] = {"ridge_vel_r2": ours_r2, "reference_vel_r2": ref_r2,
                            "smoothing_co_bps": ours_bps, "reference_co_bps": ref_bps}
        print(f"{session.id:>10} {ours_r2:9.4f} {ref_r2:8.4f} {ours_r2 / ref_r2:6.3f} "
              f"{ours_bps:11.4f} {ref_bps:8.4f} {ours_bps / ref_bps:6.3f}")
    print(f"train seconds: ridge {rows['ridge_seconds']:.1f}, smoothing {rows['smoothing_seconds']:.1f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
