"""Spike counts in fixed time bins (40 ms by default), one row per bin, trials stacked.

Bin b of a trial covers [t_start + b * bin, t_start + (b + 1) * bin); a time t falls in bin
floor((t - t_start) / bin), the rule the authors' reference scripts use for event times
(docs/method.md, "Binning"), applied to spikes alike. Edges are exact: a time on an edge lands in
the bin it starts, as in exact arithmetic and elephant's BinnedSpikeTrain (a quotient within 1e-8
bins below a whole number is that number, `time_to_bin`). Only whole bins are kept: a trial of
duration d has floor(d / bin) bins by the same rule, and spikes in the trailing partial bin are
not counted (a partial bin would look like a drop in firing rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from host.data.load import Trials
from host.data.objects import class_labels
from host.data.recording import Recording
from host.errors import DataError

MAX_TRIAL_BINS = 15000  # 10 minutes of 40 ms bins; a grasp trial lasts seconds (--max-trial-bins)

TRIALS_PER_CHUNK = 64  # bounds the temporary index arrays to ~100 MB on the largest session


@dataclass
class BinnedSession:
    """Binned spike counts of the kept trials, with what is needed to cut labelled windows.

    Attributes:
        counts: ``(total_bins, n_units)`` spike counts, uint8 (uint16 if any bin holds > 255).
        trial_offsets: first row of each kept trial in `counts`, plus the total (len n + 1).
        hold_bin, reward_bin: bin index of the Hold and Rew onsets, relative to the trial.
        object_id: class code per kept trial (host.data.load.Trials); `classes` in order.
        trial_index: segment number of each kept trial in the source file.
        class_names: class code -> name; layout: the layout that selected the trials (as_dict).
        unit_index: the file's unit number of each column of `counts` (a layout may drop slow units).
    """

    session: str
    bin_ms: float
    counts: np.ndarray
    trial_offsets: np.ndarray
    hold_bin: np.ndarray
    reward_bin: np.ndarray
    object_id: np.ndarray
    trial_index: np.ndarray
    drops: dict[str, int] = field(default_factory=dict)
    dropped_objects: dict[str, int] = field(default_factory=dict)
    merged: dict[str, int] = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    layout: dict = field(default_factory=dict)
    unit_index: np.ndarray | None = None
    target: np.ndarray | None = None  # the layout's target signal, one float32 mean per count row
    target_units: str = ""
    target_problem: str = ""  # why the layout's target cannot be decoded (then `target` is None)

    @property
    def n_units(self) -> int:
        return int(self.counts.shape[1])

    @property
    def n_trials(self) -> int:
        return len(self.object_id)

    @property
    def n_bins(self) -> np.ndarray:
        return np.diff(self.trial_offsets)

    @property
    def classes(self) -> np.ndarray:
        return class_labels(self.object_id)[0]

    @property
    def class_index(self) -> np.ndarray:
        """Per kept trial, the index of its object in `classes` (the decoder's label)."""
        return class_labels(self.object_id)[1]

    def trial_counts(self, k: int) -> np.ndarray:
        """Binned counts of kept trial k: a view."""
        return self.counts[self.trial_offsets[k]:self.trial_offsets[k + 1]]


EDGE_TOLERANCE = 1e-8  # bins (0.4 ns at 40 ms): elephant's BinnedSpikeTrain default


def time_to_bin(t_rel_s: np.ndarray, bin_ms: float) -> np.ndarray:
    """Bin index of times given relative to the trial start: floor(t / bin) in exact arithmetic.

    In floating point, a time exactly on an edge often lands one bin early: 1.16 s / 0.04 s is
    28.999999999999996, and t - t_start adds its own rounding (on a 1 kHz clock, 47 % of the
    edge times at t_start = 100 s). A quotient within EDGE_TOLERANCE below a whole number is that
    number, as elephant's BinnedSpikeTrain does (the authors' binning). Why a tolerance and not
    integer arithmetic on the recording's clock: files carry times in seconds on clocks we are not
    told (1 kHz, 30 kHz, NWB floats); 0.4 ns is far below any clock's tick (33 us at 30 kHz) and
    far above the float error of t - t_start for sessions of days, so it moves only times that
    really are on an edge."""
    x = np.asarray(t_rel_s, dtype=np.float64) / (bin_ms / 1000.0)
    b = np.floor(x)
    x -= b  # in place: the fraction, without another full-size float array
    b += x >= 1.0 - EDGE_TOLERANCE
    return b.astype(np.int64)


def check_trial_bins(n_bins: np.ndarray, trial_index: np.ndarray, bin_ms: float, max_trial_bins: int,
                     path: object) -> None:
    """Refuse a trial longer than `max_trial_bins` bins before any memory is taken for it: one
    damaged t_stop (say 2e6 s) would otherwise ask for 50 million bins."""
    if len(n_bins) and n_bins.max() > max_trial_bins:
        k = int(np.argmax(n_bins))
        raise DataError(path, f"the trial lasts {n_bins[k] * bin_ms / 1000:.0f} s ({int(n_bins[k])} bins of {bin_ms:g} ms), "
                              f"more than --max-trial-bins {max_trial_bins}", trial=int(trial_index[k]),
                        hint="check its t_start/t_stop, or raise --max-trial-bins if trials really are that long")


def bin_session(rec: Recording, trials: Trials, bin_ms: float = 40.0, progress: bool = False,
                max_trial_bins: int = MAX_TRIAL_BINS, source: object = None) -> BinnedSession:
    """Count each kept trial's spikes per unit and bin, vectorised over spikes, chunked by trial."""
    if not bin_ms > 0:
        raise ValueError(f"bin_ms must be positive, got {bin_ms}")
    n_bins = time_to_bin(trials.duration_s, bin_ms)
    check_trial_bins(n_bins, trials.index, bin_ms, max_trial_bins, source or rec.name)
    offsets = np.concatenate(([0], np.cumsum(n_bins))).astype(np.int64)
    counts = np.zeros((int(offsets[-1]), rec.n_units), np.uint8)
    chunks = range(0, len(trials.index), TRIALS_PER_CHUNK)
    for lo in tqdm(chunks, desc="binning", unit="chunk", disable=not progress or None, leave=False):
        hi = min(lo + TRIALS_PER_CHUNK, len(trials.index))
        block = _bin_chunk(rec, trials.index[lo:hi], n_bins[lo:hi], bin_ms)
        if block.max(initial=0) > np.iinfo(counts.dtype).max:
            counts = counts.astype(np.uint16)
        counts[offsets[lo]:offsets[hi]] = block
    return BinnedSession(
        session=rec.name, bin_ms=float(bin_ms), counts=counts, trial_offsets=offsets,
        hold_bin=time_to_bin(trials.hold_s, bin_ms).astype(np.int32),
        reward_bin=time_to_bin(trials.reward_s, bin_ms).astype(np.int32),
        object_id=trials.object_id, trial_index=trials.index, drops=dict(trials.drops),
        dropped_objects=dict(trials.dropped_objects), merged=dict(trials.merged),
        class_names=dict(trials.class_names), unit_index=np.arange(rec.n_units, dtype=np.int32))


def drop_slow_units(binned: BinnedSession, min_rate_hz: float) -> BinnedSession:
    """Keep the units whose mean rate over the kept trials' bins is at least `min_rate_hz` (a
    layout's [units] min_rate_hz): a unit that barely fires adds input width, not information."""
    if min_rate_hz <= 0:
        return binned
    seconds = len(binned.counts) * binned.bin_ms / 1000.0
    rate = binned.counts.sum(axis=0, dtype=np.int64) / max(seconds, 1e-9)
    keep = rate >= min_rate_hz
    if not keep.any():
        raise DataError(binned.source.get("path", binned.session),
                        f"no unit fires at >= {min_rate_hz:g} Hz over the kept trials (fastest {rate.max():.3g} Hz)",
                        hint="lower [units] min_rate_hz in the layout")
    binned.counts = np.ascontiguousarray(binned.counts[:, keep])
    binned.unit_index = binned.unit_index[keep]
    binned.drops[f"units firing < {min_rate_hz:g} Hz (units, not trials)"] = int((~keep).sum())
    return binned


def _bin_chunk(rec: Recording, trial_idx: np.ndarray, n_bins: np.ndarray, bin_ms: float) -> np.ndarray:
    """Counts of a few trials, shape ``(sum(n_bins), n_units)``, int64."""
    units = rec.n_units
    train_counts = rec.spike_counts()[trial_idx]  # (trials, units)
    starts = rec.train_offsets[trial_idx * units]
    ends = rec.train_offsets[(trial_idx + 1) * units]
    lengths = ends - starts
    take = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    take += np.arange(int(lengths.sum()))
    times = rec.spike_times_s[take]
    local_trial = np.repeat(np.arange(len(trial_idx)), lengths)
    unit = np.repeat(np.tile(np.arange(units), len(trial_idx)), train_counts.reshape(-1))
    b = time_to_bin(times - rec.t_start_s[trial_idx][local_trial], bin_ms)
    inside = (b >= 0) & (b < n_bins[local_trial])
    row_offset = np.concatenate(([0], np.cumsum(n_bins)[:-1]))
    flat = (row_offset[local_trial] + b)[inside] * units + unit[inside]
    total_rows = int(n_bins.sum())
    return np.bincount(flat, minlength=total_rows * units).reshape(total_rows, units)
