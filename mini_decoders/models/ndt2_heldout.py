"""NDT2's read-out of held-out neurons for small data: pooled decoder tokens, a GLM skip, unit offsets.

NDT2 has no held-out neurons: its paper infills hidden patches with the MAE decoder. On a few
hundred trials, infilling neurons the model never sees does not get off the ground (co-bps ~0.0
against smoothing's 0.29), so this book's default recipe adds three paths, each a named departure
of :class:`~mini_decoders.models.ndt2.NDT2` and each starting where chapter 2's baseline ends:

- ``heldout_readout="pooled"``: held-out rates read from the mean decoded held-in token of each
  bin, smoothed over time, through a per-session linear read-out;
- ``heldout_skip``: a linear skip from the visible held-in counts, smoothed over time, to the
  held-out log-rates: chapter 2's smoothing + GLM as a path inside the model; with
  ``skip_init="glm"`` its weights are that GLM, fitted per session (and, for a new session of a known
  subject's array, possibly shrunk towards that session's weights: ``finetune_glm_prior``);
- ``unit_bias``: a log-rate offset per neuron, started at its mean count.

:class:`HeldoutReadout` is part of NDT2 (its parameters are NDT2's, by the same names).
"""

from __future__ import annotations

import numpy as np
import torch

from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import RunError
from mini_decoders.models.base import SessionSpec
from mini_decoders.models.baselines import best_on_path, poisson_glm_path
from mini_decoders.nn.temporal_kernel import TemporalKernel
from mini_decoders.nn.vocab import GrowingVocabEmbedding
from mini_decoders.tokenizers.patches import PatchTokens

FINETUNE_GLM_PRIOR = "subject"  # the default of config finetune_glm_prior (runs saved before it lack it)


class HeldoutReadout:
    """NDT2's held-out read-out: pooled tokens, GLM skip and unit offsets (a part of ``NDT2``)."""

    def _build_heldout_readout(self, dim: int) -> None:
        """Create the read-out's parameters (called by ``NDT2.__init__`` in its place, so the
        parameters are created, and randomly started, in the same order as ever)."""
        c = self.config
        # Our addition (``unit_bias``): each session's neurons get their own log-rate offset, started at
        # the neuron's mean training count. The shared read-out then only has to express how a neuron
        # deviates from its mean, not *which* neuron sits at a patch slot and how often it fires: on
        # a few hundred trials, learning that through the space and context embeddings costs most of
        # the budget. One row per session, keyed by session id like the context tokens.
        self.n_space = int(c["max_heldin_patches"]) + int(c["max_heldout_patches"])
        self.unit_bias_vocab = GrowingVocabEmbedding(self.n_space * self.neurons_per_token, init_scale=0.0) \
            if c.get("unit_bias", False) else None
        if self.unit_bias_vocab is not None:
            self.unit_bias_vocab.extend([spec.id for spec in self.specs])  # zeros until fit sees the data
        # Our addition (``heldout_readout="pooled"``): held-out neurons are read from the decoder's
        # held-in tokens of each bin (their mean, smoothed over time by a learned kernel that starts
        # as a Gaussian), through a per-session linear read-out, instead of being infilled from a
        # mask token. Infilling a patch of neurons the model has never seen, from attention alone,
        # does not get off the ground in a few hundred steps (measured: co-bps ~0.0 vs smoothing's
        # 0.29); the pooled read-out starts where chapter 2's smoothing + GLM starts.
        self.heldout_slots = int(c["max_heldout_patches"]) * self.neurons_per_token
        self.pooled_heldout = c.get("heldout_readout", "infill") == "pooled"
        if c.get("heldout_readout", "infill") not in ("infill", "pooled"):
            raise RunError(f"ndt2: heldout_readout must be 'infill' or 'pooled', got {c.get('heldout_readout')!r}")
        if self.pooled_heldout:
            self.heldout_kernel = TemporalKernel(dim, int(c.get("heldout_kernel_bins", 9)))
            # With the skip started at the GLM (``skip_init="glm"``) this path starts at zero, so a
            # session's first held-out rates are exactly the GLM's (random rows would add noise that
            # a new session's few trials must first learn away).
            start_at_zero = bool(c.get("heldout_skip", False)) and c.get("skip_init", "zero") == "glm"
            self.heldout_weight_vocab = GrowingVocabEmbedding(dim * self.heldout_slots,
                                                              init_scale=0.0 if start_at_zero else 0.01)
            self.heldout_weight_vocab.extend([spec.id for spec in self.specs])
        # Our addition (``heldout_skip``, with the pooled read-out): a linear skip from the visible
        # held-in counts, smoothed over time, to the held-out log-rates, one weight matrix per
        # session, starting at zero. It is chapter 2's smoothing + GLM baseline as a path inside
        # the model, so the transformer only has to add what smoothing misses (as NDT1's kernel).
        self.heldin_slots = int(c["max_heldin_patches"]) * self.neurons_per_token
        self.heldout_skip = bool(c.get("heldout_skip", False))
        if self.heldout_skip and not self.pooled_heldout:
            raise RunError("ndt2: heldout_skip needs heldout_readout='pooled'")
        # ``skip_init="glm"``: a new session's skip weights (and its held-out neurons' offsets) start
        # at the Poisson GLM fitted to its train trials, with the penalty from ``skip_glm_alphas``
        # that scores best on its val trials: the model starts where chapter 2's baseline ends,
        # instead of learning that GLM by gradient steps from a few dozen trials.
        # ``skip_learned=False`` keeps those GLM weights fixed: the skip is then exactly a smoothing +
        # GLM baseline, and every gradient step goes to what the transformer adds to it.
        if c.get("skip_init", "zero") not in ("zero", "glm"):
            raise RunError(f"ndt2: skip_init must be 'zero' or 'glm', got {c.get('skip_init')!r}")
        if self.finetune_glm_prior not in ("subject", "none"):
            raise RunError(f"ndt2: finetune_glm_prior must be 'subject' or 'none', got {self.finetune_glm_prior!r}")
        self.skip_learned = bool(c.get("skip_learned", True))
        if not self.skip_learned and c.get("skip_init", "zero") != "glm":
            raise RunError("ndt2: skip_learned=False needs skip_init='glm' (a fixed skip of zeros does nothing)")
        if self.heldout_skip:
            self.skip_kernel = TemporalKernel(1, int(c.get("heldout_kernel_bins", 9)))
            self.skip_weight_vocab = GrowingVocabEmbedding(self.heldin_slots * self.heldout_slots, init_scale=0.0)
            self.skip_weight_vocab.extend([spec.id for spec in self.specs])

    def pooled_heldout_log_rates(self, decoded: torch.Tensor, tokens: PatchTokens, is_heldout: torch.Tensor,
                                 visible: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Held-out log-rates from the mean decoded held-in token of each bin (``heldout_readout="pooled"``).

        Args:
            decoded: (B, L, D) decoder outputs in grid order.
            tokens: the batch's :class:`PatchTokens`; is_heldout, visible: (B, L) bool.
        Returns:
            (B, L, n): for each held-out token, its neurons' log-rates (other rows are meaningless).
        """
        batch_size, _, dim = decoded.shape
        n_bins, n = batch["time_mask"].shape[1], self.neurons_per_token
        time = tokens.time.clamp(0, n_bins - 1)  # (B, L)
        weights = (tokens.real & ~is_heldout).to(decoded.dtype)[..., None]  # (B, L, 1): held-in tokens only
        sums = decoded.new_zeros(batch_size, n_bins, dim).scatter_add_(1, time[..., None].expand(-1, -1, dim),
                                                                      decoded * weights)
        counts = decoded.new_zeros(batch_size, n_bins, 1).scatter_add_(1, time[..., None], weights)
        per_bin = self.heldout_kernel(sums / counts.clamp_min(1.0), batch["time_mask"],
                                      bool(self.config["causal"]))  # (B, T, D)
        weight = self.heldout_weight_vocab(batch["context"][:, 0]).view(batch_size, dim, self.heldout_slots)
        per_slot = torch.einsum("btd,bds->bts", per_bin, weight.to(per_bin.dtype))  # (B, T, slots)
        if self.heldout_skip:
            per_slot = per_slot + self.skip_log_rates(tokens, is_heldout, visible, batch)
        # held-out token (t, p), channel j is held-out unit slot (p - first held-out patch) * n + j
        slot = (tokens.space - int(self.config["max_heldin_patches"])).clamp(min=0)[..., None] * n \
            + torch.arange(n, device=decoded.device)  # (B, L, n)
        rows = torch.arange(batch_size, device=decoded.device)[:, None, None]
        return per_slot[rows, time[..., None], slot.clamp(max=self.heldout_slots - 1)]

    def smooth_counts(self, counts: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """(B, T, U) counts, (B, T, U) bool shown -> (B, T, U): each neuron's shown counts smoothed
        over time by the skip's kernel, normalised over the shown bins."""
        batch_size, n_bins, n_units = counts.shape
        series = counts.transpose(1, 2).reshape(-1, n_bins, 1)  # (B*U, T, 1): one series per neuron
        smoothed = self.skip_kernel(series, shown.transpose(1, 2).reshape(-1, n_bins), bool(self.config["causal"]),
                                    normalise=True)
        return smoothed.view(batch_size, n_units, n_bins).transpose(1, 2)

    def skip_log_rates(self, tokens: PatchTokens, is_heldout: torch.Tensor, visible: torch.Tensor,
                       batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ``heldout_skip`` path: visible held-in counts, smoothed over time -> (B, T, held-out slots).

        Hidden tokens' counts never enter: the smoothing is normalised over the visible bins of each
        neuron (:class:`TemporalKernel` with ``normalise``), so at prediction, with every token
        visible, it is plain Gaussian-like smoothing of the held-in spikes.
        """
        batch_size, n_bins = batch["time_mask"].shape
        n_heldin = int((~is_heldout[0]).sum())
        n_patches, n = n_heldin // n_bins, self.neurons_per_token
        counts = tokens.counts[:, :n_heldin].to(torch.float32).view(batch_size, n_bins, n_patches * n)  # (B, T, U)
        shown = (visible[:, :n_heldin, None] & tokens.channel_mask[:, :n_heldin]).view(batch_size, n_bins, -1)
        smoothed = self.smooth_counts(counts, shown)  # (B, T, U)
        weight = self.skip_weight_vocab(batch["context"][:, 0]).view(batch_size, self.heldin_slots, self.heldout_slots)
        if not self.skip_learned:
            weight = weight.detach()
        return torch.einsum("btu,bus->bts", smoothed, weight[:, :n_patches * n].to(smoothed.dtype))

    @torch.no_grad()
    def _init_unit_bias(self, sessions: list[Session]) -> None:
        """Start the ``unit_bias_vocab`` rows of ``sessions``: log mean train count per bin of each neuron."""
        n = self.neurons_per_token
        for session in sessions:
            spec = self.specs[self.session_index[session.id]]
            binned = bin_trials(session, self.bin_size, split="train", behavior=())
            if not binned.mask.any():
                continue  # no train trials: the row stays 0 and is learned
            mean = binned.counts[binned.mask].mean(0)  # (U,)
            row = np.zeros(self.n_space * n, dtype=np.float32)
            offset = int(self.config["max_heldin_patches"]) * n
            row[:spec.n_heldin] = np.log(np.clip(mean[spec.heldin_index], 1e-3, None))
            row[offset:offset + spec.n_heldout] = np.log(np.clip(mean[spec.heldout_index], 1e-3, None))
            index = int(self.unit_bias_vocab.index([session.id])[0])
            self.unit_bias_vocab.weight[index] = torch.from_numpy(row).to(self.unit_bias_vocab.weight.device)

    @torch.no_grad()
    def skip_features(self, binned: BinnedTrials, spec: SessionSpec) -> np.ndarray:
        """(N, T, U_in) held-in counts smoothed by the skip's kernel, every bin visible (as at prediction)."""
        device = self.skip_kernel.weight.device
        counts = torch.from_numpy(binned.counts[..., spec.heldin_index].astype(np.float32)).to(device)  # (N, T, U_in)
        valid = torch.from_numpy(np.ascontiguousarray(binned.mask)).to(device)  # (N, T)
        return self.smooth_counts(counts, valid[..., None].expand_as(counts)).float().cpu().numpy()

    @torch.no_grad()
    def _init_skip_from_glm(self, sessions: list[Session], known: list[str] = ()) -> None:
        """Start the skip rows of ``sessions`` at a Poisson GLM fitted on their train trials (see ``skip_init``).

        ``known``: sessions the model was trained on before. With ``finetune_glm_prior="subject"``, a
        known session of the same subject with as many held-in and held-out units (the same array,
        recorded another day) offers its skip weights as the centre of the GLM's penalty instead of
        zero; the val trials choose between every such centre and zero, with the penalty.
        """
        offset = int(self.config["max_heldin_patches"]) * self.neurons_per_token
        for session in sessions:
            spec = self.specs[self.session_index[session.id]]
            fit = bin_trials(session, self.bin_size, split="train", behavior=())
            if spec.n_heldout == 0 or not fit.mask.any():
                continue  # nothing to predict, or no trials to fit: the row stays 0 and is learned
            fit_x, fit_y = self.skip_features(fit, spec)[fit.mask], fit.counts[..., spec.heldout_index][fit.mask]
            tune = bin_trials(session, self.bin_size, split="val", behavior=()) if "val" in session.trials.split else None
            tune_x = tune_y = None
            if tune is not None and tune.mask.any():
                tune_x, tune_y = self.skip_features(tune, spec)[tune.mask], tune.counts[..., spec.heldout_index][tune.mask]
            alphas = self.config["skip_glm_alphas"]
            path = poisson_glm_path(fit_x, fit_y, tune_x, tune_y, alphas)
            if tune_x is not None:  # the same array's weights from another day, as centres to shrink towards
                for prior in self._same_array_priors(session, spec, known):
                    path += poisson_glm_path(fit_x, fit_y, tune_x, tune_y, alphas, prior=prior)
            # the best (centre and) penalty on the val trials, zero first among ties; without val trials, the weakest
            _, _, weights, intercept = path[-1] if tune_x is None else best_on_path(path)
            row = torch.zeros(self.heldin_slots, self.heldout_slots)
            row[:spec.n_heldin, :spec.n_heldout] = torch.from_numpy(weights).float()
            index = int(self.skip_weight_vocab.index([session.id])[0])
            self.skip_weight_vocab.weight[index] = row.flatten().to(self.skip_weight_vocab.weight.device)
            if self.unit_bias_vocab is not None:  # the GLM's intercepts are the held-out neurons' offsets
                bias_index = int(self.unit_bias_vocab.index([session.id])[0])
                self.unit_bias_vocab.weight[bias_index, offset:offset + spec.n_heldout] = \
                    torch.from_numpy(intercept).float().to(self.unit_bias_vocab.weight.device)

    @property
    def finetune_glm_prior(self) -> str:
        """``"subject"`` or ``"none"``: where a new session's GLM is centred (see :meth:`_same_array_priors`)."""
        return self.config.get("finetune_glm_prior", FINETUNE_GLM_PRIOR)

    def _same_array_priors(self, session: Session, spec: SessionSpec, known: list[str]) -> list[np.ndarray]:
        """(U_in, U_out) skip weights of each ``known`` session that looks like the same array as ``session``:
        the same subject and as many held-in and held-out units (``finetune_glm_prior="subject"``; else none).

        Neurons carry no identity across sessions, so this is a guess the caller checks on val trials.
        """
        if self.finetune_glm_prior != "subject":
            return []
        subject = self.session_info[session.id].get("subject", "unknown")
        priors = []
        for session_id in known:
            other = self.specs[self.session_index[session_id]]
            if subject == "unknown" or self.session_info[session_id].get("subject") != subject \
                    or (other.n_heldin, other.n_heldout) != (spec.n_heldin, spec.n_heldout):
                continue
            row = self.skip_weight_vocab.weight[int(self.skip_weight_vocab.index([session_id])[0])]
            weights = row.view(self.heldin_slots, self.heldout_slots)[:spec.n_heldin, :spec.n_heldout]
            priors.append(weights.detach().double().cpu().numpy())
        return priors

    def unit_bias(self, context: torch.Tensor, space: torch.Tensor) -> torch.Tensor:
        """(B, 3) context rows, (B, L) patch index of each token -> (B, L, n) log-rate offsets."""
        table = self.unit_bias_vocab(context[:, 0]).view(len(context), self.n_space, self.neurons_per_token)
        return table[torch.arange(len(context), device=space.device)[:, None], space]
