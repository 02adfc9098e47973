"""Rotary embedding of continuous time (POYO).

Transformers over bins know a token's place by its index. A spike token has no index, only a time
in seconds, so POYO rotates queries and keys by angles proportional to their times: the score
``q(t_q) . k(t_k)`` then depends on the time *difference* ``t_k - t_q`` only, whatever the window's
origin. Each pair of dimensions turns at its own angular speed ``omega = 2 pi / period``, with
periods log-spaced between ``t_min`` and ``t_max`` so that both sub-millisecond spike timing and
second-long dynamics have a pair that resolves them.

Convention: dimensions are rotated in adjacent pairs ``(x[2i], x[2i+1])`` (angles are
repeat-interleaved), and ``rotate_half`` maps each pair ``(a, b) -> (-b, a)``.

Precision: angles are ``time * omega`` with ``omega`` up to ``2 pi / 1e-4 s ~ 6e4`` rad/s. In
float32 the angle error is about ``|t| * omega * 6e-8`` (1e-3 rad at t = 0.25 s), so feed
window-relative times (a few seconds at most), never times since the start of a session.
"""

import math
from typing import Callable, Union

import torch
from torch import Tensor, nn

RotaryCosSin = tuple[Tensor, Tensor]
"""``(cos, sin)`` broadcastable to ``(B, H, N, dim_head)``, from ``RotaryTimeEmbedding.cos_sin``."""

Rotary = Union[RotaryCosSin, Callable[..., Tensor]]
"""What attention blocks accept: ``(cos, sin)`` or a callable ``rotary(x, invert=False) -> x``."""


def rotate_half(x: Tensor) -> Tensor:
    """Turn every adjacent pair of the last dimension by 90 degrees: ``(a, b) -> (-b, a)``.

    Args:
        x: ``(..., D)`` with ``D`` even.
    Returns:
        ``(..., D)``.
    """
    pairs = x.unflatten(-1, (-1, 2))  # (..., D/2, 2)
    first, second = pairs.unbind(-1)
    return torch.stack((-second, first), dim=-1).flatten(-2)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, invert: bool = False) -> Tensor:
    """Rotate ``x`` by the angles whose cosine and sine are given (``invert`` turns the other way).

    The maths runs in at least float32 and the result is cast back to ``x.dtype``: a bfloat16
    ``x`` keeps its dtype, but its rotation is not rounded twice.

    Args:
        x: ``(B, H, N, D)`` (any shape that ``cos``/``sin`` broadcast to).
        cos, sin: broadcastable to ``x``, e.g. ``(B, 1, N, R)`` with ``R <= D`` even: only the
            first ``R`` dimensions of ``x`` are rotated, the others pass through unchanged
            (POYO rotates half of each head; skipping the rest saves a third of the work).
        invert: rotate by the negated angles (undoes a rotation).
    """
    rotate_dim = cos.shape[-1]
    if rotate_dim < x.shape[-1]:
        rotated = apply_rotary(x[..., :rotate_dim], cos, sin, invert)
        return torch.cat((rotated, x[..., rotate_dim:]), dim=-1)
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x_compute = x.to(compute_dtype)
        sin = -sin if invert else sin
        rotated = x_compute * cos.to(compute_dtype) + rotate_half(x_compute) * sin.to(compute_dtype)
    return rotated.to(x.dtype)


class RotaryTimeEmbedding(nn.Module):
    """Angles for rotating attention heads by continuous time (seconds).

    The module has no parameters and saves nothing in ``state_dict``: everything follows from
    its arguments.

    Args:
        dim_head: size of one attention head; must be even (dimensions turn in pairs).
        t_min: shortest period in seconds. Set it to the finest timescale you care about
            (default 1e-4 s: spike timing).
        t_max: longest period in seconds. Set it to about the window length; longer differences
            wrap around (default 2.0627 s, POYO's value for 1 s windows).
        rotate_fraction: fraction of each head that is rotated; the rest (angular speed 0) sees
            no time at all, so content can be matched regardless of time. ``dim_head *
            rotate_fraction`` must be an even integer.
    """

    def __init__(self, dim_head: int, t_min: float = 1e-4, t_max: float = 2.0627,
                 rotate_fraction: float = 0.5):
        super().__init__()
        if dim_head <= 0 or dim_head % 2 != 0:
            raise ValueError(f"`dim_head` must be a positive even number, got {dim_head}")
        if not 0.0 < t_min < t_max:
            raise ValueError(f"need 0 < `t_min` < `t_max`, got t_min={t_min}, t_max={t_max}")
        if not 0.0 <= rotate_fraction <= 1.0:
            raise ValueError(f"`rotate_fraction` must be in [0, 1], got {rotate_fraction}")
        rotate_dim = dim_head * rotate_fraction
        if rotate_dim != int(rotate_dim) or int(rotate_dim) % 2 != 0:
            raise ValueError(f"`dim_head * rotate_fraction` must be an even integer, got "
                             f"{dim_head} * {rotate_fraction} = {rotate_dim}")
        self.dim_head = dim_head
        self.rotate_dim = int(rotate_dim)
        self.t_min, self.t_max = t_min, t_max
        # Kept in float64 outside the module's buffers on purpose: `model.half()` or `.to(bf16)`
        # would otherwise round omega itself, and no dtype conversion may touch it.
        num_frequencies = self.rotate_dim // 2
        periods = torch.exp(torch.linspace(math.log(t_min), math.log(t_max), num_frequencies,
                                           dtype=torch.float64))
        omega = torch.zeros(dim_head // 2, dtype=torch.float64)
        omega[:num_frequencies] = 2 * math.pi / periods
        self._omega = omega  # (dim_head/2,) rad/s; zeros for the unrotated dimensions
        self._omega_cache: dict[tuple, Tensor] = {}

    def omega(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Angular speeds ``(dim_head/2,)`` in rad/s on ``device``, cached per (device, dtype)."""
        key = (device, dtype)
        if key not in self._omega_cache:
            self._omega_cache[key] = self._omega.to(device=device, dtype=dtype)
        return self._omega_cache[key]

    def angles(self, times: Tensor) -> Tensor:
        """Rotation angles in radians.

        Args:
            times: ``(..., N)`` seconds.
        Returns:
            ``(..., N, dim_head)`` in at least float32; each angle appears twice in a row (one
            per dimension of its pair); the last ``dim_head - rotate_dim`` are zero.
        """
        compute_dtype = torch.promote_types(times.dtype, torch.float32)
        # Autocast off: angles reach ~1e4 rad, where bfloat16 (8 bits of mantissa) would be off
        # by tens of radians, i.e. every time would be noise.
        with torch.autocast(device_type=times.device.type, enabled=False):
            omega = self.omega(times.device, compute_dtype)
            angles = times.to(compute_dtype).unsqueeze(-1) * omega  # (..., N, dim_head/2)
            return angles.repeat_interleave(2, dim=-1)  # (..., N, dim_head)

    def cos_sin(self, times: Tensor) -> RotaryCosSin:
        """``(cos, sin)`` of the angles of the rotated dimensions, shaped ``(B, 1, N, rotate_dim)``
        to broadcast over heads (the other ``dim_head - rotate_dim`` dimensions are not rotated).

        Compute them once per forward pass and hand them to every attention layer.

        Args:
            times: ``(B, N)`` seconds.
        """
        angles = self.angles(times)[..., : self.rotate_dim].unsqueeze(1)  # (B, 1, N, rotate_dim)
        return angles.cos(), angles.sin()

    def rotate(self, x: Tensor, times: Tensor, invert: bool = False) -> Tensor:
        """Rotate heads by their tokens' times.

        Args:
            x: ``(B, H, N, dim_head)``.
            times: ``(B, N)`` seconds.
            invert: rotate by ``-times`` (undoes ``rotate`` with the same times).
        Returns:
            ``(B, H, N, dim_head)``, same dtype as ``x``.
        """
        if x.shape[-1] != self.dim_head:
            raise ValueError(f"expected heads of size dim_head={self.dim_head}, got x of shape "
                             f"{tuple(x.shape)}")
        cos, sin = self.cos_sin(times)
        return apply_rotary(x, cos, sin, invert=invert)

    def extra_repr(self) -> str:
        return (f"dim_head={self.dim_head}, rotate_dim={self.rotate_dim}, t_min={self.t_min}, "
                f"t_max={self.t_max}")
