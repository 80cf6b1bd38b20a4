"""NWB recordings (the format of DANDI and most new BMI data), read with pynwb into a `Recording`.

neo's NWBIO ignores the trials table, which is where an NWB file keeps its trials; so this reads
the file itself (NWB 2 schema, https://nwb-schema.readthedocs.io):
- `units`: one row per unit, its `spike_times` on the session clock (a ragged column: one flat
  array and an index, read whole, never unit by unit through pynwb's row objects);
- `trials`: `start_time`/`stop_time` per trial. Every other column holding one value per trial is
  a trial annotation (the layout's `class` and `keep` name them), except the columns whose name
  ends in `_time` (NWB's convention for a time within the trial, e.g. `cue_time`): those are the
  trial's events, labelled by the column name without `_time` (the layout's `roi` names them).
Each trial's spikes are the units' spikes in [start_time, stop_time], cut with one searchsorted per
unit and gathered in one vectorised step.

Only `host.data.isolated`'s child process calls `read_nwb` (h5py runs underneath: a damaged file
must not take `grasptpu` down with it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from host.data.recording import Recording, Signal, cut_trains
from host.errors import DataError

EVENT_SUFFIX = "_time"


def read_nwb(path: Path) -> Recording:
    """The NWB file at `path` as a Recording (one trial per row of its trials table)."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
            nwb = io.read()
            if nwb.units is None or len(nwb.units) == 0:
                raise DataError(path, "the NWB file has no units table (spike-sorted units)",
                                hint="grasptpu decodes spike times of sorted units")
            if nwb.trials is None or len(nwb.trials) == 0:
                raise DataError(path, "the NWB file has no trials table",
                                hint="add one (start_time, stop_time per trial) with pynwb's add_trial")
            spikes, index = _ragged(nwb.units, "spike_times")
            starts = np.asarray(nwb.trials["start_time"].data[:], np.float64)
            stops = np.asarray(nwb.trials["stop_time"].data[:], np.float64)
            columns = _trial_columns(nwb.trials, len(starts))
            signals = _signals(nwb, starts, stops, path)
            name = str(nwb.session_id or nwb.identifier or path.stem)
    rec = _recording(path, name, spikes, index, starts, stops, columns)
    rec.signals = signals
    return rec


def _signals(nwb, starts: np.ndarray, stops: np.ndarray, path: Path) -> dict[str, Signal]:
    """Every one-channel acquisition TimeSeries, cut per trial to [start_time, stop_time]."""
    from pynwb import TimeSeries

    out = {}
    for name, series in nwb.acquisition.items():
        if type(series) is not TimeSeries:  # ElectricalSeries and the like are not targets
            continue
        data = np.asarray(series.data[:], np.float64)
        if data.ndim == 2 and data.shape[1] == 1:
            data = data[:, 0]
        if data.ndim != 1:
            continue
        times = (np.asarray(series.timestamps[:], np.float64) if series.timestamps is not None
                 else series.starting_time + np.arange(len(data)) / series.rate)
        lo, hi = np.searchsorted(times, starts, "left"), np.searchsorted(times, stops, "left")
        steps = np.diff(times)
        rate = round(1.0 / float(np.median(steps)), 6) if len(steps) else float(series.rate or 0)  # timestamps: their median step
        out[name] = Signal.from_trials(name, str(series.unit), rate, [data[a:b] for a, b in zip(lo, hi)],
                                       np.where(hi > lo, times[np.minimum(lo, len(times) - 1)], np.nan))
    return out


def _ragged(table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A ragged column as (flat values, end offset of each row), read in two array reads."""
    flat = np.asarray(table[column].target.data[:], np.float64)
    ends = np.asarray(table[f"{column}_index"].data[:], np.int64)
    return flat, ends


def _trial_columns(trials, n_trials: int) -> dict[str, np.ndarray]:
    """Every trials-table column with one scalar per trial, as float64 or text (ragged ones left out)."""
    out = {}
    for name in trials.colnames:
        if name in ("start_time", "stop_time") or f"{name}_index" in trials.colnames:
            continue
        values = np.asarray(trials[name].data[:])
        if values.shape != (n_trials,):
            continue
        if values.dtype.kind in "iufb":
            out[name] = values.astype(np.float64)
        elif values.dtype.kind in "SUO":
            out[name] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()], dtype=str)
    return out


def _recording(path: Path, name: str, spikes: np.ndarray, ends: np.ndarray, starts: np.ndarray,
               stops: np.ndarray, columns: dict[str, np.ndarray]) -> Recording:
    n_units, n_trials = len(ends), len(starts)
    trial_spikes, lengths = cut_trains(spikes, ends, starts, stops, path)
    events = {k: v for k, v in columns.items() if k.endswith(EVENT_SUFFIX) and v.dtype.kind == "f"}
    annotations = {k: v for k, v in columns.items() if k not in events}
    labels, times = _events(events, n_trials)
    return Recording.from_trials(
        path=path, name=name, n_units=n_units, unit_counts=[n_units] * n_trials,
        train_counts=[lengths], t_start_s=starts[:, None], t_stop_s=stops[:, None],
        event_labels=labels, event_times_s=times, spike_times_s=trial_spikes, trial_annotations=annotations)


def _events(events: dict[str, np.ndarray], n_trials: int) -> tuple[list[list[str]], list[np.ndarray]]:
    """Per trial, the event columns it has a time for (NaN = the trial lacks that event), in time order."""
    if not events:
        return [[] for _ in range(n_trials)], [np.empty(0) for _ in range(n_trials)]
    names = np.array([n[: -len(EVENT_SUFFIX)] for n in events])
    table = np.stack(list(events.values()), axis=1)  # (trials, events)
    order = np.argsort(table, axis=1, kind="stable")       # NaN sorts last
    labels, times = [], []
    for k in range(n_trials):  # per trial: a list of its labels (the Recording's form)
        row = table[k, order[k]]
        have = ~np.isnan(row)
        labels.append(names[order[k]][have].tolist())
        times.append(row[have])
    return labels, times
