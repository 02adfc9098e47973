"""A learned temporal kernel: each channel of a (B, T, D) sequence convolved over time with its own filter.

The filters start as one Gaussian, so at initialisation the layer *is* Gaussian smoothing over
time, the classic way to turn spike counts into rates (chapter 2). Models that put it after
their read-in start from the smoothing baseline and learn from there (see ``tokenizers/bins.py``
and the held-out head of ``models/ndt2.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class TemporalKernel(nn.Module):
    """Depthwise convolution over time, initialised as Gaussian smoothing.

    Args:
        dim: channels D (one filter each).
        width: filter length in bins (odd, centred on the bin).
        sd_bins: standard deviation of the starting Gaussian (bins).
    """

    def __init__(self, dim: int, width: int, sd_bins: float = 2.0):
        super().__init__()
        if width < 1 or width % 2 == 0:
            raise ValueError(f"temporal kernel width must be odd and >= 1 (centred on the bin), got {width}")
        offsets = torch.arange(width, dtype=torch.float32) - width // 2
        gaussian = torch.exp(-0.5 * (offsets / float(sd_bins)) ** 2)
        self.weight = nn.Parameter((gaussian / gaussian.sum()).repeat(dim, 1, 1))  # (D, 1, K)

    def forward(self, x: Tensor, valid: Tensor | None = None, causal: bool = False, normalise: bool = False) -> Tensor:
        """Smooth ``x`` over time.

        Args:
            x: (B, T, D).
            valid: (B, T) bool, False on padded bins: those are zeroed first so nothing leaks in
                from past a trial's end. None = all real.
            causal: use only the past half of each filter (and the bin itself): output ``t``
                depends on bins ``<= t`` only.
            normalise: divide by the share of each filter's (absolute) mass that fell on valid
                bins, so a bin whose neighbours are half invalid (masked, or past the trial's
                edge) is an average of the valid half, on the same scale as a fully valid one.

        Returns:
            (B, T, D).
        """
        if valid is not None:
            x = x * valid[:, :, None].to(x.dtype)
        width = self.weight.shape[-1]
        kernel = self.weight.to(x.dtype)
        if causal:  # tap k reads bin t + k - width // 2: drop the taps after the bin itself
            kernel = kernel * (torch.arange(width, device=kernel.device) <= width // 2).to(kernel.dtype)
        smoothed = F.conv1d(x.transpose(1, 2), kernel, padding=width // 2, groups=x.shape[-1])  # (B, D, T)
        if normalise and valid is not None:
            mass = kernel.detach().abs()
            mass = mass / mass.sum(-1, keepdim=True).clamp_min(1e-6)
            shown = valid[:, None, :].to(x.dtype).expand(-1, x.shape[-1], -1)  # (B, D, T)
            covered = F.conv1d(shown, mass, padding=width // 2, groups=x.shape[-1])
            smoothed = smoothed / covered.clamp_min(0.05)
        return smoothed.transpose(1, 2)
