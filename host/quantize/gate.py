"""Float vs int8: does quantisation cost accuracy? Keras, float TFLite and int8 TFLite side by side.

The gate (`grasptpu check-quant`, run by `make quantize`) fails when the int8 model's accuracy
on the test windows drops more than `max_drop` points below the Keras float model's, or when
its argmax agrees with the float model's on fewer than `min_agreement` of the windows. For the
aperture regressor it fails when the int8 model's test R2 drops more than `max_r2_drop` below the
Keras float model's, or when its outputs differ from Keras float by more than `max_rms_error`
(root mean square, in the target's unit: mm for the synthetic hand aperture).

The TFLite models take one window per invoke (batch 1, the Edge TPU's static shape), so the host
runs them window by window; each batch of windows is quantised in one numpy step first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.bench import agreement
from device.contract import FLOAT_MODEL, INT8_MODEL, KERAS_MODEL, TEST_SET, TestSet, dequantise, quantise
from host.errors import GrasptpuError, first_line
from host.modelfolder import check_files, load_keras, read_manifest
from host.train import metrics
from host.train.evaluate import predict

MAX_DROP_POINTS = 1.0
MIN_AGREEMENT = 0.98
MAX_R2_DROP = 0.01
MAX_RMS_ERROR = 1.0  # int8 vs Keras float, in the target's unit (mm): a hand controller's resolution
MODELS = ("keras", "float", "int8")


def interpreter(model: bytes | Path, threads: int = 1):
    """A TFLite interpreter with tensors allocated, or a one-line error for a file that is not TFLite."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_content": model} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    try:
        it = Interpreter(num_threads=threads, **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        name = "model" if "model_content" in kwargs else kwargs["model_path"]
        raise GrasptpuError(f"{name}: not a loadable TFLite model ({first_line(exc)})") from None
    return it


def io_details(flat: bytes) -> dict:
    """Input and output tensor: name, shape, dtype, scale and zero point (for the manifest and the board)."""
    it = interpreter(flat)

    def describe(d: dict) -> dict:
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                "scale": float(scale), "zero_point": int(zero)}

    return {"input": describe(it.get_input_details()[0]), "output": describe(it.get_output_details()[0])}


def invoke_each(it, windows: np.ndarray) -> np.ndarray:
    """Raw outputs of an allocated batch-1 interpreter, one invoke per window (int8 models get quantised input)."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    x = quantise(windows, *inp["quantization"]) if inp["dtype"] == np.int8 else windows.astype(inp["dtype"])
    results = np.empty((len(x), out["shape"][-1]), out["dtype"])
    for i, window in enumerate(x):  # batch 1 by design: one invoke per window
        it.set_tensor(inp["index"], window[None])
        it.invoke()
        results[i] = it.get_tensor(out["index"])[0]
    return results


def run_tflite(model: bytes | Path, windows, batch: int = 2048) -> np.ndarray:
    """Raw outputs of a batch-1 TFLite model for every window, gathered `batch` windows at a time."""
    it = interpreter(model)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    expected = (1, windows.window_bins, windows.counts.shape[1])
    if tuple(inp["shape"]) != expected:
        raise GrasptpuError(f"model input shape {tuple(inp['shape'])} does not fit windows of shape {expected[1:]}")
    parts = [invoke_each(it, windows.batch(slice(lo, lo + batch)).astype(np.float32))
             for lo in range(0, len(windows), batch)]
    return np.concatenate(parts) if parts else np.empty((0, out["shape"][-1]), out["dtype"])


def dequantise_outputs(raw: np.ndarray, model: bytes | Path) -> np.ndarray:
    """`model`'s raw int8 outputs -> float32 scores, by the contract's rule (the board's, too)."""
    scale, zero = interpreter(model).get_output_details()[0]["quantization"]
    return dequantise(raw, scale, zero)


def host_outputs(keras_model, float_model: bytes | Path, int8_model: bytes | Path, windows) -> dict:
    """Keras probabilities, float TFLite probabilities, int8 raw outputs and their dequantised values
    on `windows` (a WindowSet or the contract's TestSet)."""
    raw = run_tflite(int8_model, windows)
    if raw.dtype != np.int8:
        raise GrasptpuError(f"the int8 model's output is {raw.dtype}, not int8: not a full-integer model")
    return {"keras": predict(keras_model, windows).astype(np.float32),
            "float": run_tflite(float_model, windows).astype(np.float32),
            "int8_raw": raw, "int8": dequantise_outputs(raw, int8_model)}


def _scores(probs: np.ndarray, labels: np.ndarray, task: str, classes: list[int]) -> dict:
    pred = probs.argmax(axis=1)
    cm = metrics.confusion(labels, pred, probs.shape[1])
    if task == "object":
        m = metrics.object_metrics(cm, np.asarray(classes))
        return {"accuracy": m["accuracy"], "relaxed_accuracy": m["relaxed_accuracy"], "macro_f1": m["macro_f1"]}
    m = metrics.detector_metrics(cm)
    return {"accuracy": m["accuracy"], "f1": m["f1"], "macro_f1": m["macro_f1"]}


def compare(outputs: dict, labels: np.ndarray, task: str, classes: list[int]) -> dict:
    """Accuracy of each model, agreement with the Keras float argmax, probability errors vs Keras."""
    ref = outputs["keras"]
    ref_pred = ref.argmax(axis=1)
    result = {"windows": int(len(labels)), "task": task}
    for name in MODELS:
        probs = outputs[name]
        err = np.abs(probs - ref)
        agree, strict, ties = agreement(probs, ref_pred)
        result[name] = {**_scores(probs, labels, task, classes), "agreement": agree, "strict_agreement": strict,
                        "ties": ties, "max_abs_error": float(err.max(initial=0.0)),
                        "mean_abs_error": float(err.mean()) if err.size else 0.0}
    result["int8_accuracy_drop_points"] = 100.0 * (result["keras"]["accuracy"] - result["int8"]["accuracy"])
    return result


def compare_regression(outputs: dict, target: np.ndarray, units: str) -> dict:
    """R2, Pearson r and RMSE of each model against the test targets, and each model's difference
    from the Keras float outputs (max, mean and root mean square, in the target's unit)."""
    from host.train.continuous import regression_metrics

    ref = outputs["keras"][:, 0]
    result = {"windows": int(len(target)), "task": "aperture", "units": units}
    for name in MODELS:
        pred = outputs[name][:, 0]
        err = np.abs(pred - ref)
        result[name] = {**regression_metrics(target, pred), "max_abs_error": float(err.max(initial=0.0)),
                        "mean_abs_error": float(err.mean()) if err.size else 0.0,
                        "rms_error": float(np.sqrt((err.astype(np.float64) ** 2).mean())) if err.size else 0.0}
    result["int8_r2_drop"] = result["keras"]["r2"] - result["int8"]["r2"]
    return result


def compare_test_set(outputs: dict, test: TestSet, manifest: dict) -> dict:
    """The comparison that fits the model's task: classes (accuracy, agreement) or a target (R2, mm)."""
    if manifest["task"] == "aperture":
        return compare_regression(outputs, test.arrays["target"], manifest["data"]["target"]["units"])
    return compare(outputs, test.label, manifest["task"], manifest["data"]["classes"])


def gate(result: dict, max_drop: float = MAX_DROP_POINTS, min_agreement: float = MIN_AGREEMENT,
         max_r2_drop: float = MAX_R2_DROP, max_rms_error: float = MAX_RMS_ERROR) -> list[str]:
    """Why the int8 model fails the regression check (empty: it passes)."""
    if result["task"] == "aperture":
        return _gate_regression(result, max_r2_drop, max_rms_error)
    problems = []
    drop = result["int8_accuracy_drop_points"]
    if drop > max_drop:
        problems.append(f"int8 accuracy is {drop:.2f} points below float (allowed {max_drop:g})")
    agreement = result["int8"]["agreement"]
    if agreement < min_agreement:
        problems.append(f"int8 agrees with float on {agreement:.2%} of windows (required {min_agreement:.0%})")
    return problems


def _gate_regression(result: dict, max_r2_drop: float, max_rms_error: float) -> list[str]:
    problems = []
    drop = result["int8_r2_drop"]
    if not drop <= max_r2_drop:  # NaN fails too
        problems.append(f"int8 R2 is {drop:.4f} below float (allowed {max_r2_drop:g})")
    rms = result["int8"]["rms_error"]
    if not rms <= max_rms_error:
        problems.append(f"int8 outputs differ from float by {rms:.3f} {result['units']} RMS "
                        f"(allowed {max_rms_error:g} {result['units']})")
    return problems


def check_folder(folder: Path) -> tuple[dict, str]:
    """Re-run the three models in a quantised folder on its stored test windows."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if "tflite" not in manifest:
        raise GrasptpuError(f"{folder}: not quantised yet (run `grasptpu quantize {folder}`)")
    check_files(folder, manifest, (KERAS_MODEL, FLOAT_MODEL, INT8_MODEL, TEST_SET), f"grasptpu quantize {folder}")
    data = manifest["data"]
    test = TestSet.load(str(folder), manifest)
    model = load_keras(folder, manifest)
    outputs = host_outputs(model, folder / FLOAT_MODEL, folder / INT8_MODEL, test)
    result = compare_test_set(outputs, test, manifest)
    result["int8_matches_stored_outputs"] = bool(np.array_equal(outputs["int8_raw"], test.arrays["int8_output"]))
    title = (f"{manifest['name']}: {manifest['task']} on {data['session']}, test split "
             f"({result['windows']} windows, {test.n_trials} trials)")
    return result, title
