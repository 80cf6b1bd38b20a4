"""Write a `Recording` as an NWB file with pynwb: units table (spike times on the session clock),
trials table (start_time, stop_time, each trial annotation as a column, each event label as a
`<label>_time` column) and each signal as an acquisition TimeSeries: the layout `host.data.nwbread`
reads back. For synthetic sessions
(`grasptpu synth --format nwb`), tests and benchmarks; a lab's own NWB export reads the same way.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from host.data.nwbread import EVENT_SUFFIX
from host.data.recording import Recording


def event_column(label: str) -> str:
    """The trials-table column of an event label: the label and `_time` (NWB's convention)."""
    return label.replace("/", "_") + EVENT_SUFFIX  # "/" would name an HDF5 group


def save_nwb(rec: Recording, path: Path | str) -> None:
    """Write `rec` to `path` (atomically: a temporary name, renamed on success)."""
    from pynwb import NWBHDF5IO, NWBFile

    from host.files import atomic_path

    nwb = NWBFile(session_description=f"grasptpu recording {rec.name}", identifier=rec.name, session_id=rec.name,
                  session_start_time=datetime(2000, 1, 1, tzinfo=timezone.utc))
    _add_units(nwb, rec)
    _add_trials(nwb, rec)
    _add_signals(nwb, rec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(Path(path)) as tmp, NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)


def _add_units(nwb, rec: Recording) -> None:
    """Each unit's spikes of every trial, in time order (trials may overlap; duplicates are kept once)."""
    counts = rec.spike_counts()  # (trials, units)
    unit_of = np.repeat(np.tile(np.arange(rec.n_units), rec.n_trials), counts.reshape(-1))
    order = np.lexsort((rec.spike_times_s, unit_of))
    times, units = rec.spike_times_s[order], unit_of[order]
    bounds = np.searchsorted(units, np.arange(rec.n_units + 1))
    for u in range(rec.n_units):
        nwb.add_unit(spike_times=np.unique(times[bounds[u]:bounds[u + 1]]))


def _add_signals(nwb, rec: Recording) -> None:
    """Each signal as one acquisition TimeSeries on the session clock (timestamps: trials need not touch)."""
    from pynwb import TimeSeries

    for sig in rec.signals.values():
        per_trial = np.diff(sig.offsets)
        first = np.repeat(sig.t_start_s, per_trial)
        sample = np.arange(len(sig.values)) - np.repeat(sig.offsets[:-1], per_trial)
        nwb.add_acquisition(TimeSeries(name=sig.name, data=sig.values, unit=sig.units,
                                       timestamps=first + sample / sig.rate_hz,
                                       description=f"sampled at {sig.rate_hz:g} Hz within each trial"))


def _add_trials(nwb, rec: Recording) -> None:
    labels = list(dict.fromkeys(label for trial in rec.event_labels for label in trial))
    event_times = np.full((rec.n_trials, len(labels)), np.nan)
    for k, (trial_labels, trial_times) in enumerate(zip(rec.event_labels, rec.event_times_s)):
        for label, t in zip(trial_labels, trial_times):
            j = labels.index(label)
            if np.isnan(event_times[k, j]):  # the first onset of a label, as the layout's roi reads it
                event_times[k, j] = t
    for name in rec.trial_annotations:
        nwb.add_trial_column(name=name, description=f"trial annotation {name}")
    for label in labels:
        nwb.add_trial_column(name=event_column(label), description=f"onset of event {label}, seconds")
    for k in range(rec.n_trials):
        row = {name: (float(col[k]) if col.dtype.kind == "f" else str(col[k])) for name, col in rec.trial_annotations.items()}
        row.update({event_column(label): float(event_times[k, j]) for j, label in enumerate(labels)})
        nwb.add_trial(start_time=float(rec.t_start_s[k]), stop_time=float(rec.t_stop_s[k]), **row)
