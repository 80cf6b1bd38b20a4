"""Read full-size synthetic sessions back with plain neo.io and check the recordings' structure
(docs/method.md, "Recordings").

For each `<session>.neo.mat` in a folder (written by `grasptpu synth --all`), in a child process
per file (NeoMatlabIO needs ~5 GB for the largest): `neo.io.NeoMatlabIO(path).read_block()`, then
assert one Segment per trial with the table's trial count, the table's unit count in every
segment, `obj` and `correct` annotations, and `events[0]` with padded phase labels including
Start, Hold and Rew. Also checks that the fast reader returns exactly the same spike times.
Usage: python tools/check_sessions.py [DATA_DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def check_one(path: Path) -> dict:
    import numpy as np
    from neo.io import NeoMatlabIO

    from host.data import matfile
    from host.data import synth

    name = path.name.split(".")[0]
    spec = synth.SESSIONS[name]
    t0 = time.perf_counter()
    block = NeoMatlabIO(str(path)).read_block()
    read_s = time.perf_counter() - t0
    segs = block.segments
    assert len(segs) == spec.n_trials, (len(segs), spec.n_trials)
    assert all(len(s.spiketrains) == spec.n_units for s in segs)
    assert all({"obj", "correct"} <= set(s.annotations) for s in segs)
    labels = {str(x).strip() for s in segs for x in s.events[0].labels}
    assert {"Start", "Hold", "Rew"} <= labels, labels
    assert any(str(x) != str(x).strip() for s in segs for x in s.events[0].labels), "labels are not padded"
    t1 = time.perf_counter()
    rec = matfile.read_recording(path)
    fast_s = time.perf_counter() - t1
    for k in range(0, len(segs), 37):  # a spread of trials, every unit
        for u, st in enumerate(segs[k].spiketrains):
            np.testing.assert_array_equal(st.magnitude, rec.train(k, u))
        assert segs[k].annotations["obj"] == rec.object_ids[k]
    return {"session": name, "trials": len(segs), "units": spec.n_units, "neo_read_s": round(read_s, 1),
            "fast_read_s": round(fast_s, 2)}


def main() -> None:
    from host.errors import last_line

    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(check_one(Path(sys.argv[2]))))
        return
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data")
    files = sorted(folder.glob("*.neo.mat"))
    if not files:
        sys.exit(f"check_sessions: no *.neo.mat in {folder}: run `grasptpu synth --all --out {folder}` first")
    failed = 0
    for path in files:
        run = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True)
        if run.returncode == 0:
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"ok   {r['session']}: {r['units']} units x {r['trials']} trials; NeoMatlabIO.read_block "
                  f"{r['neo_read_s']} s, fast reader {r['fast_read_s']} s, same spike times")
        else:
            failed += 1
            print(f"FAIL {path.name}: {last_line(run.stderr, str(run.returncode))}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
