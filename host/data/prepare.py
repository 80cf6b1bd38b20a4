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


@dataclass
class Prepared:
    """A binned session, its split and both window datasets per split."""

    binned: BinnedSession
    split: Split
    grasp_phase: dict[str, WindowSet]
    object: dict[str, WindowSet]
    cache_hit: bool
    seconds: dict[str, float] = field(default_factory=dict)


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


def summary(p: Prepared) -> str:
    """What a person needs to trust the numbers downstream: data, drops, classes, split, windows."""
    b = p.binned
    lines = [
        f"session {b.session}: {b.source.get('path', '?')} ({b.source.get('n_trials_in_file', '?')} trials in file)",
        f"  units {b.n_units}, bin {b.bin_ms:g} ms, trials kept {b.n_trials}, bins {int(b.trial_offsets[-1])}"
        f" ({'cache hit' if p.cache_hit else 'loaded and binned'})",
    ]
    for reason, count in b.drops.items():
        lines.append(f"  dropped {count:4d} trials: {reason}")
    if b.dropped_objects:
        lines.append("  dropped objects (kept trials): "
                     + ", ".join(f"{o} ({n})" for o, n in sorted(b.dropped_objects.items())))
    if b.merged:
        lines.append("  merged duplicate ids (trials): "
                     + ", ".join(f"{o}({n})" for o, n in sorted(b.merged.items())))
    per_class = np.bincount(b.class_index, minlength=len(b.classes))
    lines.append(f"  classes {len(b.classes)}: trials per class min {per_class.min()}, "
                 f"median {int(np.median(per_class))}, max {per_class.max()}")
    s = p.split
    lines.append(f"  split (seed {s.seed}, train+val {s.train_val_share:.0%}, val {s.validation_share:.0%} of it): "
                 + ", ".join(f"{k} {len(v)} trials" for k, v in s.as_dict().items()))
    for name in ("train", "validation", "test"):
        g, o = p.grasp_phase[name], p.object[name]
        gc = g.label_counts()
        lines.append(f"  {name:>10}: grasp-phase windows {len(g):7d} (rest {gc['rest']}, grasp {gc['grasp']}),"
                     f" object windows {len(o):6d} over {int((np.bincount(o.label, minlength=len(b.classes)) > 0).sum())} classes")
    return "\n".join(lines)
