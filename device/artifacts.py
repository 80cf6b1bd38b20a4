"""The model folder as the board receives it: manifest, integrity check and the test set.

The manifest `grasptpu quantize` writes is the contract between host and board: file names and
sha256, the int8 input/output scale and zero point, the label map, the window length, and the
test windows with the host's outputs on them. Nothing is loaded before every file the manifest
lists (and that is on the board) matches its sha256.

Python 3.7 and old numpy (Mendel Linux): no walrus, no `sliding_window_view` (numpy 1.20).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

SUPPORTED_FORMAT = 1
MANIFEST = "manifest.json"
INT8_MODEL = "model_int8.tflite"
COMPILED_MODEL = "model_int8_edgetpu.tflite"
TEST_SET = "test_set.npz"
REQUIRED = (INT8_MODEL, TEST_SET)


class DeviceError(Exception):
    """A problem the user can act on; the command line prints it as one line and exits 2."""


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
    checked = []
    for name in REQUIRED + ((COMPILED_MODEL,) if COMPILED_MODEL in artifacts else ()):
        if name not in artifacts:
            raise DeviceError("{}: the manifest lists no {}; re-run `grasptpu quantize`".format(folder, name))
        if not os.path.isfile(os.path.join(folder, name)):
            raise DeviceError("{}: {} is missing; deploy the model again".format(folder, name))
    for name, digest in sorted(artifacts.items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue  # host-only files (model.keras, report.png) need not travel
        if sha256_of(path) != digest:
            raise DeviceError("{}: sha256 does not match the manifest: the file is damaged or was changed; "
                              "deploy the model again".format(path))
        checked.append(name)
    return checked


class TestSet:
    """The manifest's test windows and the host's outputs on them; windows are strided views."""

    def __init__(self, folder: str, window_bins: int) -> None:
        with np.load(os.path.join(folder, TEST_SET)) as npz:
            self.arrays = {k: npz[k] for k in npz.files}
        self.window_bins = window_bins
        counts = np.ascontiguousarray(self.arrays["counts"])
        rows, units = counts.shape
        step_r, step_u = counts.strides
        # windows[i] = counts[i : i + window_bins], without a copy (numpy < 1.20 has no sliding_window_view)
        self.all_windows = np.lib.stride_tricks.as_strided(
            counts, shape=(max(rows - window_bins + 1, 0), window_bins, units), strides=(step_r, step_r, step_u),
            writeable=False)
        self.counts = counts
        self.end_row = self.arrays["end_row"]
        self.label = self.arrays["label"]

    def __len__(self) -> int:
        return len(self.end_row)

    def windows(self, idx) -> np.ndarray:
        """Windows `idx` as ``(n, window_bins, units)`` uint8 (the only copy made)."""
        return self.all_windows[self.end_row[idx] - (self.window_bins - 1)]

    def trial_rows(self, k: int) -> np.ndarray:
        offsets = self.arrays["trial_offsets"]
        return self.counts[offsets[k]:offsets[k + 1]]

    @property
    def n_trials(self) -> int:
        return len(self.arrays["trial_offsets"]) - 1
