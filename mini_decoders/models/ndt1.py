"""NDT1 (Ye & Pandarinath 2021): a masked transformer over time bins that predicts firing rates.

The Neural Data Transformer reads a trial as a sequence of bin tokens (one token = the held-in
population's counts in one 20 ms bin), hides some of them, and learns to predict the hidden counts
with a Poisson likelihood. What it learns is a de-noiser: rates from spikes, using the whole trial
(or a limited window) for context.

    counts (B, T, U_in) --mask--> BinTokenizer --> L x TransformerBlock --> read-out
    --> log-rates (B, T, U_in + U_out)

Co-smoothing (NLB): the held-out neurons ``U_out`` are never in the input, and their rates are
always predicted and always in the loss, so the model learns to infer them from the held-in
population. At prediction nothing is masked and rates are ``exp(log-rate)`` expected counts per
bin.

Sessions share the transformer; each has its own read-in (in the tokenizer) and read-out. Trained
with the package's Trainer; validation co-bps on the val trials chooses the checkpoint and stops
training early. Data without held-out units (nothing to co-smooth) train on the masked held-in
entries alone, and the bits/spike of a fixed mask of val entries chooses the checkpoint instead.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError
from mini_decoders.masking import MaskConfig, mask_counts
from mini_decoders.metrics import bits_per_spike
from mini_decoders.models.base import Decoder, SessionSpec, padded_unit_counts
from mini_decoders.models.recipes import Departure
from mini_decoders.nn.attention import TransformerBlock, attention_weights
from mini_decoders.nn.losses import poisson_nll_terms
from mini_decoders.tokenizers.bins import BinTokenizer
from mini_decoders.training.profiles import CHECKPOINT_SECONDS
from mini_decoders.training.trainer import TrainConfig, Trainer


def context_window_mask(n_bins: int, context_forward: int | None, context_backward: int | None,
                        device: torch.device | str = "cpu") -> Tensor | None:
    """Limited attention context: bin ``t`` sees bins ``t - backward .. t + forward``.

    Returns:
        (T, T) bool, True = query (row) may attend to key (column); None when both are None
        (full context, so attention can take its fastest path).
    """
    if context_forward is None and context_backward is None:
        return None
    offset = torch.arange(n_bins, device=device)[None, :] - torch.arange(n_bins, device=device)[:, None]  # key - query
    allowed = torch.ones(n_bins, n_bins, dtype=torch.bool, device=device)
    if context_forward is not None:
        allowed &= offset <= context_forward
    if context_backward is not None:
        allowed &= offset >= -context_backward
    return allowed


def collate_trials(items: list[dict]) -> dict[str, Tensor]:
    """Pad trials to the longest one.

    Returns:
        ``heldin`` (B, T, U_in_max), ``heldout`` (B, T, U_out_max) float32 counts,
        ``valid`` (B, T) bool (real bins), ``session`` (B,) int64.
    """
    n_bins = max(len(item["heldin"]) for item in items)
    batch = {"session": torch.tensor([item["session"] for item in items], dtype=torch.int64)}
    for key in ("heldin", "heldout", "valid"):
        first = items[0][key]
        padded = np.zeros((len(items), n_bins) + first.shape[1:], dtype=first.dtype)
        for row, item in enumerate(items):  # a loop per trial
            padded[row, :len(item[key])] = item[key]
        batch[key] = torch.from_numpy(padded)
    return batch


class NDT1(Decoder):
    """Masked-modelling transformer on bin tokens, with held-out neuron prediction.

    Config keys (see ``CONFIGS``): ``dim``, ``layers``, ``heads``, ``ffn_dim``, ``activation``,
    ``dropout`` (attention/FFN/residual), ``embed_dropout``, ``rate_dropout`` (before the read-out),
    ``transform`` (count compression), ``kernel_bins`` / ``kernel_sd_bins`` (learned temporal kernel
    after the read-in, starting as Gaussian smoothing; 0 = none), ``factors`` (low-dimensional
    bottleneck before the read-outs; None = none), ``context_forward`` / ``context_backward`` (bins; None =
    full context), ``mask_ratio``, ``mask_max_span``, ``mask_zero_ratio``, ``mask_random_ratio``,
    ``max_bins``, and the training keys of :class:`~mini_decoders.training.trainer.TrainConfig`.
    """

    name = "ndt1"
    predicts = {"rates"}
    TOKEN, JUDGED_ON, BASELINE = "time bin", "co_bps", "smoothing"
    _TRAIN = dict(bin_size=0.02, transform="log1p", activation="gelu", max_bins=512, context_forward=None,
                  context_backward=None, mask_zero_ratio=1.0, mask_random_ratio=1.0, min_lr_ratio=0.05,
                  grad_clip=1.0, precision="auto", device="auto", log_every=10, checkpoint_every=None,
                  checkpoint_seconds=None, num_workers=0)
    CONFIGS = {
        "tiny": dict(_TRAIN, dim=32, layers=1, heads=2, ffn_dim=64, dropout=0.1, embed_dropout=0.1,
                     rate_dropout=0.1, mask_ratio=0.25, mask_max_span=1, kernel_bins=5, factors=8, max_steps=60, batch_size=16, lr=3e-3,
                     weight_decay=0.01, warmup_steps=10, val_every=30, early_stopping_patience=None),
        # Measured on 3 simulated sessions (~200 train trials each), 1 thread: co-bps 1.03-1.06x the
        # smoothing baseline with the temporal kernel + 16 factors, 1.01-1.03x without either.
        "quick": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["quick"],
                      dim=128, layers=3, heads=4, ffn_dim=256, dropout=0.2, embed_dropout=0.3,
                      rate_dropout=0.2, mask_ratio=0.4, mask_max_span=3, kernel_bins=9, factors=16, max_steps=2000,
                      batch_size=32, lr=5e-3, weight_decay=0.1, warmup_steps=100, val_every=100,
                      early_stopping_patience=6),
        # One step at batch 64 x 140 bins (MC_Maze at 5 ms) x 182 units peaks at 2.2 GB in fp32 on a CPU
        # (benchmarks/ndt_throughput.py --profile full --batch-size 64 --units 182 --lengths 140 --device cpu).
        "full": dict(_TRAIN, checkpoint_seconds=CHECKPOINT_SECONDS["full"],
                     dim=256, layers=6, heads=4, ffn_dim=512, dropout=0.2, embed_dropout=0.3,
                     rate_dropout=0.2, mask_ratio=0.3, mask_max_span=3, kernel_bins=9, factors=None, max_steps=20000,
                     batch_size=64, lr=1e-3,
                     weight_decay=0.05, warmup_steps=1000, val_every=250, early_stopping_patience=12,
                     checkpoint_every=2000),
    }

    # The paper's recipe (``recipe="paper"``). Only the paper's abstract could be checked here, so these
    # are the values of the authors' configs for the paper's sweeps (snel-repo/neural-data-transformers,
    # configs/arxiv/m700_2296.yaml; src/config/default.py and src/runner.py for what it leaves out): raw
    # counts in (their maze config embeds them by the identity; ours still has a per-session read-in),
    # ReLU, a quarter of the bins masked (every configs/arxiv file), AdamW at the default 1e-3 (the top of
    # the maze sweep's range) with weight decay 5e-5 and gradient-norm clipping at 200. The sweeps drew
    # dropout, mask spans and replacement fractions from ranges our values lie in. Not in either recipe:
    # T-Fixup initialisation (FIXUP_INIT) and the limited attention window the maze sweep drew (10-40 bins
    # forward and backward).
    PAPER = dict(kernel_bins=0, factors=None, transform="none", activation="relu", mask_ratio=0.25, lr=1e-3,
                 weight_decay=5e-5, grad_clip=200.0)
    DEPARTURES = (
        Departure("kernel", "learned temporal kernel", ("kernel_bins",),
                  "each token is one bin's counts (authors' code)",
                  "each token channel is convolved over 9 bins (quick profile) by a learned filter that starts as "
                  "Gaussian smoothing",
                  "the model starts from chapter 2's smoothing instead of learning to average neighbouring bins"),
        Departure("factors", "factor bottleneck", ("factors",),
                  "a linear read-out maps each token to every neuron's log-rate (authors' code)",
                  "rates are read from 16 shared factors (quick profile)",
                  "a few latent dimensions drive the population; fewer numbers to fit from ~200 trials"),
        Departure("log1p", "compressed counts, GELU", ("transform", "activation"),
                  "raw counts in, ReLU in the feed-forward layers (authors' configs and defaults)",
                  "log(1 + count) in, GELU",
                  "a burst of spikes does not dominate a token; smoother gradients"),
        Departure("masking", "more bins hidden", ("mask_ratio",),
                  "25% of the bins hidden (every config of the authors' paper sweeps)", "40% hidden (quick profile)",
                  "a harder fill-in task; each batch scores more entries"),
        Departure("optimiser", "optimiser settings", ("lr", "weight_decay", "grad_clip"),
                  "AdamW, learning rate 1e-3 (code default; swept 1e-5 to 1e-3), weight decay 5e-5, gradient norm "
                  "clipped at 200 (authors' maze config and code)",
                  "learning rate 5e-3, weight decay 0.1, clipping at 1 (quick profile)",
                  "at most 2,000 optimiser steps (quick) instead of the maze config's 50,501 epochs (its "
                  "\"updates\" are passes over the data): a higher rate, with decay and clipping to keep it stable"),
    )

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        for spec in self.specs:
            if spec.n_heldin == 0:
                raise DataError(f"ndt1 reads held-in units, but session {spec.id!r} has none (all "
                                f"{len(spec.heldout)} units are marked `heldout`)")
        c = self.config
        dim = int(c["dim"])
        self.max_heldin = max(spec.n_heldin for spec in self.specs)
        self.max_heldout = max(spec.n_heldout for spec in self.specs)
        self.tokenizer = BinTokenizer([spec.n_heldin for spec in self.specs], dim, int(c["max_bins"]),
                                      transform=str(c["transform"]), dropout=float(c["embed_dropout"]),
                                      kernel_bins=int(c.get("kernel_bins") or 0),
                                      kernel_sd_bins=float(c.get("kernel_sd_bins", 2.0)))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, int(c["heads"]), dropout=float(c["dropout"]), pre_norm=True,
                             activation=str(c["activation"]), ffn_dim=int(c["ffn_dim"]))
            for _ in range(int(c["layers"])))
        self.final_norm = nn.LayerNorm(dim)  # pre-norm blocks leave the residual stream unnormalised
        self.rate_dropout = nn.Dropout(float(c["rate_dropout"]))
        n_out = self.max_heldin + self.max_heldout
        # Optional factor bottleneck (as LFADS): every session's rates are read from the same F
        # "factors", a low-dimensional summary of the population. Few latent dimensions drive
        # cortical populations, so this is a strong, cheap prior when trials are few.
        factors = c.get("factors")
        self.to_factors = nn.Linear(dim, int(factors)) if factors else None
        read_dim = int(factors) if factors else dim
        # (S, F, U_in_max + U_out_max): one read-out per session; small init so that the start is the
        # bias, i.e. each neuron's mean rate (set in `fit`), not noise.
        self.read_out_weight = nn.Parameter(torch.randn(len(self.specs), read_dim, n_out) * 0.02 / math.sqrt(read_dim))
        self.read_out_bias = nn.Parameter(torch.full((len(self.specs), n_out), -2.0))
        self.mask_config = MaskConfig(scheme="temporal", ratio=float(c["mask_ratio"]),
                                      zero_ratio=float(c["mask_zero_ratio"]),
                                      random_ratio=float(c["mask_random_ratio"]), max_span=int(c["mask_max_span"]))

    # ------------------------------------------------------------------ the network
    def encode(self, heldin: Tensor, session: Tensor, valid: Tensor | None = None,
               return_block_inputs: bool = False):
        """Tokens through the transformer.

        Args:
            heldin: (B, T, U_in_max) counts the model sees.
            session: (B,) session index.
            valid: (B, T) bool, False on padded bins (never attended to); None = all real.

        Returns:
            (B, T, D) normalised final tokens; with ``return_block_inputs`` also the list of each
            block's input (for attention maps).
        """
        x = self.tokenizer(heldin, session, valid)  # (B, T, D)
        if valid is not None and bool(valid.all()):
            valid = None  # no padding: attention may take its fused path
        attn_mask = context_window_mask(x.shape[1], self.config.get("context_forward"),
                                        self.config.get("context_backward"), x.device)
        block_inputs = []
        for block in self.blocks:
            block_inputs.append(x)
            x = block(x, key_padding_mask=valid, attn_mask=attn_mask)
        x = self.final_norm(x)
        return (x, block_inputs) if return_block_inputs else x

    def forward(self, heldin: Tensor, session: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, T, U_in_max) counts, (B,) session -> (B, T, U_in_max + U_out_max) log-rates.

        Columns ``[:U_in_max]`` are the held-in units, ``[U_in_max:]`` the held-out units, each
        zero-padded at the end for sessions with fewer units (those columns are meaningless).
        """
        return self.read_out(self.encode(heldin, session, valid), session)

    def read_out(self, encoded: Tensor, session: Tensor) -> Tensor:
        """(B, T, D) encoded bins, (B,) session -> (B, T, U_in_max + U_out_max) log-rates.

        Dropout, the optional factor bottleneck, then the session's own linear read-out.
        """
        hidden = self.rate_dropout(encoded)  # (B, T, D)
        if self.to_factors is not None:
            hidden = self.to_factors(hidden)  # (B, T, F)
        log_rates = torch.einsum("btd,bdu->btu", hidden, self.read_out_weight[session])
        return log_rates + self.read_out_bias[session][:, None, :]

    def unit_valid(self, session: Tensor) -> Tensor:
        """(B, U_in_max + U_out_max) bool: which read-out columns are real units of each sample's session."""
        n_heldin = torch.tensor([spec.n_heldin for spec in self.specs], device=session.device)[session]
        n_heldout = torch.tensor([spec.n_heldout for spec in self.specs], device=session.device)[session]
        heldin_cols = torch.arange(self.max_heldin, device=session.device)[None, :] < n_heldin[:, None]
        heldout_cols = torch.arange(self.max_heldout, device=session.device)[None, :] < n_heldout[:, None]
        return torch.cat([heldin_cols, heldout_cols], dim=1)

    def masked_loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Poisson NLL on the masked held-in entries and on every held-out entry of real bins.

        Returns:
            (scalar loss, logs with the masked and held-out parts separately).
        """
        heldin, heldout, valid, session = batch["heldin"], batch["heldout"], batch["valid"], batch["session"]
        units = self.unit_valid(session)  # (B, U_in + U_out)
        heldin_valid = valid[:, :, None] & units[:, None, :self.max_heldin]  # (B, T, U_in)
        masked_inputs, loss_mask = mask_counts(heldin, self.mask_config, heldin_valid, generator=generator)
        log_rates = self(masked_inputs, session, valid).float()
        targets = torch.cat([heldin, heldout], dim=-1)
        heldout_mask = valid[:, :, None] & units[:, None, self.max_heldin:]
        scored = torch.cat([loss_mask, heldout_mask], dim=-1).float()  # (B, T, U_in + U_out)
        nll = poisson_nll_terms(log_rates, targets) * scored
        n_masked = scored[..., :self.max_heldin].sum().clamp_min(1.0)
        n_heldout = scored[..., self.max_heldin:].sum().clamp_min(1.0)
        loss = nll.sum() / scored.sum().clamp_min(1.0)
        with torch.no_grad():
            logs = {"masked_nll": float(nll[..., :self.max_heldin].sum() / n_masked),
                    "heldout_nll": float(nll[..., self.max_heldin:].sum() / n_heldout)}
        return loss, logs

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
        return self.masked_loss(batch)

    # ------------------------------------------------------------------ data
    def _trial_arrays(self, binned: BinnedTrials, spec: SessionSpec) -> tuple[np.ndarray, np.ndarray]:
        """(N, T, U_in_max) held-in and (N, T, U_out_max) held-out float32 counts, zero-padded units."""
        return padded_unit_counts(binned, spec, self.max_heldin, self.max_heldout)

    def _trial_items(self, session: Session, split: str) -> list[dict]:
        index, spec = self.spec_for(session)
        binned = bin_trials(session, self.bin_size, split=split, behavior=())
        heldin, heldout = self._trial_arrays(binned, spec)
        return [{"session": index, "heldin": heldin[i, :n], "heldout": heldout[i, :n], "valid": binned.mask[i, :n]}
                for i, n in enumerate(binned.lengths)]

    def _init_read_out_bias(self, items: list[dict]) -> None:
        """Start every neuron at its mean training count per bin, so early steps learn structure, not offsets."""
        with torch.no_grad():
            for index in range(len(self.specs)):
                own = [item for item in items if item["session"] == index]
                if not own:
                    continue
                heldin = np.concatenate([item["heldin"] for item in own])
                heldout = np.concatenate([item["heldout"] for item in own])
                mean = np.concatenate([heldin.mean(0), heldout.mean(0)])
                self.read_out_bias[index] = torch.from_numpy(np.log(np.clip(mean, 1e-3, None)).astype(np.float32))

    # ------------------------------------------------------------------ training
    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        train_items = [item for session in sessions for item in self._trial_items(session, "train")]
        if not train_items:
            raise DataError(f"ndt1: no train trials in sessions {[s.id for s in sessions]} (trials.split)")
        self._init_read_out_bias(train_items)
        val_sets = []
        for session in sessions:
            if "val" in session.trials.split:
                index, spec = self.spec_for(session)
                val_sets.append((session, bin_trials(session, self.bin_size, split="val", behavior=()), spec))

        # Co-bps picks the checkpoint; without held-out units (nothing to co-smooth) the masked
        # held-in entries of the val trials do, scored the same way (bits/spike).
        any_heldout = any(spec.n_heldout for _, _, spec in val_sets)
        monitor = "val_co_bps" if any_heldout else "val_masked_bps"

        def validate(model: "NDT1") -> dict[str, float]:
            scores = []
            for session, binned, spec in val_sets:
                if not any_heldout:
                    scores.append(model.masked_bits_per_spike(session, binned))
                elif spec.n_heldout:
                    predicted = model.predict_trials(session, binned)["rates_heldout"][binned.mask]
                    scores.append(bits_per_spike(predicted, binned.counts[..., spec.heldout_index][binned.mask]))
            return {monitor: float(np.mean(scores))}

        train_config = TrainConfig.from_model_config(
            self.config,
            batch_size=min(int(self.config["batch_size"]), len(train_items)),
            monitor=monitor, monitor_mode="max")
        trainer = Trainer(self, train_items, collate_trials, train_config, out_dir=out_dir,
                          val_fn=validate if val_sets else None, progress=progress, run_config={"model": self.name})
        started = time.perf_counter()
        history = trainer.fit(resume=resume)
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    # ------------------------------------------------------------------ prediction
    def _batch_tensors(self, session: Session, binned: BinnedTrials) -> tuple[int, SessionSpec, Tensor, Tensor]:
        index, spec = self.spec_for(session)
        heldin, _ = self._trial_arrays(binned, spec)
        return index, spec, torch.from_numpy(heldin), torch.from_numpy(np.ascontiguousarray(binned.mask))

    @torch.no_grad()
    def _predict_rates(self, index: int, heldin: Tensor, valid: Tensor, **forward_options) -> np.ndarray:
        """(N, T, U_in_max) counts of session ``index`` -> (N, T, U_in_max + U_out_max) expected counts.

        In eval mode, 256 trials at a time (bounded memory); ``forward_options`` go to ``forward``
        (MtM: ``prompt``).
        """
        was_training = self.training
        self.eval()
        device = self.read_out_weight.device
        outputs = []
        for counts, real in zip(torch.split(heldin, 256), torch.split(valid, 256)):
            sessions = torch.full((len(counts),), index, dtype=torch.int64, device=device)
            outputs.append(torch.exp(self(counts.to(device), sessions, real.to(device), **forward_options).float()).cpu())
        self.train(was_training)
        if not outputs:
            return np.zeros(heldin.shape[:2] + (self.max_heldin + self.max_heldout,), dtype=np.float32)
        return torch.cat(outputs).numpy()

    def masked_bits_per_spike(self, session: Session, binned: BinnedTrials, seed: int = 0) -> float:
        """Bits/spike of the held-in entries the training mask hides (a fixed draw), predicted from the rest.

        The masked-modelling objective as a score: what validation uses when there are no held-out
        units to co-smooth.
        """
        index, spec, heldin, valid = self._batch_tensors(session, binned)
        entries = valid[:, :, None] & (torch.arange(heldin.shape[2]) < spec.n_heldin)  # (N, T, U_in_max)
        masked, hidden = mask_counts(heldin, self.mask_config, entries, generator=torch.Generator().manual_seed(seed))
        rates = self._predict_rates(index, masked, valid)[..., :spec.n_heldin]
        spikes = np.where(hidden.numpy(), heldin.numpy(), np.nan)[..., :spec.n_heldin]
        return bits_per_spike(rates, spikes)

    def predict_trials(self, session: Session, binned: BinnedTrials) -> dict[str, np.ndarray]:
        index, spec, heldin, valid = self._batch_tensors(session, binned)
        rates = self._predict_rates(index, heldin, valid)
        return {"rates_heldin": rates[..., :spec.n_heldin],
                "rates_heldout": rates[..., self.max_heldin:self.max_heldin + spec.n_heldout]}

    def attention_arguments(self, n_bins: int, valid: Tensor) -> tuple[Tensor | None, bool, Tensor]:
        """What every block's attention gets: ``(attn_mask, is_causal, key_padding_mask)``."""
        device = valid.device
        return (context_window_mask(n_bins, self.config.get("context_forward"), self.config.get("context_backward"),
                                    device), False, valid)

    @torch.no_grad()
    def attention_maps(self, session: Session, binned: BinnedTrials, trials: np.ndarray | list[int] | None = None,
                       layer: int = 0, **encode_options) -> np.ndarray:
        """Attention probabilities of one layer, for plots.

        Args:
            encode_options: passed on to :meth:`encode` (MtM: ``prompt``).
        Returns:
            (N, H, S, S) float32: how much token ``t`` (row) attends to token ``s`` (column); the
            sequence is the T bins (NDT1), after any context tokens a subclass prepends (MtM).
        """
        index, _, heldin, valid = self._batch_tensors(session, binned)
        if trials is not None:
            heldin, valid = heldin[list(trials)], valid[list(trials)]
        was_training = self.training
        self.eval()
        device = self.read_out_weight.device
        heldin, valid = heldin.to(device), valid.to(device)
        sessions = torch.full((len(heldin),), index, dtype=torch.int64, device=device)
        _, block_inputs = self.encode(heldin, sessions, valid, return_block_inputs=True, **encode_options)
        block = self.blocks[layer]
        attn_mask, is_causal, padding = self.attention_arguments(heldin.shape[1], valid, **encode_options)
        weights = attention_weights(block.attention, block.attention_norm(block_inputs[layer]),
                                    key_padding_mask=padding, attn_mask=attn_mask, is_causal=is_causal)
        self.train(was_training)
        return weights.cpu().numpy()
