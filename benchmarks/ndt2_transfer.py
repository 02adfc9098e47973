"""NDT2 acceptance numbers: co-bps against the smoothing baseline, and pretraining -> new session.

    python benchmarks/ndt2_transfer.py --data DIR/sim_s0.nwb DIR/sim_s1.nwb DIR/sim_s2.nwb DIR/sim_s3.nwb \
        [--profile quick] [--fraction 0.2] [--draws 3] [--glm-prior subject|none] [--threads 1] \
        [--max-steps N] [--finetune-steps N] [--json OUT.json]

The last file is the "new" session. (a) NDT2 is pretrained on the others and its test co-bps on
them is compared with NLB's smoothing baseline (``run.train("smoothing", ...)``); printed as soon
as it is known. (b) A copy of that pretrained model is fine-tuned on ``fraction`` of the new
session's train trials and compared with NDT2 trained from scratch on the same trials
(``transfer_experiment``): co-bps and velocity R² on the new session's test trials; once per
draw of those trials (``--draws``; draw k is ``transfer_experiment(..., seed=k)``).

Data with one array per subject (``mini-decoders data synth --sessions 4 --array-drift 0.5``) is
NDT2's own setting, other days of the same subjects; the default simulation gives every session
new neurons. ``--glm-prior none`` turns off the fine-tune's start from the same array's GLM
(``finetune_glm_prior``).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="NWB files; the last one is the new session")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 helps on a busy machine)")
    parser.add_argument("--max-steps", type=int, default=None, help="override the profile's pretraining steps")
    parser.add_argument("--finetune-steps", type=int, default=None, help="override the profile's fine-tuning steps")
    parser.add_argument("--draws", type=int, default=1, help="draws of the new session's few trials (seeds 0..)")
    parser.add_argument("--glm-prior", choices=("subject", "none"), default=None,
                        help="finetune_glm_prior (default: the profile's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mini_decoders.data.nwb import read_nwb
    from mini_decoders.experiments.ndt2_transfer import transfer_experiment
    from mini_decoders.models.ndt2 import NDT2
    from mini_decoders.run import Run, train
    from mini_decoders.training.profiles import config_for

    sessions = [read_nwb(path) for path in args.data]
    pretrain, new = sessions[:-1], sessions[-1]
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("finetune_steps", args.finetune_steps),
                                   ("finetune_glm_prior", args.glm_prior)) if v}
    config = {**config_for(NDT2.CONFIGS, args.profile), "seed": args.seed, **overrides}
    summary: dict = {"profile": args.profile, "threads": torch.get_num_threads(), "overrides": overrides}

    with tempfile.TemporaryDirectory() as folder:
        smoothing = train("smoothing", pretrain, profile=args.profile, out=f"{folder}/smoothing", progress=False)
    summary["smoothing_co_bps"] = smoothing.metrics["mean"]["co_bps"]
    torch.manual_seed(args.seed)
    model = NDT2.build(pretrain, config)
    history = model.fit(pretrain, config, out_dir=None, progress=False)
    scores = Run(None, model.eval(), {"model": "ndt2", "bin_size": model.bin_size, "sessions": []}).evaluate(pretrain)
    summary.update({"ndt2_co_bps": scores["mean"]["co_bps"], "ndt2_vel_r2_ridge_from_rates": scores["mean"].get("vel_r2"),
                    "ratio_to_smoothing": scores["mean"]["co_bps"] / summary["smoothing_co_bps"],
                    "pretrain_steps": history["steps"], "pretrain_seconds": history["seconds"],
                    "pretrain_steps_per_second": history["steps"] / history["seconds"],
                    "val_co_bps_history": [(r["step"], r["val_co_bps"]) for r in history["records"] if "val_co_bps" in r]})
    print(json.dumps(summary, indent=2), flush=True)

    summary["draws"] = []
    for draw in range(args.draws):
        started = time.perf_counter()
        result = transfer_experiment(pretrain, new, fraction=args.fraction, profile=args.profile, seed=draw,
                                     config=overrides, pretrained=copy.deepcopy(model))
        summary["draws"].append({"draw": draw, "n_train_trials_new_session": result["n_train_trials"],
                                 "pretrained_then_finetuned": result["pretrained"], "from_scratch": result["scratch"],
                                 "transfer_seconds": time.perf_counter() - started})
        print(json.dumps(summary["draws"][-1], indent=2), flush=True)
    print("draw  pretrained co-bps / vel R2   from scratch co-bps / vel R2")
    for row in summary["draws"]:
        pre, scratch = row["pretrained_then_finetuned"], row["from_scratch"]
        print(f"{row['draw']:>4}  {pre['co_bps']:.4f} / {pre['vel_r2']:.3f}             "
              f"{scratch['co_bps']:.4f} / {scratch['vel_r2']:.3f}")
    wins = [row["pretrained_then_finetuned"][m] > row["from_scratch"][m] for row in summary["draws"]
            for m in ("co_bps", "vel_r2")]
    summary["pretrained_wins_every_draw_on_both"] = all(wins)
    print("pretrained beats from scratch on co-bps and velocity R² in every draw:", all(wins), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(summary, file, indent=2)


if __name__ == "__main__":
    main()
