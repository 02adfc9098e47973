"""The generic Trainer: learning, schedule, parameter groups, checkpoints, resume, failures, profiles."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from mini_decoders.errors import RunError
from mini_decoders.training import checkpoint as checkpoint_module
from mini_decoders.training.checkpoint import load_checkpoint, save_checkpoint
from mini_decoders.training.distributed import WorldInfo, local_batch_slice
from mini_decoders.training.profiles import PROFILE_ENV_VAR, config_for, resolve_profile
from mini_decoders.training.schedule import default_param_groups, lr_at, lr_mult_groups
from mini_decoders.training.device import select_device, select_precision
from mini_decoders.training.history import History
from mini_decoders.training.trainer import TrainConfig, Trainer, _StepBatches

matplotlib.use("Agg")
N_FEATURES = 8


# --------------------------------------------------------------------------- tiny problem

def regression_dataset(n_samples: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) pairs with y = x @ w + small noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, N_FEATURES, generator=generator)
    w = torch.randn(N_FEATURES, 1, generator=generator)
    y = x @ w + 0.05 * torch.randn(n_samples, 1, generator=generator)
    return list(zip(x, y))


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([x for x, _ in items]), "y": torch.stack([y for _, y in items])}


class Regressor(nn.Module):
    """MLP with dropout (so that resuming must restore the RNG to be exact)."""

    def __init__(self, seed: int = 0, dropout: float = 0.2):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = nn.Linear(N_FEATURES, 32)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(32, 1)
        self.calls = 0

    def training_loss(self, batch: dict[str, torch.Tensor]):
        self.calls += 1
        prediction = self.head(self.dropout(torch.relu(self.hidden(batch["x"]))))
        loss = ((prediction - batch["y"]) ** 2).mean()
        return loss, {"abs_error": (prediction - batch["y"]).abs().mean().item()}


class InterruptedRegressor(Regressor):
    """Raises KeyboardInterrupt in its ``interrupt_at``-th call, after drawing a dropout mask."""

    def __init__(self, interrupt_at: int, **kwargs):
        super().__init__(**kwargs)
        self.interrupt_at = interrupt_at

    def training_loss(self, batch):
        loss, extras = super().training_loss(batch)
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return loss, extras


class NanRegressor(Regressor):
    """Returns a NaN loss from its ``nan_at``-th call on."""

    def __init__(self, nan_at: int, **kwargs):
        super().__init__(**kwargs)
        self.nan_at = nan_at

    def training_loss(self, batch):
        loss, extras = super().training_loss(batch)
        return (loss * float("nan") if self.calls >= self.nan_at else loss), extras


def quiet_config(**overrides) -> TrainConfig:
    settings = dict(max_steps=20, batch_size=16, lr=1e-2, warmup_steps=3, device="cpu", log_every=1, seed=3)
    return TrainConfig(**{**settings, **overrides})


def make_trainer(model: nn.Module, config: TrainConfig, out_dir: Path | None = None, **kwargs) -> Trainer:
    return Trainer(model, regression_dataset(), collate, config, out_dir=out_dir, progress=False, **kwargs)


def assert_same_parameters(model_a: nn.Module, model_b: nn.Module) -> None:
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(a, b), f"parameter {name} differs"


# --------------------------------------------------------------------------- learning and schedule

def test_loss_goes_down_and_history_is_recorded():
    model = Regressor(dropout=0.0)
    history = make_trainer(model, quiet_config(max_steps=60, lr=3e-2, log_every=10, min_lr_ratio=0.5)).fit()
    steps, losses = history.values("loss")
    assert list(steps) == list(range(10, 61, 10))
    assert losses[-1] < 0.1 * losses[0]
    last = history.records[-1]
    assert last["samples_seen"] == 60 * 16
    assert last["samples_per_second"] > 0 and "abs_error" in last
    json.dumps(history.to_dict())  # notebooks and metrics.json need plain values


def test_lr_schedule_matches_closed_form():
    config = TrainConfig(lr=2.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.2)
    assert lr_at(4, config) == pytest.approx(1.0)
    assert lr_at(9, config) == pytest.approx(2.0)
    assert lr_at(10, config) == pytest.approx(2.0)
    for step in (10, 35, 60, 85, 110):
        progress = (step - 10) / 100
        assert lr_at(step, config) == pytest.approx(0.2 + 0.5 * 1.8 * (1 + math.cos(math.pi * progress)))
    assert lr_at(60, config) == pytest.approx(1.1)  # halfway down the cosine: the mean of peak and floor
    assert lr_at(110, config) == pytest.approx(0.2) and lr_at(500, config) == pytest.approx(0.2)
    decay = [lr_at(step, config) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at(0, TrainConfig(lr=1.0, warmup_steps=0, max_steps=10)) == pytest.approx(1.0)


def test_trainer_follows_schedule_times_lr_mult():
    model = Regressor(dropout=0.0)
    config = quiet_config(max_steps=12, warmup_steps=4)
    trainer = make_trainer(model, config, param_groups=lr_mult_groups(model, {"head.": 10.0}, 0.0))
    history = trainer.fit()
    for record in history.records:
        assert record["lr"] == pytest.approx(lr_at(record["step"] - 1, config))
    by_mult = {group["lr_mult"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert by_mult[10.0] == pytest.approx(10 * lr_at(11, config)) and by_mult[1.0] == pytest.approx(lr_at(11, config))


# --------------------------------------------------------------------------- parameter groups

class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.unit_embedding = nn.Embedding(10, 4)
        self.body = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 1)

    def training_loss(self, batch):
        hidden = self.norm(self.body(self.unit_embedding(batch["unit"])))
        return ((self.head(hidden) - batch["y"]) ** 2).mean()


def test_default_groups_decay_only_weight_matrices():
    model = Tagger()
    groups = default_param_groups(model, weight_decay=0.1)
    names = {id(param): name for name, param in model.named_parameters()}
    by_decay = {group["weight_decay"]: sorted(names[id(p)] for p in group["params"]) for group in groups}
    assert by_decay[0.1] == ["body.weight", "head.weight"]
    assert by_decay[0.0] == ["body.bias", "head.bias", "norm.bias", "norm.weight", "unit_embedding.weight"]
    assert all(group["lr_mult"] == 1.0 for group in groups)


def test_lr_mult_scales_first_adam_step_and_embeddings_are_not_decayed():
    model = Tagger()
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    dataset = [{"unit": torch.tensor(unit), "y": torch.tensor([1.0])} for unit in (0, 1, 2, 3)]
    config = TrainConfig(max_steps=1, batch_size=4, lr=1e-3, warmup_steps=0, weight_decay=0.5, grad_clip=None,
                         device="cpu")
    groups = lr_mult_groups(model, {"head.": 10.0, "head.bias": 3.0}, weight_decay=0.0)
    Trainer(model, dataset, torch.utils.data.default_collate, config, param_groups=groups, progress=False).fit()
    change = {name: (param.detach() - before[name]).abs() for name, param in model.named_parameters()}
    # Adam's first step moves every parameter with a non-zero gradient by ~lr * lr_mult.
    assert torch.allclose(change["body.weight"], torch.full_like(change["body.weight"], 1e-3), rtol=1e-2)
    assert torch.allclose(change["head.weight"], torch.full_like(change["head.weight"], 1e-2), rtol=1e-2)
    assert torch.allclose(change["head.bias"], torch.full_like(change["head.bias"], 3e-3), rtol=1e-2)
    # Rows of units not in the batch have zero gradient; with decay they would shrink by lr * 0.5.
    assert torch.equal(model.unit_embedding.weight[4:], before["unit_embedding.weight"][4:])


# --------------------------------------------------------------------------- batch order

def test_batch_order_is_a_per_epoch_permutation_and_depends_only_on_step():
    batches = list(_StepBatches(50, 8, slice(None), seed=5, start_step=0, end_step=12))
    epoch_0, epoch_1 = np.concatenate(batches[:6]), np.concatenate(batches[6:])
    assert len(set(epoch_0)) == 48 and len(set(epoch_1)) == 48  # 6 full batches, the last 2 dropped
    assert not np.array_equal(epoch_0, epoch_1)
    assert list(_StepBatches(50, 8, slice(None), 5, start_step=7, end_step=12)) == batches[7:]
    halves = [list(_StepBatches(50, 8, local_batch_slice(8, WorldInfo(rank, rank, 2)), 5, 0, 12)) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == batches


def test_batch_size_must_divide_across_ranks():
    with pytest.raises(RunError, match="divisible by the number of processes"):
        local_batch_slice(10, WorldInfo(rank=0, local_rank=0, world_size=3))


# --------------------------------------------------------------------------- checkpoints and resume

def test_resume_is_bitwise_equal_to_straight_training(tmp_path):
    constant_after_warmup = dict(min_lr_ratio=1.0)  # so a 10-step run follows the 20-step schedule
    straight = Regressor()
    straight_history = make_trainer(straight, quiet_config(**constant_after_warmup)).fit()

    first_half = Regressor()
    make_trainer(first_half, quiet_config(max_steps=10, **constant_after_warmup), tmp_path).fit()
    resumed = Regressor(seed=99)  # different init: everything must come from the checkpoint
    trainer = make_trainer(resumed, quiet_config(**constant_after_warmup), tmp_path)
    resumed_history = trainer.fit(resume=True)

    assert_same_parameters(straight, resumed)
    assert trainer.samples_seen == 20 * 16
    drop_speed = lambda history: [{k: v for k, v in r.items() if k != "samples_per_second"} for r in history.records]
    assert drop_speed(resumed_history) == drop_speed(straight_history)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 20


def test_keyboard_interrupt_saves_and_resume_matches_uninterrupted(tmp_path, capsys):
    config = quiet_config(max_steps=20, warmup_steps=5, min_lr_ratio=0.1)  # full warm-up + cosine
    straight = Regressor()
    make_trainer(straight, config).fit()

    with pytest.raises(KeyboardInterrupt):
        make_trainer(InterruptedRegressor(interrupt_at=13), config, tmp_path).fit()
    assert "interrupted at step 12; rerun with --resume" in capsys.readouterr().out
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["step"] == 12 and not payload["finished"]

    resumed = Regressor(seed=7)
    make_trainer(resumed, config, tmp_path).fit(resume=True)
    assert_same_parameters(straight, resumed)


def interrupt_in_optimizer_step(trainer: Trainer, at_call: int, how: str) -> None:
    """Make the ``at_call``-th optimizer step interrupt itself *after* it updated the weights.

    ``how="signal"``: a real SIGINT (what Ctrl-C sends) lands there; ``how="raise"``: the step
    raises KeyboardInterrupt itself, bypassing any signal handler.
    """
    original, calls = trainer.optimizer.step, [0]

    def step(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == at_call:
            if how == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt
        return result

    trainer.optimizer.step = step


def test_ctrl_c_inside_the_optimizer_step_resumes_bitwise(tmp_path, capsys):
    config = quiet_config(max_steps=20, warmup_steps=5, min_lr_ratio=0.1)
    straight = Regressor()
    make_trainer(straight, config).fit()

    trainer = make_trainer(Regressor(), config, tmp_path)
    interrupt_in_optimizer_step(trainer, at_call=13, how="signal")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    # The step that was being applied is finished and counted: weights and step are one state.
    assert "interrupted at step 13; rerun with --resume" in capsys.readouterr().out
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["step"] == 13
    assert all(torch.equal(payload["model"][k], v) for k, v in trainer.model.state_dict().items())

    resumed = Regressor(seed=7)
    make_trainer(resumed, config, tmp_path).fit(resume=True)
    assert_same_parameters(straight, resumed)


def test_interrupt_raised_inside_the_optimizer_step_keeps_the_last_consistent_checkpoint(tmp_path, capsys):
    config = quiet_config(max_steps=20, warmup_steps=5, min_lr_ratio=0.1, checkpoint_every=5)
    straight = Regressor()
    make_trainer(straight, quiet_config(max_steps=20, warmup_steps=5, min_lr_ratio=0.1)).fit()

    trainer = make_trainer(Regressor(), config, tmp_path)
    interrupt_in_optimizer_step(trainer, at_call=13, how="raise")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    # Nobody knows how far that update got: its weights are not saved, the step-10 checkpoint is kept.
    assert "checkpoint of step 10 is kept" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 10

    resumed = Regressor(seed=7)
    make_trainer(resumed, config, tmp_path).fit(resume=True)
    assert_same_parameters(straight, resumed)


class RandomValidation:
    """A val_fn that draws random numbers (as masked validation does) and can be interrupted."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls, self.interrupt_at = 0, interrupt_at

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.calls += 1
        noise = torch.rand(1).item()
        if self.calls == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        return {"val_loss": float(model.head.weight.abs().sum()) + noise}


def test_ctrl_c_during_validation_resumes_bitwise(tmp_path):
    config = quiet_config(max_steps=20, warmup_steps=5, val_every=4)
    straight = Regressor()
    straight_history = make_trainer(straight, config, val_fn=RandomValidation()).fit()

    with pytest.raises(KeyboardInterrupt):
        make_trainer(Regressor(), config, tmp_path, val_fn=RandomValidation(interrupt_at=2)).fit()
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["step"] == 8 and payload["validation_pending"]

    resumed = Regressor(seed=7)
    resumed_history = make_trainer(resumed, config, tmp_path, val_fn=RandomValidation()).fit(resume=True)
    assert_same_parameters(straight, resumed)  # the best validation's weights, restored at the end
    assert resumed_history.values("val_loss")[1].tolist() == straight_history.values("val_loss")[1].tolist()


def test_checkpoints_by_time_keep_results_identical(tmp_path, monkeypatch):
    straight = Regressor()
    make_trainer(straight, quiet_config(max_steps=8)).fit()

    saved_steps = []
    original_save = Trainer._save
    monkeypatch.setattr(Trainer, "_save", lambda self, rng: (saved_steps.append(self.step), original_save(self, rng)))
    timed = Regressor()
    make_trainer(timed, quiet_config(max_steps=8, checkpoint_seconds=0.0), tmp_path).fit()
    assert saved_steps == [1, 2, 3, 4, 5, 6, 7, 8]  # every step once 0 s have passed, then the final one
    assert_same_parameters(straight, timed)

    saved_steps.clear()
    make_trainer(Regressor(), quiet_config(max_steps=8, checkpoint_seconds=3600.0), tmp_path / "hourly").fit()
    assert saved_steps == [8]


def test_quick_and_full_profiles_checkpoint_by_time():
    from mini_decoders.models.registry import MODELS, get_model

    for name in MODELS:
        configs = get_model(name).CONFIGS
        if "max_steps" not in configs["quick"]:
            continue  # closed-form fits have no training loop to checkpoint
        for profile in ("quick", "full"):
            assert 60 <= configs[profile].get("checkpoint_seconds", 0) <= 120, (name, profile)


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    make_trainer(Regressor(), quiet_config(max_steps=4), tmp_path).fit()
    path = tmp_path / "checkpoint.pt"
    good_bytes = path.read_bytes()

    def half_write_then_fail(payload, file):
        file.write(b"\x80\x02partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 5})
    monkeypatch.undo()
    assert path.read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left behind
    assert load_checkpoint(path)["step"] == 4


def test_missing_truncated_and_corrupt_checkpoints_raise_run_error(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(RunError, match="out_dir"):
        make_trainer(Regressor(), quiet_config()).fit(resume=True)

    save_checkpoint(tmp_path / "good.pt", {"weights": torch.arange(10_000.0), "step": 3})
    good_bytes = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good_bytes[: len(good_bytes) // 2])
    with pytest.raises(RunError, match="truncated.pt is truncated or corrupt"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(RunError, match="corrupt"):
        load_checkpoint(tmp_path / "corrupt.pt")
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(RunError, match="corrupt"):
        make_trainer(Regressor(), quiet_config(), tmp_path).fit(resume=True)


def test_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"config": TrainConfig()}, tmp_path / "evil.pt")  # a dataclass needs arbitrary unpickling
    with pytest.raises(RunError, match="corrupt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_unreadable_checkpoint_never_advises_unsafe_loading(tmp_path):
    import os

    (tmp_path / "random.pt").write_bytes(os.urandom(5000))
    torch.save({"config": TrainConfig()}, tmp_path / "pickled.pt")
    for name in ("random.pt", "pickled.pt"):
        with pytest.raises(RunError) as error:
            load_checkpoint(tmp_path / name)
        message = str(error.value)
        assert "weights_only" not in message and "\n" not in message, message
        assert f"{name} is truncated or corrupt, or not a checkpoint written by mini-decoders" in message


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    model = NanRegressor(nan_at=7)
    with pytest.raises(RunError, match=r"loss is nan at step 7.*last good checkpoint .*checkpoint.pt is kept"):
        make_trainer(model, quiet_config(checkpoint_every=5), tmp_path).fit()
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["step"] == 5
    assert all(torch.isfinite(t).all() for t in payload["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never updated weights

    with pytest.raises(RunError, match="at step 1;.*no checkpoint was written"):
        make_trainer(NanRegressor(nan_at=1), quiet_config(), tmp_path / "fresh").fit()


# --------------------------------------------------------------------------- validation

def test_early_stopping_stops_and_restores_best():
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    snapshots: dict[int, dict] = {}
    calls: list[bool] = []

    def val_fn(model: nn.Module) -> dict[str, float]:
        calls.append(model.training is False and not torch.is_grad_enabled())
        snapshots[len(snapshots)] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"loss": next(scripted), "r2": 0.0}

    model = Regressor()
    trainer = make_trainer(model, quiet_config(max_steps=40, val_every=2, early_stopping_patience=2), val_fn=val_fn)
    history = trainer.fit()
    assert trainer.stopped_early and trainer.step == 8  # validations at 2, 4, 6, 8; best at 4
    assert all(calls) and model.training
    steps, values = history.values("val_loss")
    assert list(steps) == [2, 4, 6, 8] and list(values) == [1.0, 0.5, 0.7, 0.8]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[1][name])
    assert trainer.best_value == 0.5


class RegressorWithVocabulary(Regressor):
    """Carries plain-python extra state in its state_dict, as growing vocabularies do."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.unit_ids = ["s1/u0", "s1/u1"]

    def get_extra_state(self):
        return {"unit_ids": list(self.unit_ids)}

    def set_extra_state(self, state):
        self.unit_ids = list(state["unit_ids"])


def test_best_state_keeps_non_tensor_extra_state(tmp_path):
    model = RegressorWithVocabulary()
    scores = iter([0.9, 0.2, 0.5])

    def val_fn(model):
        model.unit_ids.append(f"s2/u{len(model.unit_ids)}")  # the vocabulary changes after each validation
        return {"val_loss": next(scores)}

    make_trainer(model, quiet_config(max_steps=6, val_every=2), tmp_path, val_fn=val_fn).fit()
    assert model.unit_ids == ["s1/u0", "s1/u1", "s2/u2", "s2/u3"]  # as at the best (2nd) validation
    assert load_checkpoint(tmp_path / "checkpoint.pt")["best_model"]["_extra_state"]["unit_ids"] == model.unit_ids


def test_unknown_monitor_is_a_clear_error():
    trainer = make_trainer(Regressor(), quiet_config(max_steps=2, monitor="val_bps"), val_fn=lambda m: {"loss": 1.0})
    with pytest.raises(RunError, match="monitor is 'val_bps' but val_fn returned \\['val_loss'\\]"):
        trainer.fit()


def test_history_round_trip_and_plot():
    history = History()
    history.log(10, {"loss": 1.0, "lr": 0.1})
    history.log(10, {"val_loss": 1.5})
    history.log(20, {"loss": 0.5, "lr": 0.05})
    restored = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert restored.records == [{"step": 10, "loss": 1.0, "lr": 0.1, "val_loss": 1.5},
                                {"step": 20, "loss": 0.5, "lr": 0.05}]
    ax = restored.plot(keys=("loss", "val_loss"))
    assert ax.get_xlabel() == "optimizer step" and "loss" in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["loss", "val_loss"]


# --------------------------------------------------------------------------- inputs

def test_bad_inputs_are_run_errors():
    with pytest.raises(RunError, match="no training_loss"):
        Trainer(nn.Linear(2, 2), regression_dataset(), collate, quiet_config(), progress=False)
    with pytest.raises(RunError, match="fewer than one batch"):
        Trainer(Regressor(), regression_dataset(8), collate, quiet_config(), progress=False)
    with pytest.raises(RunError, match="JSON"):
        make_trainer(Regressor(), quiet_config(), run_config={"array": np.zeros(2)})
    with pytest.raises(RunError, match="precision"):
        TrainConfig(precision="fp8")


# --------------------------------------------------------------------------- device, precision, profiles

def test_select_precision_by_device():
    assert select_precision("auto", "cpu") == "fp32"
    assert select_precision("auto", "mps") == "fp32"
    assert select_precision("auto", "cuda", bf16_supported=True) == "bf16"
    assert select_precision("auto", "cuda:1", bf16_supported=False) == "fp16"  # Colab's T4
    assert select_precision("fp32", "cuda", bf16_supported=True) == "fp32"
    assert select_precision("bf16", "cpu") == "bf16"
    with pytest.raises(RunError, match="fp16 needs a CUDA GPU"):
        select_precision("fp16", "cpu")
    with pytest.raises(RunError, match="bf16 is not supported"):
        select_precision("bf16", "cuda", bf16_supported=False)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(RunError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="CUDA is not available"):
            select_device("cuda:1")


def test_resolve_profile_precedence(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile() == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # a GPU makes the book faster, not bigger: `full` is only ever chosen by name
    assert resolve_profile() == "quick" and resolve_profile("auto") == "quick"
    assert resolve_profile("full") == "full"
    monkeypatch.setenv(PROFILE_ENV_VAR, "tiny")
    assert resolve_profile() == "tiny"
    assert resolve_profile("quick") == "quick"  # the explicit argument wins over the environment
    with pytest.raises(RunError, match=r"unknown profile 'huge' \(from the profile argument\).*tiny, quick, full"):
        resolve_profile("huge")
    monkeypatch.setenv(PROFILE_ENV_VAR, "medium")
    with pytest.raises(RunError, match="MINI_DECODERS_PROFILE"):
        resolve_profile()


def test_config_for_returns_a_copy(monkeypatch):
    monkeypatch.delenv(PROFILE_ENV_VAR, raising=False)
    configs = {"tiny": {"dims": [8]}, "quick": {"dims": [64]}, "full": {"dims": [512]}}
    picked = config_for(configs, "tiny")
    picked["dims"].append(9)
    assert configs["tiny"] == {"dims": [8]}
    with pytest.raises(RunError, match="no config for profile 'full'"):
        config_for({"tiny": {}}, "full")


def test_checkpoint_payload_and_finished_run(tmp_path, capsys):
    run_config = {"model": "regressor", "profile": "tiny", "dims": [8, 32]}
    make_trainer(Regressor(), quiet_config(max_steps=6), tmp_path, run_config=run_config).fit()
    payload = load_checkpoint(tmp_path / "checkpoint.pt")
    assert payload["run_config"] == run_config and payload["train_config"]["max_steps"] == 6
    assert payload["finished"] and payload["step"] == payload["scheduler_step"] == 6
    assert payload["samples_seen"] == 6 * 16 and set(payload["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert len(payload["optimizer"]["state"]) == 4  # AdamW moments of every parameter

    again = make_trainer(Regressor(seed=5), quiet_config(max_steps=6), tmp_path)
    again.fit(resume=True)  # already finished: loads and returns without training
    assert again.step == 6 and again.model.calls == 0
    with pytest.raises(RunError, match="batch_size=16, seed=3; resuming needs the same"):
        make_trainer(Regressor(), quiet_config(max_steps=9, seed=4), tmp_path).fit(resume=True)

    with pytest.raises(KeyboardInterrupt):
        make_trainer(InterruptedRegressor(interrupt_at=2), quiet_config()).fit()
    assert "interrupted at step 1; no out_dir" in capsys.readouterr().out


def test_bf16_autocast_on_cpu_trains():
    model = Regressor(dropout=0.0)
    trainer = make_trainer(model, quiet_config(max_steps=30, precision="bf16", log_every=10))
    history = trainer.fit()
    assert trainer.precision == "bf16"
    losses = history.values("loss")[1]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights


def test_train_config_from_model_config_takes_only_training_keys():
    from mini_decoders.training.trainer import TrainConfig

    config = TrainConfig.from_model_config({"dim": 64, "lr": 3e-3, "max_steps": 7, "batch_size": 64},
                                           batch_size=8, monitor="val_r2")
    assert (config.lr, config.max_steps, config.batch_size, config.monitor) == (3e-3, 7, 8, "val_r2")
    assert not hasattr(config, "dim")
