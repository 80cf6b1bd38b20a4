"""Rebuild a trained BiLSTM decoder from Edge-TPU-listed ops only, with the same weights.

Why: measured here (tensorflow 2.21, keras 3.15), a `Bidirectional(LSTM)` cannot go to the Edge
TPU as trained: the fused layer crashes the full-int8 calibrator, and `unroll=True` emits UNPACK,
which the Edge TPU compiler does not map (it would cut the graph there and run the rest on the
CPU). So the export graph spells the LSTM out: the window is cut into its 12 bins with SPLIT and
RESHAPE, and each cell step is FULLY_CONNECTED (input and recurrent kernels, shared across steps),
ADD, SPLIT (four gates), LOGISTIC, TANH and MUL; the two directions are joined with
CONCATENATION and the head is FULLY_CONNECTED + SOFTMAX (a classifier) or one FULLY_CONNECTED
output in the target's unit (the aperture regressor, its rescaling folded into the weights). The
input standardisation is folded into the first layer's input kernel, so no op is spent on it. Batch 1 and static shapes, as the Edge
TPU requires. `check_equivalent` proves the export computes what the trained model computes.
"""

from __future__ import annotations

import numpy as np


def _trained_parts(model) -> tuple[np.ndarray, np.ndarray, list, tuple[np.ndarray, np.ndarray, str]]:
    """(mean, std) of the standardisation, per-layer (forward, backward) LSTM weights, head."""
    norm = model.get_layer("standardise")
    mean = np.asarray(norm.mean).reshape(-1)
    std = np.sqrt(np.asarray(norm.variance).reshape(-1))
    layers = []
    i = 0
    while True:
        try:
            bi = model.get_layer(f"bilstm_{i}")
        except ValueError:
            break
        fwd, bwd = _directions(bi)
        layers.append(([np.asarray(w) for w in fwd], [np.asarray(w) for w in bwd], bool(bi.return_sequences)))
        i += 1
    if not layers:
        raise ValueError("the model has no bilstm_<i> layers: not a grasptpu BiLSTM decoder")
    return mean, std, layers, _head(model)


def _directions(bi) -> tuple[list, list]:
    """([kernel, recurrent kernel, bias] forward, the same backward) of a bidirectional layer:
    grasptpu's fused layer (host/train/bilstm.py; the default, and the grouped mode) or Keras'
    Bidirectional(LSTM) (`--lstm keras`); the same layout in both (gates i, f, c, o)."""
    if hasattr(bi, "direction_weights"):
        return bi.direction_weights()
    return bi.forward_layer.get_weights(), bi.backward_layer.get_weights()


def _head(model) -> tuple[np.ndarray, np.ndarray, str]:
    """(weights, bias, activation) of the output layer: the classifier's softmax Dense, or the
    regressor's linear Dense with its Rescaling folded in (y = (x @ w + b) * sd + mean
    == x @ (w * sd) + (b * sd + mean)), so the board's model ends on one FULLY_CONNECTED whose
    int8 output is in the target's unit."""
    names = {layer.name for layer in model.layers}
    if "softmax" in names:
        w, b = model.get_layer("softmax").get_weights()
        return np.asarray(w), np.asarray(b), "softmax"
    if {"linear", "target"} <= names:
        w, b = model.get_layer("linear").get_weights()
        rescale = model.get_layer("target")
        sd, mean = float(rescale.scale), float(rescale.offset)
        return (np.asarray(w) * sd).astype(np.float32), (np.asarray(b) * sd + mean).astype(np.float32), "linear"
    raise ValueError("the model has neither a softmax nor a linear+target head: not a grasptpu BiLSTM decoder")


def _fold_standardisation(weights: list, mean: np.ndarray, std: np.ndarray) -> list:
    """[kernel, recurrent, bias] with the input standardisation folded into kernel and bias:
    ((x - mean) / std) @ W + b  ==  x @ (W / std) + (b - (mean / std) @ W)."""
    kernel, recurrent, bias = weights
    return [(kernel / std[:, None]).astype(np.float32), recurrent,
            (bias - (mean / std) @ kernel).astype(np.float32)]


class _Cell:
    """One LSTM direction as listed ops: shared Dense layers, gates in Keras order i, f, c, o."""

    def __init__(self, keras, name: str, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> None:
        self.units = recurrent.shape[0]
        self.keras = keras
        self.x_dense = keras.layers.Dense(4 * self.units, name=f"{name}_x")
        self.h_dense = keras.layers.Dense(4 * self.units, use_bias=False, name=f"{name}_h")
        self.weights = (kernel, recurrent, bias)

    def load(self) -> None:
        kernel, recurrent, bias = self.weights
        self.x_dense.set_weights([kernel, bias])
        self.h_dense.set_weights([recurrent])

    def step(self, x, h, c):
        k = self.keras
        z = self.x_dense(x) if h is None else k.layers.Add()([self.x_dense(x), self.h_dense(h)])
        if c is None:
            # First step: no cell state, so the forget gate is unused. Slicing out only the
            # three live gates matters: an unused SPLIT output gets no calibration range, and
            # the int8 converter then leaves that SPLIT in float between DEQUANTIZE/QUANTIZE
            # (measured here), and DEQUANTIZE is not an Edge TPU op.
            n = self.units
            i, g, o = z[:, :n], z[:, 2 * n:3 * n], z[:, 3 * n:]
            f = None
        else:
            i, f, g, o = k.ops.split(z, 4, axis=-1)
            f = k.activations.sigmoid(f)
        i, o = k.activations.sigmoid(i), k.activations.sigmoid(o)
        g = k.activations.tanh(g)
        c = k.layers.Multiply()([i, g]) if c is None else k.layers.Add()(
            [k.layers.Multiply()([f, c]), k.layers.Multiply()([i, g])])
        h = k.layers.Multiply()([o, k.activations.tanh(c)])
        return h, c

    def run(self, steps: list, reverse: bool) -> list:
        """Hidden state after each step, in input order."""
        h = c = None
        out = [None] * len(steps)
        order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
        for t in order:  # unrolled at build time: 12 steps, the graph is static
            h, c = self.step(steps[t], h, c)
            out[t] = h
        return out


def export_model(model, window_bins: int, n_units: int):
    """The trained decoder rebuilt from listed ops, input ``(1, window_bins, n_units)`` float32."""
    import keras

    mean, std, layers, (head_w, head_b, activation) = _trained_parts(model)
    inputs = keras.Input((window_bins, n_units), batch_size=1, name="window")
    steps = [keras.ops.reshape(s, (1, n_units)) for s in keras.ops.split(inputs, window_bins, axis=1)]
    cells = []
    for li, (fwd, bwd, return_sequences) in enumerate(layers):
        if li == 0:
            fwd, bwd = _fold_standardisation(fwd, mean, std), _fold_standardisation(bwd, mean, std)
        f_cell = _Cell(keras, f"l{li}_fwd", *fwd)
        b_cell = _Cell(keras, f"l{li}_bwd", *bwd)
        cells += [f_cell, b_cell]
        f_out, b_out = f_cell.run(steps, False), b_cell.run(steps, True)
        if return_sequences:
            steps = [keras.layers.Concatenate()([f, b]) for f, b in zip(f_out, b_out)]
        else:
            features = keras.layers.Concatenate()([f_out[-1], b_out[0]])
    head = keras.layers.Dense(head_w.shape[1], activation=activation,
                              name="softmax" if activation == "softmax" else "target")
    outputs = head(features)
    exported = keras.Model(inputs, outputs, name="bilstm_decoder_edgetpu")
    for cell in cells:
        cell.load()
    head.set_weights([head_w, head_b])
    return exported


def check_equivalent(model, exported, windows: np.ndarray, atol: float = 1e-4) -> float:
    """Max |difference| of the two models' outputs over `windows`, relative to the outputs' scale
    (probabilities: 1; a regressor's target: its largest magnitude); raises above `atol`."""
    ref = model.predict(windows.astype(np.float32), verbose=0)
    got = np.concatenate([exported.predict(w[None].astype(np.float32), verbose=0) for w in windows])
    diff = float(np.max(np.abs(ref - got)) / max(1.0, float(np.max(np.abs(ref)))))
    if diff > atol:
        raise AssertionError(f"export differs from the trained model by {diff:.2e} (> {atol:g})")
    return diff
