"""Recording file -> binned session (cached) -> trial split -> window datasets, in one call.

This is the data stage every later stage (training, quantisation, the device's test windows)
starts from, so it also says, in `summary`, exactly what data and split a number came from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host.data import cache
from host.data.binning import BinnedSession, bin_session
from host.data.load import load_recording, select_trials
from host.data.split import DEFAULT_TRAIN_VAL_SHARE, Split, split_trials
from host.data.windows import WINDOW_BINS, WindowSet, grasp_phase_windows, object_windows

DEFAULT_BIN_MS = 40.0
TASKS = ("object", "grasp-phase")


@dataclass
class Prepared:
    """A binned session, its split and both window datasets per split."""

    binned: BinnedSession
    split: Split
    grasp_phase: dict[str, WindowSet]
    object: dict[str, WindowSet]
    cache_hit: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def windows(self, task: str) -> dict[str, WindowSet]:
        """The train / validation / test windows of one task ("object" or "grasp-phase")."""
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return self.object if task == "object" else self.grasp_phase


def assert_disjoint(sets: dict[str, WindowSet]) -> None:
    """No trial (hence no window) of the test split may feed training or validation."""
    test = set(np.unique(sets["test"].trial).tolist())
    for name in ("train", "validation"):
        shared = test & set(np.unique(sets[name].trial).tolist())
        if shared:
            raise AssertionError(f"{len(shared)} test trials leaked into the {name} windows")


def binned_session(path: Path | str, bin_ms: float = DEFAULT_BIN_MS, cache_dir: Path | None = None,
                   use_cache: bool = True, progress: bool = False) -> tuple[BinnedSession, bool, dict]:
    """Load and bin a recording, or take it from the cache; returns (session, cache hit, timings)."""
    path = Path(path)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cache_dir = cache_dir or cache.default_cache_dir()
    key = sha = None
    if use_cache:
        if not path.is_file():
            load_recording(path)  # raises the one-line "no such file" error
        sha = cache.file_sha256(path, cache_dir)
        key = cache.entry_key(sha, {"bin_ms": float(bin_ms)})
        seconds["hash"] = time.perf_counter() - t0
        hit = cache.load(cache_dir, key)
        if hit is not None:
            seconds["cache"] = time.perf_counter() - t0 - seconds["hash"]
            return hit, True, seconds
    t1 = time.perf_counter()
    rec = load_recording(path, progress)
    trials = select_trials(rec, path)
    seconds["load"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    binned = bin_session(rec, trials, bin_ms, progress)
    binned.source = {"path": str(path), "sha256": sha, "n_trials_in_file": rec.n_trials}
    seconds["bin"] = time.perf_counter() - t2
    if key is not None:
        cache.store(cache_dir, key, binned)
    return binned, False, seconds


def prepare(path: Path | str, bin_ms: float = DEFAULT_BIN_MS, window_bins: int = WINDOW_BINS,
            label_bin: str = "last", train_val_share: float = DEFAULT_TRAIN_VAL_SHARE,
            val_share: float | None = None, seed: int = 0, cache_dir: Path | None = None,
            use_cache: bool = True, progress: bool = False) -> Prepared:
    """The whole data stage. Windows are views, so this costs the binning (or a cache hit) only."""
    binned, hit, seconds = binned_session(path, bin_ms, cache_dir, use_cache, progress)
    t0 = time.perf_counter()
    split = split_trials(binned.object_id, train_val_share, val_share, seed)
    parts = split.as_dict()
    grasp = {k: grasp_phase_windows(binned, v, window_bins, label_bin) for k, v in parts.items()}
    obj = {k: object_windows(binned, v, window_bins, label_bin) for k, v in parts.items()}
    seconds["windows"] = time.perf_counter() - t0
    return Prepared(binned, split, grasp, obj, hit, seconds)
