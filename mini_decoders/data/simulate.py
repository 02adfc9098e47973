"""A simulated multi-session, multi-region reaching experiment with known ground truth.

Why simulate at all? Because a simulator knows the *true* firing rate of every neuron at every
moment, so each chapter can print the oracle — the best score any model could reach on the same
spikes — next to the model's own score.

The generative story, top-down:

1. **Shared latent dynamics.** One low-dimensional latent state drives every session. Each latent
   "mode" is a complex number ``z`` that obeys ``z[t+1] = a * z[t] + input[t]`` with
   ``a = exp((-1/tau + i*omega) * dt)``: a damped rotation in a plane (``omega = 0`` gives a plain
   leaky integrator). Complex first-order filters are the cheapest exact way to get rotational
   dynamics, and :func:`scipy.signal.lfilter` runs them over a whole session without a Python loop.
   Per trial: a target appears and a *preparatory* mode is driven towards the reach direction;
   at the go time, a smooth kick sets off two *velocity* modes (x and y), a third rotational mode
   and a condition-invariant mode. White noise drives every mode, so single trials differ from the
   condition average in ways the neurons reveal (this is what a model can exploit beyond a PSTH).
2. **Behaviour.** Hand velocity is a fixed linear readout of the velocity modes, delayed by
   ``lag`` (neural activity leads movement by ~100 ms), plus a little measurement noise.
3. **Per-session neurons.** Each session draws its *own* units: a baseline log-rate and random
   loadings on the latents. Models must therefore learn a per-session read-in.
4. **Regions.** Units belong to regions (``M1``, ``PMd``) that weight the shared modes differently
   and also read a region-*private* noise mode, so one region predicts another only in part.
5. **Spikes.** ``rate = min(exp(baseline + loading . latents), rate_cap)`` is piecewise constant on a
   fine grid (``dt``); counts per fine bin are Poisson and each spike is placed uniformly inside its
   fine bin.

Everything is seeded per session from ``(seed, session index)``, so session ``k`` is identical no
matter how many sessions are simulated.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from mini_decoders.data.binning import bin_trials
from mini_decoders.data.session import Session, TimeSeries, Trials, Units
from mini_decoders.errors import DataError
from mini_decoders.files import replacing
from mini_decoders.metrics import bits_per_spike, velocity_r2_from_rates

N_CONDITIONS = 8  # reach directions, 45 degrees apart (centre-out task)

# The latent modes. Complex modes contribute two real latent dimensions (real, imaginary part).
SHARED_LATENT_NAMES = ("prep_re", "prep_im", "vel_x_re", "vel_x_im", "vel_y_re", "vel_y_im",
                       "rot_re", "rot_im", "cis")


@dataclass
class SimulationConfig:
    """Every parameter of :func:`simulate`; saved with the dataset so a run can be reproduced.

    Times are in seconds, rates in Hz, velocity in mm/s.
    """

    n_sessions: int = 3
    n_trials: int = 300
    n_units: int | tuple[int, ...] | None = None  # None: each session draws its own count in unit_range
    unit_range: tuple[int, int] = (100, 140)
    seed: int = 0
    regions: tuple[str, ...] = ("M1", "PMd")
    trial_length: float | tuple[float, float] = 1.0  # a (min, max) pair gives unequal lengths (20 ms steps)
    length_step: float = 0.02
    gap_range: tuple[float, float] = (0.3, 0.7)  # inter-trial interval with spontaneous activity
    dt: float = 0.01  # fine grid of the true rates; must divide 20 ms
    heldout_fraction: float = 0.25
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train, val, test
    # trial timeline, relative to trial start
    target_on: float = 0.05
    go_range: tuple[float, float] = (0.2, 0.3)  # neural "go": the kick that starts the reach
    lag: float = 0.1  # hand velocity follows the velocity modes by this much
    # dynamics
    prep_tau: float = 0.08
    reach_tau: float = 0.35
    reach_frequency: float = 1.2  # Hz; half a cycle is one reach
    rot_tau: float = 0.25
    rot_frequency: float = 2.5
    cis_tau: float = 0.15
    private_tau: float = 0.3
    kick_width: float = 0.06  # the go kick is a smooth (Hann) pulse of this width, not a jump
    # variability
    noise_std: float = 0.25  # stationary std of the noise part of each shared mode
    velocity_noise_std: float = 0.08  # smaller: the hand is still between reaches
    private_noise_std: float = 0.6
    rest_noise_gain: float = 0.3  # noise is weaker between trials (the animal is at rest)
    gain_std: float = 0.15  # trial-to-trial gain of the go kick (faster / slower reaches)
    # neurons
    baseline_rate: float = 11.5  # median baseline rate (Hz)
    baseline_log_std: float = 0.6
    loading_norm: float = 2.3  # length of each unit's loading vector on the latents
    loading_spread: float = 0.2  # the length varies uniformly by +-20% across units
    # None: every session records its own, unrelated units (a new array, or spike sorting that cannot
    # match units across days). A number d in [0, 1]: the sessions of one subject record the same
    # units, as one implanted array does day after day: each unit keeps its place in the unit table,
    # its region and whether it is held out, while each day its loading and baseline drift away from
    # the array's own draw by d (0 = the same tuning every day; two days' loadings correlate by 1 - d^2).
    array_drift: float | None = None
    rate_cap: float = 250.0
    # behaviour
    velocity_scale: float = 400.0  # mm/s per unit of the velocity modes' imaginary part
    velocity_obs_std: float = 5.0  # mm/s measurement noise
    behavior_rate: float = 1000.0  # Hz sampling of hand_vel
    subjects: tuple[str, ...] = ("monkey_A", "monkey_B")
    task: str = "center_out"

    def region_weights(self) -> np.ndarray:
        """(R, D_shared) how strongly units of each region read each shared latent.

        The first region leans on movement (velocity, rotation) modes, the second on
        preparation; further regions cycle through the pattern with a different mix, so regions
        are correlated but not redundant.
        """
        patterns = np.array([
            # prep_re prep_im vx_re vx_im vy_re vy_im rot_re rot_im cis
            [0.4, 0.4, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9, 1.0],  # motor-like
            [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.3, 0.3, 0.6],  # premotor-like
            [0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 1.0, 1.0, 0.3],
        ])
        return patterns[np.arange(len(self.regions)) % len(patterns)]


@dataclass
class TrueRates:
    """The ground truth of one simulated session on a fine time grid.

    Attributes:
        session_id: the session it belongs to.
        rates: (T_fine, U) float32 firing rate (Hz), constant on ``[t0 + k*dt, t0 + (k+1)*dt)``.
        t0: left edge of the first fine bin (s).
        dt: fine bin width (s).
        unit_ids: (U,) str, the session's unit ids in table order.
        latents: (T_fine, D) float32 latent state (shared modes, then region-private modes), or None.
        latent_names: (D,) names of the latent dimensions.
        velocity: (T_fine, 2) float32 noise-free hand velocity (mm/s) at the fine bins, or None.
    """

    session_id: str
    rates: np.ndarray
    t0: float
    dt: float
    unit_ids: np.ndarray
    latents: np.ndarray | None = None
    latent_names: list[str] = field(default_factory=list)
    velocity: np.ndarray | None = None

    @property
    def stop_time(self) -> float:
        """Right edge of the last fine bin (s)."""
        return self.t0 + len(self.rates) * self.dt

    def _cumulative(self) -> np.ndarray:
        """(T_fine + 1, U) float64 expected spikes from t0 up to each fine edge."""
        if getattr(self, "_cumulative_cache", None) is None:
            # float64 so that differences of large sums stay exact to ~1e-9 spikes
            self._cumulative_cache = np.concatenate(
                [np.zeros((1, self.rates.shape[1])), np.cumsum(self.rates.astype(np.float64) * self.dt, axis=0)])
        return self._cumulative_cache

    def integral_to(self, times: np.ndarray) -> np.ndarray:
        """(..., U) expected number of spikes between ``t0`` and each time in ``times`` (...)."""
        times = np.asarray(times, dtype=np.float64)
        n_fine = len(self.rates)
        position = (times - self.t0) / self.dt
        # times on a fine edge (up to fp error) are treated as that edge, not a sliver of the previous bin
        snapped = np.where(np.abs(position - np.round(position)) < 1e-6, np.round(position), position)
        index = np.clip(np.floor(snapped).astype(np.int64), 0, n_fine - 1)
        fraction = snapped - index  # in [0, 1]; equals 1 only at the very last edge
        return self._cumulative()[index] + fraction[..., None] * self.rates[index].astype(np.float64) * self.dt

    def expected_counts(self, starts: np.ndarray, n_bins: np.ndarray | int, bin_size: float) -> np.ndarray:
        """Exact expected spike counts in bins after each start.

        Bin ``i`` of interval ``n`` covers ``[starts[n] + i*bin_size, starts[n] + (i+1)*bin_size)``, the
        same convention as :func:`mini_decoders.data.binning.bin_intervals`; the integral of the
        piecewise-constant rate is exact even when bins do not line up with the fine grid.

        Args:
            starts: (N,) interval starts (s).
            n_bins: (N,) or scalar number of bins per interval.
            bin_size: bin width (s).

        Returns:
            (N, T_max, U) float64 expected counts; bins past an interval's own length are NaN.
        """
        starts = np.asarray(starts, dtype=np.float64)
        n_bins = np.broadcast_to(np.asarray(n_bins, dtype=np.int64), starts.shape)
        if bin_size <= 0:
            raise DataError(f"expected_counts: bin_size must be > 0 s, got {bin_size}")
        t_max = int(n_bins.max()) if len(starts) else 0
        stops = starts + n_bins * bin_size
        tolerance = 1e-6 * self.dt
        if len(starts) and (starts.min() < self.t0 - tolerance or stops.max() > self.stop_time + tolerance):
            raise DataError(f"expected_counts: intervals span {starts.min():.4f}-{stops.max():.4f} s but the true "
                            f"rates of session {self.session_id!r} cover {self.t0:.4f}-{self.stop_time:.4f} s")
        edges = starts[:, None] + np.arange(t_max + 1) * bin_size  # (N, T_max + 1)
        edges = np.minimum(edges, self.stop_time)  # padded edges may run past the end; they become NaN below
        cumulative = self.integral_to(edges)  # (N, T_max + 1, U)
        counts = np.diff(cumulative, axis=1)
        counts[np.arange(t_max)[None, :] >= n_bins[:, None]] = np.nan
        return counts

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write to HDF5 atomically (temp file in the same folder, then rename)."""
        import h5py  # slow to import; simulating needs no file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as temp, h5py.File(temp, "w") as f:
            f.attrs["session_id"] = self.session_id
            f.attrs["t0"] = float(self.t0)
            f.attrs["dt"] = float(self.dt)
            f.create_dataset("rates", data=np.asarray(self.rates, dtype=np.float32), compression="gzip")
            f.create_dataset("unit_ids", data=np.asarray(self.unit_ids, dtype=object), dtype=h5py.string_dtype())
            if self.latents is not None:
                f.create_dataset("latents", data=np.asarray(self.latents, dtype=np.float32), compression="gzip")
                f.create_dataset("latent_names", data=np.asarray(self.latent_names, dtype=object),
                                 dtype=h5py.string_dtype())
            if self.velocity is not None:
                f.create_dataset("velocity", data=np.asarray(self.velocity, dtype=np.float32), compression="gzip")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TrueRates":
        """Read a file written by :meth:`save`."""
        import h5py  # slow to import; simulating needs no file

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: true-rates file not found")
        try:
            f = h5py.File(path, "r")
        except OSError as error:
            raise DataError(f"{path}: not a readable HDF5 true-rates file ({error})") from None
        with f:
            for name in ("rates", "unit_ids"):
                if name not in f:
                    raise DataError(f"{path}: missing dataset {name!r}; expected a file written by TrueRates.save")
            for name in ("session_id", "t0", "dt"):
                if name not in f.attrs:
                    raise DataError(f"{path}: missing attribute {name!r}; expected a file written by TrueRates.save")
            rates = f["rates"][()]
            unit_ids = f["unit_ids"].asstr()[()]
            if rates.ndim != 2 or rates.shape[1] != len(unit_ids):
                raise DataError(f"{path}: 'rates' has shape {rates.shape}, expected (T, {len(unit_ids)}) "
                                "to match 'unit_ids'")
            return cls(session_id=str(f.attrs["session_id"]), rates=rates, t0=float(f.attrs["t0"]),
                       dt=float(f.attrs["dt"]), unit_ids=np.asarray(unit_ids, dtype=str),
                       latents=f["latents"][()] if "latents" in f else None,
                       latent_names=list(f["latent_names"].asstr()[()]) if "latent_names" in f else [],
                       velocity=f["velocity"][()] if "velocity" in f else None)


@dataclass
class SimulatedDataset:
    """What :func:`simulate` returns.

    Attributes:
        sessions: one :class:`Session` per simulated session (ids ``"sim_s0"``, ``"sim_s1"``, ...).
        truth: session id -> :class:`TrueRates`.
        config: the parameters used.
    """

    sessions: list[Session]
    truth: dict[str, TrueRates]
    config: SimulationConfig

    def session(self, session_id: str) -> Session:
        for session in self.sessions:
            if session.id == session_id:
                return session
        raise DataError(f"no session {session_id!r} in the simulated dataset "
                        f"(has: {[s.id for s in self.sessions]})")

    def save_truth(self, directory: str | Path) -> list[Path]:
        """Write ``<session_id>_truth.h5`` for every session into ``directory``."""
        directory = Path(directory)
        return [self.truth[s.id].save(directory / f"{s.id}_truth.h5") for s in self.sessions]

    def config_dict(self) -> dict:
        """The config as plain JSON-ready values."""
        return asdict(self.config)


# ---------------------------------------------------------------------------------------- simulate
def simulate(n_sessions: int = 3, n_trials: int = 300, n_units: int | tuple[int, ...] | None = None,
             seed: int = 0, regions: tuple[str, ...] = ("M1", "PMd"), **overrides) -> SimulatedDataset:
    """Simulate a multi-session, multi-region centre-out reaching dataset.

    The defaults are calibrated to look like NLB MC_Maze at 20 ms: ~16 Hz mean rate and an oracle
    co-bps of ~0.3-0.45, while staying small enough for a laptop (~300 trials x ~120 units per
    session, about a second to simulate each).

    Args:
        n_sessions: number of sessions (each with its own neurons, same latent dynamics).
        n_trials: trials per session.
        n_units: units per session: one int for all, a tuple with one count per session, or None to
            draw each session's count from ``unit_range`` (100-140).
        seed: master seed; session ``k`` depends only on ``(seed, k)`` and the config.
        regions: region names; units are split evenly between them (``Units.region``).
        **overrides: any other :class:`SimulationConfig` field (e.g. ``trial_length=(0.8, 1.2)``).

    Returns:
        :class:`SimulatedDataset` with ``sessions``, ``truth`` and ``config``.
    """
    valid = set(SimulationConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise DataError(f"simulate: unknown parameter(s) {unknown}; valid ones: {sorted(valid)}")
    config = SimulationConfig(n_sessions=n_sessions, n_trials=n_trials, n_units=n_units, seed=seed,
                              regions=tuple(regions), **overrides)
    _check_config(config)
    sessions, truth = [], {}
    with _single_threaded_blas():
        for index in range(config.n_sessions):
            session, true_rates = _simulate_session(config, index)
            sessions.append(session)
            truth[session.id] = true_rates
    return SimulatedDataset(sessions, truth, config)


def _check_config(config: SimulationConfig) -> None:
    steps_per_20ms = 0.02 / config.dt
    if config.dt <= 0 or abs(steps_per_20ms - round(steps_per_20ms)) > 1e-9:
        raise DataError(f"simulate: dt must divide 20 ms (e.g. 0.005 or 0.01 s), got {config.dt}")
    if config.n_sessions < 1 or config.n_trials < 1:
        raise DataError(f"simulate: need n_sessions >= 1 and n_trials >= 1, "
                        f"got {config.n_sessions} and {config.n_trials}")
    if isinstance(config.n_units, (tuple, list)) and len(config.n_units) != config.n_sessions:
        raise DataError(f"simulate: n_units has {len(config.n_units)} counts but n_sessions is {config.n_sessions}")
    if not config.regions:
        raise DataError("simulate: regions must name at least one region")
    if config.array_drift is not None and not 0.0 <= config.array_drift <= 1.0:
        raise DataError(f"simulate: array_drift must be None or in [0, 1], got {config.array_drift}")
    if config.array_drift is not None and isinstance(config.n_units, (tuple, list)):
        raise DataError("simulate: with array_drift the sessions of a subject share one array, so n_units must be "
                        f"one number (or None), not one per session: got {config.n_units}")
    if not 0 <= config.heldout_fraction < 1:
        raise DataError(f"simulate: heldout_fraction must be in [0, 1), got {config.heldout_fraction}")
    shortest = min(np.atleast_1d(config.trial_length))
    needed = config.go_range[1] + config.lag + 0.2  # movement onset plus the bulk of the reach
    if shortest < needed:
        raise DataError(f"simulate: trials of {shortest} s are too short for a reach (need >= {needed:.2f} s)")


def _single_threaded_blas():
    """Limit BLAS to one thread for the small matrix products here.

    With matrices of ~100 columns threads give nothing, and on a busy 2-core machine OpenBLAS
    threads that spin-wait for each other make a 100x100 eigendecomposition ~100x slower.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl ships with scikit-learn; without it, run as is
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _session_rng(config: SimulationConfig, index: int) -> np.random.Generator:
    # spawn_key makes session k's stream independent of how many sessions exist
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(index,)))


def _subject_rng(config: SimulationConfig, subject_index: int) -> np.random.Generator:
    # a key of another length than the sessions' (index,): a stream of its own, shared by the subject's sessions
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(subject_index, 1)))


def _steps(seconds: np.ndarray | float, dt: float) -> np.ndarray:
    return np.round(np.asarray(seconds) / dt).astype(np.int64)


def _simulate_session(config: SimulationConfig, index: int) -> tuple[Session, TrueRates]:
    """One session: trial timeline -> latents -> velocity, rates -> spikes."""
    rng = _session_rng(config, index)
    dt = config.dt
    session_id = f"sim_s{index}"

    # ---- trial timeline, in integer fine steps so every event sits on the grid
    n_trials = config.n_trials
    if np.ndim(config.trial_length) == 0:
        duration = np.full(n_trials, _steps(config.trial_length, dt))
    else:
        low, high = _steps(np.asarray(config.trial_length) / config.length_step, 1.0)
        duration = rng.integers(low, high + 1, n_trials) * _steps(config.length_step, dt)
    gap = rng.integers(_steps(config.gap_range[0], dt), _steps(config.gap_range[1], dt) + 1, n_trials)
    lead = _steps(0.5, dt)  # baseline activity before the first and after the last trial
    start = lead + np.concatenate([[0], np.cumsum(duration + gap)[:-1]])
    stop = start + duration
    n_fine = int(stop[-1] + lead)
    condition = rng.permutation(np.resize(np.arange(N_CONDITIONS), n_trials))
    direction = np.exp(2j * np.pi * condition / N_CONDITIONS)  # (N,) unit complex numbers
    target_on = start + _steps(config.target_on, dt)
    go = start + rng.integers(_steps(config.go_range[0], dt), _steps(config.go_range[1], dt) + 1, n_trials)
    gain = 1.0 + config.gain_std * rng.standard_normal(n_trials)
    in_trial_change = np.zeros(n_fine + 1)
    np.add.at(in_trial_change, start, 1.0)
    np.add.at(in_trial_change, stop, -1.0)
    in_trial = np.cumsum(in_trial_change)[:-1] > 0

    # ---- latent dynamics: complex modes z[t+1] = a z[t] + input[t]
    mode_names = ["prep", "vel_x", "vel_y", "rot", "cis"] + [f"private_{r}" for r in config.regions]
    taus = [config.prep_tau, config.reach_tau, config.reach_tau, config.rot_tau, config.cis_tau] \
        + [config.private_tau] * len(config.regions)
    frequencies = [0.0, config.reach_frequency, config.reach_frequency, config.rot_frequency, 0.0] \
        + [0.0] * len(config.regions)
    poles = np.exp((-1.0 / np.array(taus) + 2j * np.pi * np.array(frequencies)) * dt)  # (M,)
    drive = np.zeros((n_fine, len(mode_names)), dtype=np.complex128)  # deterministic input
    # preparation: a step input from target onset to go, scaled so that the mode settles at `direction`
    prep_change = np.zeros(n_fine + 1, dtype=np.complex128)
    np.add.at(prep_change, target_on, (1 - poles[0]) * direction)
    np.add.at(prep_change, go, -(1 - poles[0]) * direction)
    drive[:, 0] = np.cumsum(prep_change)[:-1]
    # go kick: impulses at go, later smoothed into a short pulse; the velocity modes start on the real
    # axis so their imaginary part (what the hand reads) rises from zero
    kicks = np.zeros((n_fine, len(mode_names)), dtype=np.complex128)
    kicks[go, 1] = gain * direction.real
    kicks[go, 2] = gain * direction.imag
    kicks[go, 3] = gain * (0.8 * direction.real + 0.6j * direction.imag) * np.exp(0.7j)
    kicks[go, 4] = gain
    pulse = np.hanning(max(_steps(config.kick_width, dt), 1) + 2)[1:-1]
    pulse /= pulse.sum()
    kicks = lfilter(pulse, [1.0], kicks, axis=0)
    drive += kicks
    # noise with the stationary std requested for each mode; weaker at rest between trials
    noise_std = np.array([config.noise_std, config.velocity_noise_std, config.velocity_noise_std,
                          config.noise_std, config.noise_std] + [config.private_noise_std] * len(config.regions))
    innovation = noise_std * np.sqrt(1 - np.abs(poles) ** 2)
    noise = rng.standard_normal((n_fine, len(mode_names))) + 1j * rng.standard_normal((n_fine, len(mode_names)))
    noise *= innovation / np.sqrt(2)
    noise *= np.where(in_trial, 1.0, config.rest_noise_gain)[:, None]
    noise[:, 4] = noise[:, 4].real * np.sqrt(2)  # the condition-invariant mode is real
    drive += noise
    modes = np.empty_like(drive)
    for m, pole in enumerate(poles):  # one filter per latent mode (a handful), vectorised over time
        modes[:, m] = lfilter([1.0], [1.0, -pole], drive[:, m])
    shared = np.column_stack([modes[:, 0].real, modes[:, 0].imag, modes[:, 1].real, modes[:, 1].imag,
                              modes[:, 2].real, modes[:, 2].imag, modes[:, 3].real, modes[:, 3].imag,
                              modes[:, 4].real])  # (T_fine, 9)
    private = np.column_stack([part for m in range(5, len(mode_names))
                               for part in (modes[:, m].real, modes[:, m].imag)])  # (T_fine, 2R)
    latents = np.concatenate([shared, private], axis=1)
    latent_names = list(SHARED_LATENT_NAMES) + [f"private_{r}_{p}" for r in config.regions for p in ("re", "im")]

    # ---- behaviour: the hand follows the velocity modes `lag` later
    lag = _steps(config.lag, dt)
    true_velocity = np.zeros((n_fine, 2))
    true_velocity[lag:] = config.velocity_scale * np.column_stack([modes[:-lag or None, 1].imag,
                                                                  modes[:-lag or None, 2].imag])
    recorded = true_velocity + config.velocity_obs_std * rng.standard_normal((n_fine, 2))
    fine_centres = (np.arange(n_fine) + 0.5) * dt
    behavior_times = np.arange(0.0, n_fine * dt, 1.0 / config.behavior_rate)
    hand_vel = TimeSeries(behavior_times, np.column_stack([np.interp(behavior_times, fine_centres, recorded[:, d])
                                                           for d in range(2)]), unit="mm/s")

    # ---- neurons of this session (with ``array_drift``: the subject's array, drawn from the subject's seed)
    unit_rng = rng if config.array_drift is None else _subject_rng(config, index % len(config.subjects))
    if config.n_units is None:
        n_units = int(unit_rng.integers(config.unit_range[0], config.unit_range[1] + 1))
    elif isinstance(config.n_units, (tuple, list)):
        n_units = int(config.n_units[index])
    else:
        n_units = int(config.n_units)
    n_regions = len(config.regions)
    region_index = np.minimum((np.arange(n_units) * n_regions) // n_units, n_regions - 1)  # contiguous blocks
    weights = np.zeros((n_units, latents.shape[1]))
    weights[:, :shared.shape[1]] = config.region_weights()[region_index]
    own_private = shared.shape[1] + 2 * region_index
    weights[np.arange(n_units), own_private] = 1.0
    weights[np.arange(n_units), own_private + 1] = 1.0
    # A random direction in latent space per unit, with a norm that varies only a little: with iid
    # Gaussian loadings a few very strongly tuned units would dominate co-bps and make it jumpy.
    loading = weights * unit_rng.standard_normal(weights.shape)  # (U, D)
    depth = config.loading_norm * unit_rng.uniform(1 - config.loading_spread, 1 + config.loading_spread, n_units)
    loading *= (depth / np.linalg.norm(loading, axis=1))[:, None]
    baseline = np.log(config.baseline_rate) + config.baseline_log_std * unit_rng.standard_normal(n_units)
    if config.array_drift is not None:  # today's tuning of the array's units: the subject's, drifted
        keep, drift = np.sqrt(1.0 - config.array_drift ** 2), config.array_drift
        fresh = weights * rng.standard_normal(weights.shape)
        fresh *= (depth / np.linalg.norm(fresh, axis=1))[:, None]
        loading = keep * loading + drift * fresh
        loading *= (depth / np.linalg.norm(loading, axis=1))[:, None]
        baseline = np.log(config.baseline_rate) + keep * (baseline - np.log(config.baseline_rate)) \
            + drift * config.baseline_log_std * rng.standard_normal(n_units)
    log_rates = baseline + latents @ loading.T  # (T_fine, U)
    rates = np.minimum(np.exp(log_rates), config.rate_cap)

    # ---- spikes: Poisson counts per fine bin, placed uniformly inside it
    counts = rng.poisson(rates * dt)  # (T_fine, U)
    flat = counts.ravel()
    cell = np.repeat(np.arange(flat.size), flat)
    fine_bin, spike_units = np.divmod(cell, n_units)
    spike_times = (fine_bin + rng.random(cell.size)) * dt
    order = np.argsort(spike_times, kind="stable")

    heldout = np.zeros(n_units, dtype=bool)
    for r in range(n_regions):  # stratified, so every region has held-out units to co-smooth
        members = np.flatnonzero(region_index == r)
        heldout[unit_rng.choice(members, int(round(config.heldout_fraction * len(members))), replace=False)] = True
    split = np.empty(n_trials, dtype=object)
    order_trials = rng.permutation(n_trials)
    n_train = int(round(config.split_fractions[0] * n_trials))
    n_val = int(round(config.split_fractions[1] * n_trials))
    split[order_trials[:n_train]] = "train"
    split[order_trials[n_train:n_train + n_val]] = "val"
    split[order_trials[n_train + n_val:]] = "test"
    trials = Trials(start=start * dt, stop=stop * dt, split=split.astype(str), condition=condition.astype(str),
                    extra={"move_onset_time": (go + lag) * dt, "target_on_time": target_on * dt,
                           "go_time": go * dt, "reach_angle": 360.0 * condition / N_CONDITIONS})
    units_region = np.asarray(config.regions, dtype=object)[region_index]
    unit_ids = np.array([f"{session_id}/{k}" for k in range(n_units)])
    session = Session(id=session_id, spike_times=spike_times[order], spike_units=spike_units[order],
                      units=Units(unit_ids, region=units_region, heldout=heldout),
                      behavior={"hand_vel": hand_vel}, trials=trials,
                      subject=config.subjects[index % len(config.subjects)], task=config.task,
                      source=f"simulate(seed={config.seed}, session={index})")
    truth = TrueRates(session_id, rates.astype(np.float32), 0.0, dt, unit_ids, latents.astype(np.float32),
                      latent_names, true_velocity.astype(np.float32))
    return session, truth


# ---------------------------------------------------------------------------------------- oracle
def _trial_bins(dataset: SimulatedDataset, session_id: str, split: str | tuple[str, ...] | None,
                bin_size: float, behavior: tuple[str, ...] = (), lag: float = 0.0):
    """Binned spikes and exact expected counts of one session's trials, real bins only.

    Returns (counts (S, U), expected (S, U), behaviour name -> (S, D), binned trials).
    """
    session = dataset.session(session_id)
    binned = bin_trials(session, bin_size=bin_size, split=split, behavior=behavior, lag=lag)
    if len(binned.starts) == 0:
        raise DataError(f"session {session_id!r} has no trials in split {split!r}")
    expected = dataset.truth[session_id].expected_counts(binned.starts, binned.lengths, bin_size)
    mask = binned.mask
    return (binned.counts[mask].astype(np.float64), expected[mask],
            {name: values[mask] for name, values in binned.behavior.items()}, binned)


def oracle_bits_per_spike(dataset: SimulatedDataset, session_id: str, split: str | tuple[str, ...] = "test",
                          bin_size: float = 0.02, heldout: bool | None = True) -> float:
    """Bits per spike of the true expected counts (NLB definition): the ceiling for co-bps.

    Args:
        dataset: from :func:`simulate`.
        session_id: e.g. ``"sim_s0"``.
        split: trials to evaluate.
        bin_size: bin width (s); bins run from each trial's start to its stop.
        heldout: True = held-out units only (co-bps), False = held-in only, None = all units.

    Returns:
        bits/spike, with the null = each neuron's mean count over the evaluated bins.
    """
    counts, expected, _, _ = _trial_bins(dataset, session_id, split, bin_size)
    units = dataset.session(session_id).units
    columns = (units.heldout_index if heldout else units.heldin_index) if heldout is not None else slice(None)
    return bits_per_spike(expected[:, columns], counts[:, columns])


def oracle_velocity_r2(dataset: SimulatedDataset, session_id: str, bin_size: float = 0.02,
                       train_split: str | tuple[str, ...] = ("train", "val"), test_split: str = "test",
                       lag: float | None = None) -> float:
    """Velocity R² of a ridge regression from the *true* rates to the recorded hand velocity.

    This is the NLB recipe applied to perfect rates (:func:`mini_decoders.metrics.velocity_r2_from_rates`:
    ridge, alpha by 5-fold CV over ``logspace(-4, 0, 9)``) from all units' expected counts on
    ``train_split`` trials to hand velocity ``lag`` seconds later, scored (sklearn R², mean over
    x/y) on ``test_split``. It is the ceiling for SSL models scored by NLB's vel-R² — not 1,
    because velocity is linear in the latents while rates are exp of them, and the recorded
    velocity carries measurement noise.

    Args:
        lag: behaviour lag (s); default the simulator's own ``config.lag``.
    """
    lag = dataset.config.lag if lag is None else lag
    _, train_rates, train_behavior, _ = _trial_bins(dataset, session_id, train_split, bin_size, ("hand_vel",), lag)
    _, test_rates, test_behavior, _ = _trial_bins(dataset, session_id, test_split, bin_size, ("hand_vel",), lag)
    with _single_threaded_blas():
        return velocity_r2_from_rates(train_rates, train_behavior["hand_vel"], test_rates, test_behavior["hand_vel"])
