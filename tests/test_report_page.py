"""`grasptpu report`'s page, opened in real headless Chromium: every figure shows, the page is not blank,
and a bad input is one actionable line.

The inputs are made here in exactly the formats the other commands write (a bench JSON as
`grasptpu bench --json` writes it, a live session folder, and tiny model folders accepted by
device.contract), so the test needs no trained model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from device.contract import MANIFEST, TEST_SET, save_test_set
from host.errors import GrasptpuError
from host.live.report_page import build_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

UNITS, WINDOW, BIN_MS = 8, 4, 40.0
OBJECTS = [21, 22, 31]
# (bins, hold bin, reward bin) per test trial; trial 2 has no hold (Rew before Hold), so the page
# must skip it when picking the trials to draw.
TRIALS = [(40, 20, 30), (36, 18, 27), (30, 25, 10), (42, 22, 33), (38, 19, 29), (34, 17, 26)]
SENT = range(5)  # the session sent trials 0..4, not 5


def _manifest(task: str) -> dict:
    if task == "object":
        names, classes = [str(o) for o in OBJECTS], list(OBJECTS)
        labels = [{"index": i, "name": str(o), "object_id": o, "shape": None, "size": None} for i, o in enumerate(OBJECTS)]
    else:
        names, classes = ["rest", "grasp"], [0, 1]
        labels = [{"index": 0, "name": "rest"}, {"index": 1, "name": "grasp"}]
    data = {"session": "TRec1", "bin_ms": BIN_MS, "window_bins": WINDOW, "n_units": UNITS, "label_names": names,
            "classes": classes}
    if task == "aperture":
        data["target"] = {"name": "aperture", "units": "mm"}
    return {"format": 1, "name": f"TRec1-{task}", "task": task, "data": data, "artifacts": {},
            "tflite": {"int8": {"input": {"shape": [1, WINDOW, UNITS]}}}, "test_set": {"file": TEST_SET},
            "labels": labels}


def _aperture(n: int, hold: int) -> np.ndarray:
    """A hand opening before Hold and closing on the object (mm)."""
    t = np.arange(n)
    return 60 + 25 * np.exp(-0.5 * ((t - hold + 4) / 3.0) ** 2) - 30 * (t >= hold)


def write_model(folder: Path, task: str) -> Path:
    """A model folder load_manifest and TestSet.load accept: manifest and test set, no network."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    lengths = [n for n, _, _ in TRIALS]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    counts = rng.poisson(1.5, (offsets[-1], UNITS)).astype(np.uint8)
    for k, (n, hold, reward) in enumerate(TRIALS):
        counts[offsets[k] + min(hold, reward):offsets[k] + max(hold, reward), :UNITS // 2] += 4  # a visible hold
    end_row, window_trial, label, target = [], [], [], []
    for k, (n, hold, reward) in enumerate(TRIALS):
        for b in range(WINDOW - 1, n):
            end_row.append(offsets[k] + b)
            window_trial.append(k)
            grasp = int(hold <= b < reward)
            label.append(k % len(OBJECTS) if task == "object" else grasp)
        target.append(_aperture(n, hold)[WINDOW - 1:])
    n_out = {"object": len(OBJECTS), "grasp-phase": 2, "aperture": 1}[task]
    w = len(end_row)
    arrays = {"counts": counts, "trial_offsets": offsets, "trial_index": np.arange(len(TRIALS), dtype=np.int64) + 100,
              "object_id": np.array([OBJECTS[k % len(OBJECTS)] for k in range(len(TRIALS))], np.int64),
              "hold_bin": np.array([h for _, h, _ in TRIALS], np.int64),
              "reward_bin": np.array([r for _, _, r in TRIALS], np.int64),
              "end_row": np.array(end_row, np.int64), "label": np.array(label, np.int64),
              "window_trial": np.array(window_trial, np.int64),
              "keras_probs": np.zeros((w, n_out), np.float32), "float_probs": np.zeros((w, n_out), np.float32),
              "int8_output": np.zeros((w, n_out), np.int8)}
    if task == "aperture":
        arrays["target"] = np.concatenate(target).astype(np.float32)
    save_test_set(str(folder / TEST_SET), arrays)
    (folder / MANIFEST).write_text(json.dumps(_manifest(task)))
    return folder


def write_bins(path: Path, aperture: bool = True) -> int:
    """bins.npz of a session that sent trials SENT, as device.live's replay records them."""
    rng = np.random.default_rng(2)
    cols = {k: [] for k in ("trial", "bin", "grasp", "object_index", "probability", "aperture", "aperture_smoothed")}
    for k in SENT:
        n, hold, reward = TRIALS[k]
        truth = k % len(OBJECTS)
        b = np.arange(n)
        grasp = ((b >= hold + 2) & (b < reward + 2)).astype(np.int8)
        grasp[:WINDOW - 1] = -1
        obj = np.where(grasp == 1, truth, -1)
        obj[(grasp == 1) & (b < hold + 4)] = (truth + 1) % len(OBJECTS)  # wrong at first, then right
        value = _aperture(n, hold) + rng.normal(0, 3, n)
        value[:WINDOW - 1] = np.nan
        cols["trial"].append(np.full(n, k))
        cols["bin"].append(b)
        cols["grasp"].append(grasp)
        cols["object_index"].append(obj)
        cols["probability"].append(np.where(obj >= 0, rng.uniform(0.4, 1.0, n), np.nan))
        cols["aperture"].append(value if aperture else np.full(n, np.nan))
        cols["aperture_smoothed"].append(np.convolve(np.nan_to_num(value), np.ones(3) / 3, "same")
                                         if aperture else np.full(n, np.nan))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    n = len(c["trial"])
    ran = c["grasp"] >= 0
    latency = rng.gamma(4.0, 0.5, n) + 2.0
    latency[[7, 50]] = np.nan  # two bins whose decision never came back
    detector = np.where(ran, rng.gamma(9.0, 0.1, n), np.nan)
    classifier = np.where(c["object_index"] >= 0, rng.gamma(9.0, 0.1, n), np.nan)
    ape = np.where(ran, rng.gamma(9.0, 0.1, n), np.nan) if aperture else np.full(n, np.nan)
    stamps = 1000.0 + np.arange(n) * BIN_MS / 1000
    np.savez(path, trial=c["trial"].astype(np.int32), bin=c["bin"].astype(np.int32), timestamp=stamps,
             received=np.where(np.isfinite(latency), stamps + latency / 1000, np.nan), latency_ms=latency,
             grasp=c["grasp"], object_index=c["object_index"].astype(np.int32), probability=c["probability"],
             aperture=c["aperture"], aperture_smoothed=c["aperture_smoothed"], detector_ms=detector,
             classifier_ms=classifier, aperture_ms=ape,
             board_ms=np.nansum([detector, classifier, ape], axis=0) * np.where(ran, 1, np.nan),
             offline_grasp=c["grasp"], offline_object=c["object_index"].astype(np.int32))
    return n


def make_session(root: Path, aperture: bool = True) -> Path:
    """A live session folder (summary.json, bins.npz) and the model folders it names, under `root`."""
    tasks = ["grasp-phase", "object"] + (["aperture"] if aperture else [])
    dirs = {t: write_model(root / "models" / f"TRec1-{t}", t) for t in tasks}
    live = root / "reports" / "live-board1"
    live.mkdir(parents=True)
    n = write_bins(live / "bins.npz", aperture)
    summary = {"board": "board1", "session": "TRec1",
               "models": {t: f"TRec1-{t}" if t in dirs else None for t in ("grasp-phase", "object", "aperture")},
               "model_dirs": {t: str(dirs[t]) if t in dirs else None for t in ("grasp-phase", "object", "aperture")},
               "bin_ms": BIN_MS, "latency": {"p50_ms": 3.9, "p99_ms": 7.25, "max_ms": 9.5},
               "bins_sent": n, "bins_received": n - 2, "missed_bins": 2, "agreement": {"bins": n, "identical": n},
               "board_live": {"runtime": "tflite_runtime", "runtime_version": "2.7.0", "detail": "CPU",
                              "board_ms": {"p50": 1.1, "p99": 2.4, "max": 3.0},
                              "cpu": {"ms_per_bin": 1.2, "share": 0.031}, "received": 186, "gaps": 1,
                              "missed_bins": 1, "invalid": 0, "restarts": 0}}
    (live / "summary.json").write_text(json.dumps(summary))
    return live


def bench_result(task: str, seed: int) -> dict:
    """One model's device.bench result, as `time_invokes` and `run` write it."""
    from device.bench import histogram, percentiles

    ns = (np.random.default_rng(seed).gamma(6.0, 0.15, 2000) * 1e6 + 0.4e6).astype(np.int64)
    latency = dict(percentiles(ns), histogram_ms=histogram(ns))
    accuracy = {"r2": 0.91} if task == "aperture" else {"accuracy": 0.87}
    return {"model": f"TRec1-{task}", "task": task, "runtime": "tflite-runtime (CPU)", "threads": 1,
            "latency": latency, "accuracy": accuracy}


def make_bench(path: Path) -> Path:
    """A bench JSON as `grasptpu bench --board board1 --json PATH` writes it (host.cli._finish: a list of boards)."""
    models = {f"TRec1-{t}": bench_result(t, i) for i, t in enumerate(("grasp-phase", "object", "aperture"))}
    path.write_text(json.dumps([{"board": "board1", "where": "127.0.0.1", "software": {}, "models": models}]))
    return path


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make chromium` (CI installs it; the report test needs it)"
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, *args], capture_output=True, text=True, timeout=timeout)


def test_the_report_shows_every_figure_in_headless_chromium(tmp_path):
    live = make_session(tmp_path)
    bench = make_bench(tmp_path / "reports" / "bench.json")
    out = tmp_path / "reports" / "report.html"
    record = build_report(out, bench_json=bench, live_dir=live)
    expected = ["bench-latency", "live-latency", "first-correct", "trial-0", "trial-1", "trial-3"]
    assert record["figures"] == expected and record["trials"] == [0, 1, 3] and record["path"] == str(out)
    assert not list(out.parent.glob(".report.html.*"))  # the atomic write left no temporary file

    page = out.read_text()
    assert "src=\"http" not in page and "<link" not in page  # self-contained: nothing to fetch
    assert page.count("data:image/png;base64,") == len(expected)
    for fact in ("board1", "TRec1", "TRec1-aperture", "p99 7.25 ms", "2 missed", "identical", "3.1 % of one core", "p99 2.4 ms"):
        assert fact in page, fact

    dom = chromium(f"--user-data-dir={tmp_path / 'profile-dom'}", "--virtual-time-budget=5000", "--dump-dom",
                   out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = re.findall(r"<img\b[^>]*>", dom.stdout)
    assert len(images) == len(expected), dom.stdout[:500]
    assert all('data-shown="yes"' in img for img in images), [img[:200] for img in images if 'data-shown="yes"' not in img]
    assert re.search(r'<body[^>]*data-figures="{0}/{0}"'.format(len(expected)), dom.stdout)
    assert "<p class=\"warning\"" not in dom.stdout  # the script warns in a visible paragraph

    # The check itself: a figure the browser cannot decode is marked "no" and warned about on the page.
    broken = out.with_name("broken.html")
    broken.write_text(page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    dom = chromium(f"--user-data-dir={tmp_path / 'profile-broken'}", "--virtual-time-budget=5000", "--dump-dom",
                   broken.as_uri())
    assert dom.stdout.count('data-shown="no"') == 1 and "<p class=\"warning\"" in dom.stdout
    assert re.search(r'<body[^>]*data-figures="{}/{}"'.format(len(expected) - 1, len(expected)), dom.stdout)

    shot = tmp_path / "report.png"
    run = chromium(f"--user-data-dir={tmp_path / 'profile-shot'}", "--virtual-time-budget=5000",
                   f"--screenshot={shot}", "--window-size=1400,4000", out.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[:2] == (4000, 1400)
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::97], axis=0)) > 1  # not one blank colour


def test_a_bench_only_report_and_one_without_an_aperture_model(tmp_path):
    bench = make_bench(tmp_path / "bench.json")
    record = build_report(tmp_path / "bench.html", bench_json=bench)
    assert record["figures"] == ["bench-latency"] and record["live"] is None
    live = make_session(tmp_path / "no-aperture", aperture=False)
    record = build_report(tmp_path / "live.html", live_dir=live, trials=1)
    assert record["figures"] == ["live-latency", "first-correct", "trial-0"]
    assert "aperture (" not in (tmp_path / "live.html").read_text()


def test_an_older_bench_json_without_histograms_still_reports(tmp_path):
    data = json.loads(make_bench(tmp_path / "bench.json").read_text())
    for r in data[0]["models"].values():
        del r["latency"]["histogram_ms"]
    (tmp_path / "old.json").write_text(json.dumps({"boards": data}))
    assert build_report(tmp_path / "r.html", bench_json=tmp_path / "old.json")["figures"] == ["bench-latency"]


def _drop_array(live: Path, name: str) -> None:
    with np.load(live / "bins.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k != name}
    np.savez(live / "bins.npz", **arrays)


@pytest.mark.parametrize("breakage, words", [
    ("no input", "give a bench JSON"),
    ("missing bench", "no such bench JSON"),
    ("bench not JSON", "not valid JSON"),
    ("bench without latency", "no latency"),
    ("missing live folder", "no such live session folder"),
    ("summary without models", "lacks models"),
    ("bins without probability", "lacks the arrays probability"),
    ("model folder missing", "not a model folder"),
    ("trial outside the test set", "outside the model folders"),
])
def test_a_bad_input_is_one_line_naming_the_file(tmp_path, breakage, words):
    live = make_session(tmp_path)
    bench = make_bench(tmp_path / "bench.json")
    kw = {"live_dir": live}
    if breakage == "no input":
        kw = {}
    elif breakage == "missing bench":
        kw = {"bench_json": tmp_path / "nope.json"}
    elif breakage == "bench not JSON":
        bench.write_text("{not json")
        kw = {"bench_json": bench}
    elif breakage == "bench without latency":
        bench.write_text(json.dumps([{"board": "b", "models": {"m": {"task": "object"}}}]))
        kw = {"bench_json": bench}
    elif breakage == "missing live folder":
        kw = {"live_dir": tmp_path / "nowhere"}
    elif breakage == "summary without models":
        summary = json.loads((live / "summary.json").read_text())
        del summary["models"]
        (live / "summary.json").write_text(json.dumps(summary))
    elif breakage == "bins without probability":
        _drop_array(live, "probability")
    elif breakage == "model folder missing":
        shutil.rmtree(tmp_path / "models" / "TRec1-object")
        (tmp_path / "models" / "TRec1-object").mkdir()
    elif breakage == "trial outside the test set":
        with np.load(live / "bins.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["trial"][-1] = len(TRIALS) + 3
        np.savez(live / "bins.npz", **arrays)
    out = tmp_path / "report.html"
    with pytest.raises(GrasptpuError) as err:
        build_report(out, **kw)
    message = str(err.value)
    assert "\n" not in message and words in message, message
    if breakage not in ("no input",):
        assert str(tmp_path) in message, message  # names the file
    assert not out.exists()


def test_device_bench_histogram_counts_every_invoke():
    from device.bench import HISTOGRAM_BINS, histogram

    ns = np.random.default_rng(3).integers(200_000, 3_000_000, 2000)
    hist = histogram(ns)
    assert len(hist["edges"]) == HISTOGRAM_BINS + 1 and sum(hist["counts"]) == 2000
    assert hist["edges"][0] == pytest.approx(ns.min() / 1e6) and hist["edges"][-1] == pytest.approx(ns.max() / 1e6)
    json.dumps(hist)  # plain numbers: it travels back from the board as JSON
