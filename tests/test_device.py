"""The board's runner (device/) on tiny quantised models, through the real TFLite interpreter.

`device.bench` and `device.stream` run as subprocesses (`python -m ...`), as they do on a board.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from device import runtime as rt
from device.contract import TEST_SET, DeviceError, load_manifest, save_test_set, sha256_of, verify
from device.contract import TestSet as BoardTestSet  # aliased: pytest would try to collect a Test* class
from device.decoder import Decoder
from device.stream import RingBuffer, Smoother, load_decoders, trial_figures

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def test_bench_matches_the_host_bit_for_bit(quantised, tmp_path):
    _, detector, _, _ = quantised
    out = tmp_path / "bench.json"
    proc = run_module("device.bench", str(detector), "--invokes", "2000", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    manifest = json.loads((detector / "manifest.json").read_text())
    assert r["runtime"] == "ai_edge_litert" and r["edgetpu"] is False and r["model_file"] == "model_int8.tflite"
    assert any("no compiled model" in why for why in r["skipped"])  # the Edge TPU is never assumed
    assert r["latency"]["n"] == 2000 and 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"] <= r["latency"]["max_ms"]
    acc = r["accuracy"]
    assert acc["windows"] == manifest["test_set"]["windows"]
    assert acc["host_int8_bit_exact"] == 1.0 and acc["host_int8_argmax_agreement"] == 1.0
    assert acc["accuracy"] == pytest.approx(manifest["quantization"]["int8"]["accuracy"])
    assert {"manifest.json"} - set(r["verified_files"]) and "model_int8.tflite" in r["verified_files"]
    assert "latency over 2000 invokes" in proc.stdout and "bit-exact 100.00%" in proc.stdout


@pytest.mark.slow
def test_stream_replays_the_test_trials(quantised, tmp_path):
    _, detector, classifier, _ = quantised
    proc = run_module("device.stream", str(detector), str(classifier), "--per-bin", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    manifest = load_manifest(str(detector))
    test = BoardTestSet.load(str(detector), manifest)
    assert r["trials"]["n"] == test.n_trials == len(r["per_trial"]) == manifest["test_set"]["trials"]
    # every bin of every test trial was fed, one at a time
    offsets = test.arrays["trial_offsets"]
    bins = int(offsets[-1] - offsets[0])
    assert bins == sum(len(test.trial_rows(k)) for k in range(test.n_trials)) > 0
    assert r["data"] == "test split of {}: {} of {} trials, {} bins".format(
        manifest["data"]["session"], test.n_trials, test.n_trials, bins)
    lat, bin_ms = r["latency"], r["bin_ms"]
    assert bin_ms == manifest["data"]["bin_ms"] == 40
    assert lat["bins"] == bins
    misses = lat["deadline_misses"]
    assert type(misses) is int and 0 <= misses <= bins
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert (misses > 0) == (lat["max_ms"] > bin_ms)  # a miss is a bin slower than the bin period
    # numpy's p99 lies between the sorted latencies i and i + 1 (i = floor(0.99 (bins - 1))), so it
    # says on which side of `bins - 1 - i` the misses are
    above_p99 = bins - 1 - int(np.floor(0.99 * (bins - 1)))
    assert misses <= above_p99 if lat["p99_ms"] <= bin_ms else misses >= above_p99
    assert lat["headroom_max"] == pytest.approx(bin_ms / lat["max_ms"])
    assert lat["headroom_p99"] == pytest.approx(bin_ms / lat["p99_ms"]) and lat["headroom_p99"] > 1
    for k, trial in enumerate(r["per_trial"]):  # per trial: the first correct decision at or after the Hold onset
        hold_s = (int(test.arrays["reward_bin"][k]) - int(test.arrays["hold_bin"][k])) * bin_ms / 1e3
        first = trial["first_correct_s"]
        assert first is None or first >= bin_ms / 1e3 - 1e-9
        assert trial["correct_in_hold"] == (first is not None and first <= hold_s + 1e-9), (k, trial, hold_s)
        # false grasps, counted here from the per-bin states: each rest -> grasp switch outside [Hold, Rew)
        hold, reward = int(test.arrays["hold_bin"][k]), int(test.arrays["reward_bin"][k])
        state = trial["state"]
        onsets = [b for b in range(len(state)) if state[b] == 1 and (b == 0 or state[b - 1] != 1)]
        assert trial["false_grasps"] == sum(not hold <= b < reward for b in onsets), (k, trial["false_grasps"], onsets)
        assert 0 <= trial["hold_bins_detected"] <= 1
    # the tiny detector is good enough that the object decoder runs during most holds
    assert r["trials"]["hold_bins_detected"] > 0.5, r["trials"]
    out = tmp_path / "realtime.json"
    proc = run_module("device.stream", str(detector), str(classifier), "--trials", "2", "--realtime", "--json", str(out))
    assert proc.returncode == 0 and "real-time pacing" in proc.stdout, proc.stderr
    r = json.loads(out.read_text())
    assert r["realtime"] is True and r["trials"]["n"] == 2 and r["latency"]["bins"] == int(offsets[2] - offsets[0])
    assert r["data"].endswith(": 2 of {} trials, {} bins".format(test.n_trials, r["latency"]["bins"]))


def test_stream_refuses_models_swapped_or_from_another_split(quantised, tmp_path):
    _, detector, classifier, _ = quantised
    proc = run_module("device.stream", str(classifier), str(detector))
    assert proc.returncode == 2 and "expected the grasp-phase model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    # The same session, but the classifier's test set holds another trial: a different split.
    det, cls = copy_of(detector, tmp_path), copy_of(classifier, tmp_path)
    pair = [(str(det), "grasp-phase"), (str(cls), "object")]
    load_decoders(pair, allow_edgetpu=False, threads=1)  # the untouched copies are a pair
    with np.load(cls / TEST_SET, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    trial_index = arrays["trial_index"].copy()
    trial_index[-1] = trial_index.max() + 1  # a trial id no test trial of this split has
    save_test_set(str(cls / TEST_SET), {**arrays, "trial_index": trial_index})
    manifest = json.loads((cls / "manifest.json").read_text())
    manifest["artifacts"][TEST_SET] = sha256_of(str(cls / TEST_SET))
    (cls / "manifest.json").write_text(json.dumps(manifest))
    # only the split differs: both folders still pass the integrity check, and name the same session
    assert TEST_SET in verify(str(cls), load_manifest(str(cls)))
    assert load_manifest(str(cls))["data"] == load_manifest(str(classifier))["data"]
    assert load_manifest(str(det))["data"]["session"] == manifest["data"]["session"]
    with pytest.raises(DeviceError, match="different sessions or splits"):
        load_decoders(pair, allow_edgetpu=False, threads=1)
    proc = run_module("device.stream", str(det), str(cls))
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    # one error line, the last (the TFLite runtime may log an INFO line first, when the decoders load)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == ("device.stream: error: the models come from different sessions or splits; "
                         "train all on one recording"), proc.stderr
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], proc.stderr


def test_a_tampered_artifact_is_refused(quantised, tmp_path):
    _, detector, _, _ = quantised
    folder = copy_of(detector, tmp_path)
    data = bytearray((folder / "test_set.npz").read_bytes())
    data[-200] ^= 0xFF
    (folder / "test_set.npz").write_bytes(bytes(data))
    proc = run_module("device.bench", str(folder), "--invokes", "10")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("sha256 does not match the manifest: the file is damaged or was changed; "
                                        "deploy the model again")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_newer_manifest_or_a_missing_model_is_refused(quantised, tmp_path):
    _, detector, _, _ = quantised
    folder = copy_of(detector, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    proc = run_module("device.bench", str(folder))
    assert proc.returncode == 2 and "format 99 is newer" in proc.stderr
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "model_int8.tflite").unlink()
    proc = run_module("device.bench", str(folder))
    assert proc.returncode == 2 and "model_int8.tflite is missing" in proc.stderr
    with pytest.raises(DeviceError, match="not a model folder"):
        load_manifest(str(tmp_path))


def test_bad_windows_are_refused_before_the_interpreter(quantised):
    _, detector, _, _ = quantised
    manifest = load_manifest(str(detector))
    verify(str(detector), manifest)
    decoder = Decoder(str(detector), manifest, rt.select(False), threads=1)
    good = np.ones((12, 20), np.uint8)
    assert decoder.predict_raw(good).shape == (1, 2)
    for bad, why in ((np.ones((11, 20)), "shape"), (np.ones((12, 21)), "shape"),
                     (np.full((12, 20), np.nan), "NaN"), (-np.ones((12, 20)), "negative"),
                     (np.array([["a"] * 20] * 12), "dtype")):
        with pytest.raises(DeviceError, match=why):
            decoder.predict_raw(bad)


def _hide(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def test_runtime_order_falls_through_and_says_why(monkeypatch):
    _hide(monkeypatch, "pycoral", "pycoral.utils", "pycoral.utils.edgetpu", "tflite_runtime", "tflite_runtime.interpreter")
    chosen = rt.select(compiled_model=True)
    assert chosen.name == "ai_edge_litert" and not chosen.edgetpu
    assert chosen.skipped == ["pycoral: not installed",
                              "tflite_runtime + libedgetpu.so.1: tflite_runtime not installed",
                              "tflite_runtime: not installed"]
    _hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter")
    chosen = rt.select(compiled_model=True)
    assert chosen.name == "tensorflow" and chosen.skipped[-1] == "ai_edge_litert: not installed"
    _hide(monkeypatch, "tensorflow")
    with pytest.raises(DeviceError, match="no TFLite runtime here"):
        rt.select(compiled_model=False)


def test_runtime_order_prefers_pycoral_only_with_an_edge_tpu(monkeypatch):
    """A stand-in `pycoral.utils.edgetpu` that lists no Edge TPU: the runner must not claim one."""
    fake = types.ModuleType("pycoral.utils.edgetpu")
    fake.list_edge_tpus = lambda: []
    for name, module in (("pycoral", types.ModuleType("pycoral")), ("pycoral.utils", types.ModuleType("pycoral.utils")),
                         ("pycoral.utils.edgetpu", fake)):
        monkeypatch.setitem(sys.modules, name, module)
    _hide(monkeypatch, "tflite_runtime", "tflite_runtime.interpreter")
    chosen = rt.select(compiled_model=True)
    assert chosen.skipped[0] == "pycoral: installed, but it lists no Edge TPU" and not chosen.edgetpu
    fake.list_edge_tpus = lambda: [{"type": "pci", "path": "/dev/apex_0"}]
    chosen = rt.select(compiled_model=True)
    assert chosen.name == "pycoral" and chosen.edgetpu and "/dev/apex_0" in chosen.detail
    assert rt.select(compiled_model=True, allow_edgetpu=False).name == "ai_edge_litert"


def test_ring_buffer_gives_the_last_bins_in_order():
    rows = np.arange(30 * 3, dtype=np.uint8).reshape(30, 3)
    ring = RingBuffer(12, 3)
    for t, row in enumerate(rows):
        ring.push(row)
        if t >= 11:
            assert np.array_equal(ring.window(), rows[t - 11:t + 1])
    assert ring.window().base is ring.buf  # a view, not a copy


def test_trial_figures_count_false_grasps_and_time_to_a_correct_object():
    state = np.array([0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0], np.int8)      # a false grasp at 1, the real one at 6
    decision = np.array([-1, 3, 3, -1, -1, -1, 2, 4, 4, 4, -1, -1])
    f = trial_figures({"state": state, "decision": decision}, hold=5, reward=10, true_class=4, bin_s=0.04)
    assert f["false_grasps"] == 1 and f["first_correct_s"] == pytest.approx(3 * 0.04)
    assert f["correct_in_hold"] and f["hold_bins_detected"] == pytest.approx(0.8)
    assert f["hold_decisions_correct"] == pytest.approx(0.6)


def test_device_code_runs_on_the_boards_python_and_never_imports_host():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    assert vermin, "vermin (a dev dependency) is not installed"
    proc = subprocess.run([vermin, "-t=3.7-", "--violations", "--no-tips", "-q",
                           str(ROOT / "device")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in (ROOT / "device").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n == "host" or n.startswith("host.")], (path, names)


def test_bench_local_prints_the_device_beside_the_host(quantised):
    from host.cli import main

    _, detector, _, _ = quantised
    result = CliRunner().invoke(main, ["bench-local", str(detector), "--invokes", "200"])
    assert result.exit_code == 0, result.output
    assert "host: Keras float" in result.output and "device on this machine: ai_edge_litert" in result.output
    assert "100.00% of windows bit-exact" in result.output


@pytest.mark.slow
def test_device_runtime_reports_the_coral_faithful_software_quietly(coral_python):
    """`python -m device.runtime` on Python 3.7 + tflite-runtime 2.7.0: what it runs, why no Edge TPU,
    and nothing on stderr (tflite_runtime's Delegate used to print an AttributeError at exit)."""
    proc = subprocess.run([str(coral_python), "-m", "device.runtime", "--json", "-"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    about = json.loads(proc.stdout)
    assert about["python"].startswith("3.7.") and (about["runtime"], about["runtime_version"]) == ("tflite_runtime", "2.7.0")
    assert about["edgetpu"] is False and any("libedgetpu.so.1" in why for why in about["skipped"])


def test_smoother_is_a_one_pole_low_pass_with_the_stated_lag():
    sm = Smoother(80.0, 40.0)
    a = 1 - np.exp(-0.5)
    assert sm.alpha == pytest.approx(a) and sm.lag_ms == pytest.approx(40 * (1 - a) / a)
    values = [sm(0.0)] + [sm(1.0) for _ in range(5)]  # a unit step after the first bin
    assert values == pytest.approx([0.0] + [1 - (1 - a) ** k for k in range(1, 6)])
    sm.reset()
    assert sm(7.0) == 7.0  # a new trial starts from its first value, not the last trial's
    off = Smoother(0.0, 40.0)
    assert off.lag_ms == 0 and [off(x) for x in (1.0, 5.0)] == [1.0, 5.0] and off.describe()["kind"] == "none"


def test_the_aperture_regressor_on_the_device_bench_and_the_stream(quantised, aperture_model, tmp_path):
    """device.bench scores it like the host (same runtime: bit-exact); device.stream decodes it every
    bin once the ring is full, and its raw value at a bin is the host's int8 output for the window
    ending there."""
    from device import bench, stream

    _, detector, classifier, _ = quantised
    r = bench.run(str(aperture_model), invokes=50, allow_edgetpu=False)
    host = load_manifest(str(aperture_model))["quantization"]["int8"]
    assert r["accuracy"]["host_int8_bit_exact"] == 1.0 and r["accuracy"]["r2"] == pytest.approx(host["r2"], abs=1e-6)
    assert "R2" in bench.format_result(r) and r["accuracy"]["units"] == "mm"

    s = stream.run(str(detector), str(classifier), max_trials=3, allow_edgetpu=False, aperture_dir=str(aperture_model))
    test = BoardTestSet.load(str(aperture_model), load_manifest(str(aperture_model)))
    decoder = Decoder(str(aperture_model), load_manifest(str(aperture_model)), rt.select(False, False))
    host_mm = decoder.dequantise(test.arrays["int8_output"])[:, 0]
    offsets = test.arrays["trial_offsets"]
    for k, trial in enumerate(s["per_trial"]):
        values = np.array([np.nan if v is None else v for v in trial["aperture"]])
        assert len(values) == offsets[k + 1] - offsets[k]  # one value per bin
        assert np.isnan(values[:11]).all() and np.isfinite(values[11:]).all()
        mine = test.arrays["window_trial"] == k
        rows = test.end_row[mine] - offsets[k]
        assert values[rows] == pytest.approx(host_mm[mine], abs=1e-3)
    a = s["aperture"]
    assert a["scored_bins"] == a["outputs"] == sum(len(t["aperture"]) - 11 for t in s["per_trial"])
    assert a["smoother"]["lag_ms"] == pytest.approx(Smoother(stream.SMOOTH_MS, 40.0).lag_ms) and a["latency"]["p99_ms"] > 0
    assert "aperture" in stream.format_result(s)
    assert "lag {:.0f} ms".format(a["smoother"]["lag_ms"]) in stream.format_result(s)
    proc = run_module("device.stream", str(detector), str(classifier), str(aperture_model), "--trials", "1",
                      "--smooth-ms", "nan")
    assert proc.returncode == 2 and "--smooth-ms must lie in" in proc.stderr


def test_the_stream_refuses_an_aperture_model_in_the_wrong_place(quantised, aperture_model):
    _, detector, classifier, _ = quantised
    proc = run_module("device.stream", str(detector), str(aperture_model), str(classifier))
    assert proc.returncode == 2 and "an aperture model, expected the object model here" in proc.stderr
