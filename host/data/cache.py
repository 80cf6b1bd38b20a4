"""On-disk cache of binned sessions, keyed by the source file's content hash and the parameters.

Loading and binning the largest session takes seconds; a cache hit takes milliseconds because
the counts are memory-mapped, not read. The content hash of a source file is itself memoised by
(path, size, mtime), as git's index does, so a warm run does not re-hash hundreds of megabytes.
Entries are written to a temporary folder and renamed into place: a crash never leaves a
half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from host.data.binning import BinnedSession
from host.files import sha256_of, write_json

CACHE_FORMAT = 2  # bump when BinnedSession or the binning rules change (2: layouts, class names, exact bin edges)
ARRAYS = ("counts", "trial_offsets", "hold_bin", "reward_bin", "object_id", "trial_index", "unit_index")


def default_cache_dir() -> Path:
    """`$GRASPTPU_CACHE`, else `$XDG_CACHE_HOME/grasptpu`, else `~/.cache/grasptpu`."""
    if os.environ.get("GRASPTPU_CACHE"):
        return Path(os.environ["GRASPTPU_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "grasptpu"


def file_sha256(path: Path, cache_dir: Path) -> str:
    """Content hash of a file, memoised by (resolved path, size, mtime_ns)."""
    st = path.stat()
    memo_path = cache_dir / "file-hashes.json"
    memo = _read_json(memo_path)
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns]
    if key in memo and memo[key]["stamp"] == stamp:
        return memo[key]["sha256"]
    memo[key] = {"stamp": stamp, "sha256": sha256_of(path)}
    write_json(memo_path, memo)
    return memo[key]["sha256"]


def entry_key(source_sha256: str, params: dict) -> str:
    text = json.dumps({"source": source_sha256, "params": params, "format": CACHE_FORMAT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(cache_dir: Path, key: str) -> BinnedSession | None:
    """The cached session for `key`, counts memory-mapped; None on a miss or a damaged entry."""
    entry = cache_dir / "binned" / key
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r" if name == "counts" else None)
                  for name in ARRAYS}
    except (OSError, ValueError):
        return None
    try:
        meta["class_names"] = {int(k): str(v) for k, v in meta["class_names"].items()}
        if (entry / "target.npy").is_file():
            arrays["target"] = np.load(entry / "target.npy")
        return BinnedSession(**arrays, **meta)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # an entry of another shape: binned again


def store(cache_dir: Path, key: str, binned: BinnedSession) -> None:
    """Write an entry atomically (temporary folder, then rename)."""
    root = cache_dir / "binned"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        for name in ARRAYS + (("target",) if binned.target is not None else ()):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(binned, name)))
        meta = {k: getattr(binned, k) for k in ("session", "bin_ms", "drops", "dropped_objects", "merged", "source",
                                                "class_names", "layout", "target_units", "target_problem")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, root / key)
        except OSError:  # another process stored the same entry first: theirs is as good
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
