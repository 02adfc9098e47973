"""Losses shared by the models.

:func:`poisson_nll_terms` is the likelihood every rate model is trained with (NDT1, MtM, NDT2's
MAE, the VQ tokenizer's reconstruction): spike counts are Poisson given the predicted rate, and
the network outputs the *log*-rate, so the rate is positive without a clamp and the loss is
smooth in what the network computes.
"""

from __future__ import annotations

import torch
from torch import Tensor


def poisson_nll_terms(log_rates: Tensor, counts: Tensor) -> Tensor:
    """Per-entry Poisson negative log-likelihood, without the ``log(counts!)`` constant.

    ``exp(log_rate) - count * log_rate``, elementwise: the caller masks padding and held-back
    entries and averages. The dropped ``log(count!)`` does not depend on the model, so gradients
    and comparisons between models are unchanged (the NLB metric keeps it: see
    :func:`mini_decoders.metrics.poisson_nll`).
    """
    return torch.exp(log_rates) - counts * log_rates
