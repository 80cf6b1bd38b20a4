"""One quantised decoder on the board: counts in, int8 scores out, with the input checked first.

The interpreter takes one window per invoke (batch 1, the Edge TPU's static shape). Bad input is
refused here, in plain words, before it reaches the interpreter: a window of the wrong shape or
dtype, a count that is negative, fractional, non-finite or above 255 (`device.contract.check_counts`).
Valid counts above the model's calibrated input range saturate the int8 input: they are counted
(`clipped_counts`, `clipped_windows`) and the bench and stream reports say how many.
"""

from __future__ import annotations

import os

import numpy as np

from device.contract import (COMPILED_MODEL, INT8_MODEL, DeviceError, as_array, check_counts, dequantise,
                             dequantise_one, last_line, output_width, path_in, quantise)
from device.runtime import Runtime


class Decoder:
    """The int8 model (or its Edge TPU compilation) behind `predict_raw` / `predict`."""

    def __init__(self, folder: str, manifest: dict, runtime: Runtime, threads: int = 1) -> None:
        self.name = manifest.get("name", os.path.basename(folder))
        self.task = manifest["task"]
        self.labels = manifest["labels"]
        self.model_file = COMPILED_MODEL if runtime.edgetpu else INT8_MODEL
        try:
            self.interpreter = runtime.open(path_in(folder, self.model_file), threads)
        except (ValueError, RuntimeError, OSError) as exc:  # e.g. an op version this runtime predates
            raise DeviceError("{}: {} cannot load it ({}); update the board's runtime or re-convert the model".format(
                self.model_file, runtime.detail, last_line(str(exc), type(exc).__name__))) from None
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        expected = tuple(manifest["tflite"]["int8"]["input"]["shape"])
        if tuple(inp["shape"]) != expected or inp["dtype"] != np.int8:
            raise DeviceError("{}: model input is {} {}, the manifest says {} int8; deploy the model again".format(
                self.model_file, np.dtype(inp["dtype"]).name, tuple(inp["shape"]), expected))
        self.window_shape = expected[1:]
        self._in, self._out = inp["index"], out["index"]
        self.in_scale, self.in_zero = inp["quantization"]
        self.out_scale, self.out_zero = out["quantization"]
        self.n_classes = int(out["shape"][-1])  # outputs per window: class scores, or 1 (a regressor's value)
        expected_outputs = output_width(manifest)
        if self.n_classes != expected_outputs:
            raise DeviceError("{}: the model has {} outputs, the manifest's {} task {}; deploy the model again".format(
                self.model_file, self.n_classes, self.task, expected_outputs))
        # the largest count the int8 input tells apart (int8 127); above it counts saturate
        self.max_count = (127 - self.in_zero) * self.in_scale
        self.clipped_counts = 0
        self.clipped_windows = 0

    def check(self, windows: np.ndarray) -> np.ndarray:
        """`windows` as ``(n, bins, units)`` counts, or a DeviceError naming what is wrong."""
        arr = as_array(windows)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[1:] != self.window_shape:
            raise DeviceError("input has shape {}; the decoder takes windows of {} bins x {} units".format(
                arr.shape, *self.window_shape))
        check_counts(arr)
        over = int((arr > self.max_count).sum()) if arr.size else 0
        if over:  # valid counts above the calibrated range: the int8 input saturates; counted, reported
            self.clipped_counts += over
            self.clipped_windows += int((arr > self.max_count).any(axis=(1, 2)).sum())
        return arr

    def quantise(self, windows: np.ndarray) -> np.ndarray:
        """Counts -> int8 by the contract's rule, the one the host computed its reference outputs with."""
        return quantise(self.check(windows), self.in_scale, self.in_zero)

    def invoke(self, q_window: np.ndarray) -> np.ndarray:
        """Raw int8 scores of one quantised window ``(1, bins, units)``."""
        self.interpreter.set_tensor(self._in, q_window)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)[0]

    def predict_raw(self, windows: np.ndarray) -> np.ndarray:
        """Raw int8 scores for each window."""
        q = self.quantise(windows)
        out = np.empty((len(q), self.n_classes), np.int8)
        for i in range(len(q)):  # batch 1 by design
            out[i] = self.invoke(q[i:i + 1])
        return out

    def dequantise(self, raw: np.ndarray) -> np.ndarray:
        """Raw int8 scores -> float32 scores, by the contract's rule (the host's, too)."""
        return dequantise(raw, self.out_scale, self.out_zero)

    def value(self, window: np.ndarray) -> float:
        """A regressor's output for one ``(bins, units)`` window, in the target's unit: one invoke and
        the dequantise rule on its single int8 output, in plain floats (the stream's per-bin path)."""
        return dequantise_one(self.invoke(self.quantise(window))[0], self.out_scale, self.out_zero)
