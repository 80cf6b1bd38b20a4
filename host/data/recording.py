"""A recording session as flat arrays: the form every reader returns and every writer takes.

One Neo `Segment` per trial and one `SpikeTrain` per unit would mean ~430 000 Python objects for
the largest session; here all spike times sit in one float64 array, trial-major then unit-minor,
with `train_offsets` delimiting each (trial, unit) train. Times are in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from host.errors import DataError


def annotation_column(values: Sequence) -> np.ndarray:
    """One per-trial annotation (a Neo segment annotation, an NWB trials-table column) as an array:
    float64 when every present value is a number (NaN where a trial lacks it), else text ('' where
    a trial lacks it). None marks a missing value."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)) for v in present):
        return np.array([np.nan if v is None else float(v) for v in values], np.float64)
    return np.array(["" if v is None else str(v).strip() for v in values], dtype=str)


def cut_trains(spikes: np.ndarray, ends: np.ndarray, starts: np.ndarray, stops: np.ndarray,
               path: object = "") -> tuple[np.ndarray, np.ndarray]:
    """Each unit's spikes in each [start, stop] window, gathered trial-major then unit-minor (the
    Recording's order): (spike times, spikes per (window, unit) flattened). `spikes` holds every
    unit's times one unit after the other, unit u ending at `ends[u]`, each sorted. One
    searchsorted per unit and one vectorised gather: no loop over spikes or windows."""
    n_units, n_windows = len(ends), len(starts)
    unit_start = np.r_[0, ends[:-1]].astype(np.int64)
    lo = np.empty((n_windows, n_units), np.int64)
    hi = np.empty((n_windows, n_units), np.int64)
    for u in range(n_units):
        times = spikes[unit_start[u]:ends[u]]
        if times.size > 1 and (np.diff(times) < 0).any():
            raise DataError(path, f"unit {u}: spike times are not in ascending order")
        lo[:, u] = unit_start[u] + np.searchsorted(times, starts, "left")
        hi[:, u] = unit_start[u] + np.searchsorted(times, stops, "right")
    lengths = (hi - lo).reshape(-1)
    take = np.repeat(lo.reshape(-1) - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(int(lengths.sum()))
    return spikes[take], lengths


@dataclass
class Signal:
    """One signal of a recording, cut per trial.

    Attributes:
        name, units: as the file names them (e.g. "aperture", "mm").
        rate_hz: samples per second (the same in every trial).
        values: all samples, trial-major.
        offsets: first sample of each trial in `values`, plus the total (n_trials + 1).
        t_start_s: time of each trial's first sample, seconds (the recording's clock).
        problem: why the signal cannot be a target (e.g. its unit changes between trials), else "".
    """

    name: str
    units: str
    rate_hz: float
    values: np.ndarray
    offsets: np.ndarray
    t_start_s: np.ndarray
    problem: str = ""  # why it cannot serve as a target (then it holds no samples); "" when usable

    def trial(self, k: int) -> np.ndarray:
        return self.values[self.offsets[k]:self.offsets[k + 1]]


    @classmethod
    def unusable(cls, name: str, n_trials: int, problem: str) -> "Signal":
        """A signal that cannot be a target (`problem` says why): no samples in any of `n_trials`."""
        return cls(name, "", float("nan"), np.empty(0), np.zeros(n_trials + 1, np.int64), np.full(n_trials, np.nan),
                   problem)

    @classmethod
    def from_trials(cls, name: str, units: str, rate_hz: float, trials: list[np.ndarray],
                    t_start_s: np.ndarray) -> "Signal":
        """Join per-trial sample arrays (a trial without the signal: an empty array, t_start NaN)."""
        lengths = [len(v) for v in trials]
        values = np.concatenate(trials).astype(np.float64) if trials else np.empty(0)
        return cls(name, units, float(rate_hz), values, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                   np.asarray(t_start_s, np.float64))


@dataclass
class Recording:
    """Spike trains, events and per-trial annotations of one session, as read from the file.

    Attributes:
        name: session name (e.g. ``MRec41``).
        n_units: spike trains per trial (the same in every trial of a session).
        t_start_s, t_stop_s: trial (segment) bounds, seconds.
        event_labels: per trial, the event labels of ``events[0]`` with padding stripped.
        event_times_s: per trial, the event onsets in seconds (same length as its labels).
        spike_times_s: all spike times, trial-major then unit-minor.
        train_offsets: ``n_trials * n_units + 1`` offsets into ``spike_times_s``.
        trial_annotations: name -> one value per trial (annotation_column): which one names the
            class, and which ones select trials, is the layout's business (host/data/layout.py).
        annotations: the block's own annotations.
        signals: name -> a continuous signal per trial (Neo AnalogSignals), e.g. a hand aperture.
    """

    name: str
    n_units: int
    t_start_s: np.ndarray
    t_stop_s: np.ndarray
    event_labels: list[list[str]]
    event_times_s: list[np.ndarray]
    spike_times_s: np.ndarray
    train_offsets: np.ndarray
    trial_annotations: dict[str, np.ndarray] = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    signals: dict[str, Signal] = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        return len(self.t_start_s)

    @property
    def object_ids(self) -> np.ndarray:
        """The paper's layout's class annotation, ``obj`` (the writers and the synthetic sessions use it)."""
        return self.trial_annotations["obj"].astype(np.int32)

    @property
    def correct(self) -> np.ndarray:
        return self.trial_annotations["correct"].astype(np.int8)

    def train(self, trial: int, unit: int) -> np.ndarray:
        """Spike times (s) of one unit in one trial: a view, no copy."""
        k = trial * self.n_units + unit
        return self.spike_times_s[self.train_offsets[k]:self.train_offsets[k + 1]]

    def spike_counts(self) -> np.ndarray:
        """Spikes per (trial, unit), shape ``(n_trials, n_units)``."""
        return np.diff(self.train_offsets).reshape(self.n_trials, self.n_units)

    @classmethod
    def unusable(cls, name: str, n_trials: int, problem: str) -> "Signal":
        """A signal that cannot be a target (`problem` says why): no samples in any of `n_trials`."""
        return cls(name, "", float("nan"), np.empty(0), np.zeros(n_trials + 1, np.int64), np.full(n_trials, np.nan),
                   problem)

    @classmethod
    def from_trials(cls, *, path: Path, name: str, n_units: int, unit_counts: Sequence[int],
                    train_counts: Sequence[np.ndarray], t_start_s: Sequence[np.ndarray],
                    t_stop_s: Sequence[np.ndarray], event_labels: list[list[str]],
                    event_times_s: list[np.ndarray], spike_times_s: np.ndarray,
                    trial_annotations: dict[str, Sequence] | None = None,
                    annotations: dict | None = None, signals: dict[str, Signal] | None = None) -> "Recording":
        """Check per-trial pieces read from a file and join them; a DataError names what is wrong.

        `t_start_s`/`t_stop_s` hold each trial's per-train bounds: the trial spans all of them.
        """
        if not unit_counts:
            raise DataError(path, "the block has no segments", hint="a Neo recording stores one Segment per trial")
        if n_units == 0:
            raise DataError(path, "zero units: the first trial has no spike trains")
        for k, n in enumerate(unit_counts):
            if n != n_units:
                raise DataError(path, f"{n} spike trains where the first trial has {n_units}", trial=k)
        start = np.array([np.min(t) for t in t_start_s])
        stop = np.array([np.max(t) for t in t_stop_s])
        bad = np.flatnonzero(~(stop > start))
        if bad.size:
            raise DataError(path, f"t_stop {stop[bad[0]]} s is not after t_start {start[bad[0]]} s", trial=int(bad[0]))
        offsets = np.concatenate(([0], np.cumsum(np.concatenate(train_counts)))).astype(np.int64)
        columns = {str(k): v if isinstance(v, np.ndarray) and v.dtype.kind in "fU" else annotation_column(list(v))
                   for k, v in (trial_annotations or {}).items()}
        for key, column in columns.items():
            if len(column) != len(start):
                raise DataError(path, f"annotation {key!r} has {len(column)} values for {len(start)} trials")
        rec = cls(name=name, n_units=n_units, t_start_s=start, t_stop_s=stop,
                  event_labels=event_labels, event_times_s=event_times_s,
                  spike_times_s=spike_times_s, train_offsets=offsets, trial_annotations=columns,
                  annotations=annotations or {}, signals=signals or {})
        for key, sig in rec.signals.items():
            if len(sig.offsets) != len(start) + 1 or not (sig.rate_hz > 0 or sig.problem):
                raise DataError(path, f"signal {key!r} has {len(sig.offsets) - 1} trials for {len(start)} "
                                      f"(or a sampling rate of {sig.rate_hz} Hz)")
        rec.check_times(path)
        return rec

    def check_times(self, path: Path) -> None:
        """NaN or out-of-trial spike or event times would silently shift bins: refuse them."""
        where_nan = np.flatnonzero(np.isnan(self.spike_times_s))
        if where_nan.size:
            trial, unit = self._locate(int(where_nan[0]))
            raise DataError(path, f"NaN spike time in unit {unit}", trial=trial)
        per_trial = self.train_offsets[:: self.n_units]
        for k in range(self.n_trials):
            times = self.spike_times_s[per_trial[k]:per_trial[k + 1]]
            if times.size and (times.min() < self.t_start_s[k] or times.max() > self.t_stop_s[k]):
                i = per_trial[k] + int(np.flatnonzero((times < self.t_start_s[k]) | (times > self.t_stop_s[k]))[0])
                _, unit = self._locate(i)
                raise DataError(path, f"spike at {self.spike_times_s[i]:.6g} s in unit {unit} lies outside the "
                                f"trial [{self.t_start_s[k]:.6g}, {self.t_stop_s[k]:.6g}] s", trial=k)
            if len(self.event_labels[k]) != len(self.event_times_s[k]):
                raise DataError(path, f"{len(self.event_labels[k])} event labels but {len(self.event_times_s[k])} "
                                      "event times", trial=k)
            if np.isnan(self.event_times_s[k]).any():
                raise DataError(path, "NaN event time", trial=k)

    def _locate(self, spike_index: int) -> tuple[int, int]:
        train = int(np.searchsorted(self.train_offsets, spike_index, side="right")) - 1
        return divmod(train, self.n_units)
