"""NDT2: patch tokens, a masked autoencoder, context tokens, many sessions (Ye et al., 2023).

The model, top-down:

1. **Tokens.** Held-in counts ``(B, T, U_in)`` are cut into patches of ``neurons_per_token``
   neurons per bin (:class:`~mini_decoders.tokenizers.patches.PatchTokenizer`) and flattened over
   space x time: ``T * P`` tokens. Three **context tokens** (session, subject, task; each a learned
   vector keyed by its name, plus a learned type flag) are prepended. Context tokens attend only
   among themselves; data tokens attend to everything.
2. **MAE pretraining.** Per sample, a random subset of ``(1 - mask_ratio)`` of the held-in tokens
   is *visible*: only those go through the encoder, so its sequence really is shorter. A light
   decoder (2 layers) gets the encoder outputs back in place plus a learned mask token at every
   hidden position (with its own time/space embeddings), and reads out log-rates per patch
   (``Linear(D, neurons_per_token)``). Loss: Poisson NLL on the hidden tokens' real neurons.
3. **Held-out neurons (our choice for NLB co-smoothing).** NDT2 has no held-out concept. We give
   held-out neurons patches of their own (space positions after the held-in ones) that are
   *always hidden*: the encoder never sees them, the decoder always infills them. So co-smoothing
   is just the MAE infilling task with a fixed part of the mask, trained jointly. For small data
   (quick profile) two additions: held-out rates are read from the decoded held-in tokens of each
   bin (``heldout_readout="pooled"``), plus a linear skip from the visible held-in counts,
   smoothed over time (``heldout_skip``: chapter 2's smoothing + GLM as a path in the model; with
   ``skip_init="glm"`` its weights are that GLM, fitted per session, and ``skip_learned=False``
   keeps them fixed). A session added later (fine-tuning) whose subject and unit counts match a
   known session's, i.e. the same array on another day, may shrink its GLM towards that session's
   weights instead of towards zero, if its val trials say so (``finetune_glm_prior="subject"``).
   A session without held-out units has no held-out patches (and ``rates_heldout`` with 0 units);
   when no session has any, the held-in infilling bits/spike of the val trials picks the step.
   These read-outs are in :mod:`mini_decoders.models.ndt2_heldout`.
4. **Supervised fine-tuning** (:meth:`NDT2.finetune`, ``mode="full"``): a behaviour head
   (one learned query per time bin plus its time embedding, one transformer block over
   [encoder outputs ; queries], ``Linear(D, 2)``) decodes hand velocity with MSE, the encoder seeing
   every held-in token. New context rows for the new session; 10x learning rate for new parameters
   and all context embeddings; layer-wise learning-rate decay 0.75 (the MAE recipe).
   ``mode="units"`` learns only the new context rows, everything else frozen bit for bit
   (:mod:`mini_decoders.models.ndt2_finetune`).

At prediction every held-in token must be infilled once, so ``ceil(1 / mask_ratio)`` passes with
complementary hidden sets give the held-in rates; held-out rates (and velocity) come from one
pass with every held-in token visible.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mini_decoders.data.batching import BinnedTrialDataset, collate_binned
from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.metrics import bits_per_spike, r2_score
from mini_decoders.models.base import Decoder, SessionSpec
from mini_decoders.models.ndt2_finetune import FINETUNE_POOLED_LR_MULT, FINETUNE_VALIDATIONS, FineTuning
from mini_decoders.models.ndt2_heldout import FINETUNE_GLM_PRIOR, HeldoutReadout
from mini_decoders.models.recipes import Departure
from mini_decoders.nn.attention import TransformerBlock
from mini_decoders.nn.losses import poisson_nll_terms
from mini_decoders.nn.positions import LearnedPositions
from mini_decoders.nn.vocab import GrowingVocabEmbedding
from mini_decoders.tokenizers.patches import PatchTokenizer, PatchTokens
from mini_decoders.training.profiles import CHECKPOINT_SECONDS
from mini_decoders.training.trainer import TrainConfig, Trainer

BEHAVIOR = "hand_vel"
CONTEXT_KINDS = ("session", "subject", "task")  # order of the context tokens
NOT_REAL, HIDDEN_HELDOUT = 3.0, 2.0  # sort keys: visible 0, hidden held-in 1, held-out 2, padding 3

_TRAIN = dict(bin_size=0.02, lag=0.1, neurons_per_token=32, max_count=20, max_time_bins=250, max_heldin_patches=12,
              max_heldout_patches=4, spike_embed_style="token", causal=False, weight_decay=0.01, min_lr_ratio=0.1,
              grad_clip=1.0, precision="auto", device="auto", log_every=10, checkpoint_every=None, num_workers=0,
              checkpoint_seconds=None,
              behavior_weight=0.0, finetune_lr_scale=0.5, new_param_lr_mult=10.0,
              finetune_pooled_lr_mult=FINETUNE_POOLED_LR_MULT, finetune_validations=FINETUNE_VALIDATIONS,
              finetune_glm_prior=FINETUNE_GLM_PRIOR, layer_decay=0.75, unit_bias=True,
              heldout_readout="pooled", heldout_kernel_bins=9, heldout_skip=False, skip_init="zero", skip_learned=True,
              skip_glm_alphas=(1e-3, 1e-2, 1e-1))


# ================================================================================================
# Masks

def random_visible(heldin_real: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The MAE shuffle: which held-in tokens the encoder sees.

    Equivalent to one random permutation per sample of its real held-in tokens, keeping the
    first ``n_visible = max(1, floor((1 - mask_ratio) * n))`` of them.

    Args:
        heldin_real: (B, L) bool, real held-in tokens.
        mask_ratio: fraction hidden.
    Returns:
        (B, L) bool, True = visible to the encoder.
    """
    noise = torch.rand(heldin_real.shape, generator=generator, device="cpu").to(heldin_real.device)
    noise = noise.masked_fill(~heldin_real, 2.0)  # non-candidates sort last
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, L) rank of each token in its sample's permutation
    n_real = heldin_real.sum(1, keepdim=True)
    n_visible = torch.clamp((n_real.float() * (1.0 - mask_ratio)).floor().long(), min=1)
    return (rank < n_visible) & heldin_real


def context_attention_mask(is_context: torch.Tensor, time: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, S, S) bool, True = query (row) may attend to key (column).

    Context tokens see only context tokens (so they summarise the context, not the data); data
    tokens see all context tokens and, with ``causal``, only data tokens of the same or earlier bins.
    """
    allowed = ~is_context[:, :, None] | is_context[:, None, :]  # (B, S, S)
    if causal:
        earlier = time[:, None, :] <= time[:, :, None]
        allowed = allowed & (earlier | is_context[:, None, :])
    return allowed


# ================================================================================================
# The model

class NDT2(HeldoutReadout, FineTuning, Decoder):
    """Neural Data Transformer 2: patch tokens, MAE, context tokens, multi-session pretraining.

    Config (``CONFIGS``): ``dim`` D, ``layers``/``heads``/``ffn_mult``/``dropout``/``pre_norm`` of
    the encoder, ``decoder_layers`` of the MAE decoder, ``neurons_per_token``, ``max_count``,
    ``spike_embed_style`` (token | project), ``mask_ratio``, ``causal``, ``max_heldin_patches`` and
    ``max_heldout_patches`` (space positions), ``behavior_weight`` (weight of the velocity MSE
    when the behaviour head is trained), plus the Trainer keys (``max_steps``, ``lr``, ...).
    """

    name = "ndt2"
    predicts = {"rates"}  # plus "hand_vel" once a behaviour head has been trained (see decodes_behavior)
    TOKEN, JUDGED_ON, BASELINE = "bin x neuron patch", "co_bps", "smoothing"
    ADAPTS = ("units", "full")
    ADAPTATION = "context tuning: new session context tokens, the backbone frozen"
    CONFIGS = {
        "tiny": dict(_TRAIN, dim=32, neurons_per_token=16, layers=1, heads=2, ffn_mult=1, decoder_layers=1,
                     dropout=0.0, pre_norm=True, mask_ratio=0.5, heldout_skip=True, max_steps=12, batch_size=8, lr=2e-3,
                     warmup_steps=2, val_every=None, early_stopping_patience=None, finetune_steps=6),
        # CPU-sized: 800 steps ~ 5 min on 2 cores. A quarter of the tokens hidden (not half): the
        # held-out read-out then trains on inputs closer to the all-visible ones it predicts from.
        # Patches of 64 neurons (the paper: 32) halve the tokens, so a step costs about half.
        # The skip is the GLM fitted to each session's train trials and stays fixed: the
        # transformer learns what it adds (measured: +0.02 co-bps after a full fine-tune on 42
        # trials of a new session, against a skip learned by gradient steps).
        "quick": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["quick"],
                      dim=64, neurons_per_token=64, layers=3, heads=4, ffn_mult=2, decoder_layers=2,
                      dropout=0.1, pre_norm=True, mask_ratio=0.25, heldout_skip=True, skip_init="glm",
                      skip_learned=False, max_steps=800, batch_size=32, lr=3e-3, warmup_steps=50, val_every=100,
                      early_stopping_patience=None, finetune_steps=200),
        # Paper scale (NDT2 f32): hidden 256, 6 layers, 4 heads, FFN factor 1, post-norm, lr 5e-4,
        # batch 128 x 2 accumulated (here 256 in one step). One step at 50-bin trials of 182 units peaks
        # at 5.2 GB in fp32 on a CPU (benchmarks/ndt_throughput.py --profile full --batch-size 256
        # --units 182 --lengths 50 --device cpu): a 16 GB GPU holds it. Memory grows with the tokens,
        # so 250-bin trials need a quarter of the batch.
        "full": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["full"],
                     dim=256, layers=6, heads=4, ffn_mult=1, decoder_layers=2, dropout=0.1, pre_norm=False,
                     mask_ratio=0.5, max_steps=20000, batch_size=256, lr=5e-4, warmup_steps=1000, val_every=500,
                     early_stopping_patience=8, checkpoint_every=2000, finetune_steps=3000),
    }

    # The paper's recipe. Beyond the abstract (a spatiotemporal transformer pretrained across
    # sessions, subjects and tasks) the values are those of the authors' code (joel99/context_general_bci):
    # patches of 32 neurons, half of the tokens hidden, causal attention (config/exp/arch/base/f32.yaml);
    # post-norm blocks and a learning rate of 5e-4 (config/config_base.py); fine-tuning at 5e-5, a tenth
    # (config/exp/arch/base/probe/f32.yaml); no per-neuron rate offset. NDT2 has no held-out neurons: in
    # its recipe ours get patches of their own that are always hidden and infilled by the MAE decoder
    # like any hidden patch (our most paper-like choice, not the paper's).
    PAPER = dict(neurons_per_token=32, pre_norm=False, mask_ratio=0.5, causal=True, heldout_readout="infill",
                 heldout_skip=False, skip_init="zero", skip_learned=True, finetune_glm_prior="none",
                 finetune_pooled_lr_mult=1.0, unit_bias=False, lr=5e-4, finetune_lr_scale=0.1)
    DEPARTURES = (
        Departure("heldout", "held-out neurons from a GLM on smoothed counts", ("heldout_readout", "heldout_skip",
                  "skip_init", "skip_learned", "finetune_glm_prior", "finetune_pooled_lr_mult"),
                  "(no held-out neurons in the paper) held-out patches always hidden, infilled by the MAE decoder",
                  "held-out rates read from the decoded held-in tokens of each bin, plus a fixed per-session Poisson "
                  "GLM on smoothed held-in counts",
                  "infilling neurons the model never sees does not get off the ground in a few hundred steps"),
        Departure("unit_bias", "a log-rate offset per neuron", ("unit_bias",),
                  "the shared patch read-out gives every neuron its rate", "each neuron also gets a learned offset, "
                  "started at its mean count", "the read-out need not learn which neuron sits in which slot"),
        Departure("patch64", "patches of 64 neurons", ("neurons_per_token",),
                  "32 neurons per patch", "64 neurons per patch (quick)", "half the tokens: a step costs about half"),
        Departure("prenorm", "pre-norm blocks", ("pre_norm",),
                  "post-norm transformer blocks", "pre-norm blocks", "stable at a higher learning rate"),
        Departure("masking", "fewer tokens hidden, full context", ("mask_ratio", "causal"),
                  "half of the tokens hidden, causal attention (a token sees its own and earlier bins)",
                  "a quarter hidden (quick), attention over the whole trial",
                  "the held-out read-out trains on inputs closer to the all-visible ones it predicts from"),
        Departure("optimiser", "learning rates", ("lr", "finetune_lr_scale"),
                  "AdamW at 5e-4; fine-tuning at a tenth of that", "3e-3 (quick); fine-tuning at half",
                  "800 steps instead of many epochs"),
    )

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        c = self.config
        dim, self.neurons_per_token = int(c["dim"]), int(c["neurons_per_token"])
        for spec in self.specs:
            self._check_fits(spec)
        self.tokenizer = PatchTokenizer(dim, self.neurons_per_token, int(c["max_count"]), int(c["max_time_bins"]),
                                        int(c["max_heldin_patches"]) + int(c["max_heldout_patches"]),
                                        str(c["spike_embed_style"]))
        self.session_vocab = GrowingVocabEmbedding(dim)
        self.subject_vocab = GrowingVocabEmbedding(dim)
        self.task_vocab = GrowingVocabEmbedding(dim)
        self.context_flags = nn.Parameter(torch.randn(len(CONTEXT_KINDS), dim) * 0.02)  # (3, D) token type
        self.session_vocab.extend([spec.id for spec in self.specs])

        def block() -> TransformerBlock:
            return TransformerBlock(dim, int(c["heads"]), ffn_mult=float(c["ffn_mult"]), dropout=float(c["dropout"]),
                                    pre_norm=bool(c["pre_norm"]), activation="gelu")

        self.encoder = nn.ModuleList([block() for _ in range(int(c["layers"]))])
        self.encoder_norm = nn.LayerNorm(dim) if c["pre_norm"] else nn.Identity()
        # The MAE decoder: its own positions, so the encoder's can specialise for visible tokens.
        self.mask_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.decoder_time = LearnedPositions(int(c["max_time_bins"]), dim)
        self.decoder_space = LearnedPositions(self.tokenizer.space_positions.max_len, dim)
        self.decoder = nn.ModuleList([block() for _ in range(int(c["decoder_layers"]))])
        self.decoder_norm = nn.LayerNorm(dim) if c["pre_norm"] else nn.Identity()
        self.rate_readout = nn.Linear(dim, self.neurons_per_token)  # log-rate of each neuron of a patch
        self._build_heldout_readout(dim)
        # Behaviour head (trained by finetune(mode="full") or fit with behavior_weight > 0).
        self.behavior_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.behavior_time = LearnedPositions(int(c["max_time_bins"]), dim)
        self.behavior_block = block()
        self.behavior_readout = nn.Linear(dim, 2)
        # Plain-python facts per session (subject, task, velocity standardisation); see extra_state.
        self.session_info: dict[str, dict[str, Any]] = {}
        self.decodes_behavior = False

    def _check_fits(self, spec: SessionSpec) -> None:
        n = self.neurons_per_token
        for kind, count, limit in (("held-in", spec.n_heldin, "max_heldin_patches"),
                                   ("held-out", spec.n_heldout, "max_heldout_patches")):
            if math.ceil(count / n) > int(self.config[limit]):
                raise DataError(f"ndt2: session {spec.id!r} has {count} {kind} units = {math.ceil(count / n)} patches "
                                f"of {n}, more than config {limit}={self.config[limit]}; raise it")
        if spec.n_heldin == 0:
            raise DataError(f"ndt2: session {spec.id!r} has no held-in units to read from")

    # ------------------------------------------------------------------ tokens
    def tokens(self, batch: dict[str, torch.Tensor]) -> tuple[PatchTokens, torch.Tensor]:
        """Held-in then held-out patch tokens of a collated batch, and (B, L) is-held-out."""
        heldin = self.tokenizer.tokenize(batch["heldin"], batch["heldin_unit_mask"], batch["time_mask"])
        heldout = self.tokenizer.tokenize(batch["heldout"], batch["heldout_unit_mask"], batch["time_mask"],
                                          space_offset=int(self.config["max_heldin_patches"]))
        is_heldout = torch.cat([torch.zeros_like(heldin.real), torch.ones_like(heldout.real)], dim=1)
        return heldin.cat(heldout), is_heldout

    def context_tokens(self, context: torch.Tensor) -> torch.Tensor:
        """(B, 3) rows of (session, subject, task) -> (B, 3, D) context tokens."""
        vectors = [vocab(context[:, k]) for k, vocab in enumerate((self.session_vocab, self.subject_vocab,
                                                                    self.task_vocab))]
        return torch.stack(vectors, dim=1) + self.context_flags

    def _run(self, blocks: nn.ModuleList, norm: nn.Module, context: torch.Tensor, data: torch.Tensor,
             valid: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[context ; data] through ``blocks``; returns (context out (B, C, D), data out (B, L, D))."""
        batch, n_context = context.shape[:2]
        x = torch.cat([context, data], dim=1)
        is_context = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        is_context[:, :n_context] = True
        key_valid = torch.cat([torch.ones(batch, n_context, dtype=torch.bool, device=x.device), valid], dim=1)
        full_time = torch.cat([torch.zeros(batch, n_context, dtype=time.dtype, device=x.device), time], dim=1)
        attn_mask = context_attention_mask(is_context, full_time, bool(self.config["causal"]))
        for block in blocks:
            x = block(x, key_padding_mask=key_valid, attn_mask=attn_mask)
        x = norm(x)
        return x[:, :n_context], x[:, n_context:]

    # ------------------------------------------------------------------ forward
    def encode(self, batch: dict[str, torch.Tensor], visible: torch.Tensor | None = None) -> dict[str, Any]:
        """Tokenize, choose the visible tokens and run the encoder on them alone.

        Args:
            batch: a collated batch (``heldin``/``heldout`` counts with unit masks, ``time_mask``,
                ``context`` (B, 3) vocabulary rows).
            visible: (B, L) bool over the tokens of :meth:`tokens`, True = the encoder sees it
                (only real held-in tokens may be visible); None draws the MAE mask (``mask_ratio``).
        Returns:
            ``tokens``, ``is_heldout`` (B, L), ``visible`` (B, L), ``order`` (B, L) (visible tokens
            first), ``n_visible`` (B,), ``context`` (B, 3, D) and ``encoded`` (B, L_enc, D) encoder
            outputs with ``encoder_valid`` (B, L_enc) and ``encoder_time`` (B, L_enc).
        """
        tokens, is_heldout = self.tokens(batch)
        if visible is None:
            visible = random_visible(tokens.real & ~is_heldout, float(self.config["mask_ratio"]))
        if (visible & (is_heldout | ~tokens.real)).any():
            raise RunError("ndt2: only real held-in tokens can be visible to the encoder")
        # Visible first, then hidden held-in, held-out, padding; stable, so ties keep grid order.
        sort_key = torch.where(visible, 0.0, torch.where(~tokens.real, NOT_REAL,
                                                         torch.where(is_heldout, HIDDEN_HELDOUT, 1.0)))
        order = sort_key.argsort(dim=1, stable=True)  # (B, L)
        n_visible = visible.sum(1)  # (B,)
        take = order[:, :int(n_visible.max())]  # (B, L_enc): the encoder's sequence is this short
        encoder_valid = torch.arange(take.shape[1], device=order.device)[None] < n_visible[:, None]
        encoder_time = gather_tokens(tokens.time, take)
        embedded = self.tokenizer(gather_tokens(tokens.counts, take),
                                  gather_tokens(tokens.channel_mask, take) & encoder_valid[..., None],
                                  encoder_time, gather_tokens(tokens.space, take))  # (B, L_enc, D)
        context, encoded = self._run(self.encoder, self.encoder_norm, self.context_tokens(batch["context"]), embedded,
                                     encoder_valid, encoder_time)
        return {"tokens": tokens, "is_heldout": is_heldout, "visible": visible, "order": order,
                "n_visible": n_visible, "context": context, "encoded": encoded, "encoder_valid": encoder_valid,
                "encoder_time": encoder_time}

    def forward(self, batch: dict[str, torch.Tensor], visible: torch.Tensor | None = None,
                with_behavior: bool = False) -> dict[str, Any]:
        """Encode the visible tokens, infill every other real token.

        Args:
            batch, visible: as in :meth:`encode`.
            with_behavior: also decode velocity from the encoder outputs.
        Returns:
            ``log_rates`` (B, L, n) in token order, ``hidden`` (B, L) bool = real tokens the decoder
            infilled, ``tokens`` (:class:`PatchTokens`), ``encoder_length`` (tokens in the encoder's
            sequence, context excluded), and ``velocity`` (B, T, 2) standardised with ``with_behavior``.
        """
        enc = self.encode(batch, visible)
        tokens, encoded = enc["tokens"], enc["encoded"]
        length, encoder_length = tokens.real.shape[1], encoded.shape[1]
        # Decoder: every token back in grid order; hidden ones start as the mask token.
        position_in_order = enc["order"].argsort(dim=1)  # (B, L): where each grid token sits in `order`
        padded = F.pad(encoded, (0, 0, 0, length - encoder_length))  # (B, L, D), sorted order
        back = gather_tokens(padded, position_in_order)  # (B, L, D), grid order
        decoder_in = torch.where(enc["visible"][..., None], back, self.mask_token.to(back.dtype))
        decoder_in = decoder_in + self.decoder_time(tokens.time) + self.decoder_space(tokens.space)
        _, decoded = self._run(self.decoder, self.decoder_norm, enc["context"], decoder_in, tokens.real, tokens.time)
        log_rates = self.rate_readout(decoded)  # (B, L, n)
        if self.pooled_heldout:
            pooled = self.pooled_heldout_log_rates(decoded, tokens, enc["is_heldout"], enc["visible"], batch)  # (B, L, n)
            log_rates = torch.where(enc["is_heldout"][..., None], pooled, log_rates)
        if self.unit_bias_vocab is not None:
            log_rates = log_rates + self.unit_bias(batch["context"], tokens.space)
        out = {"log_rates": log_rates, "hidden": tokens.real & ~enc["visible"], "tokens": tokens,
               "encoder_length": encoder_length}
        if with_behavior:
            out["velocity"] = self.decode_behavior(enc, batch["time_mask"])
        return out

    def decode_behavior(self, enc: dict[str, Any], time_mask: torch.Tensor) -> torch.Tensor:
        """One learned query per time bin reads the encoder outputs (of :meth:`encode`) -> (B, T, 2)."""
        context_out, encoded, encoder_valid, encoder_time = (enc[k] for k in ("context", "encoded", "encoder_valid",
                                                                               "encoder_time"))
        batch, n_bins = time_mask.shape
        bins = torch.arange(n_bins, device=time_mask.device)
        queries = (self.behavior_query + self.behavior_time(n_bins)).expand(batch, n_bins, -1)
        x = torch.cat([context_out, encoded, queries], dim=1)
        n_context = context_out.shape[1]
        valid = torch.cat([torch.ones(batch, n_context, dtype=torch.bool, device=x.device), encoder_valid, time_mask], 1)
        is_context = torch.zeros_like(valid)
        is_context[:, :n_context] = True
        times = torch.cat([torch.zeros(batch, n_context, dtype=bins.dtype, device=x.device), encoder_time,
                           bins.expand(batch, n_bins)], dim=1)
        attn_mask = context_attention_mask(is_context, times, bool(self.config["causal"]))
        x = self.behavior_block(x, key_padding_mask=valid, attn_mask=attn_mask)
        return self.behavior_readout(x[:, -n_bins:])

    # ------------------------------------------------------------------ losses
    def masked_poisson_loss(self, out: dict) -> torch.Tensor:
        """Poisson NLL (log-rate input, constant log y! dropped) over the real neurons of hidden tokens."""
        tokens = out["tokens"]
        log_rates = out["log_rates"].float()
        scored = (tokens.channel_mask & out["hidden"][..., None]).float()  # padding never counts
        nll = poisson_nll_terms(log_rates, tokens.counts.float())
        return (nll * scored).sum() / scored.sum().clamp_min(1.0)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked Poisson NLL (+ ``behavior_weight`` x velocity MSE with every held-in token visible)."""
        loss = torch.zeros((), device=batch["heldin"].device)
        logs = {}
        ssl_weight = float(self.config.get("ssl_weight", 1.0))
        if ssl_weight > 0:
            spikes = self.masked_poisson_loss(self(batch))
            loss, logs["poisson_nll"] = loss + ssl_weight * spikes, float(spikes.detach())
        if "behavior" in batch and float(self.config["behavior_weight"]) > 0:
            tokens, is_heldout = self.tokens(batch)
            velocity = self.decode_behavior(self.encode(batch, tokens.real & ~is_heldout), batch["time_mask"]).float()
            target = batch["behavior"]
            scored = torch.isfinite(target).all(-1, keepdim=True) & batch["time_mask"][..., None]
            squared = torch.where(scored, (velocity - torch.nan_to_num(target)) ** 2, 0.0)
            mse = squared.sum() / (scored.sum() * velocity.shape[-1]).clamp_min(1)
            loss, logs["velocity_mse"] = loss + float(self.config["behavior_weight"]) * mse, float(mse.detach())
        return loss, logs

    # ------------------------------------------------------------------ data
    def _register(self, sessions: list[Session], *, with_velocity: bool) -> None:
        """Add sessions (specs, context rows, velocity standardisation) the model has not seen."""
        fresh = [session for session in sessions if session.id not in self.session_info]
        known = list(self.session_info)  # trained on before this call
        for session in sessions:
            if session.id not in self.session_index:
                spec = SessionSpec.of(session)
                self._check_fits(spec)
                self.session_index[spec.id] = len(self.specs)
                self.specs.append(spec)
            else:
                self.spec_for(session)  # same units as in training, or a clear error
            info = self.session_info.setdefault(session.id, {})
            info["subject"], info["task"] = session.subject or "unknown", session.task or "unknown"
            if with_velocity and "velocity_mean" not in info:
                if BEHAVIOR not in session.behavior:
                    raise DataError(f"ndt2: decoding needs behavior {BEHAVIOR!r}, session {session.id!r} has "
                                    f"{sorted(session.behavior) or 'none'}")
                velocity = bin_trials(session, self.bin_size, split="train", behavior=(BEHAVIOR,),
                                      lag=float(self.config["lag"])).behavior[BEHAVIOR].reshape(-1, 2)
                velocity = velocity[np.isfinite(velocity).all(1)]
                if len(velocity) < 2:
                    raise DataError(f"ndt2: session {session.id!r} has no train trials with {BEHAVIOR!r}")
                info["velocity_mean"] = velocity.mean(0).tolist()
                info["velocity_std"] = velocity.std(0).clip(1e-6).tolist()
        self.session_vocab.extend([s.id for s in sessions])
        if self.pooled_heldout:
            self.heldout_weight_vocab.extend([s.id for s in sessions])
        if self.heldout_skip:
            self.skip_weight_vocab.extend([s.id for s in sessions])
        if self.unit_bias_vocab is not None:
            self.unit_bias_vocab.extend([s.id for s in sessions])
            self._init_unit_bias(fresh)
        if self.heldout_skip and self.config.get("skip_init", "zero") == "glm":
            self._init_skip_from_glm(fresh, known)
        self.subject_vocab.extend([self.session_info[s.id]["subject"] for s in sessions])
        self.task_vocab.extend([self.session_info[s.id]["task"] for s in sessions])

    def context_rows(self, session_id: str) -> np.ndarray:
        """(3,) int64 vocabulary rows of a session's (session, subject, task) tokens."""
        info = self.session_info[session_id]
        return np.array([int(self.session_vocab.index([session_id])[0]), int(self.subject_vocab.index([info["subject"]])[0]),
                         int(self.task_vocab.index([info["task"]])[0])], dtype=np.int64)

    def _items(self, sessions: list[Session], binned: list[BinnedTrials], with_velocity: bool) -> list[dict]:
        """One dict per trial: heldin/heldout counts (T_i, U), context (3,), standardised behaviour."""
        dataset = BinnedTrialDataset(binned, [s.units.heldout for s in sessions], BEHAVIOR if with_velocity else None)
        rows = [self.context_rows(s.id) for s in sessions]
        items = []
        for i in range(len(dataset)):  # a loop per trial
            item = dataset[i]
            session_index = int(item["session_index"])
            out = {"heldin": item["heldin"], "heldout": item["heldout"],
                   **{f"context_{k}": np.int64(rows[session_index][k]) for k in range(len(CONTEXT_KINDS))}}
            if with_velocity:
                info = self.session_info[sessions[session_index].id]
                out["behavior"] = ((item["behavior"] - np.asarray(info["velocity_mean"])) /
                                   np.asarray(info["velocity_std"])).astype(np.float32)
            items.append(out)
        return items

    def _binned(self, session: Session, split: str | tuple[str, ...], with_velocity: bool) -> BinnedTrials:
        return bin_trials(session, self.bin_size, split=split, behavior=(BEHAVIOR,) if with_velocity else (),
                          lag=float(self.config["lag"]))

    # ------------------------------------------------------------------ training
    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        """Multi-session MAE pretraining (plus velocity decoding when ``behavior_weight`` > 0)."""
        with_velocity = float(self.config["behavior_weight"]) > 0
        self._register(sessions, with_velocity=with_velocity)
        if with_velocity:
            self.decodes_behavior, self.predicts = True, {"rates", "hand_vel"}
        groups = self.param_groups({}, float(self.config["weight_decay"]))
        return self._train(sessions, self.config, out_dir=out_dir, resume=resume, progress=progress,
                           param_groups=groups, with_velocity=with_velocity)

    def _train(self, sessions: list[Session], config: dict, *, out_dir: Path | None, resume: bool, progress: bool,
               param_groups: list[dict] | None, with_velocity: bool) -> dict:
        train_binned = [self._binned(s, "train", with_velocity) for s in sessions]
        items = self._items(sessions, train_binned, with_velocity)
        val_sets = [(s, self._binned(s, "val", with_velocity)) for s in sessions if "val" in s.trials.split]
        any_heldout = any(self.spec_for(s)[1].n_heldout for s, _ in val_sets)

        def validate(model: "NDT2") -> dict[str, float]:
            co_bps, vel_r2, heldin_bps = [], [], []
            for session, binned in val_sets:
                _, spec = model.spec_for(session)
                predicted = model.predict_trials(session, binned)
                if spec.n_heldout:  # co-bps is undefined without held-out units
                    heldout = np.where(binned.mask[..., None], binned.counts[..., spec.heldout_index], np.nan)
                    co_bps.append(bits_per_spike(predicted["rates_heldout"], heldout))
                if not any_heldout:  # each held-in token infilled from the others (see predict_trials)
                    heldin = np.where(binned.mask[..., None], binned.counts[..., spec.heldin_index], np.nan)
                    heldin_bps.append(bits_per_spike(predicted["rates_heldin"], heldin))
                if with_velocity:
                    vel_r2.append(r2_score(predicted[BEHAVIOR], binned.behavior[BEHAVIOR]))
            # Without held-out units anywhere, the held-in infilling score stands in for co-bps.
            primary = "val_co_bps" if any_heldout else "val_heldin_bps"
            scores = {primary: float(np.mean(co_bps if any_heldout else heldin_bps))}
            if with_velocity:
                scores["val_vel_r2"] = float(np.mean(vel_r2))
            scores["val_score"] = scores[primary] + scores.get("val_vel_r2", 0.0)
            return scores

        train_config = TrainConfig.from_model_config(
            config,
            batch_size=min(int(config["batch_size"]), len(items)),
            monitor="val_score", monitor_mode="max")  # the Trainer ends with the best validation's weights
        trainer = Trainer(self, items, collate_ndt2, train_config, out_dir=out_dir, val_fn=validate if val_sets else None,
                          param_groups=param_groups, progress=progress, run_config={"model": self.name})
        started = time.perf_counter()
        history = trainer.fit(resume=resume)
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    # ------------------------------------------------------------------ prediction
    def _batch(self, session_id: str, binned: BinnedTrials, spec: SessionSpec) -> dict[str, torch.Tensor]:
        """All trials of ``binned`` as one collated batch (full padded length)."""
        rows = self.context_rows(session_id)
        items = [{"heldin": binned.counts[i][:, spec.heldin_index], "heldout": binned.counts[i][:, spec.heldout_index],
                  **{f"context_{k}": np.int64(rows[k]) for k in range(len(CONTEXT_KINDS))}}
                 for i in range(len(binned.counts))]
        batch = collate_ndt2(items)
        batch["time_mask"] = torch.from_numpy(binned.mask)
        return batch

    @torch.no_grad()
    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        index, spec = self.spec_for(session)
        device = self.rate_readout.weight.device
        n_passes = max(1, math.ceil(1.0 / max(float(self.config["mask_ratio"]), 1e-6)))
        outputs = {"rates_heldin": [], "rates_heldout": [], BEHAVIOR: []}
        batch_all = self._batch(spec.id, binned, spec)
        for start in range(0, len(binned.counts), 128):  # bounded memory
            batch = {k: v[start:start + 128].to(device) for k, v in batch_all.items()}
            tokens, is_heldout = self.tokens(batch)
            heldin_real = tokens.real & ~is_heldout
            # Velocity only for sessions it was trained on (their standardisation is known).
            with_behavior = self.decodes_behavior and "velocity_mean" in self.session_info[spec.id]
            everything = self(batch, visible=heldin_real, with_behavior=with_behavior)
            log_rates = torch.zeros_like(everything["log_rates"])
            # Held-in: complementary hidden sets, so each held-in token is infilled exactly once.
            generator = torch.Generator().manual_seed(int(self.config.get("seed", 0)))
            group = torch.randint(0, n_passes, heldin_real.shape, generator=generator).to(device)
            for k in range(n_passes):
                hidden_now = heldin_real & (group == k)
                visible = heldin_real & ~hidden_now
                if not visible.any(1).all():  # a trial too short to split: show it everything else
                    visible = visible | (heldin_real & ~visible.any(1, keepdim=True))
                    hidden_now = hidden_now & ~visible
                log_rates = torch.where(hidden_now[..., None], self(batch, visible=visible)["log_rates"], log_rates)
            log_rates = torch.where(is_heldout[..., None], everything["log_rates"], log_rates)
            rates = log_rates.float().clamp(max=20).exp()  # (B, L, n) expected spikes per bin
            n_bins = batch["time_mask"].shape[1]
            n_heldin_tokens = (~is_heldout[0]).sum().item()
            n = self.neurons_per_token  # (B, T * P, n) -> (B, T, P * n); P may be 0 (no held-out units)
            heldin = rates[:, :n_heldin_tokens].reshape(len(rates), n_bins, -1, n).flatten(2)[..., :spec.n_heldin]
            heldout = rates[:, n_heldin_tokens:].reshape(len(rates), n_bins, -1, n).flatten(2)[..., :spec.n_heldout]
            outputs["rates_heldin"].append(heldin.cpu().numpy())
            outputs["rates_heldout"].append(heldout.cpu().numpy())
            if with_behavior:
                info = self.session_info[spec.id]
                velocity = everything["velocity"].float().cpu().numpy()
                outputs[BEHAVIOR].append(velocity * np.asarray(info["velocity_std"]) + np.asarray(info["velocity_mean"]))
        result = {k: np.concatenate(v) for k, v in outputs.items() if v}
        return result

    # ------------------------------------------------------------------ plain-python state
    def extra_state(self) -> dict[str, Any]:
        return {"session_info": self.session_info, "decodes_behavior": self.decodes_behavior}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.session_info = {k: dict(v) for k, v in state.get("session_info", {}).items()}
        self.decodes_behavior = bool(state.get("decodes_behavior", False))
        self.predicts = {"rates", "hand_vel"} if self.decodes_behavior else {"rates"}


def gather_tokens(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, i], ...]``: (B, L, ...) and (B, K) int64 -> (B, K, ...)."""
    expanded = index.view(*index.shape, *([1] * (values.ndim - 2))).expand(*index.shape, *values.shape[2:])
    return values.gather(1, expanded)


def collate_ndt2(items: list[dict]) -> dict[str, torch.Tensor]:
    """Pad trials (time and units) and gather the context rows into ``context`` (B, 3) int64."""
    batch = collate_binned(items)
    batch["context"] = torch.stack([batch.pop(f"context_{k}") for k in range(len(CONTEXT_KINDS))], dim=1).long()
    return batch
