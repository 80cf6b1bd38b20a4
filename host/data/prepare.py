"""Recording file -> binned session (cached) -> trial split -> window datasets, in one call.

This is the data stage every later stage (training, quantisation, the device's test windows)
starts from, so it also says, in `summary`, exactly what data and split a number came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.contract import TASKS
from host.data import cache
from host.data.binning import MAX_TRIAL_BINS, BinnedSession, bin_session, check_trial_bins, drop_slow_units
from host.data.cut import cut_segments
from host.data.layout import PAPER, Layout
from host.data.load import check_file, load_recording, select_trials
from host.data.targets import bin_signal, complete_trials, first_gap
from host.data.split import DEFAULT_TRAIN_VAL_SHARE, Split, split_trials
from host.data.windows import WINDOW_BINS, WindowSet, aperture_windows, grasp_phase_windows, object_windows
from host.errors import GrasptpuError
from host.files import sha256_of

DEFAULT_BIN_MS = 40.0


@dataclass
class Prepared:
    """A binned session, its split and both window datasets per split."""

    binned: BinnedSession
    split: Split
    grasp_phase: dict[str, WindowSet]
    object: dict[str, WindowSet]
    cache_hit: bool
    seconds: dict[str, float] = field(default_factory=dict)
    aperture: dict[str, WindowSet] | None = None
    target_trials: dict[str, np.ndarray] | None = None  # per split: its trials whose target covers every bin
    target_skipped: np.ndarray | None = None  # kept-trial positions skipped by the aperture task (incomplete target)

    def windows(self, task: str) -> dict[str, WindowSet]:
        """The train / validation / test windows of one task ("object", "grasp-phase" or "aperture")."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "aperture" and self.aperture is None:
            where = self.binned.source.get("path", self.binned.session)
            if self.binned.target_problem:
                raise GrasptpuError(f"{where}: {self.binned.target_problem}")
            target = self.binned.layout.get("target")
            raise GrasptpuError(f"{where}: no target signal {target!r} to decode (the layout's `target`); "
                                "`grasptpu inspect` lists the file's signals")
        return {"object": self.object, "grasp-phase": self.grasp_phase, "aperture": self.aperture}[task]

    def target_note(self) -> str | None:
        """One line on the trials the aperture task skips (an incomplete target), or None."""
        skipped = self.target_skipped
        if skipped is None or not len(skipped):
            return None
        b = self.binned
        k = int(skipped[0])
        return (f"target {b.layout.get('target')!r}: {len(skipped)} of {len(b.trial_index)} trials have a bin without a "
                f"finite sample (NaN there, or the signal ends before the trial): skipped by the aperture decoder "
                f"only (first: trial {int(b.trial_index[k])}, bin {first_gap(b.target, b.trial_offsets, k)}); "
                "fix the signal to keep them")


def assert_disjoint(sets: dict[str, WindowSet]) -> None:
    """No trial (hence no window) of the test split may feed training or validation."""
    test = set(np.unique(sets["test"].trial).tolist())
    for name in ("train", "validation"):
        shared = test & set(np.unique(sets[name].trial).tolist())
        if shared:
            raise AssertionError(f"{len(shared)} test trials leaked into the {name} windows")


def binned_session(path: Path | str, bin_ms: float = DEFAULT_BIN_MS, cache_dir: Path | None = None,
                   use_cache: bool = True, progress: bool = False, allow_pickle: bool = False,
                   max_trial_bins: int = MAX_TRIAL_BINS, layout: Layout = PAPER) -> tuple[BinnedSession, bool, dict]:
    """Load and bin a recording, or take it from the cache; returns (session, cache hit, timings).

    The file is checked (a file, no pickle unless allowed) and hashed before any parser sees it,
    so every figure downstream names the exact bytes it came from."""
    path = check_file(Path(path), allow_pickle)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cache_dir = cache_dir or cache.default_cache_dir()
    sha = cache.file_sha256(path, cache_dir) if use_cache else sha256_of(path)
    seconds["hash"] = time.perf_counter() - t0
    key = cache.entry_key(sha, {"bin_ms": float(bin_ms), "layout": layout.key()}) if use_cache else None
    hit = cache.load(cache_dir, key) if key else None
    if hit is not None:
        check_trial_bins(np.diff(hit.trial_offsets), hit.trial_index, bin_ms, max_trial_bins, path)
        seconds["cache"] = time.perf_counter() - t0 - seconds["hash"]
        return hit, True, seconds
    t1 = time.perf_counter()
    rec = load_recording(path, progress, allow_pickle)
    if layout.segments is not None:
        rec = cut_segments(rec, layout.segments, path)
    trials = select_trials(rec, path, layout)
    seconds["load"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    binned = bin_session(rec, trials, bin_ms, progress, max_trial_bins, path)
    binned.source = {"path": str(path), "sha256": sha, "n_trials_in_file": rec.n_trials}
    binned.layout = layout.as_dict()
    if layout.target is not None and layout.target in rec.signals:
        sig = rec.signals[layout.target]
        if sig.problem:  # unusable as a target (e.g. its unit changes between trials): only the aperture task fails
            binned.target_problem = sig.problem
        else:
            binned.target = bin_signal(sig, trials.index, rec.t_start_s[trials.index], np.diff(binned.trial_offsets),
                                       bin_ms)
            binned.target_units = sig.units
    binned = drop_slow_units(binned, layout.min_rate_hz)
    seconds["bin"] = time.perf_counter() - t2
    if key is not None:
        cache.store(cache_dir, key, binned)
    return binned, False, seconds


def prepare(path: Path | str, bin_ms: float = DEFAULT_BIN_MS, window_bins: int = WINDOW_BINS,
            label_bin: str = "last", train_val_share: float = DEFAULT_TRAIN_VAL_SHARE,
            val_share: float | None = None, seed: int = 0, cache_dir: Path | None = None,
            use_cache: bool = True, progress: bool = False, allow_pickle: bool = False,
            max_trial_bins: int = MAX_TRIAL_BINS, layout: Layout = PAPER) -> Prepared:
    """The whole data stage. Windows are views, so this costs the binning (or a cache hit) only."""
    binned, hit, seconds = binned_session(path, bin_ms, cache_dir, use_cache, progress, allow_pickle, max_trial_bins,
                                          layout)
    t0 = time.perf_counter()
    split = split_trials(binned.object_id, train_val_share, val_share, seed)
    parts = split.as_dict()
    grasp = {k: grasp_phase_windows(binned, v, window_bins, label_bin) for k, v in parts.items()}
    obj = {k: object_windows(binned, v, window_bins, label_bin) for k, v in parts.items()}
    aperture = target_trials = skipped = None
    if binned.target is not None:
        complete = complete_trials(binned.target, binned.trial_offsets)
        skipped = np.flatnonzero(~complete)
        target_trials = {k: v[complete[v]] for k, v in parts.items()}
        if all(len(v) for v in target_trials.values()):
            aperture = {k: aperture_windows(binned, v, window_bins, label_bin) for k, v in target_trials.items()}
        else:
            binned.target_problem = (f"no split keeps a trial whose target {binned.layout.get('target')!r} covers every "
                                     f"bin ({len(skipped)} of {len(complete)} trials have a gap): fix the signal")
    seconds["windows"] = time.perf_counter() - t0
    return Prepared(binned, split, grasp, obj, hit, seconds, aperture, target_trials, skipped)
