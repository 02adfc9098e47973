"""Data layer: the Session record, NWB I/O, the simulator, real data and batching."""

from mini_decoders.data.binning import DEFAULT_BIN_SIZE, BinnedTrials, bin_intervals, bin_session, bin_trials
from mini_decoders.data.session import Session, TimeSeries, Trials, Units
