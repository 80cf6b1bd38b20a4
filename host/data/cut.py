"""Trials cut from continuous segments: a recording that keeps a whole session (or a few long
blocks) in one Neo segment marks its trials with events instead. A layout's [segments] table
names them:

    [segments]
    start = "TS-ON"               # each onset of this event starts a trial
    stop = "STOP"                 # optional: the trial ends at the first such event after its start
                                  #   (default: at the next start, or the segment's end)
    class_events = ["SGHF", "PGLF"]  # optional: the trial's class is the first of these events in it,
                                  #   as the text annotation `event_class` (then: class = "event_class")

Each cut trial keeps its segment's annotations, the events inside it and every unit's spikes
inside it (recording.cut_trains: one searchsorted per unit, one gather).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.data.recording import Recording, Signal, cut_trains
from host.errors import DataError

EVENT_CLASS = "event_class"


@dataclass(frozen=True)
class Segments:
    start: str
    stop: str | None = None
    class_events: tuple[str, ...] = ()


def _bounds(labels: list[str], times: np.ndarray, seg_stop: float, cut: Segments) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops) of the trials of one segment."""
    labels_arr = np.asarray(labels, dtype=str) if labels else np.empty(0, str)
    starts = np.sort(times[labels_arr == cut.start])
    nexts = np.r_[starts[1:], seg_stop]
    if cut.stop is None:
        return starts, nexts
    stop_times = np.sort(times[labels_arr == cut.stop])
    i = np.searchsorted(stop_times, starts, "right")  # the first stop after each start ...
    found = i < len(stop_times)
    stops = nexts.copy()
    stops[found] = np.minimum(stop_times[i[found]], nexts[found])  # ... unless the next trial starts first
    return starts, stops


def cut_segments(rec: Recording, cut: Segments, path: Path | str = "") -> Recording:
    """`rec` with its segments cut into trials at every `cut.start` event (see the module docstring)."""
    pieces = []
    for s in range(rec.n_trials):  # per segment: usually one, a few at most
        starts, stops = _bounds(rec.event_labels[s], np.asarray(rec.event_times_s[s]), rec.t_stop_s[s], cut)
        pieces.append((s, starts, stops))
    n_cut = sum(len(p[1]) for p in pieces)
    if n_cut == 0:
        raise DataError(path or rec.name, f"no '{cut.start}' event to start a trial at",
                        hint="check [segments] start in the layout against `grasptpu inspect`")
    spikes, counts, labels, times, seg_of = [], [], [], [], []
    for s, starts, stops in pieces:
        first = s * rec.n_units
        trains = rec.spike_times_s[rec.train_offsets[first]:rec.train_offsets[first + rec.n_units]]
        ends = rec.train_offsets[first + 1:first + rec.n_units + 1] - rec.train_offsets[first]
        got, lengths = cut_trains(trains, ends, starts, stops, path)
        spikes.append(got)
        counts.append(lengths)
        ev_labels, ev_times = np.asarray(rec.event_labels[s], dtype=str), np.asarray(rec.event_times_s[s])
        for a, b in zip(starts, stops):
            inside = (ev_times >= a) & (ev_times <= b)
            labels.append(ev_labels[inside].tolist())
            times.append(ev_times[inside])
        seg_of += [s] * len(starts)
    seg_of = np.asarray(seg_of)
    annotations = {k: v[seg_of] for k, v in rec.trial_annotations.items()}
    if cut.class_events:
        annotations[EVENT_CLASS] = np.array([next((x for x in trial if x in cut.class_events), "") for trial in labels],
                                            dtype=str)
    all_starts = np.concatenate([p[1] for p in pieces])
    all_stops = np.concatenate([p[2] for p in pieces])
    return Recording.from_trials(
        path=path, name=rec.name, n_units=rec.n_units, unit_counts=[rec.n_units] * n_cut,
        train_counts=counts, t_start_s=all_starts[:, None], t_stop_s=all_stops[:, None],
        event_labels=labels, event_times_s=times, spike_times_s=np.concatenate(spikes),
        trial_annotations=annotations, annotations=rec.annotations,
        signals={name: _cut_signal(sig, pieces) for name, sig in rec.signals.items()})


def _cut_signal(sig: Signal, pieces: list[tuple[int, np.ndarray, np.ndarray]]) -> Signal:
    """A signal's samples inside each cut trial [start, stop), from its segment's samples (a signal
    that cannot be a target keeps its problem and no samples)."""
    if sig.problem:
        return Signal.unusable(sig.name, sum(len(starts) for _, starts, _ in pieces), sig.problem)
    trials, firsts = [], []
    for s, starts, stops in pieces:
        values = sig.trial(s)
        times = sig.t_start_s[s] + np.arange(len(values)) / sig.rate_hz
        lo, hi = np.searchsorted(times, starts, "left"), np.searchsorted(times, stops, "left")
        trials += [values[a:b] for a, b in zip(lo, hi)]
        firsts += [times[a] if b > a else np.nan for a, b in zip(lo, hi)]
    return Signal.from_trials(sig.name, sig.units, sig.rate_hz, trials, np.array(firsts))
