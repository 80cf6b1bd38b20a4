"""What must hold on a board after a deploy: runtime, artifacts, golden vectors, latency, input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from device import runtime as rt
from device.contract import COMPILED_MODEL, DeviceError, load_manifest, stream_decoders, verify
from device.contract import TestSet as BoardTestSet  # aliased: pytest would try to collect a Test* class
from device.decoder import Decoder

GOLDEN = 256          # test windows compared with the host's int8 outputs
TIMED = 300           # invokes timed for the latency budget


def open_decoder(model_dir, allow_edgetpu=True):
    manifest = load_manifest(model_dir)
    verify(model_dir, manifest)
    chosen = rt.select(COMPILED_MODEL in manifest["artifacts"], allow_edgetpu)
    return Decoder(model_dir, manifest, chosen, threads=1), manifest, chosen


def test_a_runtime_is_present_and_reported(record_testsuite_property):
    about = rt.about()  # into the junit report: what this board ran the suite on
    for key in ("python", "numpy", "machine", "runtime", "runtime_version", "detail"):
        record_testsuite_property(key, about[key])
    chosen = rt.select(compiled_model=True)
    assert chosen.name in rt.ORDER or chosen.name in ("tflite_runtime", "ai_edge_litert", "tensorflow")
    assert chosen.detail
    if not chosen.edgetpu:
        assert chosen.skipped, "a CPU fallback must say why the Edge TPU was not used"


def test_edge_tpu_runs_the_compiled_model(model_dir):
    manifest = load_manifest(model_dir)
    if COMPILED_MODEL not in manifest["artifacts"]:
        pytest.skip("no compiled Edge TPU model in {} (edgetpu_compiler was not run on the host)".format(model_dir))
    chosen = rt.select(compiled_model=True)
    if not chosen.edgetpu:
        pytest.skip("no Edge TPU on this board: " + "; ".join(chosen.skipped))
    decoder = Decoder(model_dir, manifest, chosen)
    assert decoder.model_file == COMPILED_MODEL


def test_artifacts_are_intact(model_dir):
    manifest = load_manifest(model_dir)
    checked = verify(model_dir, manifest)
    assert "model_int8.tflite" in checked and "test_set.npz" in checked


def test_golden_vectors_match_the_host(model_dir):
    decoder, manifest, chosen = open_decoder(model_dir)
    test = BoardTestSet.load(model_dir, manifest)
    n = min(GOLDEN, len(test))
    raw = decoder.predict_raw(test.batch(np.arange(n)))
    host = test.arrays["int8_output"][:n]
    host_litert = manifest.get("quantize_environment", {}).get("versions", {}).get("ai-edge-litert")
    same_runtime = chosen.name == "ai_edge_litert" and host_litert and host_litert in chosen.detail
    if same_runtime:  # the very kernels the host ran: every byte must agree
        assert np.array_equal(raw, host), "{} of {} windows differ".format(int((raw != host).any(axis=1).sum()), n)
    else:  # another runtime (older tflite_runtime, the Edge TPU) may round LOGISTIC/TANH differently:
        # the argmax agrees, the outputs differ by a fraction of a step on average, and only rarely
        # by more than 8 steps (seen here: tflite_runtime 2.7 vs LiteRT, mean 0.05, at most 12 of 256).
        # A regressor has one output: no argmax to compare, the step differences say it all.
        classes = raw.shape[1] > 1
        agree = float((raw.argmax(axis=1) == host.argmax(axis=1)).mean()) if classes else 1.0
        diff = np.abs(raw.astype(int) - host.astype(int))
        assert agree >= 0.98 and diff.mean() <= 0.5 and (diff > 8).mean() <= 0.002, (
            agree, float(diff.mean()), float((diff > 8).mean()), chosen.detail)


def test_latency_fits_the_bin(model_dir):
    decoder, manifest, _ = open_decoder(model_dir)
    test = BoardTestSet.load(model_dir, manifest)
    q = decoder.quantise(test.batch(np.arange(min(64, len(test)))))
    for i in range(20):
        decoder.invoke(q[i % len(q)][None])
    times = []
    for i in range(TIMED):
        t0 = time.perf_counter()
        decoder.invoke(q[i % len(q)][None])
        times.append(time.perf_counter() - t0)
    budget = manifest["data"]["bin_ms"] / 1000.0
    assert np.percentile(times, 99) < budget, "p99 {:.2f} ms over the {:.0f} ms bin".format(
        np.percentile(times, 99) * 1e3, budget * 1e3)


@pytest.mark.parametrize("bad", ["short", "wide", "nan", "negative"])
def test_malformed_input_is_rejected(model_dir, bad):
    decoder, _, _ = open_decoder(model_dir)
    bins, units = decoder.window_shape
    window = {"short": np.ones((bins - 1, units)), "wide": np.ones((bins, units + 1)),
              "nan": np.full((bins, units), np.nan), "negative": -np.ones((bins, units))}[bad]
    with pytest.raises(DeviceError):
        decoder.predict_raw(window)


def test_the_stream_decodes_every_bin_with_every_deployed_decoder(deployed_by_task):
    """device.stream on the deployed detector and classifier (and aperture regressor, if deployed):
    one decision per bin, within the bin; one aperture value per bin once the ring is full, equal
    to what the model gives for the same windows through the bench path."""
    from device import stream

    found = deployed_by_task
    if not {"grasp-phase", "object"} <= set(found):
        pytest.skip("the stream needs a deployed grasp-phase and object model; found {}".format(sorted(found)))
    r = stream.run(found["grasp-phase"], found["object"], max_trials=3, aperture_dir=found.get("aperture"))
    assert r["latency"]["bins"] > 0 and r["latency"]["deadline_misses"] == 0
    if "aperture" not in found:
        return
    a = r["aperture"]
    window = load_manifest(found["aperture"])["data"]["window_bins"]
    for trial in r["per_trial"]:
        values = trial["aperture"]
        assert values[:window - 1] == [None] * (window - 1)  # the ring fills first
        assert all(v is not None for v in values[window - 1:])  # then one value every bin
    assert a["outputs"] == sum(len(t["aperture"]) - (window - 1) for t in r["per_trial"]) == a["scored_bins"]
    assert a["smoother"]["lag_ms"] > 0 and np.isfinite(a["raw"]["r2"])


def test_live_decodes_an_lsl_stream_as_the_offline_replay(deployed_by_task, record_testsuite_property):
    """device.live on this board, fed one test trial over LSL on loopback: one decision per bin, each
    identical to device.stream's for the same bin. Skips, saying what is missing, without LSL."""
    import json
    import os
    import subprocess
    import sys
    import uuid

    from device import lsl
    from device import stream
    from device.live import OUTPUT_CHANNELS

    col = {c: i for i, c in enumerate(OUTPUT_CHANNELS)}
    status = lsl.status()
    record_testsuite_property("lsl", status["detail"])
    if not status["available"]:
        pytest.skip("no Lab Streaming Layer on this board: " + status["detail"])
    try:
        found = stream_decoders(deployed_by_task.items())
    except DeviceError as exc:
        pytest.skip("device.live: {}".format(exc))
    folders = list(found.values())
    pylsl = lsl.load()
    manifest = load_manifest(found["grasp-phase"])
    rows = BoardTestSet.load(found["grasp-phase"], manifest).trial_rows(0)
    name = "firmware-{}-{}".format(os.getpid(), uuid.uuid4().hex[:6])
    live = subprocess.Popen([sys.executable, "-m", "device.live"] + folders + [
        "--stream", name, "--idle-stop", "1", "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        decided = pylsl.resolve_byprop("name", name + "-decoded", 1, 60)
        assert decided, "device.live published no decision outlet"
        inlet = pylsl.StreamInlet(decided[0])
        inlet.open_stream(10)
        info = pylsl.StreamInfo(name, "SpikeCounts", rows.shape[1], 1000.0 / manifest["data"]["bin_ms"], "float32", name)
        channels = info.desc().append_child("channels")
        for u in manifest["data"]["unit_index"]:
            channels.append_child("channel").append_child_value("label", "unit{}".format(u))
        outlet = pylsl.StreamOutlet(info, 1)
        assert outlet.wait_for_consumers(60), "device.live never subscribed"
        bin_s = manifest["data"]["bin_ms"] / 1000.0
        for t, row in enumerate(rows.astype(np.float32)):
            outlet.push_sample(row, 100.0 + bin_s * t)
        got = []
        deadline = time.time() + 60
        while len(got) < len(rows) and time.time() < deadline:
            sample, _ = inlet.pull_sample(timeout=0.5)
            if sample is not None:
                got.append(sample)
        del outlet
        out, err = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert len(got) == len(rows) == summary["received"] and summary["invalid"] == summary["gaps"] == 0
    offline = stream.run(folders[0], folders[1], max_trials=1, per_bin=True)["per_trial"][0]
    got = np.asarray(got)
    decoded = got[:, col["status"]] == 0
    assert decoded.sum() == len(rows) - (manifest["data"]["window_bins"] - 1)
    np.testing.assert_array_equal(got[decoded, col["grasp"]], np.asarray(offline["state"])[decoded])
    np.testing.assert_array_equal(got[decoded, col["object_index"]], np.asarray(offline["decision"])[decoded])
