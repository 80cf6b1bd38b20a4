"""What a recording holds, in the terms a layout file uses (`grasptpu inspect FILE`): trials,
units, event labels with their counts and typical onsets, per-trial annotations with their values,
trial durations; and a suggested layout. Read before writing a layout, so its names match the file.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from host.data.layout import PAPER
from host.data.recording import Recording

MAX_VALUES = 12  # values listed per annotation; the rest are counted


@dataclass
class EventSummary:
    label: str
    trials: int
    median_onset_s: float  # relative to the trial start
    count: int = 0  # onsets in all trials (several per trial in a continuous segment)


@dataclass
class AnnotationSummary:
    name: str
    kind: str  # "number" or "text"
    missing: int
    values: list[tuple[str, int]]  # (value, trials), most common first, at most MAX_VALUES
    distinct: int


@dataclass
class Inspection:
    name: str
    n_trials: int
    n_units: int
    spikes: int
    duration_s: tuple[float, float, float]  # min, median, max
    events: list[EventSummary]
    annotations: list[AnnotationSummary]
    paper_layout: bool
    suggestion: str
    signals: list[tuple[str, str, float, int]] = ()  # name, units, rate Hz, trials that have it


def inspect_recording(rec: Recording) -> Inspection:
    """Summarise `rec` (vectorised over spikes; per event label and annotation, not per trial)."""
    durations = rec.t_stop_s - rec.t_start_s
    events = _events(rec)
    annotations = [_annotation(name, col) for name, col in rec.trial_annotations.items()]
    labels = {e.label for e in events}
    paper = PAPER.class_key in rec.trial_annotations and all(k in rec.trial_annotations for k in PAPER.keep) \
        and all(e in labels for e in PAPER.roi)
    signals = [(s.name, s.units, s.rate_hz, int((np.diff(s.offsets) > 0).sum())) for s in rec.signals.values()]
    return Inspection(rec.name, rec.n_trials, rec.n_units, int(len(rec.spike_times_s)),
                      (float(durations.min()), float(np.median(durations)), float(durations.max())),
                      events, annotations, paper, "" if paper else suggest(events, annotations), signals)


def _events(rec: Recording) -> list[EventSummary]:
    onsets: dict[str, list[float]] = {}
    counts = Counter(label for labels in rec.event_labels for label in labels)
    for k, (labels, times) in enumerate(zip(rec.event_labels, rec.event_times_s)):
        for label, t in dict(zip(reversed(labels), reversed(times.tolist()))).items():  # first onset per label
            onsets.setdefault(label, []).append(t - rec.t_start_s[k])
    out = [EventSummary(label, len(ts), float(np.median(ts)), counts[label]) for label, ts in onsets.items()]
    return sorted(out, key=lambda e: (e.median_onset_s, e.label))


def _annotation(name: str, col: np.ndarray) -> AnnotationSummary:
    if col.dtype.kind == "f":
        present = col[~np.isnan(col)]
        texts = [str(int(v)) if float(v).is_integer() else f"{v:g}" for v in present.tolist()]
        kind = "number"
    else:
        texts = [v for v in col.tolist() if v]
        kind = "text"
    counts = Counter(texts)
    return AnnotationSummary(name, kind, len(col) - len(texts), counts.most_common(MAX_VALUES), len(counts))


def suggest(events: list[EventSummary], annotations: list[AnnotationSummary]) -> str:
    """A starting layout, to be checked: trials kept by a two-valued annotation whose commoner value
    covers >= 80 % of them (an outcome); the class from the annotation with the most values (3-100)
    that most trials have; a region of interest between the two events before the last one (trials
    tend to end with a reward and an end-of-trial code)."""
    n = max((a.missing + sum(c for _, c in a.values) for a in annotations), default=0)
    outcome = next((a for a in annotations if a.distinct == 2 and a.values[0][1] >= 0.8 * n), None)
    candidates = [a for a in annotations if 3 <= a.distinct <= 100 and a is not outcome] or \
                 [a for a in annotations if a.distinct == 2 and a is not outcome]
    cls = max(candidates, key=lambda a: (a.missing < n / 2, a.distinct, -a.missing), default=None)
    common = [e for e in events if e.trials >= n / 2]
    roi = [e.label for e in common[-3:-1]] if len(common) >= 3 else [e.label for e in common[:2]]
    roi = roi if len(roi) == 2 else ["FIRST-EVENT", "SECOND-EVENT"]
    if n <= 1 and events:  # one long segment: its trials are marked by events
        start = max(events, key=lambda e: (e.count, -e.median_onset_s)).label
        return "\n".join([
            "# one segment holds the whole recording: cut it into trials at an event, then run",
            "# `grasptpu inspect FILE --layout THIS_FILE` to see the trials and fill in [trials]",
            "[segments]",
            f"start = {json.dumps(start)}   # the event that starts each trial (check it)",
            '# stop = "..."                 # optional: the event that ends it (default: the next start)',
            '# class_events = ["...", "..."]  # optional: events naming the class -> annotation event_class',
            "[trials]",
            'class = "event_class"',
            'roi = ["FIRST-EVENT", "SECOND-EVENT"]   # two event labels inside each trial'])
    lines = ["[trials]",
             f"class = {json.dumps(cls.name if cls else 'ANNOTATION')}   # the annotation naming the class (check it)",
             f"roi = [{', '.join(json.dumps(label) for label in roi)}]   # from the first event's onset up to the second's"]
    if outcome:
        value = outcome.values[0][0]
        shown = value if outcome.kind == "number" else json.dumps(value)
        lines.append(f"keep = {{ {outcome.name} = {shown} }}   # only trials whose annotations match (check it)")
    lines.append("# order = [...]   # class order: neighbours count for relaxed accuracy")
    return "\n".join(lines)
