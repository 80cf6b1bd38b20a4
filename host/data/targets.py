"""Continuous targets (a hand aperture, say) in the same bins as the spike counts.

A target is a sampled signal per trial (a Neo AnalogSignal, an NWB TimeSeries): `Signal` holds it
flat, trial-major. `bin_signal` averages each trial's samples into the trial's 40 ms bins with the
very rule the counts use (`host.data.binning.time_to_bin`: a sample at time t lands in the bin
floor((t - t_start) / bin)), so target row r and count row r cover the same 40 ms. A window's
target is then its label bin's row, as a window's class label is.
"""

from __future__ import annotations

import numpy as np

from host.data.binning import time_to_bin
from host.data.recording import Signal
from host.errors import DataError


def bin_signal(signal: Signal, trials: np.ndarray, trial_start_s: np.ndarray, n_bins: np.ndarray,
               bin_ms: float, path: object = "") -> np.ndarray:
    """The mean of `signal` in every bin of the given trials: one float32 per count row
    (``sum(n_bins)`` rows, trials stacked in the order given). Vectorised over samples: one
    bincount of the sums and one of the sample counts.

    Raises:
        DataError: a bin without a finite sample (the signal is shorter than its trial, starts
            late, or holds NaN there): named with its trial and what to do.
    """
    lengths = signal.offsets[trials + 1] - signal.offsets[trials]
    take = np.repeat(signal.offsets[trials] - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(int(lengths.sum()))
    local = np.repeat(np.arange(len(trials)), lengths)
    sample = np.arange(int(lengths.sum())) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    t_rel = signal.t_start_s[trials][local] - trial_start_s[local] + sample / signal.rate_hz
    b = time_to_bin(t_rel, bin_ms)
    values = signal.values[take]
    inside = (b >= 0) & (b < n_bins[local]) & np.isfinite(values)
    row = np.r_[0, np.cumsum(n_bins)[:-1]][local] + b
    total = int(n_bins.sum())
    sums = np.bincount(row[inside], weights=values[inside], minlength=total)
    counts = np.bincount(row[inside], minlength=total)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        k = int(np.searchsorted(np.cumsum(n_bins), empty[0], "right"))
        raise DataError(path, f"signal {signal.name!r} has no finite sample in bin {int(empty[0] - np.r_[0, np.cumsum(n_bins)][k])} "
                              f"of {int(n_bins[k])}", trial=int(trials[k]),
                        hint="the signal must cover its whole trial without NaN; drop the trial or fix the signal")
    return (sums / counts).astype(np.float32)
