"""MtM (Zhang et al. 2024), the "universal translator": one model, many masks, a prompt that says which.

NDT1 learns one thing: fill in hidden time bins. MtM asks the same backbone four questions, by
hiding four different parts of the input — one scheme, drawn at random, per batch:

    neuron        hide some neurons in every bin            -> co-smoothing
    causal        hide some bins, attention sees only the past  -> forward prediction
    intra_region  hide the other areas and part of one area -> predict within an area
    inter_region  hide one whole area                       -> predict an area from the others

A learned **prompt token** names the scheme and a **session token** names the recording; both
are prepended to the bin tokens, so the transformer knows which question it is answering. At
test time the prompt of the task is supplied. Everything else is NDT1 (this class subclasses it):

    [prompt, session, bin_1 .. bin_T] --> L x TransformerBlock --> per-session read-out
    --> log-rates (B, T, U_in + U_out)

Sessions with different neurons share the transformer through per-session read-in and read-out
("stitching"). Held-out neurons (NLB layout) are never an input and always a target, as in NDT1.
With ``mask_mode="temporal"`` the same class is the NDT baseline of the paper: temporal masking
only and a prompt that always says "temporal", so a comparison isolates the masking.

The default recipe (``RECIPE``) adds that temporal scheme, with its own prompt, as a fifth
question drawn in 70% of the batches; the paper's four share the rest. Why: in NLB-layout data
the held-out neurons are hidden and scored in every batch, so co-smoothing is practised under
whichever scheme is drawn, and the four schemes alone (``mask_mode="all"``, uniform draws, the
paper's mix) co-smooth about 0.007 bits/spike worse than temporal masking only. With the fifth
scheme NLB co-smoothing ties the baseline (within 0.003 bits/spike in four runs) while the other
three questions, and the paper's co-smoothing, keep MtM's gains over it.

Region labels: the two region schemes need held-in units in at least two labelled regions
(``units.region``, from the NWB units ``location``; ``""`` = unlabelled, a unit of no region). A
session with fewer cannot practise them: its units get no region, so those masks hide nothing in
it (a warning names it), and its intra-/inter-region evaluations are reported absent (None). When
no session has two regions the region schemes are dropped from the draw with a warning (the rest
of the mix keeps its relative weights), and a ``mask_mode`` with nothing else left is refused with
a one-line :class:`~mini_decoders.errors.RunError`. We warn rather than refuse the default recipe
because it is meant to run on any recording, and most real data come without region labels.

The four evaluations, the paper's own co-smoothing (each held-in neuron predicted from the
others: a question only the neuron scheme practises) and its intra-region question (each held-in
neuron predicted from the rest of its area alone), each scored pooled and per neuron, land in the
``eval`` JSON through :meth:`MtM.extra_metrics` (:mod:`mini_decoders.evaluation`); the four pick
the checkpoint.
:meth:`MtM.finetune` adapts a pretrained model to a new session: new read-in, read-out and
session token, trained with the same masking (``units``: only those; ``full``: everything).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mini_decoders.data.binning import BinnedTrials, bin_trials
from mini_decoders.data.session import Session
from mini_decoders.errors import DataError, RunError
from mini_decoders.evaluation import ALL_TASKS, TASK_KEYS, TASKS, evaluate_tasks, flat_task_scores
from mini_decoders.masking import REGION_SCHEMES, MaskConfig, mask_counts
from mini_decoders.models.base import SessionSpec
from mini_decoders.models.ndt1 import NDT1, collate_trials, context_window_mask
from mini_decoders.models.recipes import Departure
from mini_decoders.nn.losses import poisson_nll_terms
from mini_decoders.training.schedule import default_param_groups
from mini_decoders.training.trainer import TrainConfig, Trainer

PROMPTS = ("neuron", "causal", "intra_region", "inter_region", "temporal", "random")  # one prompt row each
MASK_MODES = {"all": ("neuron", "causal", "intra_region", "inter_region"),  # the paper's MtM
              "all_temporal": ("neuron", "causal", "intra_region", "inter_region", "temporal"),  # + NDT's scheme
              "combined": ("neuron", "causal"),
              **{scheme: (scheme,) for scheme in PROMPTS}}  # "temporal" = the NDT baseline
TASK_PROMPTS = {"co_smoothing": "neuron", "forward_prediction": "causal", "intra_region": "intra_region",
                "inter_region": "inter_region", "heldin_co_smoothing": "neuron", "intra_region_loo": "intra_region"}
N_CONTEXT = 2  # prompt token, session token

# The default mix: NDT's temporal scheme in 70% of the batches, the paper's four in 7.5% each.
RECIPE = dict(mask_mode="all_temporal", scheme_weights={"temporal": 0.7, "neuron": 0.075, "causal": 0.075,
                                                        "intra_region": 0.075, "inter_region": 0.075})
# The paper's MtM: its four schemes, drawn uniformly. Override with ``{**config, **PAPER_RECIPE}``.
PAPER_RECIPE = dict(mask_mode="all", scheme_weights=None)
# The NDT baseline the paper compares against: temporal masks only, the prompt always "temporal".
BASELINE_RECIPE = dict(mask_mode="temporal", scheme_weights=None)
_MTM = dict(RECIPE, mask_ratio=0.3, causal_max_span=10, forward_bins=10, intra_folds=3,
            monitor_key="val_tasks_bps", finetune_lr_scale=0.5, new_param_lr_mult=10.0)
_FINETUNE_STEPS = {"tiny": 10, "quick": 400, "full": 3000}


class MtM(NDT1):
    """NDT1 backbone + multi-task masking + prompt and session tokens.

    Config keys: every NDT1 key (architecture and training come from ``NDT1.CONFIGS``, so tuning
    NDT1 carries over), plus ``mask_mode`` (a key of ``MASK_MODES``), ``mask_ratio`` (0.3),
    ``causal_max_span`` (the causal scheme hides spans of up to this many bins, so with causal
    attention the model practises forecasting up to ``forward_bins`` ahead; the paper hides single
    bins), ``forward_bins`` (10 = 200 ms), ``intra_folds`` (intra-region evaluation hides 1/folds of an
    area per pass), ``monitor_key`` (validation score that picks the checkpoint: the mean bps of
    the four tasks), ``finetune_steps``, ``finetune_lr_scale``, ``new_param_lr_mult``, and
    ``scheme_weights`` (``{scheme: weight}``: how often each scheme of the mode is drawn; None =
    uniformly; schemes not named get 0). The profiles carry ``RECIPE``; a config that changes
    ``mask_mode`` sets ``scheme_weights`` too (None for uniform draws).
    """

    name = "mtm"
    TOKEN = "time bin + task prompt"  # judged like NDT1: co-bps against smoothing
    ADAPTS = ("units", "full")
    ADAPTATION = "a new stitcher: the session's read-in, read-out and token, the rest frozen"
    CONFIGS = {profile: dict(config, **_MTM, finetune_steps=_FINETUNE_STEPS[profile])
               for profile, config in NDT1.CONFIGS.items()}
    # The paper's recipe. Beyond the paper's Fig. 1 (four schemes, alternated during training, a
    # prompt per scheme) the values are those of the authors' code (colehurwitz/IBL_foundation_model:
    # src/models/masker.py@0a11bb9, src/configs/ndt1_stitching_prompting.yaml@384dfe3,
    # src/configs/ssl_sessions_trainer.yaml@0598cb5): one of the four schemes drawn uniformly per
    # batch, 30% masked with zeros (as the default), single masked bins for the causal and temporal
    # schemes (Bernoulli per bin), an NDT1 reading raw counts through a per-session linear
    # "stitcher", dropout 0.4 in the transformer and 0.2 on the embedding, AdamW at 5e-4 with weight
    # decay 0.01 (another commit of the trainer config has 1e-4). Not taken: its OneCycle schedule
    # (15% warm-up) and batch 16, sizes that stay the profile's.
    PAPER = dict(PAPER_RECIPE, causal_max_span=1, mask_max_span=1, kernel_bins=0, factors=None, transform="none",
                 dropout=0.4, embed_dropout=0.2, lr=5e-4, weight_decay=0.01)
    DEPARTURES = (
        Departure("temporal", "NDT's temporal scheme in the mix", ("mask_mode", "scheme_weights"),
                  "the four schemes (neuron, causal, intra-, inter-region), one drawn uniformly per batch",
                  "a fifth, NDT's temporal scheme with its own prompt, in 70% of the batches; the four share the rest",
                  "in NLB-layout data the held-out neurons are scored in every batch; the temporal scheme keeps "
                  "NLB co-smoothing level with the temporal-only baseline"),
        Departure("spans", "masked spans", ("causal_max_span", "mask_max_span"),
                  "the causal (and the baseline's temporal) scheme hides single bins",
                  "spans of up to 10 bins (causal) and NDT1's spans (temporal: up to 3 bins, quick)",
                  "practise forecasting several bins ahead, as forward prediction asks"),
        Departure("kernel", "learned temporal kernel", ("kernel_bins",),
                  "each token is one bin's counts", "a learned filter over 9 bins that starts as Gaussian smoothing",
                  "start from chapter 2's smoothing (see chapter 3)"),
        Departure("factors", "factor bottleneck", ("factors",),
                  "per-session read-out from the token", "rates read from 16 shared factors",
                  "fewer numbers to fit from ~200 trials (see chapter 3)"),
        Departure("log1p", "compressed counts", ("transform",),
                  "raw counts into the stitcher", "log(1 + count)", "a burst of spikes does not dominate a token"),
        Departure("dropout", "less dropout", ("dropout", "embed_dropout"),
                  "dropout 0.4 in the transformer, 0.2 on the embedding", "0.2 and 0.3 (quick)",
                  "a 2,000-step budget: heavy dropout slows learning more than it prevents overfitting"),
        Departure("optimiser", "optimiser settings", ("lr", "weight_decay"),
                  "AdamW, learning rate 5e-4, weight decay 0.01 (1,000 epochs)", "learning rate 5e-3, weight decay 0.1",
                  "2,000 steps instead of 1,000 epochs: a higher rate, with more decay"),
    )

    def __init__(self, specs: list[SessionSpec], config: dict) -> None:
        super().__init__(specs, config)
        mode = str(self.config.get("mask_mode", "all"))
        if mode not in MASK_MODES:
            raise RunError(f"mtm: mask_mode must be one of {sorted(MASK_MODES)}, got {mode!r}")
        self.schemes = MASK_MODES[mode]
        weights = self.config.get("scheme_weights")  # .get: runs saved before it was a profile key lack it
        if weights is not None:
            unknown = sorted(set(weights) - set(self.schemes))
            if unknown or any(float(w) < 0 for w in weights.values()) or sum(float(w) for w in weights.values()) <= 0:
                raise RunError(f"mtm: scheme_weights must give non-negative weights, not all zero, to schemes of "
                               f"mask_mode {mode!r} {list(self.schemes)}; got {weights!r} (set scheme_weights "
                               f"to None for uniform draws)")
            weights = torch.tensor([float(weights.get(scheme, 0.0)) for scheme in self.schemes])
        self.scheme_probabilities = None if weights is None else weights / weights.sum()  # (S,) or None
        dim = int(self.config["dim"])
        self.prompt_embedding = nn.Embedding(len(PROMPTS), dim)
        self.session_embedding = nn.Embedding(len(self.specs), dim)
        for table in (self.prompt_embedding, self.session_embedding):
            nn.init.normal_(table.weight, std=0.02)
        # Region of every held-in unit (plain python, in extra_state); -1 = no region (unlabelled, or
        # padding in the table) until set_regions has seen the data.
        self.region_names: list[str] = [""]
        self.unit_regions: list[list[int]] = [[-1] * spec.n_heldin for spec in self.specs]
        self._region_table: Tensor | None = None

    @classmethod
    def build(cls, sessions: list[Session], config: dict) -> "MtM":
        model = super().build(sessions, config)
        model.set_regions(sessions)
        return model

    # ------------------------------------------------------------------ regions and prompts
    def set_regions(self, sessions: list[Session]) -> None:
        """Remember the region of each held-in unit of ``sessions`` (from ``units.region``).

        An unlabelled unit (``""``) gets no region (-1); so do all units of a session whose held-in
        units span fewer than two labelled regions: the region schemes cannot be practised there
        (warned about; see the module docstring).

        Raises:
            RunError: the mask mode has only region schemes and no session can practise them.
        """
        unlabelled = []
        for session in sessions:
            index, spec = self.spec_for(session)
            names = session.units.region[spec.heldin_index].astype(str).tolist()
            if len(set(names) - {""}) < 2:
                unlabelled.append(session.id)
                self.unit_regions[index] = [-1] * len(names)
                continue
            for name in names:
                if name and name not in self.region_names:
                    self.region_names.append(name)
            self.unit_regions[index] = [self.region_names.index(name) if name else -1 for name in names]
        self._region_table = None
        region_schemes = [scheme for scheme in self.schemes if scheme in REGION_SCHEMES]
        if not region_schemes or not unlabelled:
            return
        how = "set `units.region` (NWB units `location`) to at least two regions"
        if self.regions_practised():
            message = (f"mtm: session(s) {unlabelled} have held-in units in fewer than two labelled regions, so the "
                       f"{' and '.join(region_schemes)} masks hide nothing in them; {how} to practise them there")
        else:
            schemes, _ = self.drawn_schemes()  # a RunError if nothing is left
            message = (f"mtm: no session has held-in units in two or more labelled regions ({unlabelled}), so mask_mode "
                       f"{self.config.get('mask_mode', 'all')!r} trains without {' and '.join(region_schemes)}, on "
                       f"{list(schemes)}; {how}, or choose a mask_mode without region schemes (e.g. 'combined' or "
                       "'temporal')")
        if message != getattr(self, "_region_warning", None):  # build and fit both look: say it once
            self._region_warning = message
            warnings.warn(message, UserWarning, stacklevel=2)

    def regions_practised(self) -> bool:
        """Whether any session has held-in units in two or more regions (so the region schemes hide something)."""
        return any(len(set(regions) - {-1}) >= 2 for regions in self.unit_regions)

    def drawn_schemes(self) -> tuple[tuple[str, ...], Tensor | None]:
        """The schemes training draws from and their probabilities (None = uniform).

        The mode's own, except the region schemes when no session can practise them
        (:meth:`regions_practised`); the others keep their relative weights.

        Raises:
            RunError: nothing would be left to draw.
        """
        if self.regions_practised() or not any(scheme in REGION_SCHEMES for scheme in self.schemes):
            return self.schemes, self.scheme_probabilities
        keep = [i for i, scheme in enumerate(self.schemes) if scheme not in REGION_SCHEMES]
        probabilities = None if self.scheme_probabilities is None else self.scheme_probabilities[keep]
        if not keep or (probabilities is not None and float(probabilities.sum()) <= 0):
            raise RunError(f"mtm: mask_mode {self.config.get('mask_mode', 'all')!r} (scheme_weights "
                           f"{self.config.get('scheme_weights')!r}) masks only by brain region, but no session has "
                           "held-in units in two or more labelled regions; set `units.region` (NWB units "
                           "`location`), or choose a mask_mode without region schemes, e.g. 'combined' or 'temporal'")
        return (tuple(self.schemes[i] for i in keep),
                None if probabilities is None else probabilities / probabilities.sum())

    def region_table(self, session: Tensor) -> Tensor:
        """(B,) session index -> (B, U_in_max) int64 region of each held-in unit, -1 on padding."""
        if self._region_table is None:
            table = torch.full((len(self.specs), self.max_heldin), -1, dtype=torch.int64)
            for index, regions in enumerate(self.unit_regions):
                table[index, :len(regions)] = torch.tensor(regions, dtype=torch.int64)
            self._region_table = table
        self._region_table = self._region_table.to(session.device)
        return self._region_table[session]

    def prompt_for(self, task: str) -> str:
        """The prompt to answer ``task`` with: its own scheme if trained on it, else the first one trained."""
        if task not in TASK_PROMPTS:
            raise DataError(f"mtm: task must be one of {tuple(TASK_PROMPTS)}, got {task!r}")
        wanted = TASK_PROMPTS[task]
        return wanted if wanted in self.schemes else self.schemes[0]

    # ------------------------------------------------------------------ the network
    def attention_mask(self, n_bins: int, causal: bool,
                       device: torch.device | str = "cpu") -> tuple[Tensor | None, bool]:
        """Mask of the ``N_CONTEXT + T`` sequence: ``(mask or None, is_causal)``.

        Causal: every token sees itself and earlier tokens, so a bin sees the prompt, the session
        token and the bins up to its own, and the context tokens see no bin at all (through them
        the future would leak back in the next layer). Otherwise full context, or NDT1's limited
        window between bins (context tokens are always visible).
        """
        window = context_window_mask(n_bins, 0 if causal else self.config.get("context_forward"),
                                     self.config.get("context_backward"), device)
        if causal and self.config.get("context_backward") is None:
            return None, True  # SDPA builds the triangle itself
        if window is None:
            return None, False
        length = N_CONTEXT + n_bins
        allowed = torch.ones(length, length, dtype=torch.bool, device=device)
        if causal:
            allowed = allowed.tril()
        allowed[N_CONTEXT:, N_CONTEXT:] &= window
        return allowed, False

    def encode(self, heldin: Tensor, session: Tensor, valid: Tensor | None = None, prompt: str | None = None,
               return_block_inputs: bool = False):
        """Prompt + session + bin tokens through the transformer.

        Args:
            heldin: (B, T, U_in_max) counts the model sees.
            session: (B,) session index.
            valid: (B, T) bool, False on padded bins; None = all real.
            prompt: one of ``PROMPTS`` for the whole batch (None: the co-smoothing prompt).

        Returns:
            (B, T, D) normalised bin tokens (context tokens dropped); with ``return_block_inputs``
            also each block's (B, N_CONTEXT + T, D) input.
        """
        prompt = self.prompt_for("co_smoothing") if prompt is None else prompt
        if prompt not in PROMPTS:
            raise DataError(f"mtm: prompt must be one of {PROMPTS}, got {prompt!r}")
        batch, n_bins = heldin.shape[:2]
        causal = prompt == "causal"
        bins = self.tokenizer(heldin, session, valid, causal=causal)  # (B, T, D); a causal kernel, if any
        prompt_index = torch.full((batch,), PROMPTS.index(prompt), dtype=torch.int64, device=heldin.device)
        context = torch.stack([self.prompt_embedding(prompt_index), self.session_embedding(session)], dim=1)  # (B,2,D)
        x = torch.cat([context, bins], dim=1)  # (B, 2 + T, D)
        padding = None
        if valid is not None and not bool(valid.all()):
            padding = torch.cat([torch.ones(batch, N_CONTEXT, dtype=torch.bool, device=valid.device), valid], dim=1)
        attn_mask, is_causal = self.attention_mask(n_bins, causal, heldin.device)
        block_inputs = []
        for block in self.blocks:
            block_inputs.append(x)
            x = block(x, key_padding_mask=padding, attn_mask=attn_mask, is_causal=is_causal)
        x = self.final_norm(x[:, N_CONTEXT:])
        return (x, block_inputs) if return_block_inputs else x

    def forward(self, heldin: Tensor, session: Tensor, valid: Tensor | None = None,
                prompt: str | None = None) -> Tensor:
        """(B, T, U_in_max) counts, (B,) session -> (B, T, U_in_max + U_out_max) log-rates (as NDT1)."""
        return self.read_out(self.encode(heldin, session, valid, prompt), session)

    # ------------------------------------------------------------------ the objective
    def draw_scheme(self, generator: torch.Generator | None = None) -> str:
        """One of the schemes of :meth:`drawn_schemes` (one per batch): uniformly, or by ``scheme_weights``."""
        schemes, probabilities = self.drawn_schemes()
        if probabilities is None:
            return schemes[int(torch.randint(len(schemes), (1,), generator=generator))]
        return schemes[int(torch.multinomial(probabilities, 1, generator=generator))]

    def scheme_config(self, scheme: str) -> MaskConfig:
        """The masking recipe of ``scheme``: the config's ratio and BERT fractions, NDT1's spans."""
        config = replace(self.mask_config, scheme=scheme)
        if scheme == "causal":  # spans of hidden bins: practise forecasting several bins ahead, not one
            config = replace(config, max_span=int(self.config.get("causal_max_span", config.max_span)))
        return config

    def masked_loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None,
                    scheme: str | None = None) -> tuple[Tensor, dict]:
        """Poisson NLL on the entries ``scheme`` scores and on every held-out entry of real bins.

        The masked input goes in with the scheme's prompt (and causal attention for ``causal``).

        Returns:
            (scalar loss, logs with the masked and held-out parts separately).
        """
        heldin, heldout, valid, session = batch["heldin"], batch["heldout"], batch["valid"], batch["session"]
        scheme = self.draw_scheme(generator) if scheme is None else scheme
        units = self.unit_valid(session)  # (B, U_in + U_out)
        heldin_valid = valid[:, :, None] & units[:, None, :self.max_heldin]  # (B, T, U_in)
        masked_inputs, loss_mask = mask_counts(heldin, self.scheme_config(scheme), heldin_valid, generator=generator,
                                               regions=self.region_table(session))
        log_rates = self(masked_inputs, session, valid, prompt=scheme).float()
        targets = torch.cat([heldin, heldout], dim=-1)
        heldout_mask = valid[:, :, None] & units[:, None, self.max_heldin:]
        scored = torch.cat([loss_mask, heldout_mask], dim=-1).float()  # (B, T, U_in + U_out)
        nll = poisson_nll_terms(log_rates, targets) * scored
        loss = nll.sum() / scored.sum().clamp_min(1.0)
        with torch.no_grad():
            nll_per_unit, n_per_unit = nll.sum((0, 1)), scored.sum((0, 1))  # (U_in + U_out,)
            h = self.max_heldin
            logs = {"masked_nll": float(nll_per_unit[:h].sum() / n_per_unit[:h].sum().clamp_min(1.0)),
                    "heldout_nll": float(nll_per_unit[h:].sum() / n_per_unit[h:].sum().clamp_min(1.0))}
        return loss, logs

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict_masked(self, session: Session, binned: BinnedTrials, hidden: np.ndarray | None = None,
                       prompt: str | None = None) -> np.ndarray:
        """Rates of every unit with some held-in entries hidden (set to 0) from the input.

        Args:
            hidden: (N, T, U_in) bool held-in entries to hide; None = nothing.
            prompt: one of ``PROMPTS``; None = the co-smoothing prompt.

        Returns:
            (N, T, U) float32 expected counts per bin, units in the session's table order.
        """
        index, spec, heldin, valid = self._batch_tensors(session, binned)
        if hidden is not None:
            if hidden.shape != (heldin.shape[0], heldin.shape[1], spec.n_heldin):
                raise DataError(f"`hidden` must be (N, T, U_in) = {(heldin.shape[0], heldin.shape[1], spec.n_heldin)}, "
                                f"got {hidden.shape}")
            heldin[..., :spec.n_heldin] = heldin[..., :spec.n_heldin].masked_fill(torch.from_numpy(hidden), 0.0)
        rates = self._predict_rates(index, heldin, valid, prompt=prompt)
        out = np.empty(rates.shape[:2] + (len(spec.heldout),), dtype=np.float32)
        out[..., spec.heldin_index] = rates[..., :spec.n_heldin]
        out[..., spec.heldout_index] = rates[..., self.max_heldin:self.max_heldin + spec.n_heldout]
        return out

    def evaluate_tasks(self, session: Session, binned: BinnedTrials, prompts: dict[str, str] | None = None,
                       tasks: tuple[str, ...] = ALL_TASKS) -> dict[str, dict[str, float | None]]:
        """The MtM evaluations on the trials of ``binned`` (see :mod:`mini_decoders.evaluation`).

        Args:
            prompts: task -> prompt to answer it with (default :meth:`prompt_for`); e.g. to see
                what a wrong prompt costs.
            tasks: which evaluations (default all six: the four questions, the paper's held-in
                co-smoothing and its leave-one-out intra-region question).

        Returns:
            task -> ``{"bps", "neuron_bps", "psth_r2", "trial_r2"}``.
        """
        self.spec_for(session)
        prompts = {**{task: self.prompt_for(task) for task in tasks}, **(prompts or {})}
        return evaluate_tasks(lambda hidden, task: self.predict_masked(session, binned, hidden, prompts[task]),
                              binned, session.units.heldout, session.units.region, tasks=tasks,
                              forward_bins=int(self.config["forward_bins"]), n_folds=int(self.config["intra_folds"]))

    def extra_metrics(self, session: Session, binned: BinnedTrials) -> dict[str, float | None]:
        """The eval-JSON entries of :meth:`evaluate_tasks`: ``cosmooth_bps``, ``intra_loo_neuron_bps``, ..."""
        return flat_task_scores(self.evaluate_tasks(session, binned))

    # ------------------------------------------------------------------ training
    def _validation(self, sessions: list[Session]):
        val_sets = [(session, bin_trials(session, self.bin_size, split="val", behavior=()))
                    for session in sessions if "val" in session.trials.split]

        def validate(model: "MtM") -> dict[str, float]:
            per_task: dict[str, list[float]] = {task: [] for task in TASKS}
            for session, binned in val_sets:
                for task, scores in model.evaluate_tasks(session, binned, tasks=TASKS).items():
                    if scores["bps"] is not None:
                        per_task[task].append(scores["bps"])
            means = {f"val_{TASK_KEYS[task]}_bps": float(np.mean(v)) for task, v in per_task.items() if v}
            means["val_tasks_bps"] = float(np.mean(list(means.values()))) if means else float("nan")
            if "val_cosmooth_bps" in means:
                means["val_co_bps"] = means["val_cosmooth_bps"]
            return means

        return validate if val_sets else None

    def _train(self, sessions: list[Session], train_config: dict, *, out_dir: Path | None, resume: bool,
               progress: bool, param_groups: list[dict] | None = None) -> dict:
        train_items = [item for session in sessions for item in self._trial_items(session, "train")]
        if not train_items:
            raise DataError(f"mtm: no train trials in sessions {[s.id for s in sessions]} (trials.split)")
        self._init_read_out_bias(train_items)
        config = TrainConfig.from_model_config(train_config,
                                               batch_size=min(int(train_config["batch_size"]), len(train_items)),
                                               monitor=str(self.config["monitor_key"]), monitor_mode="max")
        trainer = Trainer(self, train_items, collate_trials, config, out_dir=out_dir,
                          val_fn=self._validation(sessions), param_groups=param_groups, progress=progress,
                          run_config={"model": self.name})
        started = time.perf_counter()
        history = trainer.fit(resume=resume)
        return {"samples": trainer.samples_seen, "steps": trainer.step, "seconds": time.perf_counter() - started,
                "records": history.records}

    def fit(self, sessions: list[Session], config: dict, *, out_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> dict:
        self.set_regions(sessions)
        return self._train(sessions, config, out_dir=out_dir, resume=resume, progress=progress)

    # ------------------------------------------------------------------ a new session
    def per_session_parameters(self) -> list[nn.Parameter]:
        """Read-in, read-out and session token: the stacked (S, ...) parameters, one row per session."""
        return [self.tokenizer.read_in_weight, self.tokenizer.read_in_bias, self.read_out_weight,
                self.read_out_bias, self.session_embedding.weight]

    def add_sessions(self, sessions: list[Session]) -> list[int]:
        """Grow the per-session parameters for sessions the model has not seen; returns their indices.

        Old rows keep their values; a new session gets a fresh read-in, read-out (small weights,
        bias set from its mean rates when training starts) and session token, initialised as in
        ``__init__``.
        """
        new_specs = [SessionSpec.of(s) for s in sessions if s.id not in self.session_index]
        for session in sessions:
            if session.id in self.session_index:
                self.spec_for(session)  # a known id must still have its units
        if not new_specs:
            return []
        for spec in new_specs:
            if spec.n_heldin == 0:
                raise DataError(f"mtm reads held-in units, but session {spec.id!r} has none")
        n_old, old_in, old_out = len(self.specs), self.max_heldin, self.max_heldout
        specs = self.specs + new_specs
        n_all = len(specs)
        new_in, new_out = max(s.n_heldin for s in specs), max(s.n_heldout for s in specs)
        dim, read_dim = int(self.config["dim"]), self.read_out_weight.shape[1]  # read_dim: D, or F factors
        with torch.no_grad():
            read_in = torch.randn(n_all, new_in, dim) / math.sqrt(new_in)
            read_in[:n_old, :old_in] = self.tokenizer.read_in_weight.detach().cpu()
            read_in_bias = torch.zeros(n_all, dim)
            read_in_bias[:n_old] = self.tokenizer.read_in_bias.detach().cpu()
            read_out = torch.zeros(n_all, read_dim, new_in + new_out)
            read_out[n_old:] = torch.randn(n_all - n_old, read_dim, new_in + new_out) * 0.02 / math.sqrt(read_dim)
            read_out_bias = torch.full((n_all, new_in + new_out), -2.0)
            old_w, old_b = self.read_out_weight.detach().cpu(), self.read_out_bias.detach().cpu()
            # Columns are [held-in | held-out], each padded to the largest session: move the blocks.
            read_out[:n_old, :, :old_in] = old_w[..., :old_in]
            read_out[:n_old, :, new_in:new_in + old_out] = old_w[..., old_in:]
            read_out_bias[:n_old, :old_in] = old_b[:, :old_in]
            read_out_bias[:n_old, new_in:new_in + old_out] = old_b[:, old_in:]
            session_rows = torch.randn(n_all, dim) * 0.02
            session_rows[:n_old] = self.session_embedding.weight.detach().cpu()
        device = self.read_out_weight.device
        self.tokenizer.read_in_weight = nn.Parameter(read_in.to(device))
        self.tokenizer.read_in_bias = nn.Parameter(read_in_bias.to(device))
        self.tokenizer.units_per_session = [s.n_heldin for s in specs]
        self.tokenizer.max_units = new_in
        self.read_out_weight = nn.Parameter(read_out.to(device))
        self.read_out_bias = nn.Parameter(read_out_bias.to(device))
        self.session_embedding = nn.Embedding.from_pretrained(session_rows.to(device), freeze=False)
        self.specs, self.max_heldin, self.max_heldout = specs, new_in, new_out
        self.session_index = {spec.id: i for i, spec in enumerate(specs)}
        self.unit_regions += [[-1] * spec.n_heldin for spec in new_specs]  # set_regions fills them in
        self._region_table = None
        fresh = {k: v.shape for k, v in type(self)(specs, self.config).state_dict().items()}
        mine = {k: v.shape for k, v in self.state_dict().items()}
        if fresh != mine:  # NDT1 grew a per-session part this method does not know about
            raise RunError(f"mtm.add_sessions: parameters {sorted(k for k in fresh if fresh[k] != mine.get(k))} "
                           "were not grown; update MtM.add_sessions")
        return list(range(n_old, n_all))

    def finetune(self, sessions: list[Session], mode: str, config: dict | None = None, *, out_dir: Path | None = None,
                 progress: bool = True, resume: bool = False) -> dict:
        """Adapt to new sessions with the same masking objective.

        Args:
            sessions: the new sessions (train trials fit, val trials choose the step).
            mode: ``"units"``: learn only the new sessions' read-in, read-out and session token;
                every other weight (and every old session's row) stays bit-identical.
                ``"full"``: everything, the per-session parameters at ``new_param_lr_mult`` x the
                learning rate.
            config: overrides of the model config (``Run.finetune`` passes the run's own); it
                trains ``finetune_steps`` steps at ``finetune_lr_scale`` x ``lr``, with ``warmup_steps``
                a tenth of that.

        Returns:
            the training history (``samples``, ``steps``, ``seconds``, ``records``).
        """
        if mode not in ("units", "full"):
            raise RunError(f"mtm finetune: mode must be 'units' or 'full', got {mode!r}")
        merged = {**self.config, **(config or {})}
        steps = int(merged["finetune_steps"])
        train_config = {**merged, "max_steps": steps, "warmup_steps": max(1, steps // 10),
                        "lr": float(merged["lr"]) * float(merged["finetune_lr_scale"])}
        new = self.add_sessions(sessions)
        if mode == "units" and not new:
            raise RunError("mtm finetune --mode units: nothing to learn, every session is already known")
        self.set_regions(sessions)
        per_session = self.per_session_parameters()
        if mode == "units":
            for param in self.parameters():
                param.requires_grad_(False)
            for param in per_session:
                param.requires_grad_(True)
            # Old rows get no gradient (their sessions are not in the batches); no decay keeps them exact.
            groups = [{"params": per_session, "lr_mult": 1.0, "weight_decay": 0.0}]
        else:
            ids = {id(p) for p in per_session}
            shared = [g for g in default_param_groups(self, float(train_config["weight_decay"]))]
            groups = [{**g, "params": [p for p in g["params"] if id(p) not in ids]} for g in shared]
            groups = [g for g in groups if g["params"]]
            groups.append({"params": per_session, "lr_mult": float(merged["new_param_lr_mult"]), "weight_decay": 0.0})
        try:
            return self._train(sessions, train_config, out_dir=out_dir, resume=resume, progress=progress,
                               param_groups=groups)
        finally:
            for param in self.parameters():
                param.requires_grad_(True)

    # ------------------------------------------------------------------ state and plots
    def extra_state(self) -> dict[str, Any]:
        return {"region_names": list(self.region_names), "unit_regions": [list(r) for r in self.unit_regions]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "unit_regions" in state:
            self.region_names = [str(name) for name in state["region_names"]]
            self.unit_regions = [[int(r) for r in regions] for regions in state["unit_regions"]]
            self._region_table = None

    def attention_arguments(self, n_bins: int, valid: Tensor, prompt: str | None = None
                            ) -> tuple[Tensor | None, bool, Tensor]:
        """As NDT1's, for the ``N_CONTEXT + T`` sequence of ``prompt`` (rows/columns 0, 1: prompt, session)."""
        prompt = self.prompt_for("co_smoothing") if prompt is None else prompt
        attn_mask, is_causal = self.attention_mask(n_bins, prompt == "causal", valid.device)
        padding = torch.cat([torch.ones(len(valid), N_CONTEXT, dtype=torch.bool, device=valid.device), valid], 1)
        return attn_mask, is_causal, padding
