"""LAMB: Adam's step, rescaled per parameter tensor by a trust ratio (You et al., 2020).

POYO trains with LAMB. Adam gives every weight a step of about the same size, whatever the size
of the tensor it belongs to; with large batches and large learning rates that step can be huge
relative to a small tensor and tiny relative to a large one. LAMB computes the Adam update ``u``
(with decoupled weight decay added: ``u = m_hat / (sqrt(v_hat) + eps) + wd * w``) and scales it,
tensor by tensor, by the *trust ratio* ``||w|| / ||u||``:

    w <- w - lr * (||w|| / ||u||) * u

so each tensor moves by about ``lr`` times its own norm per step. A tensor whose norm is 0 (a bias
at initialisation) or whose update is 0 takes the plain Adam step (ratio 1).

The loop is over parameter *tensors* (a few dozen), never over their elements.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Lamb(torch.optim.Optimizer):
    """LAMB with decoupled weight decay; the same param-group keys as AdamW (``lr``, ``weight_decay``).

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: Adam's moment decays.
        eps: Adam's denominator term.
        weight_decay: decoupled decay, added to the update before the trust ratio.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad: Tensor = param.grad.float()
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = exp_avg / (1 - beta1 ** step)
                v_hat = exp_avg_sq / (1 - beta2 ** step)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                weights = param.float()
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * weights
                weight_norm, update_norm = weights.norm(), update.norm()
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                    torch.ones_like(weight_norm))
                param.add_((-group["lr"] * trust * update).to(param.dtype))
        return loss
