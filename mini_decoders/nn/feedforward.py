"""The position-wise feed-forward network of a transformer block.

Two flavours are in use: the plain two-layer MLP of NDT1/NDT2/MtM (ReLU or GELU) and POYO's gated
GEGLU, where half of the first projection decides, through a GELU, how much of the other half
passes.
"""

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("gelu", "relu", "geglu")


class FeedForward(nn.Module):
    """``Linear -> activation -> Dropout -> Linear``, applied to every token on its own.

    Args:
        dim: token size ``D`` (input and output).
        mult: hidden width as a multiple of ``dim`` (4 in POYO and most transformers, 1 in NDT2).
        dropout: dropout on the hidden activations.
        activation: ``"gelu"`` or ``"relu"`` for the plain MLP; ``"geglu"`` for POYO's gated
            unit: ``Linear(D, 2 * hidden)`` split into ``(value, gate)``, ``value * GELU(gate)``.
        hidden_dim: the hidden width directly, overriding ``mult``; NDT1 fixes it (128)
            independently of ``D`` (the number of neurons).
    """

    def __init__(self, dim: int, mult: float = 4, dropout: float = 0.0, activation: str = "gelu",
                 hidden_dim: Optional[int] = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}, got {activation!r}")
        hidden_dim = int(round(mult * dim)) if hidden_dim is None else hidden_dim
        if hidden_dim <= 0:
            raise ValueError(f"the hidden width must be positive, got {hidden_dim} "
                             f"(dim={dim}, mult={mult})")
        self.activation = activation
        # GEGLU needs a value and a gate per hidden unit, hence twice the width in.
        self.proj_in = nn.Linear(dim, 2 * hidden_dim if activation == "geglu" else hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D) -> (..., D)``."""
        hidden = self.proj_in(x)  # (..., hidden) or (..., 2 * hidden)
        if self.activation == "geglu":
            value, gate = hidden.chunk(2, dim=-1)
            hidden = value * F.gelu(gate)
        elif self.activation == "gelu":
            hidden = F.gelu(hidden)
        else:
            hidden = F.relu(hidden)
        return self.proj_out(self.dropout(hidden))  # (..., D)
