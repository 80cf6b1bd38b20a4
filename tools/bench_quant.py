"""Quantisation benchmark: model size, accuracy cost and single-window latency of int8 vs float vs Keras.

For each model folder (``<models>/<session>-object`` and ``<session>-grasp-phase`` with a
manifest.json), quantise it with `host.quantize.run.quantize` if it has no int8 model yet (or with
--requantize), then report:
- size: the int8 and float TFLite files (bytes from the manifest) and their ratio;
- accuracy: Keras, float TFLite and int8 TFLite on the test split, as `quantize` stored it in the
  manifest (accuracy drop in points, agreement with the Keras argmax, strict agreement, ties);
- latency on the host CPU, measured in this run: int8 and float TFLite, one `set_tensor + invoke +
  get_tensor` per window, and the Keras model called on one window (`model(x)` and
  `predict_on_batch`), with p50 and p99 over many single calls on real test windows.

Latency is measured with ONE thread and batch 1 on purpose: the board's CPU fallback and the
Edge TPU both decode one 12-bin window at a time as bins arrive, so throughput on big batches or
on many cores would say nothing about the real-time budget. TensorFlow is pinned to one thread
too, so the Keras baseline is measured on the same footing.
Usage: python tools/bench_quant.py [--models models/bench] [--sessions MRec40] [--invokes 2000]
       [--keras-invokes 2000] [--requantize] [--json out.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as the CLI: the converter's C++ log buries the table
SUFFIXES = ("-object", "-grasp-phase")
TFLITE_WARMUP = 50
KERAS_WARMUP = 20
EAGER_CALLS = 100
MAX_SIZE_RATIO = 1 / 3
MAX_INT8_P99_MS = 1.0


def one_thread() -> str:
    """Pin TensorFlow to one intra-op and one inter-op thread (before any TF op runs); its version."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf.__version__


def _version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine() -> dict:
    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "tensorflow": _version("tensorflow-cpu", "tensorflow"), "keras": _version("keras"),
            "ai-edge-litert": _version("ai-edge-litert"), "numpy": _version("numpy")}


def model_folders(models: Path, sessions: set[str] | None) -> list[Path]:
    """Subfolders of `models` named *-object / *-grasp-phase with a manifest, optionally by session."""
    found = [p for p in sorted(models.iterdir()) if p.is_dir() and p.name.endswith(SUFFIXES)
             and (p / "manifest.json").is_file()]
    if sessions is None:
        return found
    return [p for p in found if json.loads((p / "manifest.json").read_text())["data"]["session"] in sessions]


def ensure_quantised(folder: Path, requantize: bool) -> dict:
    """The folder's manifest, after quantising it if it has no int8 model (or if asked to)."""
    from device.contract import INT8_MODEL
    from host.modelfolder import read_manifest
    from host.quantize.run import quantize

    manifest = read_manifest(folder)
    if requantize or not (folder / INT8_MODEL).is_file() or "quantization" not in manifest:
        print(f"  {folder.name}: quantising ...", flush=True)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the TFLite converter prints its traced signature
            manifest = quantize(folder)
        print(f"  {folder.name}: quantised in {time.perf_counter() - t0:.1f} s", flush=True)
    return manifest


class _Cycle:
    """Window i of the test split, cycling; each one a view into the contract's test set, never copied."""

    def __init__(self, test) -> None:
        self.test = test

    def __len__(self) -> int:
        return len(self.test)

    def __getitem__(self, i: int) -> np.ndarray:
        row = self.test.end_row[i % len(self.test)] - (self.test.window_bins - 1)
        return self.test.all_windows[row]


def test_windows(folder: Path, manifest: dict) -> _Cycle:
    """The test split's windows, read with the board's own reader (device.contract.TestSet)."""
    from device.contract import TestSet

    return _Cycle(TestSet.load(str(folder), manifest))


def time_calls(call: Callable[[np.ndarray], object], make_input: Callable[[int], np.ndarray],
               n: int, warmup: int) -> dict:
    """p50 / p99 in ms of `n` separately timed calls, after `warmup` untimed ones (inputs made outside)."""
    for i in range(warmup):
        call(make_input(i))
    ns = np.empty(n, np.int64)
    for i in range(n):  # batch 1 by design: one window per call
        x = make_input(warmup + i)
        t0 = time.perf_counter_ns()
        call(x)
        ns[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(ns, [50, 99]) / 1e6
    return {"p50_ms": float(p50), "p99_ms": float(p99), "calls": n}


def tflite_latency(path: Path, windows: _Cycle, n: int) -> dict:
    """One thread, one window per invoke: time set_tensor + invoke + get_tensor."""
    from device.contract import quantise
    from host.quantize.gate import interpreter

    it = interpreter(path, threads=1)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    expected = (1, *windows[0].shape)
    if tuple(inp["shape"]) != expected:
        raise click.ClickException(f"{path}: input shape {tuple(inp['shape'])}, test windows are {expected}")
    scale, zero = inp["quantization"]
    is_int8 = inp["dtype"] == np.int8
    in_idx, out_idx = inp["index"], out["index"]

    def make_input(i: int) -> np.ndarray:
        x = windows[i].astype(np.float32)[None]
        return quantise(x, scale, zero) if is_int8 else x

    def call(x: np.ndarray) -> np.ndarray:
        it.set_tensor(in_idx, x)
        it.invoke()
        return it.get_tensor(out_idx)

    return time_calls(call, make_input, n, TFLITE_WARMUP)


def keras_latency(path: Path, windows: _Cycle, n: int) -> dict:
    """The Keras model on one (1, 12, units) float32 window: `model(x)` and `predict_on_batch(x)`."""
    import keras

    from host.train.bilstm import CUSTOM_OBJECTS

    model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)

    def make_input(i: int) -> np.ndarray:
        return windows[i].astype(np.float32)[None]

    # predict_on_batch is Keras' serving path (~ms per window): timed `n` times like the TFLite
    # models. An eager `model(x)` costs ~0.2-0.3 s per window here, so it gets EAGER_CALLS.
    predict = time_calls(model.predict_on_batch, make_input, n, KERAS_WARMUP)
    call = time_calls(lambda x: np.asarray(model(x, training=False)), make_input, min(EAGER_CALLS, n), KERAS_WARMUP)
    return {"call": call, "predict_on_batch": predict}


def bench_folder(folder: Path, requantize: bool, invokes: int, keras_invokes: int) -> dict:
    """One table row: sizes and accuracy from the manifest, latencies measured now."""
    from device.contract import FLOAT_MODEL, INT8_MODEL, KERAS_MODEL

    m = ensure_quantised(folder, requantize)
    q = m["quantization"]
    windows = test_windows(folder, m)
    print(f"  {folder.name}: timing on {len(windows)} test windows ...", flush=True)
    int8 = tflite_latency(folder / INT8_MODEL, windows, invokes)
    flt = tflite_latency(folder / FLOAT_MODEL, windows, invokes)
    ker = keras_latency(folder / KERAS_MODEL, windows, keras_invokes)
    i8b, fb = m["tflite"]["int8"]["bytes"], m["tflite"]["float"]["bytes"]
    return {"folder": folder.name, "session": m["data"]["session"], "task": m["task"],
            "data_path": m["data"]["path"], "split": m.get("test_set", {}).get("split", "test"),
            "test_windows": len(windows), "test_trials": m.get("test_set", {}).get("trials"),
            "int8_bytes": i8b, "float_bytes": fb, "size_ratio": i8b / fb,
            "keras_accuracy": q["keras"]["accuracy"], "int8_accuracy": q["int8"]["accuracy"],
            "keras_relaxed_accuracy": q["keras"].get("relaxed_accuracy"),
            "int8_relaxed_accuracy": q["int8"].get("relaxed_accuracy"),
            "drop_points": q["int8_accuracy_drop_points"], "agreement": q["int8"]["agreement"],
            "strict_agreement": q["int8"].get("strict_agreement"), "ties": q["int8"].get("ties"),
            "int8": int8, "float": flt, "keras": ker["call"], "keras_predict_on_batch": ker["predict_on_batch"],
            "speedup_int8_vs_keras_call": ker["call"]["p50_ms"] / int8["p50_ms"],
            "speedup_int8_vs_keras_predict": ker["predict_on_batch"]["p50_ms"] / int8["p50_ms"]}


def _pct(x: float | None, width: int) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.2%}"


def print_table(rows: list[dict]) -> None:
    print("\nsize, test-split accuracy (from the manifest) and latency (1 thread, batch 1, ms)")
    print(f"  {'session':<8} {'task':<11} {'int8 KiB':>8} {'flt KiB':>8} {'ratio':>5} {'Keras acc':>9}"
          f" {'int8 acc':>8} {'drop':>6} {'agree':>7} {'strict':>7} {'ties':>6} {'int8 p50/p99':>13}"
          f" {'float p50/p99':>13} {'Keras p50/p99':>14} {'pred p50':>8} {'int8 x':>6} {'x pred':>6}")
    for r in rows:
        print(f"  {r['session']:<8} {r['task']:<11} {r['int8_bytes'] / 1024:8.0f} {r['float_bytes'] / 1024:8.0f}"
              f" {r['size_ratio']:5.2f} {r['keras_accuracy']:9.2%} {r['int8_accuracy']:8.2%} {r['drop_points']:+6.2f}"
              f" {_pct(r['agreement'], 7)} {_pct(r['strict_agreement'], 7)} {_pct(r['ties'], 6)}"
              f" {r['int8']['p50_ms']:6.3f}/{r['int8']['p99_ms']:<6.3f} {r['float']['p50_ms']:6.3f}/{r['float']['p99_ms']:<6.3f}"
              f" {r['keras']['p50_ms']:6.2f}/{r['keras']['p99_ms']:<7.2f} {r['keras_predict_on_batch']['p50_ms']:8.2f}"
              f" {r['speedup_int8_vs_keras_call']:5.0f}x {r['speedup_int8_vs_keras_predict']:5.1f}x")
    print("  drop: Keras minus int8 accuracy, points; agree: Keras's class among int8's top classes (ties"
          " included); strict: first-index tie-break; ties: windows with tied int8 top classes;"
          " int8 x: Keras call p50 / int8 p50; x pred: Keras predict_on_batch p50 / int8 p50")
    relaxed = [r for r in rows if r["int8_relaxed_accuracy"] is not None]
    for r in relaxed:
        print(f"  {r['folder']}: relaxed accuracy Keras {r['keras_relaxed_accuracy']:.2%}, int8 {r['int8_relaxed_accuracy']:.2%}")


TARGETS: list[tuple[str, Callable[[dict], float | None], Callable[[float], bool], str]] = [
    ("int8 file <= 1/3 of float", lambda r: r["size_ratio"], lambda v: v <= MAX_SIZE_RATIO, "{:.3f} of float"),
    ("int8 p99 < 1 ms", lambda r: r["int8"]["p99_ms"], lambda v: v < MAX_INT8_P99_MS, "{:.3f} ms"),
    ("accuracy drop <= 1 point", lambda r: r["drop_points"], lambda v: v <= 1.0, "{:+.2f} points"),
    ("agreement >= 98 %", lambda r: r["agreement"], lambda v: v >= 0.98, "{:.2%}"),
]


def print_targets(rows: list[dict]) -> dict[str, bool]:
    print("\ntargets")
    verdicts = {}
    for name, value, ok, fmt in TARGETS:
        each = [(r["folder"], value(r)) for r in rows]
        passed = [v is not None and ok(v) for _, v in each]
        verdicts[name] = all(passed)
        detail = "; ".join(f"{f} {fmt.format(v)} {'PASS' if p else 'MISS'}" for (f, v), p in zip(each, passed))
        print(f"  {'PASS' if verdicts[name] else 'MISS'}  {name:<26} {detail}")
    return verdicts


def print_provenance(rows: list[dict], env: dict, invokes: int, keras_invokes: int) -> None:
    print("\nwhere the figures come from")
    for r in rows:
        print(f"  {r['folder']}: session {r['session']} ({r['data_path']}), {r['split']} split, "
              f"{r['test_windows']} test windows from {r['test_trials']} trials")
    print(f"  latency: {invokes} timed invokes per TFLite model after {TFLITE_WARMUP} warm-up, "
          f"{keras_invokes} Keras predict_on_batch and {min(EAGER_CALLS, keras_invokes)} eager calls after "
          f"{KERAS_WARMUP} warm-up each; one window per call, cycling through the test windows")
    print(f"  machine: {env['cpu_count']} CPUs ({env['machine']}), python {env['python']}, tensorflow "
          f"{env['tensorflow']}, keras {env['keras']}, ai-edge-litert {env['ai-edge-litert']}, numpy {env['numpy']}")


@click.command()
@click.option("--models", type=click.Path(path_type=Path, file_okay=False), default=Path("models/bench"),
              show_default=True, help="Folder holding <session>-object / <session>-grasp-phase model folders.")
@click.option("--sessions", default=None, help="Comma-separated session names (default: all found).")
@click.option("--invokes", type=click.IntRange(1), default=2000, show_default=True, help="Timed TFLite invokes per model.")
@click.option("--keras-invokes", type=click.IntRange(1), default=2000, show_default=True, help="Timed Keras calls per model.")
@click.option("--requantize/--no-requantize", default=False, show_default=True,
              help="Quantise again even when model_int8.tflite exists.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write all rows as JSON here.")
def main(models: Path, sessions: str | None, invokes: int, keras_invokes: int, requantize: bool,
         json_path: Path | None) -> None:
    """Quantise (if needed) and benchmark each model folder: size, accuracy cost, 1-thread latency."""
    tf_version = one_thread()  # before any TF op, including the ones quantize runs
    names = {s.strip() for s in sessions.split(",") if s.strip()} if sessions else None
    if not models.is_dir():
        raise click.ClickException(f"{models}: no such folder")
    folders = model_folders(models, names)
    if not folders:
        raise click.ClickException(f"{models}: no *-object or *-grasp-phase model folder with a manifest.json"
                                   + (f" for sessions {', '.join(sorted(names))}" if names else ""))
    env = {**machine(), "tensorflow_runtime": tf_version}
    print(f"quantisation benchmark: {len(folders)} model folders in {models}; {env['cpu_count']} CPU cores, 1 thread used")
    rows = [bench_folder(f, requantize, invokes, keras_invokes) for f in folders]
    print_table(rows)
    verdicts = print_targets(rows)
    print_provenance(rows, env, invokes, keras_invokes)
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": env, "targets": verdicts, "rows": rows}, indent=1))
        print(f"  rows written to {json_path}")


if __name__ == "__main__":
    main()
