"""neo.io readers, in the process that calls them: only `host.data.isolated`'s child process does.

Why a module of its own: the parent side (`host.data.load`) starts the child (`host.data.isolated`),
and the child needs these readers; keeping them here keeps that a one-way chain
(load -> isolated -> neoread) rather than a cycle.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from host.data.matfile import signal_columns, trial_columns
from host.data.recording import Recording
from host.errors import DataError, first_line

NEO_EXTENSIONS = {".nix": "NixIO", ".pkl": "PickleIO", ".pickle": "PickleIO", ".h5": "NixIO"}
PICKLE_HINT = ("a pickle runs whatever code it holds when it is read; convert it to .nix, or pass --allow-pickle "
               "only for a file you wrote yourself")


def read_with_neo(path: Path, allow_pickle: bool) -> Recording:
    """neo.io in this process: only the child process of `host.data.isolated` calls this."""
    import neo.io

    try:
        io_name = "NeoMatlabIO" if path.suffix.lower() == ".mat" else NEO_EXTENSIONS.get(path.suffix.lower())
        if io_name is None:
            io_cls = neo.io.get_io(str(path)).__class__
        else:
            io_cls = getattr(neo.io, io_name)
        if io_cls is neo.io.PickleIO and not allow_pickle:
            raise DataError(path, "refusing to read a Neo pickle", hint=PICKLE_HINT)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = io_cls(str(path)) if io_name != "NixIO" else io_cls(str(path), mode="ro")
            block = reader.read_block()
            if hasattr(reader, "close"):
                reader.close()
    except DataError:
        raise
    except Exception as exc:  # neo raises anything from IOError to KeyError on bad files
        message = first_line(exc)
        raise DataError(path, f"not a readable Neo file ({type(exc).__name__}: {message})",
                        hint="supported: .mat (NeoMatlabIO), .nix, .pkl (Neo pickle)") from None
    if not isinstance(block, neo.Block):
        raise DataError(path, "the file holds no Neo block" + ("" if block is None else f" (it holds a {type(block).__name__})"))
    return recording_from_block(block, path)


def recording_from_block(block, path: Path) -> Recording:
    """Flatten a Neo Block (one Segment per trial) into a `Recording`."""
    segments = list(block.segments)
    trains = [list(seg.spiketrains) for seg in segments]
    counts = [np.array([len(st) for st in sts], np.int64) for sts in trains]
    spikes = [np.asarray(st.rescale("s").magnitude, np.float64).reshape(-1) for sts in trains for st in sts]
    events = [_first_event(seg) for seg in segments]
    return Recording.from_trials(
        path=path,
        name=block.name or path.name.split(".")[0],
        n_units=len(trains[0]) if trains else 0,
        unit_counts=[len(sts) for sts in trains],
        train_counts=counts,
        t_start_s=[np.array([float(st.t_start.rescale("s")) for st in sts] or [np.nan]) for sts in trains],
        t_stop_s=[np.array([float(st.t_stop.rescale("s")) for st in sts] or [np.nan]) for sts in trains],
        trial_annotations=trial_columns([_annotations(seg) for seg in segments]),
        signals=signal_columns([_signals(seg) for seg in segments]),
        event_labels=[e[0] for e in events],
        event_times_s=[e[1] for e in events],
        spike_times_s=np.concatenate(spikes) if spikes else np.empty(0),
    )


def _first_event(seg) -> tuple[list[str], np.ndarray]:
    if not seg.events:
        return [], np.empty(0)
    ev = seg.events[0]
    return [str(x).strip() for x in np.asarray(ev.labels).reshape(-1)], np.asarray(ev.rescale("s").magnitude, float).reshape(-1)


def _signals(seg) -> list[tuple[str, str, float, float, np.ndarray]]:
    """A segment's single-channel AnalogSignals: (name, units, rate Hz, t_start s, samples)."""
    out = []
    for sig in seg.analogsignals:
        values = np.asarray(sig.magnitude, np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            out.append((str(sig.name or ""), sig.units.dimensionality.string, float(sig.sampling_rate.rescale("Hz")),
                        float(sig.t_start.rescale("s")), values[:, 0]))
    return out


def _annotations(seg) -> dict:
    """A segment's annotations that hold one number or one string (others are not trial labels)."""
    out = {}
    for key, value in seg.annotations.items():
        arr = np.asarray(value).reshape(-1)
        if arr.size != 1:
            continue
        if arr.dtype.kind in "iufb":
            out[str(key)] = float(arr[0])
        elif arr.dtype.kind in "US":
            out[str(key)] = str(arr[0]).strip() or None
    return out
