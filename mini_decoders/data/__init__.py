"""Data layer: the Session record, NWB I/O, the simulator, real data, binning, windows and batching.

``data`` sits at the bottom of the package: nothing here imports tokenizers, models, training, run or
experiments. The simulator's oracle scores its true rates with :mod:`mini_decoders.metrics` (the NLB
definitions, which import nothing of the package), so an oracle and a model are scored alike.
"""

from mini_decoders.data.batching import (BinnedTrialDataset, SpikeWindowDataset, SpikeWindows, bucket_batches,
                                         collate_binned, collate_spike_tokens, packed_spike_tokens, spike_windows)
from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_intervals, bin_session, bin_trials
from mini_decoders.data.nwb import describe_nwb, read_nwb, write_nwb
from mini_decoders.data.registry import REGISTRY, cache_dir, fetch
from mini_decoders.data.realdata import load as load_real
from mini_decoders.data.session import Session, TimeSeries, Trials, Units
from mini_decoders.data.simulate import (SimulatedDataset, TrueRates, oracle_bits_per_spike, oracle_velocity_r2,
                                         simulate)
from mini_decoders.data.synth import write_synthetic
from mini_decoders.data.windows import Windows, make_windows, split_by_time

__all__ = [
    "BinnedTrialDataset", "BinnedTrials", "DEFAULT_BIN_SIZE", "REGISTRY", "Session", "SimulatedDataset",
    "SpikeWindowDataset", "SpikeWindows", "TimeSeries", "Trials", "TrueRates", "Units", "Windows", "bin_intervals",
    "bin_session", "bin_trials", "bucket_batches", "cache_dir", "collate_binned", "collate_spike_tokens",
    "describe_nwb", "fetch", "load_real", "make_windows", "oracle_bits_per_spike", "oracle_velocity_r2",
    "packed_spike_tokens", "read_nwb", "simulate", "spike_windows", "split_by_time", "write_nwb", "write_synthetic",
]
