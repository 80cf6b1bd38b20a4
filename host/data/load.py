"""Load a Neo recording from disk and select the trials the decoders learn from.

`.mat` files go through the fast reader (`host.data.matfile`); a `.mat` layout it does not know, and
every other Neo format (`.nix`, Neo pickle, ...), go through `neo.io`. Whatever the route, the
result is one `Recording`, and `select_trials` applies the paper's trial selection (docs/method.md,
"Trial selection"), reporting every dropped trial with its reason: nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host.data import matfile
from host.data import objects
from host.data.layout import PAPER, Layout
from host.data.neoread import NEO_EXTENSIONS, PICKLE_HINT
from host.errors import DataError, first_line
from host.data.recording import Recording

log = logging.getLogger(__name__)


def check_file(path: Path, allow_pickle: bool = False) -> Path:
    """The checks before a recording's bytes are read: it is a file, and not a pickle unless the
    user vouched for it (`allow_pickle`: Neo's PickleIO unpickles, which can run any code)."""
    if path.is_dir():
        raise DataError(path, "a directory, not a recording file", hint="name the recording file inside it")
    if not path.is_file():
        raise DataError(path, "no such file", hint="check the path, or run `grasptpu synth` first")
    if NEO_EXTENSIONS.get(path.suffix.lower()) == "PickleIO" and not allow_pickle:
        raise DataError(path, "refusing to read a Neo pickle", hint=PICKLE_HINT)
    return path


def load_recording(path: Path | str, progress: bool = False, allow_pickle: bool = False) -> Recording:
    """Read any supported Neo or NWB file into a `Recording`, choosing the reader by extension.

    Raises:
        DataError: missing, unreadable, corrupt or unusable file (one line: file and problem).
    """
    path = check_file(Path(path), allow_pickle)
    if path.suffix.lower() == ".mat":
        return _load_mat(path, progress)
    return _load_with_neo(path, allow_pickle)


def _load_mat(path: Path, progress: bool) -> Recording:
    try:
        return matfile.read_recording(path, progress)
    except matfile.UnknownLayout as exc:
        log.warning("%s: %s; reading it with neo.io.NeoMatlabIO (slower)", path, exc)
        return _load_with_neo(path, False)
    except DataError:
        raise
    except Exception as exc:  # the file's bytes are someone else's: any parse failure is a damaged file
        why = first_line(exc)[:200]
        raise DataError(path, f"corrupt or truncated MAT file: {why}",
                        hint="re-export it, or check the copy is complete") from None


def _load_with_neo(path: Path, allow_pickle: bool) -> Recording:
    """neo.io reads the file in a child process (`host.data.isolated`), which hands the flattened
    recording back as a plain npz. Why: neo's readers sit on h5py/HDF5 and scipy, which crash the
    whole process (double free, segfault) on some damaged files (seen when fuzzing .nix and .mat
    files); a crash in the child is one line here, not a dead `grasptpu`."""
    from host.data import isolated

    return isolated.read(path, allow_pickle)


# --------------------------------------------------------------------------- trial selection


@dataclass
class Trials:
    """The kept trials of a session, in file order, with their region of interest.

    Attributes:
        index: trial index in the file (segment number).
        object_id: class code per kept trial: the class value itself when the layout's classes are
            integers (the paper's object ids), else its position in the layout's class order.
        hold_s, reward_s: onsets of the region of interest's first and second event (the paper's
            Hold and Rew), seconds, relative to the trial start.
        duration_s: trial length (t_stop - t_start), seconds.
        drops: reason -> count, for every trial not kept (and every class dropped).
        dropped_objects: class name -> kept trials it had, for classes dropped as too rare.
        merged: class name -> trials merged into another class.
        class_names: class code -> its name (the class value as text).
    """

    index: np.ndarray
    object_id: np.ndarray
    hold_s: np.ndarray
    reward_s: np.ndarray
    duration_s: np.ndarray
    drops: dict[str, int] = field(default_factory=dict)
    dropped_objects: dict[str, int] = field(default_factory=dict)
    merged: dict[str, int] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)

    @property
    def classes(self) -> np.ndarray:
        """Kept class codes in order: neighbouring classes are neighbouring sizes (or the layout's order)."""
        return objects.class_labels(self.object_id)[0]


def _onsets(rec: Recording, label: str) -> np.ndarray:
    """Per trial, the onset of the first event called `label` relative to the trial start (NaN if none)."""
    out = np.full(rec.n_trials, np.nan)
    for k, labels in enumerate(rec.event_labels):
        if label in labels:
            out[k] = rec.event_times_s[k][labels.index(label)] - rec.t_start_s[k]
    return out


def what_the_file_has(rec: Recording) -> str:
    """The annotations and event labels a layout may name, for a one-line refusal."""
    events = Counter(label for labels in rec.event_labels for label in set(labels))
    anns = ", ".join(sorted(rec.trial_annotations)) or "none"
    evs = ", ".join(f"{e} ({n})" for e, n in sorted(events.items())[:40]) or "none"
    return f"the file has annotations: {anns}; event labels (trials): {evs}"


def _check_names(rec: Recording, layout: Layout, path: Path | str) -> None:
    """A layout naming an annotation or event the file lacks: one line listing what it has."""
    missing = [f"annotation {k!r}" for k in [layout.class_key, *layout.keep] if k not in rec.trial_annotations]
    labels = {label for trial in rec.event_labels for label in trial}
    missing += [f"event {e!r}" for e in layout.roi if e not in labels]
    if missing:
        raise DataError(path or rec.name, f"the layout {layout.name} names {', '.join(missing)}, which the file "
                                          f"lacks; {what_the_file_has(rec)}", hint="fix the layout file (--layout)")


def _class_values(values: np.ndarray, layout: Layout, path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(each trial's class name before merging, after merging): text, '' where a trial has none.
    Numbers must be whole (an object id, a grip code) and are named by their digits."""
    if values.dtype.kind == "f":
        present = ~np.isnan(values)
        if (values[present] != np.round(values[present])).any():
            raise DataError(path, f"annotation {layout.class_key!r} holds fractional values; a class is a whole "
                                  "number or text", hint="name another annotation as `class` in the layout")
        raw = np.array([str(int(v)) if ok else "" for v, ok in zip(values.tolist(), present)], dtype=object)
    else:
        raw = values.astype(object)
    merged = raw.copy()
    for source, target in layout.merge.items():
        merged[raw == str(source)] = str(target)
    return raw, merged


def _class_codes(merged: np.ndarray, numeric: bool, layout: Layout) -> tuple[np.ndarray, dict[int, str]]:
    """Class names -> integer codes (-1 = no class, -2 = not in the layout's order). Without an
    order, whole-number classes keep their number as code (the paper's object ids, whose order is
    the catalogue's), text classes are coded in sorted order; with one, a class's code is its place."""
    names = [str(v) for v in layout.order]
    if not names and numeric:
        codes = np.array([int(v) if v else -1 for v in merged.tolist()], np.int64)
        return codes, {int(c): str(int(c)) for c in np.unique(codes[codes >= 0])}
    if not names:
        names = sorted(set(merged.tolist()) - {""})
    lookup = {name: i for i, name in enumerate(names)}
    codes = np.array([lookup.get(v, -2) if v else -1 for v in merged.tolist()], np.int64)
    return codes, dict(enumerate(names))


def _matches(column: np.ndarray, want) -> np.ndarray:
    if column.dtype.kind == "f":
        return column == float(want) if not isinstance(want, str) else np.zeros(len(column), bool)
    return column == str(want)


def select_trials(rec: Recording, path: Path | str = "", layout: Layout = PAPER) -> Trials:
    """Apply the layout's trial selection (the paper's by default, docs/method.md): trials whose
    `keep` values match, with a class, outside `drop`, with both region-of-interest events in
    order, in classes with >= min_trials kept trials. Every trial not kept is counted under its
    reason.

    Raises:
        DataError: a layout naming what the file lacks, or no trial left (saying which rule removed them).
    """
    _check_names(rec, layout, path)
    drops: Counter[str] = Counter()
    keep = np.ones(rec.n_trials, bool)
    for key, want in layout.keep.items():
        ok = _matches(rec.trial_annotations[key], want)
        reason = "incorrect trial (correct != 1)" if (key, want) == ("correct", 1) else f"{key} != {want!r}"
        drops[reason] += int((keep & ~ok).sum())
        keep &= ok
    column = rec.trial_annotations[layout.class_key]
    raw, merged = _class_values(column, layout, path)
    codes, names = _class_codes(merged, column.dtype.kind == "f", layout)
    for code, reason in ((-1, f"no '{layout.class_key}' value"), (-2, "class not in the layout's order")):
        no_class = keep & (codes == code)
        drops[reason] = int(no_class.sum())
        keep &= ~no_class
    if layout.catalogue == "dpz-objects":
        excluded = keep & (codes >= objects.FIRST_EXCLUDED_ID)
        drops[f"not a grasp object (obj >= {objects.FIRST_EXCLUDED_ID})"] = int(excluded.sum())
        keep &= ~excluded
    excluded = keep & np.isin(merged, [str(v) for v in layout.drop])
    drops["class in the layout's drop list"] = int(excluded.sum())
    keep &= ~excluded
    start, stop = _onsets(rec, layout.roi[0]), _onsets(rec, layout.roi[1])
    no_events = keep & np.array([len(lbl) == 0 for lbl in rec.event_labels])
    drops["no events"] = int(no_events.sum())
    keep &= ~no_events
    no_phase = keep & (np.isnan(start) | np.isnan(stop))
    drops[f"no '{layout.roi[0]}' or '{layout.roi[1]}' event"] = int(no_phase.sum())
    keep &= ~no_phase
    bad_order = keep & ~(stop > start)
    drops[f"'{layout.roi[1]}' does not follow '{layout.roi[0]}'"] = int(bad_order.sum())
    keep &= ~bad_order
    n_merged = dict(Counter(raw[keep & (merged != raw)].tolist()))
    ids, counts = np.unique(codes[keep], return_counts=True)
    rare = {names[int(i)]: int(c) for i, c in zip(ids, counts) if c < layout.min_trials}
    rare_trials = keep & np.isin(merged, list(rare))
    drops[f"class with < {layout.min_trials} kept trials"] = int(rare_trials.sum())
    keep &= ~rare_trials
    if not keep.any():
        reason = max(drops, key=drops.get) if drops else "no trials"
        raise DataError(path or rec.name, f"no usable trial is left (largest cause: {reason})",
                        hint=f"check the layout ({layout.describe()}) against `grasptpu inspect`")
    kept = np.flatnonzero(keep)
    kept_classes = set(codes[kept].tolist())
    return Trials(index=kept.astype(np.int32), object_id=codes[kept].astype(np.int16),
                  hold_s=start[kept], reward_s=stop[kept],
                  duration_s=(rec.t_stop_s - rec.t_start_s)[kept],
                  drops={k: v for k, v in drops.items() if v}, dropped_objects=rare, merged=n_merged,
                  class_names={c: n for c, n in names.items() if c in kept_classes})
