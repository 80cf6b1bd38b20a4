"""Continuous targets (a hand aperture, say) in the same bins as the spike counts.

A target is a sampled signal per trial (a Neo AnalogSignal, an NWB TimeSeries): `Signal` holds it
flat, trial-major. `bin_signal` averages each trial's samples into the trial's 40 ms bins with the
very rule the counts use (`host.data.binning.time_to_bin`: a sample at time t lands in the bin
floor((t - t_start) / bin)), so target row r and count row r cover the same 40 ms. A window's
target is then its label bin's row, as a window's class label is. A trial with a bin the signal
does not cover (NaN there, or the signal ends early) is skipped by the aperture decoder only and
counted (`host.data.prepare`); the classifiers keep it.
"""

from __future__ import annotations

import numpy as np

from host.data.binning import time_to_bin
from host.data.recording import Signal


def bin_signal(signal: Signal, trials: np.ndarray, trial_start_s: np.ndarray, n_bins: np.ndarray,
               bin_ms: float) -> np.ndarray:
    """The mean of `signal` in every bin of the given trials: one float32 per count row
    (``sum(n_bins)`` rows, trials stacked in the order given), NaN in a bin without a finite sample
    (the signal is shorter than its trial, starts late, or holds NaN there; `complete_trials` finds
    such trials). Vectorised over samples: one bincount of the sums and one of the sample counts."""
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
    return np.divide(sums, counts, out=np.full(total, np.nan), where=counts > 0).astype(np.float32)


def complete_trials(target: np.ndarray, trial_offsets: np.ndarray) -> np.ndarray:
    """Per trial: does every bin hold a finite target? (A trial without bins counts as incomplete.)"""
    missing = np.r_[0, np.cumsum(~np.isfinite(target))]
    lengths = np.diff(trial_offsets)
    return (missing[trial_offsets[1:]] - missing[trial_offsets[:-1]] == 0) & (lengths > 0)


def first_gap(target: np.ndarray, trial_offsets: np.ndarray, trial: int) -> int:
    """The first bin of `trial` (relative to its start) without a finite target."""
    rows = target[trial_offsets[trial]:trial_offsets[trial + 1]]
    gaps = np.flatnonzero(~np.isfinite(rows))
    return int(gaps[0]) if len(gaps) else -1
