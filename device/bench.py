"""`python -m device.bench MODEL_DIR`: latency and accuracy of a decoder on this machine, against the host.

1. Verify every artifact's sha256 against the manifest (refuse on a mismatch), then pick the
   runtime (device.runtime; always reported, with why each better choice was skipped).
2. Latency: warm up, then time `--invokes` (>= 2000) single-window invokes on real test windows,
   one thread: p50, p90, p99, max and invokes per second.
3. Accuracy and relaxed accuracy on every test window of the manifest; agreement with the host's
   int8 outputs (bit-exact rows, and argmax) and with the host's float outputs (argmax, ties of
   the int8 softmax counted as agreeing, as on the host; and the largest probability difference).
   An aperture regressor: R2, Pearson r and RMSE (in the target's unit) against the test targets;
   agreement with the host's int8 outputs in int8 steps and with its float outputs in the unit.
Prints a short table; `--json PATH` (or `-` for stdout) writes every figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from device import runtime as rt
from device.contract import COMPILED_MODEL, DeviceError, TestSet, load_manifest, verify
from device.decoder import Decoder
from device.output import emit

MIN_INVOKES = 2000


def percentiles(ns: np.ndarray) -> dict:
    ms = ns / 1e6
    return {"n": int(len(ms)), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
            "invokes_per_s": float(1e3 / ms.mean())}


HISTOGRAM_BINS = 40


def histogram(ns: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict:
    """Per-invoke times as a histogram in ms (`bins` equal bins from the fastest to the slowest
    invoke; counts sum to the invokes), so a report can draw the distribution, not only its percentiles."""
    counts, edges = np.histogram(ns / 1e6, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def time_invokes(decoder: Decoder, test: TestSet, n: int, warmup: int = 50) -> dict:
    """Per-invoke wall time (set input, invoke, read output) over real test windows, cycled:
    percentiles and a histogram (`histogram_ms`)."""
    if not len(test):
        raise DeviceError("the test set holds no windows to time")
    q = decoder.quantise(test.batch(np.arange(min(len(test), 512))))  # cycled: bounded memory
    times = np.empty(n, np.int64)
    clock = time.perf_counter_ns
    for i in range(n + warmup):
        window = q[i % len(q)][None]
        t0 = clock()
        decoder.invoke(window)
        if i >= warmup:
            times[i - warmup] = clock() - t0
    return dict(percentiles(times), histogram_ms=histogram(times))


def agreement(probs: np.ndarray, ref_pred: np.ndarray) -> tuple[float, float, float]:
    """(agreement, strict agreement, tie share) of `probs` with the reference classes.

    Why ties get their own count: the int8 softmax can only output what its int8 input (the
    logits) can tell apart, so two classes whose float logits differ by less than one logit step
    come out exactly equal. Measured on MRec40's object classifier: 98 % of the windows where
    `argmax` differed from float were such exact ties (float margins ~1 %), and accuracy did not
    move. `agreement` counts a window as agreeing when float's class is among int8's top classes;
    `strict` takes numpy's first-index tie-break, as `device` does; both are reported.
    """
    if not len(ref_pred):
        return 1.0, 1.0, 0.0
    top = probs.max(axis=1, keepdims=True)
    at_top = probs == top
    tied = at_top.sum(axis=1) > 1
    among = at_top[np.arange(len(ref_pred)), ref_pred]
    strict = probs.argmax(axis=1) == ref_pred
    return float(among.mean()), float(strict.mean()), float(tied.mean())


def raw_outputs(decoder: Decoder, test: TestSet) -> tuple:
    """(raw int8 outputs of every test window, seconds), 1024 windows at a time (bounded memory)."""
    t0 = time.perf_counter()
    raw = np.concatenate([decoder.predict_raw(test.batch(slice(lo, lo + 1024)))
                          for lo in range(0, len(test), 1024)]) if len(test) else np.empty((0, decoder.n_classes), np.int8)
    return raw, time.perf_counter() - t0


def regression_scores(target: np.ndarray, pred: np.ndarray) -> dict:
    """R2 (1 - residual / total sum of squares), Pearson r and RMSE (in the target's unit); NaN
    where undefined (R2 without spread in the target, r under two values, RMSE of nothing). The one
    implementation: the host scores its models with it too (host.train.continuous)."""
    y, p = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    n = len(y)
    resid = float(((y - p) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum()) if n else 0.0
    r = float(np.corrcoef(y, p)[0, 1]) if n > 1 and y.std() > 0 and p.std() > 0 else float("nan")
    return {"r2": 1.0 - resid / total if total > 0 else float("nan"), "pearson_r": r,
            "rmse": float(np.sqrt(resid / n)) if n else float("nan")}


def regression_accuracy(decoder: Decoder, test: TestSet, units: str) -> dict:
    """R2 and RMSE of the board's output against the test targets; agreement with the host's int8
    outputs (bit-exact share, largest difference in int8 steps) and float outputs (in the unit)."""
    raw, seconds = raw_outputs(decoder, test)
    pred = decoder.dequantise(raw)[:, 0]
    host_int8 = test.arrays["int8_output"]
    steps = np.abs(raw.astype(np.int64) - host_int8.astype(np.int64))
    float_err = np.abs(pred.astype(np.float64) - test.arrays["float_probs"][:, 0])
    return dict(regression_scores(test.arrays["target"], pred), units=units, windows=int(len(test)), seconds=seconds,
                host_int8_bit_exact=float((steps == 0).mean()) if len(test) else 1.0,
                host_int8_max_step_diff=int(steps.max(initial=0)),
                host_int8_mean_step_diff=float(steps.mean()) if len(test) else 0.0,
                host_float_rms_error=float(np.sqrt((float_err ** 2).mean())) if len(test) else 0.0,
                host_float_max_abs_error=float(float_err.max(initial=0.0)))


def accuracy(decoder: Decoder, test: TestSet) -> dict:
    """Accuracy on the test windows and agreement with the host's int8 and float outputs."""
    raw, seconds = raw_outputs(decoder, test)
    pred = raw.argmax(axis=1)
    label = test.label
    host_int8 = test.arrays["int8_output"]
    host_float = test.arrays["float_probs"]
    probs = decoder.dequantise(raw)
    float_agree, float_strict, _ = agreement(probs, host_float.argmax(axis=1))
    out = {"windows": int(len(test)), "seconds": seconds,
           "accuracy": float((pred == label).mean()) if len(test) else 0.0,
           "host_int8_bit_exact": float((raw == host_int8).all(axis=1).mean()) if len(test) else 1.0,
           "host_int8_argmax_agreement": float((pred == host_int8.argmax(axis=1)).mean()) if len(test) else 1.0,
           "host_float_agreement": float_agree,
           "host_float_strict_agreement": float_strict,
           "host_float_max_abs_error": float(np.abs(probs - host_float).max(initial=0.0))}
    if decoder.task == "object":
        out["relaxed_accuracy"] = float((np.abs(pred.astype(int) - label.astype(int)) <= 1).mean()) if len(test) else 0.0
    else:
        tp = int(((pred == 1) & (label == 1)).sum())
        out["f1"] = 2 * tp / max(int((pred == 1).sum()) + int((label == 1).sum()), 1)
    return out


def run(folder: str, invokes: int = MIN_INVOKES, threads: int = 1, allow_edgetpu: bool = True) -> dict:
    """Everything `python -m device.bench` measures, as a dict."""
    manifest = load_manifest(folder)
    verified = verify(folder, manifest)
    runtime = rt.select(COMPILED_MODEL in manifest.get("artifacts", {}), allow_edgetpu)
    decoder = Decoder(folder, manifest, runtime, threads)
    test = TestSet.load(folder, manifest)
    return {
        "model": manifest["name"], "task": manifest["task"], "session": manifest["data"]["session"],
        "data": "test split of {} ({} windows, {} trials)".format(manifest["data"]["session"], len(test), test.n_trials),
        "model_file": decoder.model_file, "verified_files": verified, "threads": threads,
        **runtime.describe(),
        "machine": {"python": platform.python_version(), "machine": platform.machine(), "node": platform.node(),
                    "numpy": np.__version__, "cpus": os.cpu_count()},
        "latency": time_invokes(decoder, test, invokes),
        "accuracy": (regression_accuracy(decoder, test, manifest["data"]["target"]["units"])
                     if manifest["task"] == "aperture" else accuracy(decoder, test)),
        "host": manifest.get("quantization", {}),
        "input_saturated": saturated(decoder),
    }


def saturated(decoder: Decoder) -> dict:
    """How many counts (and windows holding one) lay above the model's calibrated input range, so
    that the int8 input saturated; 0 for test windows of the training session."""
    return {"counts": decoder.clipped_counts, "windows": decoder.clipped_windows,
            "max_count": float(decoder.max_count)}


def _regression_lines(r: dict) -> list:
    acc, host = r["accuracy"], r.get("host") or {}
    u = acc["units"]
    lines = ["  R2 {:.4f}, r {:.4f}, RMSE {:.2f} {} | vs host int8: bit-exact {:.2%}, largest difference {} steps "
             "(mean {:.3f}) | vs host float: RMS {:.3f} {}, max {:.3f} {}".format(
                 acc["r2"], acc["pearson_r"], acc["rmse"], u, acc["host_int8_bit_exact"], acc["host_int8_max_step_diff"],
                 acc["host_int8_mean_step_diff"], acc["host_float_rms_error"], u, acc["host_float_max_abs_error"], u)]
    if "keras" in host:
        lines.append("  host (same windows): R2 Keras float {:.4f}, float TFLite {:.4f}, int8 TFLite {:.4f}".format(
            host["keras"]["r2"], host["float"]["r2"], host["int8"]["r2"]))
    return lines


def format_result(r: dict) -> str:
    lat, acc = r["latency"], r["accuracy"]
    head = "{}: {} on {} | runtime {} ({}), model {}, {} thread(s)".format(
        r["model"], r["task"], r["data"], r["runtime"], r["detail"], r["model_file"], r["threads"])
    timing = "  latency over {} invokes: p50 {:.3f} ms, p90 {:.3f} ms, p99 {:.3f} ms, max {:.3f} ms, {:.0f} invokes/s".format(
        lat["n"], lat["p50_ms"], lat["p90_ms"], lat["p99_ms"], lat["max_ms"], lat["invokes_per_s"])
    if r["task"] == "aperture":
        return "\n".join([head, timing] + _regression_lines(r) + _tail_lines(r))
    second = ("relaxed {:.1%}".format(acc["relaxed_accuracy"]) if "relaxed_accuracy" in acc
              else "F1 {:.3f}".format(acc["f1"]))
    lines = [
        head, timing,
        "  accuracy {:.2%}, {} | vs host int8: bit-exact {:.2%}, argmax {:.2%} | vs host float: agree {:.2%} "
        "(strict {:.2%}), max |prob diff| {:.4f}".format(
            acc["accuracy"], second, acc["host_int8_bit_exact"], acc["host_int8_argmax_agreement"],
            acc["host_float_agreement"], acc["host_float_strict_agreement"], acc["host_float_max_abs_error"]),
    ]
    host = r.get("host") or {}
    if "keras" in host:
        lines.append("  host (same windows): Keras float {:.2%}, float TFLite {:.2%}, int8 TFLite {:.2%}".format(
            host["keras"]["accuracy"], host["float"]["accuracy"], host["int8"]["accuracy"]))
    return "\n".join(lines + _tail_lines(r))


def _tail_lines(r: dict) -> list:
    lines = []
    sat = r.get("input_saturated") or {}
    if sat.get("counts"):
        lines.append("  input: {} counts in {} windows above the calibrated range (> {:.1f} spikes/bin) saturated "
                     "the int8 input".format(sat["counts"], sat["windows"], sat["max_count"]))
    for why in r["skipped"]:
        lines.append("  not used: " + why)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device.bench", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a quantised model folder (manifest.json, model_int8.tflite, test_set.npz)")
    parser.add_argument("--invokes", type=int, default=MIN_INVOKES, help="timed invokes (at least 2000 for a report)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", action="store_true", help="never use the Edge TPU, even when present")
    parser.add_argument("--json", default=None, help="write every figure to this file ('-' = stdout)")
    args = parser.parse_args(argv)
    if args.invokes < 1 or args.threads < 1:
        parser.error("--invokes and --threads must be >= 1")
    try:
        result = run(args.model_dir, args.invokes, args.threads, not args.cpu)
    except DeviceError as exc:
        print("device.bench: error: {}".format(exc), file=sys.stderr)
        return 2
    emit(result, args.json, format_result(result) if args.json != "-" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
