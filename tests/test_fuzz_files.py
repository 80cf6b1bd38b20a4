"""Corrupt recordings: byte flips and truncations of small .mat and .nix files, read in a subprocess.

A recording comes from someone else; a damaged copy must give one line and a non-zero exit, never
a traceback, and never crash the process (a segfault in a dependency counts as a failure, so the
files are read in a child process and a crash is caught and named). Seeded and bounded: it runs
in CI and reports how many variants it tried and what became of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from host.data import matfile
from tests.conftest import make_recording, neo_block, write_with_neo

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261128
# Reads every file named on stdin with the whole data stage (load, select, bin, split, window) and
# prints one JSON line per file: accepted, refused (a GrasptpuError: its message) or traceback.
WORKER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from host.data.prepare import prepare
from host.errors import GrasptpuError
for line in sys.stdin:
    path = line.strip()
    print(json.dumps({"start": path}), flush=True)
    try:
        prepare(path, use_cache=False)
        out = {"outcome": "accepted"}
    except GrasptpuError as exc:
        out = {"outcome": "refused", "message": str(exc)}
    except BaseException as exc:
        out = {"outcome": "traceback", "message": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    out["file"] = path
    print(json.dumps(out), flush=True)
"""


def variants(original: Path, out: Path, flips: int, cuts: int, seed: int) -> list[Path]:
    """`flips` copies with one byte XORed by a random non-zero value at a random position, and
    `cuts` copies truncated at a random length (seeded)."""
    data = original.read_bytes()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(flips):
        damaged = bytearray(data)
        pos = int(rng.integers(len(data)))
        damaged[pos] ^= int(rng.integers(1, 256))
        made.append(out / f"flip{i:04d}-at{pos}{original.suffix}")
        made[-1].write_bytes(bytes(damaged))
    for i in range(cuts):
        keep = int(rng.integers(len(data)))
        made.append(out / f"cut{i:04d}-to{keep}{original.suffix}")
        made[-1].write_bytes(data[:keep])
    return made


def read_all(paths: list[Path], timeout_s: float = 600.0) -> tuple[list[dict], list[str]]:
    """Outcomes of reading each path in a child process; a child that dies (signal, abort) is
    noted for the file it was reading and a new child goes on with the rest."""
    results, crashed, todo = [], [], list(paths)
    while todo:
        proc = subprocess.run([sys.executable, "-c", WORKER], input="".join(f"{p}\n" for p in todo),
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout_s)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        done = [r for r in lines if "outcome" in r]
        results += done
        if proc.returncode == 0:
            break
        started = [r["start"] for r in lines if "start" in r]
        last = started[-1] if started else str(todo[0])
        crashed.append(f"{Path(last).name}: exit {proc.returncode} ({proc.stderr.strip().splitlines()[-1:]})")
        finished = {r["file"] for r in done} | {last}
        todo = [p for p in todo if str(p) not in finished]
    return results, crashed


def check(results: list[dict], crashed: list[str], what: str, capsys) -> None:
    outcomes = Counter(r["outcome"] for r in results)
    multi = [r for r in results if r["outcome"] == "refused" and "\n" in r["message"]]
    with capsys.disabled():
        print(f"\n  fuzz {what}: {len(results) + len(crashed)} variants: {outcomes['refused']} refused with one line, "
              f"{outcomes['accepted']} accepted (the damage left a readable session), "
              f"{outcomes['traceback']} tracebacks, {len(crashed)} crashed processes")
    tracebacks = [f"{Path(r['file']).name}: {r['message']}" for r in results if r["outcome"] == "traceback"]
    assert not crashed, "the reader crashed its process on:\n" + "\n".join(crashed)
    assert not tracebacks, "tracebacks instead of one line:\n" + "\n".join(tracebacks[:20])
    assert not multi, f"multi-line refusals: {multi[:3]}"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """A small session (12 trials, 5 units) as our .mat writer, neo's .mat writer and .nix write it."""
    import neo.io

    root = tmp_path_factory.mktemp("fuzz-originals")
    rec = make_recording()
    ours = root / "ours.neo.mat"
    matfile.save_recording(rec, ours)
    theirs = write_with_neo(rec, root / "neo.mat")
    nix = root / "session.nix"
    with neo.io.NixIO(str(nix), mode="ow") as io:
        io.write_block(neo_block(rec))
    return {"ours": ours, "neo": theirs, "nix": nix}


def test_the_originals_are_read(originals):
    results, crashed = read_all(list(originals.values()))
    assert not crashed and [r["outcome"] for r in results] == ["accepted"] * 3, results


@pytest.mark.parametrize("kind,flips,cuts", [("ours", 300, 60), ("neo", 200, 40),
                                             pytest.param("nix", 120, 30, marks=pytest.mark.slow)])
def test_damaged_recordings_give_one_line_never_a_traceback_or_a_crash(originals, tmp_path, capsys, kind, flips, cuts):
    paths = variants(originals[kind], tmp_path / kind, flips, cuts, SEED + len(kind))
    results, crashed = read_all(paths)
    check(results, crashed, f"{kind} ({originals[kind].suffix}, {originals[kind].stat().st_size} bytes)", capsys)
