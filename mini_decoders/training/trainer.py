"""One Trainer for every model.

The Trainer knows nothing about neural data. It needs a model with a method

    model.training_loss(batch) -> Tensor                       # scalar
    model.training_loss(batch) -> (Tensor, dict[str, float])   # scalar + extra values to log

a dataset (anything with ``len`` and ``[i]``) and a ``collate_fn`` that turns a list of dataset
items into a batch: a dict (or list/tuple, nested) of tensors, which the Trainer moves to the
device. Around that it adds what every model needs and nobody should rewrite: device and mixed
precision choice, AdamW (or LAMB) with per-group learning-rate multipliers, warm-up + cosine schedule,
gradient clipping, seeding and a reproducible batch order, atomic resumable checkpoints,
validation with early stopping, a progress bar, a plottable history, and data parallel training
under ``torchrun``.

Reproducibility: the batch of step ``k`` depends only on (seed, k): epoch ``e = k // B_e`` uses the
permutation ``np.random.default_rng([seed, e])`` and step ``k`` takes its slice ``k % B_e`` (``B_e``
full batches per epoch; the last incomplete batch is dropped). Together with the RNG states in the
checkpoint, N steps in one go and N/2 steps + resume give bitwise-equal parameters on CPU.

Exact at any instant: a checkpoint always holds one consistent state. Ctrl-C during the forward or
backward pass saves the state of the step's start (nothing was updated yet); Ctrl-C during the
optimizer update is held back until the update and its step count are done, then saves the state of
the step's end; Ctrl-C during validation saves the step's end with the validation marked pending,
and resuming runs it first. Checkpoints are written every ``checkpoint_every`` steps and every
``checkpoint_seconds`` of wall-clock, so a killed process (``kill -9``, a lost Colab runtime) loses
at most that much work.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mini_decoders.errors import RunError
from mini_decoders.training.checkpoint import (CHECKPOINT_NAME, capture_rng, load_checkpoint, rng_state,
                                               save_checkpoint, set_rng_state)
from mini_decoders.training.device import move_to_device, seed_everything, select_device, select_precision
from mini_decoders.training.distributed import (WorldInfo, broadcast_from_main, close_distributed, init_distributed,
                                                local_batch_slice, mean_across_ranks, world_info, wrap_model)
from mini_decoders.training.history import History, LogWindow
from mini_decoders.training.lamb import Lamb
from mini_decoders.training.schedule import SCHEDULES, default_param_groups, lr_at

OPTIMIZERS = {"adamw": torch.optim.AdamW, "lamb": Lamb}

CHECKPOINT_FORMAT = "mini_decoders.checkpoint/1"


@dataclass
class TrainConfig:
    """Everything about *how* to train, nothing about *what* (the model and data are arguments)."""

    max_steps: int = 1000
    batch_size: int = 32            # GLOBAL batch size (split across DDP ranks)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1       # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    precision: str = "auto"         # auto | fp32 | bf16 | fp16
    device: str = "auto"            # auto | cpu | cuda | cuda:1 | mps
    seed: int = 0
    log_every: int = 10
    val_every: int | None = None    # steps; None = only at the end
    early_stopping_patience: int | None = None  # in validations; monitors `monitor`
    monitor: str = "val_loss"       # key returned by val_fn; with mode
    monitor_mode: str = "min"       # min | max
    checkpoint_every: int | None = None  # steps; None = only at the end (and on interrupt)
    # Wall-clock seconds between checkpoints (None: never by time). Saving reads the state and never
    # changes it, so the trained weights do not depend on when (or whether) checkpoints were written.
    checkpoint_seconds: float | None = None
    num_workers: int = 0
    # With validation, end with the weights of the best validation rather than the last step:
    # that is what early stopping promises, and what predict/eval should use.
    restore_best: bool = True
    optimizer: str = "adamw"        # adamw | lamb (POYO's paper)
    schedule: str = "warmup_cosine"  # warmup_cosine | flat_cosine (see schedule.lr_at)

    @classmethod
    def from_model_config(cls, model_config: dict, **overrides) -> "TrainConfig":
        """The training keys of a model's config (one of its ``CONFIGS`` profiles), plus overrides.

        A model config mixes architecture (``dim``, ``depth``) and training (``lr``,
        ``max_steps``); only the fields of this class are taken, so models need not list them.
        """
        fields = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in model_config.items() if key in fields}
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise RunError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise RunError(f"TrainConfig.precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.monitor_mode not in ("min", "max"):
            raise RunError(f"TrainConfig.monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"TrainConfig.optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise RunError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise RunError(f"TrainConfig.checkpoint_every must be >= 1 or None, got {self.checkpoint_every}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds >= 0:
            raise RunError(f"TrainConfig.checkpoint_seconds must be >= 0 or None, got {self.checkpoint_seconds}")


# --------------------------------------------------------------------------- interrupts

@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise KeyboardInterrupt.

    Python raises KeyboardInterrupt between any two bytecodes, so without this a Ctrl-C could land
    after the optimizer changed some weights but before the step was counted: the checkpoint
    written on interrupt would then apply that step twice on resume. Only the main thread receives
    signals; elsewhere (or with SIGINT ignored) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    received: list[tuple] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])  # the default handler raises KeyboardInterrupt
            else:
                raise KeyboardInterrupt


# --------------------------------------------------------------------------- batch order

class _StepBatches:
    """Index lists of this rank's samples for steps ``start_step .. end_step - 1`` (a DataLoader batch_sampler)."""

    def __init__(self, n_samples: int, batch_size: int, rank_slice: slice, seed: int, start_step: int, end_step: int):
        self.n_samples, self.batch_size, self.rank_slice, self.seed = n_samples, batch_size, rank_slice, seed
        self.start_step, self.end_step = start_step, end_step
        self.batches_per_epoch = n_samples // batch_size  # the last incomplete batch is dropped

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, permutation = -1, None
        for step in range(self.start_step, self.end_step):
            step_epoch, position = divmod(step, self.batches_per_epoch)
            if step_epoch != epoch:
                epoch, permutation = step_epoch, np.random.default_rng([self.seed, step_epoch]).permutation(self.n_samples)
            global_batch = permutation[position * self.batch_size:(position + 1) * self.batch_size]
            yield global_batch[self.rank_slice].tolist()


class _TrainingLoss(nn.Module):
    """Routes ``forward`` to ``model.training_loss``: DDP synchronises gradients only through forward()."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Any):
        return self.model.training_loss(batch)


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Train ``model`` on ``train_dataset`` by minimising ``model.training_loss(batch)``.

    Args:
        model: an ``nn.Module`` with ``training_loss(batch)``; moved to the chosen device.
        train_dataset: ``len(dataset)`` samples, ``dataset[i]`` -> one item.
        collate_fn: list of items -> batch (dict/list/tuple of tensors, possibly nested).
        config: a ``TrainConfig``.
        out_dir: folder of ``checkpoint.pt``; None = no checkpoints (and no resume).
        val_fn: ``val_fn(model) -> {"val_loss": ..., ...}``, called on the unwrapped model under
            ``torch.no_grad()`` and ``model.eval()``; keys without a ``val_`` prefix get one.
        param_groups: AdamW groups ``{"params": [...], "lr_mult": float, "weight_decay": float}``;
            default ``default_param_groups(model, config.weight_decay)``.
        progress: show a progress bar (rank 0 only).
        run_config: JSON-able description of the run (model name, profile...) kept in the checkpoint.
    """

    def __init__(self, model: nn.Module, train_dataset, collate_fn: Callable[[list], Any], config: TrainConfig, *,
                 out_dir: str | Path | None = None, val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 param_groups: list[dict] | None = None, progress: bool = True, run_config: dict | None = None):
        if not callable(getattr(model, "training_loss", None)):
            raise RunError(f"{type(model).__name__} has no training_loss(batch) method; the Trainer needs one")
        try:
            json.dumps(run_config or {})
        except TypeError as error:
            raise RunError(f"run_config must be JSON-able (it is stored in the checkpoint): {error}") from error
        self.config = config
        self.train_dataset, self.collate_fn, self.val_fn = train_dataset, collate_fn, val_fn
        self.progress, self.run_config = progress, dict(run_config or {})
        self.checkpoint_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None

        self.device = select_device(config.device, world_info().local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._owns_process_group = init_distributed(self.device.type)
        self.world: WorldInfo = world_info()
        self.is_main = self.world.rank == 0
        self.rank_slice = local_batch_slice(config.batch_size, self.world)
        self.precision = select_precision(config.precision, self.device.type)
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

        n_samples = len(train_dataset)
        if n_samples < config.batch_size:
            raise RunError(f"the training set has {n_samples} samples, fewer than one batch of {config.batch_size}; "
                           f"lower batch_size")

        self.model = model.to(self.device)
        # DDP wraps a module whose forward *is* training_loss; self.model stays the plain model.
        self._loss_module = wrap_model(_TrainingLoss(model), self.device) if self.world.is_distributed else None
        groups = param_groups if param_groups is not None else default_param_groups(model, config.weight_decay)
        groups = [{"lr_mult": 1.0, **group} for group in groups]
        self.optimizer = OPTIMIZERS[config.optimizer](groups, lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

        self.history = History()
        self.step = 0               # optimizer steps completed
        self.samples_seen = 0       # global samples consumed, over all ranks
        self.best_value: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.validations_since_best = 0
        self.stopped_early = False
        self.finished = False
        self.validation_pending = False  # a validation was due at `step` and has not finished

    # ----------------------------------------------------------------- the loop

    def fit(self, resume: bool = False) -> History:
        """Train until ``config.max_steps`` (or early stopping); returns the History.

        Args:
            resume: continue from ``out_dir/checkpoint.pt`` (parameters, optimizer, scaler, RNG
                states, step, history) instead of starting afresh.

        The final checkpoint holds the weights the run ends with: the best validation's when
        ``restore_best`` applies. Resuming a finished run with a larger ``max_steps`` continues
        from those. Under ``torchrun`` the process group this Trainer created is closed at the end.

        Raises:
            RunError: non-finite loss (the last good checkpoint is kept), a bad checkpoint, ...
            KeyboardInterrupt: re-raised after rank 0 saved a consistent checkpoint (see the module
                docstring for which state an interrupt at each moment saves).
        """
        config = self.config
        if resume:
            if self.checkpoint_path is None:
                raise RunError("resume needs an out_dir holding checkpoint.pt, but out_dir is None")
            self._load(load_checkpoint(self.checkpoint_path))
            if self.validation_pending and self.val_fn is not None:
                self._validate()  # interrupted during this validation: run it before anything else
            self.validation_pending = False
            if self.stopped_early or self.step >= config.max_steps:
                if not self.finished:  # interrupted while finishing: finish now
                    self._finish()
                return self.history
        else:
            seed_everything(config.seed + self.world.rank)  # ranks draw different dropout masks
        self.finished = False

        batches = DataLoader(
            self.train_dataset,
            batch_sampler=_StepBatches(len(self.train_dataset), config.batch_size, self.rank_slice, config.seed,
                                       self.step, config.max_steps),
            collate_fn=self.collate_fn, num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
            # Its own generator: the default would draw from torch's global RNG when iteration
            # starts, so a resumed run would see different dropout masks from an uninterrupted one.
            generator=torch.Generator())
        bar = tqdm(total=config.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.is_main))
        window = LogWindow()
        last_save = time.monotonic()
        # What an interrupt saves depends on where it lands (`phase`): "step" (drawing the batch,
        # forward, backward: nothing updated yet) -> the RNG of the step's start; "update" (inside
        # the optimizer update, reached only by a KeyboardInterrupt raised there directly, not by
        # Ctrl-C, which interrupts_deferred holds back) -> nothing, the state is unknown;
        # "after" (logging, validation, checkpoint) -> the step's end.
        phase, rng_at_step_start, rng_after_update = "step", capture_rng(), None
        self.model.train()
        try:
            for batch in batches:
                lr = lr_at(self.step, config)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                loss, extras = self._training_loss(move_to_device(batch, self.device))
                loss_value = mean_across_ranks(loss.detach().float()).item()
                if not math.isfinite(loss_value):
                    raise RunError(self._non_finite_message(loss_value))
                self.scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                with interrupts_deferred():  # the update and its step count are one state
                    phase = "update"
                    self.scaler.step(self.optimizer)
                    self.step += 1
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.samples_seen += config.batch_size
                    at_validation = config.val_every is not None and self.step % config.val_every == 0
                    self.validation_pending = self.val_fn is not None and (at_validation
                                                                           or self.step == config.max_steps)
                    rng_after_update, phase = capture_rng(), "after"
                window.add(loss_value, extras)
                bar.update(1)

                if self.step % config.log_every == 0 or self.step == config.max_steps:
                    record = window.summary(config.batch_size)
                    self.history.log(self.step, {**record, "lr": lr, "samples_seen": self.samples_seen})
                    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{lr:.2e}", refresh=False)
                    window = LogWindow()
                if self.validation_pending:
                    self._validate()
                    self.validation_pending = False
                    window.restart_clock()
                    if self.stopped_early:
                        break
                by_steps = config.checkpoint_every is not None and self.step % config.checkpoint_every == 0
                by_time = (config.checkpoint_seconds is not None
                           and time.monotonic() - last_save >= config.checkpoint_seconds)
                if (by_steps or by_time) and self.step < config.max_steps:
                    self._save(rng_state())
                    last_save = time.monotonic()
                    window.restart_clock()
                rng_at_step_start, phase = capture_rng(), "step"

            phase = "finish"
            self._finish()
        except KeyboardInterrupt:
            self._save_on_interrupt(phase, rng_at_step_start, rng_after_update)
            raise
        finally:
            bar.close()
        if self._owns_process_group:
            close_distributed()
            self._owns_process_group = False
        return self.history

    def _finish(self) -> None:
        """End with the best validation's weights (when asked) and write the final checkpoint."""
        if self.config.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.finished = True
        self._save(rng_state())

    def _save_on_interrupt(self, phase: str, rng_at_step_start: tuple, rng_after_update: tuple | None) -> None:
        """Save the consistent state an interrupt in ``phase`` leaves (see ``fit``) and say which."""
        if not self.is_main:
            return
        if self.checkpoint_path is None:
            print(f"interrupted at step {self.step}; no out_dir, so no checkpoint was saved", flush=True)
            return
        if phase == "update":
            kept = self._checkpoint_step()
            kept = (f"the checkpoint of step {kept} is kept" if kept is not None
                    else "no checkpoint was written, so a rerun starts from step 0")
            print(f"interrupted inside an optimizer update, which may have changed only some weights: they are not "
                  f"saved and {kept}; rerun with --resume", flush=True)
            return
        if phase == "step":
            rng = rng_at_step_start  # nothing was updated: replay this step from its start
        elif phase == "after" and self.validation_pending:
            rng = rng_after_update  # replay the validation from the step's end
        else:
            rng = None  # the current state is the step's end
        self._save(rng_state(rng))
        print(f"interrupted at step {self.step}; rerun with --resume", flush=True)

    def _checkpoint_step(self) -> int | None:
        """The step of the checkpoint on disk, or None when there is none (or it cannot be read)."""
        if self.checkpoint_path is None or not self.checkpoint_path.is_file():
            return None
        try:
            return int(load_checkpoint(self.checkpoint_path)["step"])
        except (RunError, KeyError, TypeError, ValueError):
            return None

    def _training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss, extra logs) of one batch, under autocast when training in bf16/fp16."""
        autocast = (torch.autocast(self.device.type, dtype=self._autocast_dtype) if self._autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            output = self._loss_module(batch) if self._loss_module is not None else self.model.training_loss(batch)
        loss, extras = output if isinstance(output, tuple) else (output, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise RunError(f"{type(self.model).__name__}.training_loss must return a scalar tensor (or "
                           f"(tensor, dict)), got {type(loss).__name__} of shape {getattr(loss, 'shape', None)}")
        return loss.reshape(()), extras

    def _non_finite_message(self, loss_value: float) -> str:
        kept = (f"the last good checkpoint {self.checkpoint_path} is kept"
                if self.checkpoint_path is not None and self.checkpoint_path.exists() else "no checkpoint was written")
        return (f"loss is {loss_value} at step {self.step + 1}; training stopped before updating the weights "
                f"and {kept}. Try a lower lr, grad_clip, or precision fp32")

    # ----------------------------------------------------------------- validation

    def _validate(self) -> None:
        """Run val_fn (rank 0), log it, track the best ``monitor`` value, decide on early stopping."""
        config = self.config
        metrics = None
        if self.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = self.val_fn(self.model)
            self.model.train()
            metrics = {(key if key.startswith("val_") else f"val_{key}"): float(value) for key, value in metrics.items()}
        metrics = broadcast_from_main(metrics)  # every rank takes the same early-stopping decision
        self.history.log(self.step, metrics)

        monitor_key = config.monitor if config.monitor in metrics else f"val_{config.monitor}"
        if monitor_key not in metrics:
            raise RunError(f"TrainConfig.monitor is {config.monitor!r} but val_fn returned {sorted(metrics)}; "
                           f"set monitor to one of them")
        value = metrics[monitor_key]
        improved = self.best_value is None or (value < self.best_value if config.monitor_mode == "min"
                                               else value > self.best_value)
        if improved:
            self.best_value, self.validations_since_best = value, 0
            # Entries may be non-tensor extra state (e.g. a vocabulary's ids, via get_extra_state).
            self.best_state = {name: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor)
                               else copy.deepcopy(value) for name, value in self.model.state_dict().items()}
        else:
            self.validations_since_best += 1
        patience = config.early_stopping_patience
        if patience is not None and self.validations_since_best >= patience and self.step < config.max_steps:
            self.stopped_early = True
            if self.is_main:
                print(f"early stopping at step {self.step}: {monitor_key} has not improved for "
                      f"{patience} validations (best {self.best_value:.6g})", flush=True)

    # ----------------------------------------------------------------- checkpoints

    def _save(self, rng: dict[str, Any]) -> None:
        """Write the full training state to ``out_dir/checkpoint.pt`` (rank 0; atomic)."""
        if not self.is_main or self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler_step": self.step,  # the schedule is a pure function of the step: lr_at(step, config)
            "step": self.step,
            "samples_seen": self.samples_seen,
            "rng": rng,
            "best_value": self.best_value,
            "best_model": self.best_state,
            "validations_since_best": self.validations_since_best,
            "stopped_early": self.stopped_early,
            "finished": self.finished,
            "validation_pending": self.validation_pending,
            "history": self.history.to_dict(),
            "train_config": dataclasses.asdict(self.config),
            "run_config": self.run_config,
            "world_size": self.world.world_size,
        })

    def _load(self, payload: dict[str, Any]) -> None:
        """Restore the training state saved by ``_save``."""
        path = self.checkpoint_path
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"checkpoint {path} has format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        saved_config = payload["train_config"]
        if saved_config.get("batch_size") != self.config.batch_size or saved_config.get("seed") != self.config.seed:
            raise RunError(f"checkpoint {path} was trained with batch_size={saved_config.get('batch_size')}, "
                           f"seed={saved_config.get('seed')}; resuming needs the same values to replay the same "
                           f"batches (got batch_size={self.config.batch_size}, seed={self.config.seed})")
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RunError(f"checkpoint {path} does not match this model or optimizer: {error}") from error
        if payload["scaler"]:  # empty when the run was not fp16
            self.scaler.load_state_dict(payload["scaler"])
        self.step, self.samples_seen = int(payload["step"]), int(payload["samples_seen"])
        self.best_value, self.best_state = payload["best_value"], payload["best_model"]
        self.validations_since_best = int(payload["validations_since_best"])
        self.stopped_early = bool(payload["stopped_early"])
        self.finished = bool(payload["finished"])
        self.validation_pending = bool(payload.get("validation_pending", False))
        self.history = History.from_dict(payload["history"])
        if self.world.rank == 0 and payload.get("world_size", 1) == self.world.world_size:
            set_rng_state(payload["rng"])
        else:
            # Only rank 0's generators are saved; other ranks restart theirs from (seed, rank, step).
            seed_everything(self.config.seed + 1_000_003 * self.world.rank + self.step)
