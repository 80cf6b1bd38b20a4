"""What must hold on a board after a deploy: runtime, artifacts, golden vectors, latency, input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest

from device import runtime as rt
from device.contract import COMPILED_MODEL, DeviceError, load_manifest, verify
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
