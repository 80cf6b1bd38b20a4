"""Quantise a trained decoder to a full-int8 TFLite model the Edge TPU can take, plus its float twin.

Steps, all from the model folder `grasptpu train` wrote:
1. Rebuild the data exactly as in training (same file, checked by sha256; same split, checked
   trial by trial against split.json), because calibration must use training windows only and
   the host's reference outputs must be on the very test windows the model was scored on.
2. Rebuild the trained model from Edge-TPU-listed ops (`host.quantize.export`) and prove it equal.
3. Convert: float32 TFLite, and full int8 (int8 input and output, TFLITE_BUILTINS_INT8 only,
   static input ``[1, window_bins, units]``) calibrated on a representative set of training
   windows, stratified by label so rare classes and the short grasp phase set the ranges too.
4. Run Keras, float TFLite and int8 TFLite on the test windows; store those outputs beside the
   test windows (test_set.npz) for the board to compare against, and the comparison in the manifest.
5. The Edge TPU compatibility report of the int8 model goes into the manifest too.

The folder is rewritten all at once (a staged copy renamed into place): a failure at any step
leaves the previous folder untouched, never an int8 file without its manifest entry.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.errors import GrasptpuError
from host.modelfolder import KERAS_MODEL, Rewrite, read_manifest
from host.data.windows import WindowSet

FLOAT_TFLITE = "model_float.tflite"
INT8_TFLITE = "model_int8.tflite"
TEST_SET = "test_set.npz"
DEFAULT_REPRESENTATIVE = 1000


@dataclass
class ModelData:
    """A model folder's manifest, its Keras model and the data it was trained and tested on."""

    folder: Path
    manifest: dict
    model: object
    train: WindowSet
    test: WindowSet
    binned: object


def load_model_dir(folder: Path, data_path: Path | None = None) -> ModelData:
    """The trained model and its data, rebuilt and checked against what training recorded."""
    import keras

    from host.data.prepare import prepare
    from host.train.fit import windows_for

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not (folder / KERAS_MODEL).is_file():
        raise GrasptpuError(f"{folder}: no {KERAS_MODEL}: not a trained model folder (run `grasptpu train` first)")
    data = manifest["data"]
    split_info = json.loads((folder / "split.json").read_text())
    path = Path(data_path or data["path"])
    if not path.is_file():
        raise GrasptpuError(f"{path}: the recording this model was trained on is not there; pass --data PATH")
    prepared = prepare(path, bin_ms=data["bin_ms"], window_bins=data["window_bins"], label_bin=data["label_bin"],
                       train_val_share=split_info["train_val_share"], val_share=split_info["validation_share"],
                       seed=split_info["seed"])
    binned = prepared.binned
    if data.get("sha256") and binned.source.get("sha256") and binned.source["sha256"] != data["sha256"]:
        raise GrasptpuError(f"{path}: not the recording {folder.name} was trained on (sha256 differs); "
                            "pass the original file with --data")
    for name, trials in prepared.split.as_dict().items():
        if binned.trial_index[trials].tolist() != split_info["trial_index"][name]:
            raise GrasptpuError(f"{folder}: the {name} split rebuilt from {path} differs from split.json; "
                                "the data or the split code changed since training: retrain")
    sets = windows_for(prepared, manifest["task"])
    model = keras.models.load_model(folder / KERAS_MODEL, compile=False)
    return ModelData(folder, manifest, model, sets["train"], sets["test"], binned)


def representative_indices(windows: WindowSet, size: int, seed: int) -> np.ndarray:
    """Up to `size` training windows, as equal a share per label as the labels allow, seeded.

    Equal shares matter: with ~10 rest windows per grasp window, a plain random sample would
    calibrate the activation ranges mostly on rest; a rare object would barely count at all.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(windows))
    labels = windows.label[order]
    by_label = [order[labels == lab] for lab in np.unique(labels)]
    quota = [0] * len(by_label)
    left = min(size, len(order))
    while left > 0:  # over <= 40 labels: a label short of its share leaves the rest to the others
        open_ = [i for i, b in enumerate(by_label) if len(b) > quota[i]]
        share = max(left // len(open_), 1)
        for i in open_:
            take = min(len(by_label[i]) - quota[i], share, left)
            quota[i] += take
            left -= take
    chosen = np.concatenate([b[:q] for b, q in zip(by_label, quota)] + [[busiest_window(windows)]])
    return np.unique(chosen)


def busiest_window(windows: WindowSet) -> int:
    """The window holding the largest single count: calibrating on it sets the int8 input range to
    the whole range seen in training, so no test count is clipped (a real window, not a made-up one)."""
    from numpy.lib.stride_tricks import sliding_window_view

    row_max = windows.counts.max(axis=1)
    window_max = sliding_window_view(row_max, windows.window_bins).max(axis=1)
    return int(np.argmax(window_max[windows.end_row - (windows.window_bins - 1)]))


def check_representative(windows: np.ndarray, window_bins: int, n_units: int) -> np.ndarray:
    """A user-given representative set as float32 ``(n, window_bins, n_units)``, or a clear error."""
    arr = np.asarray(windows)
    if arr.ndim != 3 or arr.shape[1:] != (window_bins, n_units) or len(arr) == 0:
        raise GrasptpuError(f"representative set has shape {arr.shape}; expected (n, {window_bins}, {n_units}) "
                            "windows of binned counts")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise GrasptpuError("representative set must hold finite numbers (binned spike counts)")
    return arr.astype(np.float32)


def convert(exported, representative: np.ndarray | None) -> bytes:
    """TFLite flatbuffer of `exported`: float32 when `representative` is None, else full int8."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(exported)
    if representative is not None:
        def samples():
            for window in representative:
                yield [window[None]]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # Per-tensor fully-connected weights. Since TF 2.16 the converter quantises Dense kernels
        # per output channel by default; older runtimes do not know that form (the board's), and
        # measured here tflite-runtime 2.14 ran such a model ~270x slower and not bit-exact.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints every traced signature
            return converter.convert()
    except Exception as exc:  # the converter raises many types; one line is what the user needs
        raise GrasptpuError(f"TFLite conversion failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def slimmed(flat: bytes, probe: np.ndarray) -> bytes:
    """`host.quantize.slim.slim(flat)`, kept only if it gives bit-identical outputs on `probe` windows."""
    from host.quantize.gate import interpreter, invoke_each
    from host.quantize.slim import slim

    small = slim(flat)
    outputs = [invoke_each(interpreter(model), probe) for model in (flat, small)]
    if not np.array_equal(*outputs):
        raise GrasptpuError("internal: the slimmed TFLite model computes differently; please report this")
    return small


def label_map(manifest: dict) -> list[dict]:
    """Class index -> what it means: object id, shape and size (object) or rest/grasp."""
    from host.data.objects import shape_of, size_of

    names = manifest["data"]["label_names"]
    if manifest["task"] != "object":
        return [{"index": i, "name": n} for i, n in enumerate(names)]
    return [{"index": i, "name": n, "object_id": int(c), "shape": shape_of(int(c)), "size": size_of(int(c))}
            for i, (n, c) in enumerate(zip(names, manifest["data"]["classes"]))]


def test_set_arrays(test: WindowSet, binned) -> dict[str, np.ndarray]:
    """The test trials' binned counts, compacted, with each window's end row re-pointed into them.

    The board rebuilds the windows as zero-copy views; whole trials (with their Hold and Rew
    bins) are kept so the streaming replay can run them bin by bin.
    """
    trials = np.unique(test.trial)
    starts, stops = binned.trial_offsets[trials], binned.trial_offsets[trials + 1]
    lengths = stops - starts
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(trials) else np.empty(0, int)
    new_offsets = np.r_[0, np.cumsum(lengths)]
    pos = np.searchsorted(trials, test.trial)
    end_row = new_offsets[pos] + (test.end_row - starts[pos])
    return {
        "counts": np.ascontiguousarray(binned.counts[rows]).astype(np.uint8),
        "trial_offsets": new_offsets.astype(np.int64),
        "trial_index": binned.trial_index[trials].astype(np.int64),
        "object_id": binned.object_id[trials].astype(np.int64),
        "hold_bin": binned.hold_bin[trials].astype(np.int64),
        "reward_bin": binned.reward_bin[trials].astype(np.int64),
        "end_row": end_row.astype(np.int64),
        "label": test.label.astype(np.int64),
        "window_trial": pos.astype(np.int64),
    }


def _test_windowset(arrays: dict, task: str, label_names: tuple, window_bins: int) -> WindowSet:
    return WindowSet(arrays["counts"], arrays["end_row"], arrays["label"], arrays["window_trial"].astype(np.int32),
                     task, label_names, window_bins)


def quantize(folder: Path, representative_size: int = DEFAULT_REPRESENTATIVE, seed: int = 0,
             representative: np.ndarray | None = None, data_path: Path | None = None) -> dict:
    """Write the float and int8 TFLite models, test_set.npz and the completed manifest; return it."""
    from host.quantize import edgetpu_check
    from host.quantize import gate as quantcheck
    from host.quantize.compile import COMPILE_LOG, COMPILED
    from host.quantize.export import check_equivalent, export_model
    from host.train.fit import environment

    t0 = time.perf_counter()
    md = load_model_dir(folder, data_path)
    data = md.manifest["data"]
    wb, units = data["window_bins"], data["n_units"]
    if md.binned.counts.max(initial=0) > 255:
        raise GrasptpuError(f"{folder}: a bin holds more than 255 spikes; the int8 input cannot carry it")
    exported = export_model(md.model, wb, units)
    probe = md.train.batch(np.arange(min(len(md.train), 16))).astype(np.float32)
    export_diff = check_equivalent(md.model, exported, probe)
    if representative is None:
        idx = representative_indices(md.train, representative_size, seed)
        rep = md.train.batch(idx).astype(np.float32)
        rep_info = {"source": "training split, stratified by label", "windows": int(len(idx)), "seed": seed,
                    "per_label": {md.train.label_names[k]: int(v) for k, v in
                                  enumerate(np.bincount(md.train.label[idx], minlength=len(md.train.label_names)))}}
    else:
        rep = check_representative(representative, wb, units)
        rep_info = {"source": "user-given file", "windows": int(len(rep))}
    t1 = time.perf_counter()
    float_flat = slimmed(convert(exported, None), probe)
    int8_flat = slimmed(convert(exported, rep), probe)
    convert_s = time.perf_counter() - t1

    arrays = test_set_arrays(md.test, md.binned)
    test = _test_windowset(arrays, md.manifest["task"], md.test.label_names, wb)
    outputs = quantcheck.host_outputs(md.model, float_flat, int8_flat, test)
    comparison = quantcheck.compare(outputs, test.label, md.manifest["task"], data["classes"])

    with Rewrite(md.folder) as staged:
        (staged.path / FLOAT_TFLITE).write_bytes(float_flat)
        (staged.path / INT8_TFLITE).write_bytes(int8_flat)
        for stale in (COMPILED, COMPILE_LOG):  # a new int8 model voids an earlier compilation
            (staged.path / stale).unlink(missing_ok=True)
        np.savez_compressed(staged.path / TEST_SET, **arrays, keras_probs=outputs["keras"], float_probs=outputs["float"],
                 int8_output=outputs["int8_raw"])
        check = edgetpu_check.check_model(staged.path / INT8_TFLITE)
        manifest = {k: v for k, v in md.manifest.items() if k != "edgetpu"}
        manifest["tflite"] = {
            "float": {"file": FLOAT_TFLITE, "bytes": len(float_flat)},
            "int8": {"file": INT8_TFLITE, "bytes": len(int8_flat), **quantcheck.io_details(int8_flat)},
            "representative": rep_info,
            "export_max_abs_diff": export_diff,
            "convert_seconds": convert_s,
            "input_quantisation": "q = clip(round(counts / scale) + zero_point, -128, 127)",
        }
        manifest["labels"] = label_map(md.manifest)
        manifest["test_set"] = {"file": TEST_SET, "windows": len(test), "trials": int(len(arrays["trial_index"])),
                                "split": "test", "outputs": {"keras_probs": "Keras float model, probabilities",
                                                             "float_probs": "float TFLite, probabilities",
                                                             "int8_output": "int8 TFLite, raw int8 outputs"}}
        manifest["quantization"] = comparison
        manifest["edgetpu_check"] = check.summary()
        manifest["quantize_environment"] = environment()
        manifest = staged.write_manifest(manifest)
        staged.commit()
    manifest["quantize_seconds"] = time.perf_counter() - t0
    return manifest
