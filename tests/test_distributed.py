"""Data parallel: 2 CPU processes (gloo, launched by torchrun) == 1 process on the same global batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mini_decoders.training.checkpoint import load_checkpoint

# Written to tmp_path: torchrun runs it as a script, and the test imports it for the reference run.
PROBLEM_SOURCE = textwrap.dedent('''
    import sys

    import torch
    from torch import nn

    from mini_decoders.training.trainer import TrainConfig, Trainer


    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.hidden = nn.Linear(6, 16)
            self.norm = nn.LayerNorm(16)
            self.head = nn.Linear(16, 2)
            self.spare_head = nn.Linear(16, 2)  # unused in the loss, like a readout of an absent task

        def training_loss(self, batch):
            prediction = self.head(self.norm(torch.tanh(self.hidden(batch["x"]))))
            return ((prediction - batch["y"]) ** 2).mean()  # per-sample mean: what DDP equality needs


    def dataset():
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(40, 6, generator=generator)
        y = torch.sin(x[:, :2]) + 0.1 * torch.randn(40, 2, generator=generator)
        return [{"x": a, "y": b} for a, b in zip(x, y)]


    def train(out_dir):
        config = TrainConfig(max_steps=20, batch_size=8, lr=3e-2, warmup_steps=4, grad_clip=0.5, device="cpu",
                             log_every=5, seed=2)
        model = Regressor()
        trainer = Trainer(model, dataset(), torch.utils.data.default_collate, config, out_dir=out_dir,
                          progress=False)
        trainer.fit()
        return model, trainer


    if __name__ == "__main__":
        model, trainer = train(sys.argv[1])
        torch.save(model.state_dict(), f"{sys.argv[1]}/rank{trainer.world.rank}.pt")
        assert trainer.world.world_size == 2
''')


def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_problem.py"
    script.write_text(PROBLEM_SOURCE)
    out_dir = tmp_path / "ddp_run"
    out_dir.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=env.get("GLOO_SOCKET_IFNAME", "lo"))
    # --standalone picks a free port itself, so parallel test runs do not collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(out_dir)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    spec = importlib.util.spec_from_file_location("ddp_problem", script)
    problem = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(problem)
    single_model, single_trainer = problem.train(tmp_path / "single_run")

    rank0, rank1 = (torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    checkpoint = load_checkpoint(out_dir / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 20
    for name, single in single_model.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
        assert torch.allclose(checkpoint["model"][name], single, atol=1e-6), f"{name} differs from 1 process"
    assert not torch.allclose(single_model.state_dict()["head.weight"], problem.Regressor().state_dict()["head.weight"])
    # The logged loss is the mean over ranks, i.e. the loss of the whole global batch.
    ddp_losses = [record["loss"] for record in checkpoint["history"]["records"]]
    single_losses = [record["loss"] for record in single_trainer.history.records]
    assert ddp_losses == pytest.approx(single_losses, rel=1e-5)
    assert checkpoint["samples_seen"] == single_trainer.samples_seen == 20 * 8
