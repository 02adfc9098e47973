"""Training: one Trainer for every model, its schedule, optimisers, checkpoints, data parallel, profiles."""
