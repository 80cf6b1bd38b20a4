"""Sliding windows of 12 bins (480 ms) over each trial: what a real-time decoder sees at a bin.

A window is never copied out of the binned counts: a `WindowSet` holds the row of each window's
last bin, and `numpy.lib.stride_tricks.sliding_window_view` turns the counts into a zero-copy
array of all windows; only a batch that is asked for is gathered.

Labels (the paper's §4.1 step 3; docs/method.md, "Windows and labels"): a window is labelled by
its *label bin*. The paper uses the window's last bin (``label_bin="last"``, the default: the
decoder labels the present). The authors' reference scripts use the bin just after the window
(``label_bin="next"``: the decoder predicts one bin ahead); it is offered for comparison with
their numbers.
- grasp-phase: every window; 1 (grasp) if its label bin is in [Hold, Rew), else 0 (rest).
- object: only windows whose label bin is in [Hold, Rew); label = the object's class index.
- aperture: every window; its target is the binned signal at its label bin (the layout's `target`,
  host/data/targets.py), its label the grasp-phase one (for stratified samples and per-phase scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from host.data.binning import BinnedSession

WINDOW_BINS = 12
LABEL_BIN_SHIFT = {"last": 0, "next": 1}
GRASP_PHASE_LABELS = ("rest", "grasp")
# Movement phases around the region of interest, for per-phase scores of a continuous decoder:
# the 800 ms before it (reach), the region itself (hold), the 800 ms after it (release), the rest.
MOVEMENT_PHASES = ("rest", "reach", "hold", "release")
AROUND_BINS = 20


@dataclass
class WindowSet:
    """Labelled windows over a session's binned counts, without copying them.

    Attributes:
        counts: the session's ``(total_bins, n_units)`` counts (possibly memory-mapped).
        end_row: row in `counts` of each window's last bin (int64).
        label: class per window (uint8).
        trial: kept-trial position of each window (int32), to trace a window to its trial.
        task: "grasp-phase", "object" or "aperture".
        label_names: name of each label value.
        target: per window, the continuous target at its label bin (regression tasks), else None.
    """

    counts: np.ndarray
    end_row: np.ndarray
    label: np.ndarray
    trial: np.ndarray
    task: str
    label_names: tuple[str, ...]
    window_bins: int = WINDOW_BINS
    target: np.ndarray | None = None
    phase: np.ndarray | None = None  # regression tasks: index into MOVEMENT_PHASES of each label bin
    label_shift: int = 0  # label bin - last bin (0: "last", 1: "next")

    def __len__(self) -> int:
        return len(self.end_row)

    @property
    def all_windows(self) -> np.ndarray:
        """Every window start in the counts, as a read-only view ``(rows - 11, 12, units)``."""
        return sliding_window_view(self.counts, (self.window_bins, self.counts.shape[1]))[:, 0]

    def batch(self, idx: np.ndarray | slice) -> np.ndarray:
        """Windows `idx` as a new ``(n, window_bins, n_units)`` array (the only copy made)."""
        return self.all_windows[self.end_row[idx] - (self.window_bins - 1)]

    def label_counts(self) -> dict[str, int]:
        counts = np.bincount(self.label, minlength=len(self.label_names))
        return {name: int(c) for name, c in zip(self.label_names, counts)}


def _window_rows(binned: BinnedSession, trials: np.ndarray, window_bins: int, shift: int):
    """(end row, trial position, label bin relative to its trial) of every full window."""
    trials = np.asarray(trials, np.int64)
    per_trial = np.maximum(binned.n_bins[trials] - (window_bins - 1) - shift, 0)
    trial = np.repeat(trials, per_trial)
    first = np.repeat(np.cumsum(per_trial) - per_trial, per_trial)
    end_rel = window_bins - 1 + np.arange(len(trial)) - first
    return binned.trial_offsets[trial] + end_rel, trial, end_rel + shift


def _check(window_bins: int, label_bin: str) -> int:
    if window_bins < 1:
        raise ValueError(f"window_bins must be >= 1, got {window_bins}")
    if label_bin not in LABEL_BIN_SHIFT:
        raise ValueError(f"label_bin must be one of {sorted(LABEL_BIN_SHIFT)}, got {label_bin!r}")
    return LABEL_BIN_SHIFT[label_bin]


def grasp_phase_windows(binned: BinnedSession, trials: np.ndarray, window_bins: int = WINDOW_BINS,
                        label_bin: str = "last") -> WindowSet:
    """All windows of the given trials, labelled rest (0) / grasp (1)."""
    shift = _check(window_bins, label_bin)
    end_row, trial, lab = _window_rows(binned, trials, window_bins, shift)
    grasp = (binned.hold_bin[trial] <= lab) & (lab < binned.reward_bin[trial])
    return WindowSet(binned.counts, end_row, grasp.astype(np.uint8), trial.astype(np.int32),
                     "grasp-phase", GRASP_PHASE_LABELS, window_bins)


def aperture_windows(binned: BinnedSession, trials: np.ndarray, window_bins: int = WINDOW_BINS,
                     label_bin: str = "last") -> WindowSet:
    """All windows of the given trials with the binned target at their label bin (float32)."""
    shift = _check(window_bins, label_bin)
    end_row, trial, lab = _window_rows(binned, trials, window_bins, shift)
    start, stop = binned.hold_bin[trial], binned.reward_bin[trial]
    hold = (start <= lab) & (lab < stop)
    phase = np.select([hold, (start - AROUND_BINS <= lab) & (lab < start), (stop <= lab) & (lab < stop + AROUND_BINS)],
                      [2, 1, 3], 0).astype(np.uint8)
    return WindowSet(binned.counts, end_row, hold.astype(np.uint8), trial.astype(np.int32), "aperture",
                     GRASP_PHASE_LABELS, window_bins, np.asarray(binned.target[end_row + shift], np.float32), phase,
                     shift)


def object_windows(binned: BinnedSession, trials: np.ndarray, window_bins: int = WINDOW_BINS,
                   label_bin: str = "last") -> WindowSet:
    """Windows whose label bin is in the hold phase, labelled by the trial's object class."""
    shift = _check(window_bins, label_bin)
    end_row, trial, lab = _window_rows(binned, trials, window_bins, shift)
    grasp = (binned.hold_bin[trial] <= lab) & (lab < binned.reward_bin[trial])
    names = tuple(binned.class_names.get(int(c), str(int(c))) for c in binned.classes)
    return WindowSet(binned.counts, end_row[grasp], binned.class_index[trial[grasp]],
                     trial[grasp].astype(np.int32), "object", names, window_bins)


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Positions of up to `size` windows, as equal a share per label as the labels allow, seeded
    (sorted, unique).

    Equal shares matter for calibration: with ~10 rest windows per grasp window, a plain random
    sample would set the int8 activation ranges mostly on rest; a rare object would barely count.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    shuffled = np.asarray(labels)[order]
    by_label = [order[shuffled == lab] for lab in np.unique(shuffled)]
    quota = [0] * len(by_label)
    left = min(size, len(order))
    while left > 0:  # over <= 40 labels: a label short of its share leaves the rest to the others
        open_ = [i for i, b in enumerate(by_label) if len(b) > quota[i]]
        share = max(left // len(open_), 1)
        for i in open_:
            take = min(len(by_label[i]) - quota[i], share, left)
            quota[i] += take
            left -= take
    return np.unique(np.concatenate([b[:q] for b, q in zip(by_label, quota)] + [np.empty(0, np.int64)]))


def busiest_window(windows: WindowSet) -> int:
    """The window holding the largest single count: calibrating on it sets the int8 input range to
    the whole range seen in training, so no test count is clipped (a real window, not a made-up one)."""
    row_max = windows.counts.max(axis=1)
    window_max = sliding_window_view(row_max, windows.window_bins).max(axis=1)
    return int(np.argmax(window_max[windows.end_row - (windows.window_bins - 1)]))


def calibration_indices(windows: WindowSet, size: int, seed: int) -> np.ndarray:
    """A stratified sample of `windows` (see `stratified_sample`) plus the busiest window, and for a
    regression task the windows of the smallest and largest training target: the int8 output's
    range is calibrated on what the model answers to these windows, so the training targets'
    extremes take part in setting it."""
    extra = [busiest_window(windows)]
    if windows.target is not None and len(windows):
        extra += [int(np.argmin(windows.target)), int(np.argmax(windows.target))]
    chosen = stratified_sample(windows.label, size, seed)
    return np.unique(np.concatenate([chosen, extra]))
