"""Read a recording with neo.io (or pynwb, for .nwb) in a child process, so a reader that crashes
cannot take grasptpu down.

`read(path)` runs `python -m host.data.isolated PATH OUT.npz` and rebuilds the `Recording` from
OUT.npz: plain arrays only (labels as fixed-width unicode, ragged lists as values + offsets), read
with allow_pickle=False. The child prints a refusal as one line on stderr and exits 2; any other
end (a signal from a crash in h5py/HDF5 or scipy, a traceback) becomes one DataError line here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from host.data.recording import Recording, Signal
from host.errors import DataError, first_line, last_json

TIMEOUT_S = 1800.0
FIELDS = ("t_start_s", "t_stop_s", "spike_times_s", "train_offsets")


def read(path: Path, allow_pickle: bool = False) -> Recording:
    """The recording at `path`, read by neo.io in a child process."""
    with tempfile.TemporaryDirectory(prefix="grasptpu-neo-") as tmp:
        out = Path(tmp) / "recording.npz"
        cmd = [sys.executable, "-m", "host.data.isolated", str(path), str(out)] + (["--allow-pickle"] if allow_pickle else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  cwd=Path(__file__).resolve().parents[2])
        except subprocess.TimeoutExpired:
            raise DataError(path, f"neo.io did not finish reading it within {TIMEOUT_S:.0f} s") from None
        if proc.returncode == 2:
            refusal = last_json(proc.stderr) or {}
            raise DataError(path, str(refusal.get("problem") or "not a readable Neo file"),
                            trial=refusal.get("trial") if isinstance(refusal.get("trial"), int) else None,
                            hint=str(refusal.get("hint") or ""))
        if proc.returncode != 0:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise DataError(path, f"neo.io crashed reading it ({how}): the file is damaged",
                            hint="re-export it, or check the copy is complete")
        return unpack(out, path)


def pack(rec: Recording, out: Path) -> None:
    """The recording as plain arrays (no object arrays, so no pickle is needed to read it back)."""
    labels = [label for trial in rec.event_labels for label in trial]
    np.savez(out, name=np.array(rec.name), n_units=np.array(rec.n_units),
             event_labels=np.array(labels, dtype=str) if labels else np.empty(0, "<U1"),
             event_times_s=np.concatenate(rec.event_times_s) if rec.event_times_s else np.empty(0),
             event_offsets=np.r_[0, np.cumsum([len(x) for x in rec.event_labels])].astype(np.int64),
             annotation_keys=np.array(list(rec.trial_annotations), dtype=str).reshape(-1),
             signal_meta=np.array([[s.name, s.units, repr(s.rate_hz), s.problem] for s in rec.signals.values()],
                                  dtype=str).reshape(-1, 4),
             **{f"signal_{i}_{part}": getattr(s, part) for i, s in enumerate(rec.signals.values())
                for part in ("values", "offsets", "t_start_s")},
             **{f"annotation_{i}": v for i, v in enumerate(rec.trial_annotations.values())},
             **{k: getattr(rec, k) for k in FIELDS})


def unpack(out: Path, path: Path) -> Recording:
    with np.load(out, allow_pickle=False) as npz:
        offsets = npz["event_offsets"]
        labels, times = npz["event_labels"].tolist(), npz["event_times_s"]
        spans = list(zip(offsets[:-1], offsets[1:]))
        return Recording(name=str(npz["name"]), n_units=int(npz["n_units"]),
                         event_labels=[labels[a:b] for a, b in spans], event_times_s=[times[a:b] for a, b in spans],
                         trial_annotations={str(k): npz[f"annotation_{i}"]
                                            for i, k in enumerate(npz["annotation_keys"].tolist())},
                         signals={name: Signal(name, units, float(rate), npz[f"signal_{i}_values"],
                                               npz[f"signal_{i}_offsets"], npz[f"signal_{i}_t_start_s"], problem)
                                  for i, (name, units, rate, problem) in enumerate(npz["signal_meta"].tolist())},
                         **{k: npz[k] for k in FIELDS})


def main(argv: list[str]) -> int:
    """Child: read argv[0] with neo.io, write argv[1]; a refusal is one JSON line on stderr
    ({"trial", "problem", "hint"}: the DataError without its path, which the parent adds), exit 2."""
    from host.data.neoread import read_with_neo
    from host.data.nwbread import read_nwb

    path, out = Path(argv[0]), Path(argv[1])
    try:
        pack(read_nwb(path) if path.suffix.lower() == ".nwb" else read_with_neo(path, "--allow-pickle" in argv[2:]), out)
    except DataError as exc:
        print(json.dumps({"trial": exc.trial, "problem": exc.problem, "hint": exc.hint}), file=sys.stderr)
        return 2
    except Exception as exc:  # a reader's failure on someone else's file: one line, the parent names it
        why = first_line(exc)[:200]
        kind = "NWB" if path.suffix.lower() == ".nwb" else "Neo"
        print(json.dumps({"problem": f"not a readable {kind} file ({type(exc).__name__}: {why})"}), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
