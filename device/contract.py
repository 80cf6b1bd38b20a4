"""The contract between host and board, in one place: a model folder's file names, its manifest
(format and validation), the test-set layout and the rule that turns counts into the int8 input.

`grasptpu train` and `grasptpu quantize` (host/) write model folders to this contract and import
it from here; the board's runner (device/) reads them with it. device/ imports nothing from
host/, so the board needs only this package, numpy and a TFLite runtime. Nothing is loaded
before every file the manifest lists (and that is on the board) matches its sha256.

Python 3.7 and old numpy (Mendel Linux): no walrus, no `sliding_window_view` (numpy 1.20).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

SUPPORTED_FORMAT = 1

# A model folder's files. The board receives BOARD_FILES (those present); the rest stay home.
MANIFEST = "manifest.json"
KERAS_MODEL = "model.keras"             # the trained Keras model (host only)
CALIBRATION = "calibration.npz"         # training windows the int8 ranges are calibrated on (host only)
FLOAT_MODEL = "model_float.tflite"
INT8_MODEL = "model_int8.tflite"
COMPILED_MODEL = "model_int8_edgetpu.tflite"
COMPILE_LOG = "model_int8_edgetpu.log"
TEST_SET = "test_set.npz"
METRICS = "metrics.json"
BOARD_FILES = (MANIFEST, INT8_MODEL, COMPILED_MODEL, COMPILE_LOG, FLOAT_MODEL, TEST_SET, METRICS)
REQUIRED = (INT8_MODEL, TEST_SET)

# test_set.npz: the test trials' binned counts (uint8, whole trials so the stream can replay them)
# and every test window as the row of its last bin; `grasptpu train` writes these ...
TEST_WINDOW_ARRAYS = ("counts", "trial_offsets", "trial_index", "object_id", "hold_bin", "reward_bin",
                      "end_row", "label", "window_trial")
# ... and `grasptpu quantize` adds the host's outputs on those windows, for the board to compare.
TEST_OUTPUT_ARRAYS = ("keras_probs", "float_probs", "int8_output")
# calibration.npz: one array, `windows`, (n, window_bins, units) uint8 counts of training windows.
CALIBRATION_ARRAY = "windows"

INPUT_QUANTISATION = "q = clip(round(counts / scale) + zero_point, -128, 127)"


class DeviceError(Exception):
    """A problem the user can act on; the command line prints it as one line and exits 2."""


def quantise(counts: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Counts -> the int8 input tensor's values (INPUT_QUANTISATION): the host computes its
    reference outputs with this very function, so host and board quantise alike."""
    x = np.asarray(counts, np.float32)
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(folder: str) -> dict:
    """The manifest, checked for a format this runner understands and for a quantised model."""
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise DeviceError("{}: no {}: not a model folder (deploy a quantised model)".format(folder, MANIFEST)) from None
    except ValueError as exc:
        raise DeviceError("{}: damaged manifest ({}); deploy the model again".format(path, exc)) from None
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or fmt > SUPPORTED_FORMAT:
        raise DeviceError("{}: manifest format {!r} is newer than this runner understands ({}); "
                          "deploy the device package from the same grasptpu version".format(path, fmt, SUPPORTED_FORMAT))
    if "tflite" not in manifest or "test_set" not in manifest:
        raise DeviceError("{}: the model is not quantised (run `grasptpu quantize` on the host)".format(folder))
    try:
        for key in ("name", "task", "labels", "artifacts"):
            manifest[key]
        manifest["data"]["window_bins"], manifest["data"]["bin_ms"], manifest["data"]["session"]
        manifest["tflite"]["int8"]["input"]["shape"]
    except (KeyError, TypeError) as exc:
        raise DeviceError("{}: the manifest lacks {}; re-run `grasptpu quantize` and deploy again".format(path, exc)) from None
    return manifest


def verify(folder: str, manifest: dict) -> list:
    """sha256 of every listed file present on the board; the runner's own files must be there.

    Returns the verified file names. Raises on a missing required file or any mismatch.
    """
    artifacts = manifest.get("artifacts", {})
    for name in REQUIRED + ((COMPILED_MODEL,) if COMPILED_MODEL in artifacts else ()):
        if name not in artifacts:
            raise DeviceError("{}: the manifest lists no {}; re-run `grasptpu quantize`".format(folder, name))
        if not os.path.isfile(os.path.join(folder, name)):
            raise DeviceError("{}: {} is missing; deploy the model again".format(folder, name))
    checked = []
    for name, digest in sorted(artifacts.items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue  # host-only files (model.keras, report.png) need not travel
        if sha256_of(path) != digest:
            raise DeviceError("{}: sha256 does not match the manifest: the file is damaged or was changed; "
                              "deploy the model again".format(path))
        checked.append(name)
    return checked


def save_test_set(path: str, arrays: dict) -> None:
    """Write test_set.npz with exactly the contract's arrays: the windows' arrays, plus the host's
    outputs when all three are given (after quantisation)."""
    keys = set(arrays)
    if keys != set(TEST_WINDOW_ARRAYS) and keys != set(TEST_WINDOW_ARRAYS + TEST_OUTPUT_ARRAYS):
        raise ValueError("test set arrays {} do not follow the contract ({} [+ {}])".format(
            sorted(keys), TEST_WINDOW_ARRAYS, TEST_OUTPUT_ARRAYS))
    np.savez_compressed(path, **arrays)


class TestSet:
    """The manifest's test windows (and the host's outputs on them, once quantised) as strided
    views over the stored counts; `batch` copies only the windows asked for."""

    __test__ = False  # not a pytest test class

    def __init__(self, arrays: dict, window_bins: int) -> None:
        self.arrays = arrays
        self.window_bins = window_bins
        counts = np.ascontiguousarray(arrays["counts"])
        rows, units = counts.shape
        step_r, step_u = counts.strides
        # windows[i] = counts[i : i + window_bins], without a copy (numpy < 1.20 has no sliding_window_view)
        self.all_windows = np.lib.stride_tricks.as_strided(
            counts, shape=(max(rows - window_bins + 1, 0), window_bins, units), strides=(step_r, step_r, step_u),
            writeable=False)
        self.counts = counts
        self.end_row = arrays["end_row"]
        self.label = arrays["label"]

    @classmethod
    def load(cls, folder: str, window_bins: int) -> "TestSet":
        """The folder's test_set.npz (no pickles: allow_pickle stays off)."""
        with np.load(os.path.join(folder, TEST_SET), allow_pickle=False) as npz:
            return cls({k: npz[k] for k in npz.files}, window_bins)

    def __len__(self) -> int:
        return len(self.end_row)

    def batch(self, idx) -> np.ndarray:
        """Windows `idx` as ``(n, window_bins, units)`` uint8 (the only copy made)."""
        return self.all_windows[self.end_row[idx] - (self.window_bins - 1)]

    def trial_rows(self, k: int) -> np.ndarray:
        offsets = self.arrays["trial_offsets"]
        return self.counts[offsets[k]:offsets[k + 1]]

    @property
    def n_trials(self) -> int:
        return len(self.arrays["trial_offsets"]) - 1
