"""Keras export graph -> TFLite flatbuffers: float32, and full int8 calibrated on training windows.

Full int8 means int8 input and output, TFLITE_BUILTINS_INT8 only and a static input
``[1, window_bins, units]``: what the Edge TPU takes. The converted file is slimmed
(`host.quantize.slim`) and the slimmed file is kept only if it computes bit-identical outputs.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from host.errors import GrasptpuError, first_line


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
        raise GrasptpuError(f"TFLite conversion failed: {first_line(exc)}") from None


def slimmed(flat: bytes, probe: np.ndarray) -> bytes:
    """`host.quantize.slim.slim(flat)`, kept only if it gives bit-identical outputs on `probe` windows."""
    from host.quantize.gate import interpreter, invoke_each
    from host.quantize.slim import slim

    small = slim(flat)
    outputs = [invoke_each(interpreter(model), probe) for model in (flat, small)]
    if not np.array_equal(*outputs):
        raise GrasptpuError("internal: the slimmed TFLite model computes differently; please report this")
    return small
