"""Model folders from other people are untrusted input (the hostile-models issue).

Three parts:
1. a seeded, bounded fuzz of hostile manifests (and a few hostile folder layouts), each written
   into a copy of a real quantised folder and read by BOTH sides: the board's
   `device.contract.load_manifest` + `verify` in-process, and the host's `grasptpu check-quant`
   through the CLI. Each side must accept exactly the variants that are harmless to it and refuse
   every other one in one line (DeviceError / exit 2); any other exception, a traceback or a
   multi-line message is a failure. An audit hook records every file opened meanwhile, so a name
   that reaches outside the folder cannot be "verified" unnoticed (sentinel files sit next to the
   folder with their true sha256 in the manifest);
2. damaged files under a re-hashed manifest (sha256 passes, only reading the file can tell), into
   the board's runner (device.bench) and check-quant;
3. numbered probes, each a plain test that failed before model folders were treated as
   untrusted: deploy writing outside the board root, deploy following symbolic links, the runner
   reading outside its folder, `current` switched to a release the runner then refuses, and
   check-quant's KeyError and silent PASS on a manifest without or with a swapped task.
Bugs found and not yet fixed would be listed in BUGS (the fuzz then expects their exact wrong outcome,
so a fix shows up as a failure); the thirteen found when this was written are fixed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from device.contract import (FLOAT_MODEL, INT8_MODEL, KERAS_MODEL, MANIFEST, METRICS, TEST_SET, DeviceError,
                             load_manifest, verify)
from host.boards.inventory import load_inventory
from host.boards.remote import connect
from host.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sim_board  # noqa: E402

needs_sshd = pytest.mark.skipif(not sim_board.SSHD.exists(), reason="openssh-server is not installed (make sshd)")

SEED = 20240611
COMBOS_PER_FOLDER = 70   # random 2-3 mutation combinations per base folder
MAX_MESSAGE = 2000       # an error line longer than this floods the terminal instead of naming the problem
ACCEPT, REFUSE = "accept", "refuse"

# Bugs found by this file and not fixed yet: the fuzz expects exactly the wrong outcome given
# (key -> (side, outcome, description)), so a fix shows up as a failure that says to drop the entry.
# The thirteen found when it was written (non-object and deeply nested manifests, format unchecked on
# the host, symlinked, directory and FIFO manifests, links followed by check-quant, huge values in
# messages, non-integer classes, DeviceError escaping the CLI, unchecked test sets, foreign Keras
# files, a runtime crash reported as a lost connection) are fixed and now expect a clean refusal.
BUGS: dict[str, tuple[str, str, str]] = {}


def one_line(message: str) -> bool:
    """A message a terminal and a log show as one line (str.splitlines knows every line break)."""
    return len(message.splitlines()) == 1


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_file(path: Path) -> str:
    return sha(Path(path).read_bytes())


def read(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def write(folder: Path, manifest: object) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def copy_folder(src: Path, dest_parent: Path) -> Path:
    """A private copy of a fixture folder (the session's folders are shared: never change those)."""
    dest_parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(src, dest_parent / src.name))


# --- opened files: a process-wide audit hook, active only while a test records -------------------

_RECORDING: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _RECORDING and isinstance(args[0], (str, bytes, os.PathLike)):
        _RECORDING[-1].append(os.fsdecode(args[0]))


_HOOKED: list[bool] = []


@contextmanager
def recording_opens() -> Iterator[list[str]]:
    """Every path passed to open() (builtins.open, io.open, os.open, numpy's loaders) meanwhile, as
    given: a symbolic link is recorded under its own name, so callers resolve them."""
    if not _HOOKED:
        sys.addaudithook(_audit)  # cannot be removed; costs nothing while nothing records
        _HOOKED.append(True)
    opened: list[str] = []
    _RECORDING.append(opened)
    try:
        yield opened
    finally:
        _RECORDING.remove(opened)


WATCHED = {"/etc/passwd"}  # absolute names the fuzz lists with their true sha256


def outside(opened: list[str], folder: Path, sandbox: Path) -> list[str]:
    """Opened files that lie in the sandbox but not in `folder` (after following links), or that
    the fuzz names absolutely: what an attacking name could reach. Other files (Python's own
    modules) are not ours to judge."""
    inside, box = os.path.realpath(folder), os.path.realpath(sandbox)
    real = {os.path.realpath(p) for p in opened}
    return sorted(p for p in real if p in WATCHED
                  or (p.startswith(box + os.sep) and not p.startswith(inside + os.sep)))


# --- 1. the fuzz --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Mutation:
    """One change to a manifest (applied to a deep copy) and what each side must answer: ACCEPT
    (harmless to that side), REFUSE, or a key of BUGS (the wrong outcome it currently gives)."""

    family: str
    label: str
    apply: Callable[[dict], None]
    device: str = REFUSE
    host: str = REFUSE


@dataclasses.dataclass(frozen=True)
class Variant:
    """A hostile model folder: its manifest bytes, or a `setup` that changes a fresh copy's files
    (and returns the manifest bytes), and the expected answers of both sides."""

    kind: str
    label: str
    text: bytes | None
    device: str
    host: str
    setup: Callable[[Path], bytes] | None = None


def is_bug(expectation: str) -> bool:
    """A known bug: "Bn" (its usual wrong outcome) or "Bn:outcome" (this variant's wrong outcome)."""
    return expectation.split(":", 1)[0] in BUGS


def combine(expectations: list[str]) -> str:
    """Several mutations at once: any refused one refuses all; else a known bug shows; else harmless."""
    if REFUSE in expectations:
        return REFUSE
    return next((e for e in expectations if is_bug(e)), ACCEPT)


def setter(*path_and_value) -> Callable[[dict], None]:
    *keys, value = path_and_value

    def apply(m: dict) -> None:
        target = m
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = copy.deepcopy(value)
    return apply


def deleter(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key)


def name_mutations() -> list[Mutation]:
    bad = ["../../x", "/etc", "a/b", "", ".hidden", "x" * 300, 5, None, ["a"], "..", "a\nb", "a b", "ok\x00"]
    return ([Mutation("name", f"name={v!r:.40}", setter("name", v)) for v in bad]
            + [Mutation("name", "name='other-name_1.0+x' (plain)", setter("name", "other-name_1.0+x"), ACCEPT, ACCEPT)])


def artifact_key_mutations(base: dict, folder: Path) -> list[Mutation]:
    """Extra artifact names, each with the true sha256 of the file it names where that exists (so a
    validator that followed the name would find it 'verified')."""
    out = []
    keys = ["../manifest.json", "/etc/passwd", "sub/f", "..", "", "./model_int8.tflite", f"../{folder.name}/x"]
    for key in keys:
        target = Path(key) if key.startswith("/") else folder / key
        digest = sha_file(target) if target.is_file() else sha(b"x")
        out.append(Mutation("artifact key", f"artifacts[{key!r}]", setter("artifacts", key, digest)))
    out.append(Mutation("artifact key", "model_int8.tflite renamed ./model_int8.tflite",
                        lambda m: m["artifacts"].__setitem__("./" + INT8_MODEL, m["artifacts"].pop(INT8_MODEL))))
    return out


def artifact_value_mutations() -> list[Mutation]:
    """Digests: wrong but well-formed (the sha256 check must catch it) and not digests at all.
    check-quant hashes only the files it uses; metrics.json it leaves to the board."""
    wrong = sha(b"not this file")
    out = []
    for name in (INT8_MODEL, TEST_SET, METRICS, KERAS_MODEL, FLOAT_MODEL):
        host_wrong = ACCEPT if name == METRICS else REFUSE
        out.append(Mutation("artifact value", f"{name}: wrong sha256", setter("artifacts", name, wrong), REFUSE,
                            host_wrong))
        for v in ("zz", 5, None, wrong.upper(), wrong[:63], wrong + "0"):
            out.append(Mutation("artifact value", f"{name}: {v!r:.20}", setter("artifacts", name, v)))
    return out


def task_mutations(base: dict) -> list[Mutation]:
    other = "object" if base["task"] == "grasp-phase" else "grasp-phase"
    return ([Mutation("task", f"task={v!r}", setter("task", v)) for v in ("", "objectt", 5, None, "Object", " object",
                                                                            ["object"])]
            + [Mutation("task", f"task swapped to {other}", setter("task", other))])


def data_mutations() -> list[Mutation]:
    out = []
    for key in ("window_bins", "n_units", "bin_ms"):
        for v in (0, -1, "a", 1e9, True, None, 10 ** 400, [12]):
            out.append(Mutation(f"data.{key}", f"data.{key}={v!r:.20}", setter("data", key, v)))
    for v in (float("nan"), float("inf"), -0.0):
        out.append(Mutation("data.bin_ms", f"data.bin_ms={v!r}", setter("data", "bin_ms", v)))
    out.append(Mutation("data.window_bins", "data.window_bins=100001", setter("data", "window_bins", 100001)))
    return out


def label_mutations(base: dict) -> list[Mutation]:
    """label_names and classes that disagree with each other or with the task."""
    names, classes = base["data"]["label_names"], base["data"]["classes"]
    obj = base["task"] == "object"
    out = [
        Mutation("labels", "label_names one longer", setter("data", "label_names", names + ["x"])),
        Mutation("labels", "classes one shorter", setter("data", "classes", classes[:-1])),
        Mutation("labels", "one class", lambda m: m["data"].update(label_names=names[:1], classes=classes[:1])),
        Mutation("labels", "label_names reversed", setter("data", "label_names", names[::-1])),
        Mutation("labels", "label_names None", setter("data", "label_names", None)),
        Mutation("labels", "label_names a string", setter("data", "label_names", ",".join(names))),
        Mutation("labels", "classes as strings", setter("data", "classes", [str(c) for c in classes])),
        Mutation("labels", "the other task's labels", lambda m: m["data"].update(
            **({"label_names": ["rest", "grasp"], "classes": [0, 1]} if obj else
               {"label_names": ["21", "22"], "classes": [21, 22]}))),
        Mutation("labels", "classes are letters (label_names alike)", lambda m: m["data"].update(
            label_names=[f"c{i}" for i in range(len(classes))], classes=[f"c{i}" for i in range(len(classes))])),
    ]
    return out


def shape_mutations(base: dict) -> list[Mutation]:
    """The int8 input shape the board checks against [1, window_bins, n_units]; check-quant takes
    the shape from the model itself, so it may ignore the manifest's."""
    wb, nu = base["data"]["window_bins"], base["data"]["n_units"]
    values = [[1, wb], [2, wb, nu], "x", None, [1, nu, wb], [1, wb, nu + 1], [1, wb, nu, 1]]
    out = [Mutation("tflite shape", f"shape={v!r}", setter("tflite", "int8", "input", "shape", v), REFUSE, ACCEPT)
           for v in values]
    out.append(Mutation("tflite shape", "tflite.int8 a string", setter("tflite", "int8", "x"), REFUSE, ACCEPT))
    return out


def labels_list_mutations(base: dict) -> list[Mutation]:
    """The manifest's `labels` list (the board names its outputs with it; check-quant does not read it)."""
    labels = base["labels"]
    values = {"one short": labels[:-1], "one extra": labels + [{"index": len(labels), "name": "x"}], "a string": "abc",
              "None": None, "indices shifted": [{**e, "index": e["index"] + 1} for e in labels], "empty": [],
              "entries not objects": [e["name"] for e in labels]}
    return [Mutation("labels list", f"labels {k}", setter("labels", v), REFUSE, ACCEPT) for k, v in values.items()]


def format_mutations() -> list[Mutation]:
    return [Mutation("format", f"format={v!r}", setter("format", v), REFUSE, REFUSE)
            for v in (99, 2, "1", "99", None, 1.5)]


def mutation_pool(base: dict, folder: Path) -> list[Mutation]:
    return (name_mutations() + artifact_key_mutations(base, folder) + artifact_value_mutations() + task_mutations(base)
            + data_mutations() + label_mutations(base) + shape_mutations(base) + labels_list_mutations(base)
            + format_mutations())


# Top-level keys: whether the board, then check-quant, may do without them.
KEY_NEEDS = {"format": (REFUSE, REFUSE), "name": (REFUSE, REFUSE), "task": (REFUSE, REFUSE), "data": (REFUSE, REFUSE),
             "artifacts": (REFUSE, REFUSE), "tflite": (REFUSE, REFUSE), "test_set": (REFUSE, ACCEPT),
             "labels": (REFUSE, ACCEPT)}


def missing_key_variants(base: dict) -> list[Variant]:
    out = []
    for key in base:
        device, host = KEY_NEEDS.get(key, (ACCEPT, ACCEPT))
        m = copy.deepcopy(base)
        m.pop(key)
        out.append(Variant("missing key", f"no {key!r}", json.dumps(m).encode(), device, host))
    return out


def whole_variants(base: dict, rng: np.random.Generator) -> list[Variant]:
    """The manifest file as a whole: not an object, not JSON, not UTF-8, truncated, nested."""
    text = json.dumps(base, indent=1).encode()
    not_objects = {"a list": [base], "empty list": [], "a string": "manifest", "a number": 1, "null": None,
                   "true": True, "NaN": float("nan")}
    out = [Variant("whole file", f"manifest is {k}", json.dumps(v).encode(), REFUSE, REFUSE)
           for k, v in not_objects.items()]
    out.append(Variant("whole file", "manifest is {}", b"{}", REFUSE, REFUSE))
    cuts = sorted(set(rng.integers(1, len(text) - 1, 12).tolist()))
    out += [Variant("whole file", f"truncated at byte {c}", text[:c], REFUSE, REFUSE) for c in [0] + cuts]
    latin = json.dumps({**base, "name": "Z\u00fcrich"}, ensure_ascii=False).encode("latin-1")
    out += [Variant("whole file", "non-UTF-8: 0xff first", b"\xff" + text, REFUSE, REFUSE),
            Variant("whole file", "non-UTF-8: latin-1 name", latin, REFUSE, REFUSE),
            Variant("whole file", "UTF-16", json.dumps(base).encode("utf-16"), REFUSE, REFUSE),
            Variant("whole file", "UTF-8 BOM", b"\xef\xbb\xbf" + text, REFUSE, REFUSE),
            Variant("whole file", "random bytes", rng.bytes(512), REFUSE, REFUSE),
            Variant("whole file", "deeply nested (100000 [)", b"[" * 100000 + b"]" * 100000, REFUSE, REFUSE),
            Variant("whole file", "nested 50 deep in an unused key",
                    json.dumps({**base, "extra": json.loads("[" * 50 + "]" * 50)}).encode(), ACCEPT, ACCEPT),
            Variant("whole file", "unchanged", text, ACCEPT, ACCEPT),
            Variant("whole file", "task of 100000 characters", json.dumps({**base, "task": "x" * 100000}).encode(),
                    REFUSE, REFUSE)]
    return out


def mutation_variants(base: dict, pool: list[Mutation]) -> list[Variant]:
    out = []
    for mut in pool:
        m = copy.deepcopy(base)
        mut.apply(m)
        out.append(Variant(mut.family, mut.label, json.dumps(m).encode(), mut.device, mut.host))
    return out


def combo_variants(base: dict, pool: list[Mutation], rng: np.random.Generator, n: int) -> list[Variant]:
    """Seeded random combinations of 2-3 mutations of different families."""
    families = sorted({m.family for m in pool})
    out = []
    for _ in range(n):
        chosen = rng.choice(len(families), size=int(rng.integers(2, 4)), replace=False)
        muts = []
        for f in chosen:
            members = [m for m in pool if m.family == families[f]]
            muts.append(members[int(rng.integers(len(members)))])
        m = copy.deepcopy(base)
        for mut in muts:
            mut.apply(m)
        out.append(Variant("combination", " + ".join(x.label for x in muts), json.dumps(m).encode(),
                           combine([x.device for x in muts]), combine([x.host for x in muts])))
    return out


def outside_variants(base: dict) -> list[Variant]:
    """Names and links that reach a sentinel file NEXT TO the folder, whose true sha256 the manifest
    records: a validator that followed them would call the sentinel 'verified'."""

    def with_artifact(key_of: Callable[[Path], str]) -> Callable[[Path], bytes]:
        def setup(folder: Path) -> bytes:
            sentinel = folder.parent / "sentinel.bin"
            sentinel.write_bytes(b"outside the model folder\n")
            m = copy.deepcopy(base)
            m["artifacts"][key_of(folder)] = sha_file(sentinel)
            return json.dumps(m).encode()
        return setup

    def linked(name: str, listed: bool = True) -> Callable[[Path], bytes]:
        """`name` in the folder becomes a link to an outside copy of itself (same bytes, same sha256)."""
        def setup(folder: Path) -> bytes:
            target = folder.parent / f"outside-{name}"
            if (folder / name).exists():
                shutil.move(folder / name, target)
            else:
                target.write_bytes(b"outside the model folder\n")
            os.symlink(os.path.relpath(target, folder), folder / name)
            m = copy.deepcopy(base)
            if listed:
                m["artifacts"][name] = sha_file(target)
            return json.dumps(m).encode()
        return setup

    def manifest_link(folder: Path) -> bytes:
        target = folder.parent / "outside-manifest.json"
        target.write_text(json.dumps(base))
        os.symlink("../outside-manifest.json", folder / MANIFEST)
        return b""

    def manifest_dir(folder: Path) -> bytes:
        (folder / MANIFEST).mkdir()
        return b""

    return [
        Variant("outside", "artifacts['../sentinel.bin']", None, REFUSE, REFUSE,
                with_artifact(lambda f: "../sentinel.bin")),
        Variant("outside", "artifacts[absolute sentinel path]", None, REFUSE, REFUSE,
                with_artifact(lambda f: str(f.parent / "sentinel.bin"))),
        Variant("outside", "artifacts[folder/../sentinel.bin]", None, REFUSE, REFUSE,
                with_artifact(lambda f: f"../{f.name}/../sentinel.bin")),
        # a link the board would hash, under a name check-quant never opens: harmless to the host
        Variant("outside", "linked.bin -> ../sentinel (listed)", None, REFUSE, ACCEPT, linked("linked.bin")),
        Variant("outside", "metrics.json -> outside copy", None, REFUSE, ACCEPT, linked(METRICS)),
        Variant("outside", "model_int8.tflite -> outside copy", None, REFUSE, REFUSE, linked(INT8_MODEL)),
        # check-quant hashes it through the link (B4), then TestSet.load's path_in refuses it with a
        # DeviceError that the host's CLI does not turn into one line (B9)
        Variant("outside", "test_set.npz -> outside copy", None, REFUSE, REFUSE,
                linked(TEST_SET)),
        Variant("outside", "manifest.json -> outside copy", None, REFUSE, REFUSE, manifest_link),
        Variant("outside", "manifest.json is a directory", None, REFUSE, REFUSE, manifest_dir),
    ]


def variants(folder: Path, rng: np.random.Generator) -> list[Variant]:
    base = read(folder)
    pool = mutation_pool(base, folder)
    return (mutation_variants(base, pool) + missing_key_variants(base) + whole_variants(base, rng)
            + combo_variants(base, pool, rng, COMBOS_PER_FOLDER) + outside_variants(base))


def device_outcome(folder: Path) -> str:
    """The board's answer: accept, refuse (one-line DeviceError) or what went wrong instead."""
    try:
        verify(str(folder), load_manifest(str(folder)))
    except DeviceError as exc:
        return message_outcome(str(exc))
    except Exception as exc:  # anything but a DeviceError is a traceback on the board
        return f"crash:{type(exc).__name__}"
    return ACCEPT


def message_outcome(message: str) -> str:
    if not one_line(message):
        return "multi-line"
    return REFUSE if len(message) <= MAX_MESSAGE else "long-line"


def host_outcome(folder: Path) -> str:
    """check-quant's answer: accept (exit 0 PASS or 1 gate FAIL), refuse (exit 2, one line) or else."""
    result = CliRunner().invoke(main, ["check-quant", str(folder)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"crash:{type(result.exception).__name__}"
    if result.exit_code == 2:
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("grasptpu: error: "):
            return "multi-line"
        return message_outcome(lines[0])
    return ACCEPT if result.exit_code in (0, 1) else f"exit {result.exit_code}"


def expected(expectation: str, side: str) -> str:
    """The outcome to see: the expectation itself, or a known bug's current wrong outcome."""
    if not is_bug(expectation):
        return expectation
    key, _, outcome = expectation.partition(":")
    where, usual, _ = BUGS[key]
    assert where in (side, "both"), f"{key} is not a {side} bug"
    return outcome or usual


def judge(outcome: str, opened_outside: list[str], expectation: str, side: str) -> tuple[str, str | None]:
    """(table column, problem or None). Reaching outside the folder is a problem in itself."""
    seen = outcome + ("+outside" if opened_outside else "")
    want = expected(expectation, side)
    column = "known bug" if is_bug(expectation) else seen
    if seen != want:
        known = f", known bug {expectation.split(':')[0]}: fixed? then expect {REFUSE}" if is_bug(expectation) else ""
        return column, f"{side}: {seen} (expected {want}{known})"
    return column, None


@pytest.fixture
def cached_models(monkeypatch):
    """check-quant's Keras load and model runs, memoised by each file's size and mtime: the fuzz
    changes only manifest.json (the folder's other files are checked unchanged at the end, and a
    fresh copy keeps both), so the 3 models need not run again for each of hundreds of variants.
    Everything check-quant checks (manifest, sha256 of its files, test set) still runs each time."""
    import keras

    from host.quantize import gate

    real_load, real_outputs = keras.models.load_model, gate.host_outputs
    models, outputs = {}, {}

    def stamp(path) -> tuple:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def load(path, *args, **kwargs):
        key = stamp(path)
        if key not in models:
            models[key] = real_load(path, *args, **kwargs)
        return models[key]

    def host_outputs(model, float_model, int8_model, windows):
        key = (stamp(float_model), stamp(int8_model), windows.window_bins, windows.counts.shape, len(windows))
        if key not in outputs:
            outputs[key] = real_outputs(model, float_model, int8_model, windows)
        return outputs[key]

    monkeypatch.setattr(keras.models, "load_model", load)
    monkeypatch.setattr(gate, "host_outputs", host_outputs)


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: sha_file(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}


def run_variant(v: Variant, work: Path, sandbox: Path, index: int, src: Path) -> tuple[list[str], list[str]]:
    """Write the variant (into the shared working copy, or a fresh copy when it changes other files)
    and ask both sides; ([device column, host column], problems)."""
    if v.setup is None:
        folder = work
        (folder / MANIFEST).write_bytes(v.text)
    else:
        folder = copy_folder(src, sandbox / f"v{index}")
        (folder / MANIFEST).unlink()
        text = v.setup(folder)
        if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink():
            (folder / MANIFEST).write_bytes(text)
    columns, problems = [], []
    for side, ask, expectation in (("device", device_outcome, v.device), ("host", host_outcome, v.host)):
        with recording_opens() as opened:
            outcome = ask(folder)
        column, problem = judge(outcome, outside(opened, folder, sandbox), expectation, side)
        columns.append(column)
        if problem:
            problems.append(f"{v.kind}: {v.label}: {problem}")
    return columns, problems


def summary(rows: list[tuple[str, str, str]]) -> str:
    """Per class: variants tried, and each side's clean refusals, acceptances, known bugs and others."""
    head = (f"{'class':<18}{'variants':>9} | {'device refused':>14}{'accepted':>9}{'known':>6}{'other':>6} | "
            f"{'host refused':>12}{'accepted':>9}{'known':>6}{'other':>6}")
    lines = ["", "hostile manifests: outcomes per class", head, "-" * len(head)]

    def cells(col: Counter, width: int) -> str:
        other = sum(col.values()) - col[REFUSE] - col[ACCEPT] - col["known bug"]
        return f"{col[REFUSE]:>{width}}{col[ACCEPT]:>9}{col['known bug']:>6}{other:>6}"

    for kind in sorted({k for k, _, _ in rows}) + ["total"]:
        sel = [r for r in rows if kind in ("total", r[0])]
        lines.append(f"{kind:<18}{len(sel):>9} | {cells(Counter(r[1] for r in sel), 14)} | "
                     f"{cells(Counter(r[2] for r in sel), 12)}")
    return "\n".join(lines)


def test_hostile_manifests_are_refused_in_one_line_on_both_sides(quantised, tmp_path, cached_models, capsys):
    """Every variant: the board's load_manifest + verify and the host's check-quant each accept it
    only if it is harmless to them, else refuse it in one line; nothing outside the folder is
    opened. Both decoders' folders are bases (so the task swap goes both ways)."""
    _, detector, classifier, _ = quantised
    rng = np.random.default_rng(SEED)
    rows, problems, bugs = [], [], set()
    for src in (detector, classifier):
        sandbox = tmp_path / src.name
        work = copy_folder(src, sandbox / "work")
        before = folder_digest(work)
        for i, v in enumerate(variants(work, rng)):
            columns, found = run_variant(v, work, sandbox, i, src)
            rows.append((v.kind, *columns))
            bugs |= {e.split(":")[0] for e in (v.device, v.host) if is_bug(e)}
            problems += [f"{src.name}: {p}" for p in found]
        assert folder_digest(work) == before, "a check changed the folder's files"
    with capsys.disabled():
        print(summary(rows))
        for key in sorted(bugs, key=lambda k: int(k[1:])):
            side, outcome, text = BUGS[key]
            print(f"  known bug {key} ({side}, {outcome}): {text}")
    assert len(rows) >= 300
    assert not problems, f"{len(problems)} of {len(rows)} variants misjudged:\n" + "\n".join(problems[:40])


# --- 2. damaged files under a re-hashed manifest: only reading them can tell ---------------------

def npz_with(change: Callable[[dict], None]) -> Callable[[Path], bytes]:
    """test_set.npz rewritten with `change` applied to its arrays (no pickles)."""
    def damage(path: Path) -> bytes:
        import io

        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        change(arrays)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()
    return damage


# (label, file, new bytes from the old file, device.bench's answer, check-quant's answer)
DAMAGE = [
    ("int8 model truncated", INT8_MODEL, lambda p: p.read_bytes()[:1000], REFUSE, REFUSE),
    ("int8 model is the float model", INT8_MODEL, lambda p: (p.parent / FLOAT_MODEL).read_bytes(), REFUSE, REFUSE),
    ("float model truncated", FLOAT_MODEL, lambda p: p.read_bytes()[:1000], ACCEPT, REFUSE),
    ("keras model not a zip", KERAS_MODEL, lambda p: b"not a keras file", ACCEPT, REFUSE),
    ("test set not an npz", TEST_SET, lambda p: b"garbage", REFUSE, REFUSE),
    ("test set truncated", TEST_SET, lambda p: p.read_bytes()[:5000], REFUSE, REFUSE),
    ("test set without counts", TEST_SET, npz_with(lambda a: a.pop("counts")), REFUSE,
     REFUSE),
    ("test set without int8_output", TEST_SET, npz_with(lambda a: a.pop("int8_output")), REFUSE,
     REFUSE),
    ("test set end_row out of range", TEST_SET, npz_with(lambda a: a.update(end_row=a["end_row"] + 10 ** 6)),
     REFUSE, REFUSE),
    ("test set counts 3-D", TEST_SET, npz_with(lambda a: a.update(counts=a["counts"][None])), REFUSE,
     REFUSE),
    ("test set labels out of range", TEST_SET, npz_with(lambda a: a.update(label=a["label"] + 5)), REFUSE,
     REFUSE),
    ("test set fractional counts", TEST_SET, npz_with(lambda a: a.update(counts=a["counts"] * 1.5)), REFUSE, REFUSE),
]


def damaged_copy(src: Path, tmp: Path, name: str, damage: Callable[[Path], bytes]) -> Path:
    """A copy whose `name` holds `damage`d bytes, with the manifest's sha256 updated to match, so
    the sha256 checks pass and only reading the file can tell."""
    folder = copy_folder(src, tmp)
    (folder / name).write_bytes(damage(folder / name))
    m = read(folder)
    m["artifacts"][name] = sha_file(folder / name)
    write(folder, m)
    return folder


def bench_outcome(folder: Path) -> str:
    """device.bench's answer in-process (the board's runner on this machine's runtime)."""
    import contextlib
    import io

    from device import bench

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = bench.main([str(folder), "--invokes", "10", "--json", "-"])
    except Exception as exc:  # a traceback on the board
        return f"crash:{type(exc).__name__}"
    if code == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return message_outcome(lines[0]) if len(lines) == 1 and lines[0].startswith("device.bench: error: ") \
            else "multi-line"
    return ACCEPT if code == 0 else f"exit {code}"


@pytest.mark.parametrize("side", ["device", "host"])
@pytest.mark.parametrize("label,name,damage,device,host", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_file_under_a_rehashed_manifest_is_one_line(quantised, tmp_path, label, name, damage, device, host,
                                                             side):
    """Why: sha256 only proves the bytes are the ones the manifest's author listed; a hostile
    author lists damaged bytes. The board's runner (device.bench) and check-quant must then refuse
    in one line what they cannot use (or, if they do not use the file, go on)."""
    _, detector, _, _ = quantised
    folder = damaged_copy(detector, tmp_path, name, damage)
    expectation = device if side == "device" else host
    outcome = bench_outcome(folder) if side == "device" else host_outcome(folder)
    want = expected(expectation, side)
    if want == "crash" and outcome.startswith("crash:"):
        want = outcome
    assert outcome == want, (f"{label}: {side} {outcome}, expected {want}"
                             + (f" (known bug {expectation.split(':')[0]}: fixed? then expect {REFUSE})"
                                if is_bug(expectation) else ""))


# --- 3. numbered probes: each failed before model folders were untrusted -------------------------

def board_root(inventory: Path) -> Path:
    return Path(load_inventory(inventory)["b1"].root)  # a simulated board's disk is a local folder


def listing(root: Path) -> list[tuple[str, str]]:
    """Every entry under a board root (and next to it): path and size, or a link's target."""
    top = root.parent
    if not top.exists():
        return []
    return sorted((str(p.relative_to(top)), os.readlink(p) if p.is_symlink() else str(p.stat().st_size)
                   if p.is_file() else "dir") for p in top.rglob("*") if "sshd" not in p.name)


def board_state(inventory: Path) -> dict | None:
    """b1's current release and releases, from the board's own runner; None before any deploy."""
    board = load_inventory(inventory)["b1"]
    conn = connect(board)
    try:
        if conn.run(f"test -L {board.root}/current", warn=True, hide=True, in_stream=False).exited:
            return None
        out = conn.run(f"cd {board.root}/current && {board.python} -m device.release status {board.root}",
                       hide=True, in_stream=False).stdout
    finally:
        conn.close()
    return json.loads(out.strip().splitlines()[-1])


def deploy(inventory: Path, *folders: Path):
    return CliRunner().invoke(main, ["deploy", *map(str, folders), "--board", "b1", "--inventory", str(inventory)])


def error_lines(result) -> list[str]:
    return [ln for ln in result.output.splitlines() if ln.strip()]


@needs_sshd
@pytest.mark.slow
def test_probe1_deploy_writes_outside_the_board_root(fleet, quantised, tmp_path):
    """A manifest `name` becomes models/<name>/ in the release: '../../evil' would have put files
    beside the release (the artifacts still match, so only the name is wrong). Refused on the
    host, in one line naming it, before anything reaches the board."""
    _, inventory = fleet
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path)
    m = read(folder)
    m["name"] = "../../evil"
    write(folder, m)
    before = listing(board_root(inventory))
    result = deploy(inventory, folder)
    lines = error_lines(result)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and "'../../evil'" in lines[0], result.output
    assert listing(board_root(inventory)) == before
    assert not list(fleet[0].parent.rglob("evil*"))


@needs_sshd
@pytest.mark.slow
@pytest.mark.parametrize("name", [METRICS, TEST_SET])
def test_probe2_deploy_follows_symlinks(fleet, quantised, tmp_path, name):
    """SFTP uploads what a link points at: a model folder's `metrics.json` -> ~/.ssh/id_ed25519
    would have shipped a secret to the board. A link is refused, never followed; nothing uploaded."""
    _, inventory = fleet
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path / "models")
    secret = tmp_path / "secret"
    secret.write_bytes((folder / name).read_bytes())  # same bytes: the sha256 cannot tell
    (folder / name).unlink()
    (folder / name).symlink_to(secret)
    before = listing(board_root(inventory))
    result = deploy(inventory, folder)
    lines = error_lines(result)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and "symbolic link" in lines[0] and name in lines[0], result.output
    assert listing(board_root(inventory)) == before


def outside_manifest(src: Path, tmp: Path, key_of: Callable[[Path], str]) -> tuple[Path, Path]:
    """A copy whose artifacts list a sentinel file next to the folder under `key_of(sentinel)`,
    with the sentinel's true sha256: (folder, sentinel)."""
    folder = copy_folder(src, tmp)
    sentinel = tmp / "x"
    sentinel.write_bytes(b"a file outside the model folder\n")
    m = read(folder)
    m["artifacts"][key_of(sentinel)] = sha_file(sentinel)
    write(folder, m)
    return folder, sentinel


@pytest.mark.parametrize("how", ["absolute", "../x"])
def test_probe3_the_device_reads_outside_the_model_folder(quantised, tmp_path, how):
    """The board's runner hashed whatever path the manifest listed: an absolute path or ../x made
    it read (and call 'verified') a file outside its folder. Now: exit 2, one line, and the outside
    file is never opened (checked in-process with an audit hook)."""
    from device import bench

    _, detector, _, _ = quantised
    folder, sentinel = outside_manifest(detector, tmp_path, lambda s: str(s) if how == "absolute" else "../x")
    proc = subprocess.run([sys.executable, "-m", "device.bench", str(folder), "--invokes", "10", "--json", "-"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("device.bench: error: ") and "not a plain file name" in lines[0], lines[0]
    assert not proc.stdout.strip()  # no report, so nothing 'verified'
    with recording_opens() as opened:
        with pytest.raises(DeviceError):
            verify(str(folder), load_manifest(str(folder)))
        assert bench.main([str(folder), "--invokes", "10", "--json", "-"]) == 2
    assert os.path.realpath(sentinel) not in {os.path.realpath(p) for p in opened}


def tampered_int8(src: Path, tmp: Path) -> Path:
    """int8 model truncated after quantize, its sha256 updated: every host-side check passes, but
    no runtime loads it."""
    return damaged_copy(src, tmp, INT8_MODEL, lambda p: p.read_bytes()[: len(p.read_bytes()) // 2])


def missing_test_set(src: Path, tmp: Path) -> Path:
    """test_set.npz removed but still listed: deploy sends only the files present."""
    folder = copy_folder(src, tmp)
    (folder / TEST_SET).unlink()
    return folder


def float_as_int8(src: Path, tmp: Path) -> Path:
    """The float model under the int8 model's name, re-hashed: it loads, but the runner refuses it."""
    return damaged_copy(src, tmp, INT8_MODEL, lambda p: (p.parent / FLOAT_MODEL).read_bytes())


@needs_sshd
@pytest.mark.slow
@pytest.mark.parametrize("make,says", [(tampered_int8, None), (float_as_int8, f"{INT8_MODEL}: model input is float32"),
                                       (missing_test_set, f"{TEST_SET} is missing")],
                         ids=["int8 truncated", "int8 is the float model", "test set missing"])
def test_probe4_deploy_switches_current_to_a_release_the_runner_then_refuses(fleet, quantised, tmp_path, make, says):
    """The board used to check only that the bytes arrived, so `current` switched to a release
    whose runner then refused to start. Now the board verifies every model against its manifest
    and loads it before the switch: the deploy fails at 'verify on the board', `current` stays.
    (What the truncated model's line says depends on the board's runtime: B13.)"""
    _, inventory = fleet
    _, detector, classifier, _ = quantised
    good = deploy(inventory, detector, classifier)
    assert good.exit_code == 0, good.output
    before = board_state(inventory)
    result = deploy(inventory, make(detector, tmp_path), classifier)
    lines = error_lines(result)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "verify on the board" in lines[0] and (says is None or says in lines[0]), lines[0]
    assert board_state(inventory) == before
    root = board_root(inventory)
    assert not list((root / "releases").glob("*.partial")) and not (root / ".deploy-lock").exists()


@needs_sshd
@pytest.mark.slow
def test_a_model_that_crashes_the_board_runtime_is_named(fleet, quantised, tmp_path):
    """A truncated flatbuffer segfaults tflite_runtime 2.7 (the Coral-faithful board's runtime, no
    flatbuffer verifier); the deploy still refuses, but should say so rather than blame the link."""
    _, inventory = fleet
    _, detector, _, _ = quantised
    result = deploy(inventory, tampered_int8(detector, tmp_path))
    assert result.exit_code == 1 and INT8_MODEL in result.output, result.output


@pytest.mark.parametrize("change,says", [
    (lambda m: m.pop("task"), "'task'"),
    (lambda m: m.__setitem__("task", "object"), "task object"),
], ids=["no task", "task swapped"])
def test_probe5_check_quant_on_a_manifest_without_or_with_a_swapped_task(quantised, tmp_path, change, says):
    """No task: a KeyError traceback. Swapped task (a rest/grasp detector called an object
    classifier): a silent PASS with metrics of the wrong kind. Now both: exit 2, one line."""
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path)
    m = read(folder)
    change(m)
    write(folder, m)
    result = CliRunner().invoke(main, ["check-quant", str(folder)])
    lines = error_lines(result)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert len(lines) == 1 and lines[0].startswith("grasptpu: error: ") and says in lines[0], result.output
    assert "PASS" not in result.output


def test_probe5_a_classifier_called_a_detector_is_refused(quantised, tmp_path):
    """The swap the other way: an object classifier's manifest saying grasp-phase."""
    _, _, classifier, _ = quantised
    folder = copy_folder(classifier, tmp_path)
    m = read(folder)
    m["task"] = "grasp-phase"
    write(folder, m)
    result = CliRunner().invoke(main, ["check-quant", str(folder)])
    lines = error_lines(result)
    assert result.exit_code == 2 and len(lines) == 1 and "task grasp-phase" in lines[0], result.output


# --- bugs this file found, seen from the command line ------------------------------------------

def bench_subprocess(folder: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device.bench", str(folder), "--invokes", "10", "--json", "-"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("text", ["[]", '"manifest"', "1", "null"])
def test_device_bench_on_a_manifest_that_is_not_an_object_is_one_line(quantised, tmp_path, text):
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path)
    (folder / MANIFEST).write_text(text)
    proc = bench_subprocess(folder)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_device_bench_refuses_a_symlinked_manifest(quantised, tmp_path):
    """deploy's payload refuses the link (path_in over BOARD_FILES), but the runner itself follows it."""
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path / "models")
    shutil.move(folder / MANIFEST, tmp_path / "elsewhere.json")
    (folder / MANIFEST).symlink_to(tmp_path / "elsewhere.json")
    proc = bench_subprocess(folder)
    assert proc.returncode == 2 and "symbolic link" in proc.stderr, proc.stderr


def test_device_bench_on_a_fifo_manifest_does_not_hang(quantised, tmp_path):
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path)
    (folder / MANIFEST).unlink()
    os.mkfifo(folder / MANIFEST)
    proc = bench_subprocess(folder, timeout=5)
    assert proc.returncode == 2, proc.stderr


def test_check_quant_refuses_a_manifest_format_it_does_not_know(quantised, tmp_path):
    _, detector, _, _ = quantised
    folder = copy_folder(detector, tmp_path)
    m = read(folder)
    m["format"] = 99
    write(folder, m)
    result = CliRunner().invoke(main, ["check-quant", str(folder)])
    assert result.exit_code == 2 and "format" in result.output, result.output
