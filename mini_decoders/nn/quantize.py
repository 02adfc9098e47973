"""Vector quantisation: replace a vector by the nearest row of a learned codebook (VQ-VAE).

A codebook is ``K`` vectors ``e_1 .. e_K`` of size ``C``. Quantising ``z`` means

    k* = argmin_k ||z - e_k||²        z_q = e_{k*}

so a continuous encoder output becomes one integer ``k*`` (log2 K bits) and the vector it stands
for. Four tricks make this trainable (van den Oord et al. 2017, and what later work added):

- **Straight-through gradient.** ``argmin`` has no gradient. The forward pass uses ``z_q``, the
  backward pass pretends quantisation was the identity: ``z + (z_q - z).detach()``. Here it is
  written ``z_q.detach() + (z - z.detach())``, which has the same gradient and whose *value* is
  exactly the codebook row (no ``z + (e - z)`` rounding).
- **Commitment loss** ``beta * ||z - sg[z_q]||²`` keeps the encoder close to the code it chose,
  so its outputs do not drift away from the codebook.
- **EMA codebook.** Instead of a codebook loss, each code moves to an exponential moving average
  of the encoder outputs assigned to it (k-means run online, ``decay`` ≈ 0.99); with
  ``ema_decay=None`` the codebook is a parameter learned by ``||sg[z] - e||²`` instead.
- **k-means initialisation and dead-code restart.** Codes that start far from the data are never
  chosen and never move ("codebook collapse"). :meth:`VectorQuantizer.kmeans_init` places the
  codes on the data; :meth:`VectorQuantizer.restart_dead_codes` moves codes whose usage fell below
  a threshold onto randomly chosen encoder outputs.

Optional **cosine codes** (LaBraM's tokenizer): ``z`` and the codes are l2-normalised, so the
nearest code is the one with the largest cosine similarity.

Usage is tracked as an EMA of the share of vectors each code receives; its perplexity
``exp(entropy)`` is K for uniform use and 1 when everything maps to one code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the distribution ``counts / counts.sum()``: the effective number of codes used.

    Args:
        counts: (K,) non-negative assignment counts (or shares).
    Returns:
        scalar tensor in ``[1, K]``; K for uniform usage, 1 when one code takes everything.
    """
    p = counts.float() / counts.float().sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return torch.exp(entropy)


def kmeans(vectors: Tensor, k: int, iters: int = 10, generator: Optional[torch.Generator] = None,
           cosine: bool = False) -> tuple[Tensor, Tensor]:
    """k-means: k-means++ seeding, then Lloyd iterations; empty clusters are re-seeded on random points.

    Args:
        vectors: (N, C) points (N >= 1).
        k: number of clusters.
        iters: Lloyd iterations.
        cosine: spherical k-means (points and centres on the unit sphere).
    Returns:
        centres (k, C) and the cluster size of each (k,) after the last assignment.
    """
    vectors = vectors.detach().float()
    if cosine:
        vectors = F.normalize(vectors, dim=-1)
    n = len(vectors)
    device = vectors.device
    centres = kmeans_plus_plus(vectors, k, generator)  # (k, C)
    sizes = torch.zeros(k, device=device)
    for _ in range(max(1, iters)):
        assigned = squared_distances(vectors, centres).argmin(1)  # (N,)
        sizes = torch.bincount(assigned, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, assigned, vectors)
        empty = sizes == 0
        centres = torch.where(empty[:, None], centres, sums / sizes.clamp_min(1)[:, None])
        if empty.any():
            reseed = torch.randint(0, n, (int(empty.sum()),), generator=generator, device="cpu").to(device)
            centres[empty] = vectors[reseed]
        if cosine:
            centres = F.normalize(centres, dim=-1)
    return centres, sizes


def kmeans_plus_plus(vectors: Tensor, k: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """k-means++ seeding: each new centre is a point drawn with probability ∝ its squared distance
    to the nearest centre so far, so centres spread over the data (one loop step per centre).

    Returns:
        (k, C) centres; with fewer distinct points than ``k``, some centres repeat.
    """
    n = len(vectors)
    first = int(torch.randint(0, n, (1,), generator=generator))
    centres = [vectors[first]]
    nearest = ((vectors - vectors[first]) ** 2).sum(1)  # (N,) squared distance to the nearest centre
    for _ in range(k - 1):
        weights = nearest.cpu().double()
        pick = (int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0
                else int(torch.randint(0, n, (1,), generator=generator)))
        centres.append(vectors[pick])
        nearest = torch.minimum(nearest, ((vectors - vectors[pick]) ** 2).sum(1))
    return torch.stack(centres).clone()


def squared_distances(vectors: Tensor, codebook: Tensor) -> Tensor:
    """(N, C) and (K, C) -> (N, K) squared Euclidean distances, ``|z|² - 2 z·e + |e|²``."""
    return (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.t()
            + codebook.pow(2).sum(1)[None, :]).clamp_min(0)


@dataclass
class Quantized:
    """What :meth:`VectorQuantizer.forward` returns.

    Attributes:
        quantized: (..., C) the chosen codebook rows, with straight-through gradient to the input.
        codes: (...) int64 index of each row in the codebook.
        commitment_loss: scalar, ``beta * mean ||z - sg[z_q]||²``.
        codebook_loss: scalar, ``mean ||sg[z] - e||²`` (0 with EMA updates: the codebook is not learned by gradient).
        perplexity: scalar, perplexity of the code counts in this batch.
    """

    quantized: Tensor
    codes: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor
    perplexity: Tensor

    @property
    def loss(self) -> Tensor:
        return self.commitment_loss + self.codebook_loss


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` vectors of size ``code_dim``, nearest-neighbour lookup, EMA updates.

    Args:
        num_codes: K, the vocabulary size (log2 K bits per code).
        code_dim: C, the size of each code vector.
        beta: weight of the commitment loss (0.25 in VQ-VAE; LaBraM uses 1.0).
        ema_decay: codebook EMA decay (0.99 typical); None learns the codebook by gradient.
        cosine: l2-normalise inputs and codes (cosine-similarity lookup, as LaBraM).
        eps: EMA cluster size below which a code no longer moves (and no division by ~0 happens).
        restart_threshold: a code is *dead* when its EMA share of assignments is below
            ``restart_threshold / K`` (i.e. below that fraction of uniform usage).
        usage_decay: decay of the usage EMA behind dead-code detection and :meth:`usage_perplexity`
            (per batch: an unused code is declared dead after ``log(restart_threshold) / log(usage_decay)``
            batches, ~70 at the defaults).

    Buffers: ``codebook`` (K, C) (a parameter when ``ema_decay`` is None), ``initialized`` (0/1),
    and the statistics ``ema_count_stat`` (K,), ``ema_sum_stat`` (K, C), ``usage_stat`` (K,).
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, ema_decay: Optional[float] = 0.99,
                 cosine: bool = False, eps: float = 1e-5, restart_threshold: float = 0.03, usage_decay: float = 0.95):
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"`num_codes` must be >= 2 (one code carries no information), got {num_codes}")
        if code_dim < 1:
            raise ValueError(f"`code_dim` must be >= 1, got {code_dim}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in (0, 1) or None, got {ema_decay}")
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)
        self.beta, self.ema_decay, self.cosine, self.eps = float(beta), ema_decay, bool(cosine), float(eps)
        self.restart_threshold, self.usage_decay = float(restart_threshold), float(usage_decay)
        initial = torch.randn(num_codes, code_dim)
        if cosine:
            initial = F.normalize(initial, dim=-1)
        if ema_decay is None:
            self.codebook = nn.Parameter(initial)
        else:
            self.register_buffer("codebook", initial)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self.register_buffer("ema_count_stat", torch.ones(num_codes))
        self.register_buffer("ema_sum_stat", initial.clone())
        self.register_buffer("usage_stat", torch.full((num_codes,), 1.0 / num_codes))

    # ------------------------------------------------------------------ lookup
    def _prepare(self, z: Tensor) -> Tensor:
        z = z.float()  # distances and EMA sums in fp32, also under autocast
        return F.normalize(z, dim=-1) if self.cosine else z

    def assign(self, z: Tensor) -> Tensor:
        """(..., C) vectors -> (...) int64 index of the nearest code."""
        flat = self._prepare(z).reshape(-1, self.code_dim)
        return squared_distances(flat, self.codebook.detach().float()).argmin(1).reshape(z.shape[:-1])

    def lookup(self, codes: Tensor) -> Tensor:
        """(...) int64 codes -> (..., C) codebook rows."""
        return F.embedding(codes, self.codebook)

    def forward(self, z: Tensor, update: Optional[bool] = None, valid: Optional[Tensor] = None) -> Quantized:
        """Quantise ``z`` (..., C).

        Args:
            update: apply the EMA codebook update (and, on the first call, k-means initialisation
                on this batch if :meth:`kmeans_init` was never run); default ``self.training``.
            valid: (...) bool, which vectors are real (None = all), e.g. False for padded windows
                past a trial's end. Every vector gets its nearest code, but only real ones feed
                the k-means start, the EMA update, the usage statistics (dead codes), the losses
                and the perplexity: padding changes none of them.
        """
        update = self.training if update is None else update
        prepared = self._prepare(z)  # (..., C) float32
        flat = prepared.reshape(-1, self.code_dim)
        real = None
        if valid is not None:
            if tuple(valid.shape) != tuple(z.shape[:-1]):
                raise ValueError(f"`valid` must have the shape of z without its last axis {tuple(z.shape[:-1])}, "
                                 f"got {tuple(valid.shape)}")
            if not bool(valid.all()):
                real = valid.reshape(-1)  # (N,); None when all are real: the same path as without `valid`
        used = flat if real is None else flat[real]  # (N_real, C) the vectors that count
        if update and not bool(self.initialized) and len(used):
            self.kmeans_init(used)
        codes = squared_distances(flat, self.codebook.detach().float()).argmin(1)  # (N,)
        used_codes = codes if real is None else codes[real]
        counts = torch.bincount(used_codes, minlength=self.num_codes).float()
        # The rows as they were when chosen; the EMA step below moves the codebook for the next batch.
        chosen = self.lookup(codes).float().reshape(prepared.shape)  # (..., C)
        if update and self.ema_decay is not None:
            self._ema_update(used.detach(), used_codes, counts)
        if update:
            self._track_usage(counts)
        used_chosen = chosen if real is None else chosen.reshape(-1, self.code_dim)[real]
        used_prepared = prepared if real is None else used
        if used_prepared.numel():
            commitment = self.beta * F.mse_loss(used_prepared, used_chosen.detach())
            codebook_loss = (F.mse_loss(used_chosen, used_prepared.detach()) if self.ema_decay is None
                             else torch.zeros((), device=z.device))
        else:  # nothing real: no loss, but keep the graph connected
            commitment = codebook_loss = prepared.sum() * 0.0
        # Straight-through: the value is exactly the codebook row, the gradient flows to z.
        quantized = chosen.detach() + (prepared - prepared.detach())
        return Quantized(quantized.to(z.dtype), codes.reshape(z.shape[:-1]), commitment, codebook_loss,
                         perplexity(counts))

    # ------------------------------------------------------------------ codebook maintenance
    @torch.no_grad()
    def kmeans_init(self, vectors: Tensor, iters: int = 10, generator: Optional[torch.Generator] = None) -> None:
        """Place the codes on the data: k-means of ``vectors`` (N, C) (e.g. encoder outputs of the training set)."""
        flat = self._prepare(vectors.detach()).reshape(-1, self.code_dim)
        centres, sizes = kmeans(flat, self.num_codes, iters, generator, self.cosine)
        centres, sizes = _broadcast(centres), _broadcast(sizes)  # every rank starts from rank 0's codebook
        self.codebook.data.copy_(centres)
        # EMA state as if each code had been fed its k-means cluster (an empty one counts as 1).
        counts = sizes.clamp_min(1.0)
        self.ema_count_stat.copy_(counts)
        self.ema_sum_stat.copy_(centres * counts[:, None])
        self.usage_stat.copy_(sizes / sizes.sum().clamp_min(1.0))
        self.initialized.fill_(1)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, codes: Tensor, counts: Tensor) -> None:
        """Move each code to the EMA of the vectors assigned to it: ``e_k = EMA(sum_k) / EMA(count_k)``."""
        sums = torch.zeros_like(self.ema_sum_stat).index_add_(0, codes, flat)  # (K, C)
        counts, sums = _all_reduce_sum(counts.clone()), _all_reduce_sum(sums)
        if not bool(counts.sum() > 0):
            return  # no real vector on any rank: nothing to average
        decay = float(self.ema_decay)
        self.ema_count_stat.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum_stat.mul_(decay).add_(sums, alpha=1 - decay)
        # A code with (almost) no mass keeps its place. The usual Laplace smoothing of the counts
        # would instead drag an unused code towards the origin, where it may capture inputs by accident.
        has_mass = self.ema_count_stat > self.eps
        codebook = self.ema_sum_stat / self.ema_count_stat.clamp_min(self.eps)[:, None]
        if self.cosine:
            codebook = F.normalize(codebook, dim=-1)
        self.codebook.data.copy_(torch.where(has_mass[:, None], codebook, self.codebook.data))

    @torch.no_grad()
    def _track_usage(self, counts: Tensor) -> None:
        counts = _all_reduce_sum(counts.clone())
        if not bool(counts.sum() > 0):
            return  # no real vector on any rank: usage is unknown, not zero
        share = counts / counts.sum().clamp_min(1.0)
        self.usage_stat.mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)

    def dead_codes(self) -> Tensor:
        """(K,) bool: codes whose EMA usage share is below ``restart_threshold / K``."""
        return self.usage_stat < self.restart_threshold / self.num_codes

    @torch.no_grad()
    def restart_dead_codes(self, vectors: Tensor, generator: Optional[torch.Generator] = None) -> int:
        """Move every dead code onto a randomly chosen input vector (e.g. this batch's encoder outputs).

        A restarted code gets the mean EMA count of the live codes and a usage share of ``1/K``,
        so it is not declared dead again before it had a chance to be chosen.

        Returns:
            the number of codes restarted.
        """
        dead = self.dead_codes()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        flat = self._prepare(vectors.detach()).reshape(-1, self.code_dim)
        pick = (torch.randperm(len(flat), generator=generator, device="cpu")[:n_dead] if len(flat) >= n_dead
                else torch.randint(0, len(flat), (n_dead,), generator=generator, device="cpu")).to(flat.device)
        # A tiny jitter, so that two codes restarted on near-identical points can still separate.
        noise = torch.randn(n_dead, self.code_dim, generator=generator, device="cpu").to(flat.device)
        chosen = flat[pick] + 1e-3 * flat.std().clamp_min(1e-6) * noise
        if self.cosine:
            chosen = F.normalize(chosen, dim=-1)
        chosen = _broadcast(chosen)
        live_count = self.ema_count_stat[~dead].mean() if bool((~dead).any()) else torch.ones((), device=flat.device)
        self.codebook.data[dead] = chosen.to(self.codebook.dtype)
        self.ema_count_stat[dead] = live_count
        self.ema_sum_stat[dead] = chosen * live_count
        self.usage_stat[dead] = 1.0 / self.num_codes
        return n_dead

    def usage_perplexity(self) -> float:
        """Perplexity of the EMA usage: how many codes are effectively in use lately."""
        return float(perplexity(self.usage_stat))

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, "
                f"ema_decay={self.ema_decay}, cosine={self.cosine}")


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over data-parallel ranks (no-op in one process), so every rank keeps the same codebook."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def _broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's values on every rank (no-op in one process): random restarts must agree."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = tensor.contiguous()
        dist.broadcast(tensor, 0)
    return tensor
