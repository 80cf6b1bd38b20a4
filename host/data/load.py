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
from host.data.neoread import NEO_EXTENSIONS, PICKLE_HINT
from host.errors import DataError
from host.data.recording import Recording

log = logging.getLogger(__name__)
MIN_TRIALS_PER_OBJECT = 3  # so that every kept object can appear in train, validation and test
HOLD, REWARD = "Hold", "Rew"


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
    """Read any supported Neo file into a `Recording`, choosing the reader by extension.

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
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
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
    """The kept trials of a session, in file order, with their grasp (hold) interval.

    Attributes:
        index: trial index in the file (segment number).
        object_id: merged object id per kept trial.
        hold_s, reward_s: onset of Hold and of Rew, seconds, relative to the trial start.
        duration_s: trial length (t_stop - t_start), seconds.
        drops: reason -> count, for every trial not kept (and every object dropped).
        dropped_objects: object id -> kept trials it had, for objects dropped as too rare.
    """

    index: np.ndarray
    object_id: np.ndarray
    hold_s: np.ndarray
    reward_s: np.ndarray
    duration_s: np.ndarray
    drops: dict[str, int] = field(default_factory=dict)
    dropped_objects: dict[int, int] = field(default_factory=dict)
    merged: dict[int, int] = field(default_factory=dict)

    @property
    def classes(self) -> np.ndarray:
        """Kept object ids in catalogue order: neighbouring classes are neighbouring sizes."""
        return objects.class_labels(self.object_id)[0]


def _phase_onset(rec: Recording, k: int, label: str) -> float:
    labels = rec.event_labels[k]
    if label not in labels:
        return np.nan
    return float(rec.event_times_s[k][labels.index(label)] - rec.t_start_s[k])


def select_trials(rec: Recording, path: Path | str = "") -> Trials:
    """Apply the paper's selection (docs/method.md): correct trials, obj < 85, a Hold..Rew interval,
    >= 3 per object.

    Raises:
        DataError: when no trial survives, saying which rule removed them.
    """
    drops: Counter[str] = Counter()
    keep = rec.correct == 1
    drops["incorrect trial (correct != 1)"] = int((~keep).sum())
    excluded = keep & (rec.object_ids >= objects.FIRST_EXCLUDED_ID)
    drops[f"not a grasp object (obj >= {objects.FIRST_EXCLUDED_ID})"] = int(excluded.sum())
    keep &= ~excluded
    hold = np.array([_phase_onset(rec, k, HOLD) if keep[k] else np.nan for k in range(rec.n_trials)])
    reward = np.array([_phase_onset(rec, k, REWARD) if keep[k] else np.nan for k in range(rec.n_trials)])
    no_events = keep & np.array([len(lbl) == 0 for lbl in rec.event_labels])
    drops["no phase events"] = int(no_events.sum())
    keep &= ~no_events
    no_phase = keep & (np.isnan(hold) | np.isnan(reward))
    drops[f"no '{HOLD}' or '{REWARD}' event"] = int(no_phase.sum())
    keep &= ~no_phase
    bad_order = keep & ~(reward > hold)
    drops[f"'{REWARD}' does not follow '{HOLD}'"] = int(bad_order.sum())
    keep &= ~bad_order
    merged = objects.merge_duplicates(rec.object_ids)
    n_merged = dict(Counter(int(o) for o in rec.object_ids[keep & (merged != rec.object_ids)]))
    ids, counts = np.unique(merged[keep], return_counts=True)
    rare = {int(i): int(c) for i, c in zip(ids, counts) if c < MIN_TRIALS_PER_OBJECT}
    rare_trials = keep & np.isin(merged, list(rare))
    drops[f"object with < {MIN_TRIALS_PER_OBJECT} kept trials"] = int(rare_trials.sum())
    keep &= ~rare_trials
    if not keep.any():
        reason = max(drops, key=drops.get) if drops else "no trials"
        raise DataError(path or rec.name, f"no usable trial is left (largest cause: {reason})",
                        hint="check the 'correct'/'obj' annotations and the Hold/Rew events")
    kept = np.flatnonzero(keep)
    return Trials(index=kept.astype(np.int32), object_id=merged[kept].astype(np.int16),
                  hold_s=hold[kept], reward_s=reward[kept],
                  duration_s=(rec.t_stop_s - rec.t_start_s)[kept],
                  drops={k: v for k, v in drops.items() if v}, dropped_objects=rare, merged=n_merged)
