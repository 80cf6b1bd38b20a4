"""grasptpu's training BiLSTM layer: Keras' LSTM arithmetic, unrolled over the window, with the
input projection of every bin in one matmul, optionally in bfloat16 during training steps.

Why it exists (docs/method.md, "Training speed"): on 2 cores a training step of MRec41's
two-layer detector (568 units, batch 256) spends about half its time projecting the first
layer's inputs, 12 bins x 568 units x 160 gate columns per window and direction, an arithmetic
load already near the cores' float32 peak. Keras' LSTM (unrolled) applies the input dropout mask
and multiplies the kernel once per bin; this layer masks each window once and projects all its
bins in one matmul (in float32 0.98-1.21x Keras' layer, within this machine's timing drift), and
with `train_precision="bfloat16"` does that matmul in bfloat16 with float32 accumulation (the
CPU's AVX512-BF16 instructions): its inputs and kernel rounded to bfloat16, and so are its
results, the kernel gradient and (above the first layer) the gradient passed down to the layer
below. The recurrence, the other layers, the weights and the optimiser stay float32. An epoch
with validation (Keras' evaluate for both) of MRec41's detector or object classifier: 1.13-1.20x
Keras' layer. Inference (validation, test, export) is float32 always, so every reported metric is
the float32 model's; in paired runs the bfloat16 and float32 projections ended within 0.2 points
of each other.

Input dropout: Keras draws one Bernoulli mask per window (`mask_groups=0`, the default), each
unit kept with probability 1 - dropout and scaled by 1 / (1 - dropout); this layer draws the same.
The opt-in grouped mode (`grasptpu train --lstm grouped`, `mask_groups=8`) shares one mask within
each of MASK_GROUPS groups of the shuffled batch (32 windows at batch 256), each group keeping
exactly round(n x (1 - dropout)) units scaled by n / keep, and multiplies only those units'
inputs and kernel rows: 16 against 25 ms per training step (Keras' layer), but in paired runs
(same seed and split, 9 pairs) 1.5 points lower object accuracy and 1.3 points lower detector F1
on average.
Exact per-window masks cannot skip the dropped units' arithmetic: gathering them per window was
no faster than the dense matmul.

Everything else is Keras' `Bidirectional(LSTM(..., unroll=True))`, so a trained
model exports as Keras' does (host/quantize/export.py reads `direction_weights()`): gate order
i, f, c, o in each direction's kernel, recurrent kernel and bias; sigmoid gates and tanh
activation; Glorot-uniform kernels, orthogonal recurrent kernels, zero biases with the forget
gate's at one; the backward direction reads the window from its last bin, its sequence output is
put back in time order, and the two directions are concatenated. Inference (and float32 training
at dropout 0) is that layer's arithmetic up to rounding (the bias is added before h @ U, Keras
adds it after); tests/test_bilstm.py checks outputs and gradients against it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

MASK_GROUPS = 8  # the grouped mode: windows of a 256-window batch share a mask in groups of 32
PRECISIONS = ("float32", "bfloat16")  # of the input projection's matmul in training steps
DIRECTIONS = ("forward", "backward")


def _unit_forget_bias(units: int):
    """Keras' unit_forget_bias: zeros, except ones for the forget gate (i, f, c, o order)."""
    def init(shape, dtype=None):
        return tf.cast(tf.concat([tf.zeros([units]), tf.ones([units]), tf.zeros([2 * units])], 0), dtype or "float32")
    return init


@keras.saving.register_keras_serializable(package="grasptpu")
class FusedBiLSTM(keras.layers.Layer):
    """A bidirectional LSTM over a (batch, bins, features) window; see the module docstring.

    Args:
        units: LSTM units per direction (the output has 2 x units features).
        return_sequences: return every bin's output (batch, bins, 2 x units), else the last.
        dropout: fraction of input features dropped in training (0 <= dropout < 1).
        kernel_regularizer, recurrent_regularizer: Keras regularizers (or their names / configs).
        mask_groups: 0 for one input mask per window (Keras' dropout), else the groups of windows
            per batch that share one.
        seed: dropout seed; None draws from Keras' global seed (keras.utils.set_random_seed).
        train_precision: PRECISIONS, the dtype of the input projection's matmul in training steps
            (inference is float32).
    """

    def __init__(self, units: int, return_sequences: bool = False, dropout: float = 0.0,
                 kernel_regularizer=None, recurrent_regularizer=None, mask_groups: int = 0,
                 seed: int | None = None, train_precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if train_precision not in PRECISIONS:
            raise ValueError(f"train_precision must be one of {PRECISIONS}, got {train_precision!r}")
        if mask_groups < 0:
            raise ValueError(f"mask_groups must be 0 (one mask per window) or more, got {mask_groups}")
        self.units, self.return_sequences, self.dropout = int(units), bool(return_sequences), float(dropout)
        self.mask_groups, self.seed, self.train_precision = int(mask_groups), seed, train_precision
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        n, u = int(input_shape[-1]), self.units
        self.cells = []
        for d in DIRECTIONS:  # creation order = get_weights() order, as Bidirectional's
            self.cells.append((
                self.add_weight(shape=(n, 4 * u), initializer="glorot_uniform",
                                regularizer=self.kernel_regularizer, name=f"{d}_kernel"),
                self.add_weight(shape=(u, 4 * u), initializer="orthogonal",
                                regularizer=self.recurrent_regularizer, name=f"{d}_recurrent_kernel"),
                self.add_weight(shape=(4 * u,), initializer=_unit_forget_bias(u), name=f"{d}_bias"),
            ))

    def direction_weights(self) -> tuple[list, list]:
        """([kernel, recurrent kernel, bias] forward, the same backward) as numpy arrays."""
        w = self.get_weights()
        return w[:3], w[3:]

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], input_shape[1], 2 * self.units)
        return (input_shape[0], 2 * self.units)

    def call(self, inputs, training=False):
        return self.recur_projected([self._project(inputs, kernel, training) + bias for kernel, _, bias in self.cells])

    def recur_projected(self, projected: list):
        """The layer's output from its inputs already projected, x @ kernel + bias of each direction
        (batch, bins, 4 x units): both recurrences, concatenated. Validation (host/train/validate.py)
        projects each bin once and gathers the windows' bins before calling this."""
        return tf.concat([self._recur(z, recurrent, backward)
                          for z, (_, recurrent, _), backward in zip(projected, self.cells, (False, True))], -1)

    def _project(self, x, kernel, training):
        """x @ kernel for every bin at once; in training the inputs dropped (per window, or per
        group in `_grouped`) and the matmul in `train_precision`."""
        n, bins = int(x.shape[-1]), int(x.shape[1])
        dtype = self.train_precision if training else "float32"
        if training and self.dropout > 0:
            if self.mask_groups:
                return self._grouped(x, kernel, n, bins, dtype)
            keep = 1.0 - self.dropout
            kept = keras.random.uniform((tf.shape(x)[0], 1, n), seed=self.seed_generator) < keep
            x = x * (tf.cast(kept, x.dtype) / keep)  # Keras' dropout: one mask per window, all its bins
        return tf.reshape(_matmul(tf.reshape(x, [-1, n]), kernel, dtype), [-1, bins, 4 * self.units])

    def _grouped(self, x, kernel, n: int, bins: int, dtype: str):
        """The projection with one input mask per group of windows: each group keeps exactly
        `keep` random units, and multiplies only their inputs and kernel rows, scaled by n / keep
        so every input's expectation is unchanged (unit kept with probability keep / n)."""
        groups, keep = self.mask_groups, max(1, round(n * (1.0 - self.dropout)))
        kept = tf.math.top_k(keras.random.uniform((groups, n), seed=self.seed_generator), keep).indices
        batch = tf.shape(x)[0]
        size = batch // groups  # the batch's windows are in shuffled order: consecutive ones are a random group
        sizes = tf.concat([tf.fill([groups - 1], size), [batch - size * (groups - 1)]], 0)
        parts = []
        for g, xg in enumerate(tf.split(x, sizes, axis=0, num=groups)):
            rows = tf.gather(tf.transpose(tf.reshape(xg, [-1, n])), kept[g])  # (keep, windows x bins)
            parts.append(_matmul(rows, tf.gather(kernel, kept[g]), dtype, transpose_a=True))
        z = tf.concat(parts, 0) * (n / keep)
        return tf.reshape(z, [-1, bins, 4 * self.units])

    def _recur(self, z, recurrent, backward: bool):
        """Keras' LSTM cell over the projected bins (z already holds x @ kernel + bias), its
        gradient written out (`_recurrence`)."""
        # a tensor, not the variable: tf.custom_gradient would otherwise want the variable's
        # gradient returned through its `variables=` argument
        return _recurrence(z, tf.convert_to_tensor(recurrent), backward, self.return_sequences)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "return_sequences": self.return_sequences,
                "dropout": self.dropout, "mask_groups": self.mask_groups, "seed": self.seed,
                "train_precision": self.train_precision,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)
                if self.kernel_regularizer else None,
                "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer)
                if self.recurrent_regularizer else None}


def _recurrence(z, recurrent, backward: bool, sequences: bool):
    """Keras' LSTM cell unrolled over z's bins (batch, bins, 4 x units: x @ kernel + bias), with a
    hand-written gradient instead of TensorFlow's.

    Why (docs/method.md, "Training speed"): the gradient TensorFlow derives op by op costs time to
    build in every training run and tuning trial, and one small recurrent-kernel matmul per bin.
    This one reuses the forward pass's gate activations (SigmoidGrad / TanhGrad), sums the
    recurrent kernel's gradient over all bins in one matmul, and skips h @ U at the first bin
    (h = 0). MRec41's object classifier, 12 interleaved epochs in one process: 5-6 % less CPU per
    epoch and about 1 s less to build the training step. The arithmetic is the cell's; tests
    compare outputs and gradients with Keras' LSTM.
    """
    @tf.custom_gradient
    def run(z, recurrent):
        bins = tf.unstack(z, axis=1)
        saved, hs = _cell_forward(bins[::-1] if backward else bins, recurrent)
        out = tf.stack(hs[::-1] if backward else hs, axis=1) if sequences else hs[-1]

        def grad(d):
            """The gradient reaching each bin's h from above, in reading order, then the cell's."""
            if sequences:
                d_out = tf.unstack(d, axis=1)
                d_out = d_out[::-1] if backward else d_out
            else:
                d_out = [None] * (len(hs) - 1) + [d]
            da, d_recurrent = _cell_backward(d_out, saved, hs, recurrent)
            return tf.stack(da[::-1] if backward else da, axis=1), d_recurrent

        return out, grad

    return run(z, recurrent)


def _cell_forward(bins: list, recurrent) -> tuple[list, list]:
    """The cell over `bins` in reading order: (per bin the activations the gradient reuses:
    input, forget, candidate and output gates, the previous cell state (None at the first bin),
    tanh of the cell state; per bin h)."""
    saved, hs, c, h = [], [], None, None
    for zt in bins:
        a = zt if h is None else zt + tf.matmul(h, recurrent)
        i, f, g, o = tf.split(a, 4, axis=-1)
        si, sf, tg, so = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c_prev = c
        c = si * tg if c_prev is None else sf * c_prev + si * tg
        tc = tf.tanh(c)
        h = so * tc
        saved.append((si, sf, tg, so, c_prev, tc))
        hs.append(h)
    return saved, hs


def _cell_backward(d_out: list, saved: list, hs: list, recurrent) -> tuple[list, object]:
    """(per bin the gradient of the gates' pre-activations, in reading order; the recurrent
    kernel's gradient) from `d_out`, the gradient reaching each bin's h from above (None: none),
    back through the bins in reverse reading order."""
    da, dh_rec, dc_carry = [None] * len(saved), None, None
    for t in range(len(saved) - 1, -1, -1):
        si, sf, tg, so, c_prev, tc = saved[t]
        dh = _plus(d_out[t], dh_rec)
        dc = _plus(_tanh_grad(y=tc, dy=dh * so), dc_carry)
        da[t] = tf.concat([_sigmoid_grad(y=si, dy=dc * tg),
                           tf.zeros_like(dc) if c_prev is None else _sigmoid_grad(y=sf, dy=dc * c_prev),
                           _tanh_grad(y=tg, dy=dc * si), _sigmoid_grad(y=so, dy=dh * tc)], -1)
        if t:
            dh_rec, dc_carry = tf.matmul(da[t], recurrent, transpose_b=True), dc * sf
    if len(saved) == 1:
        return da, tf.zeros_like(recurrent)
    units = int(recurrent.shape[0])  # h is 0 before the first bin: the recurrent kernel sees the later bins only
    return da, tf.matmul(tf.reshape(tf.stack(hs[:-1]), [-1, units]),
                         tf.reshape(tf.stack(da[1:]), [-1, 4 * units]), transpose_a=True)


def _plus(a, b):
    """a + b, either of which may be None (no gradient there)."""
    return b if a is None else a if b is None else a + b


_sigmoid_grad, _tanh_grad = tf.raw_ops.SigmoidGrad, tf.raw_ops.TanhGrad  # dy x y(1-y), dy x (1-y^2)


def _matmul(a, b, dtype: str, transpose_a: bool = False):
    """a @ b in `dtype` (float32 or bfloat16), returned in a's dtype; TensorFlow's gradient of the
    casts makes the kernel gradient's matmul bfloat16 too."""
    if dtype == "float32":
        return tf.matmul(a, b, transpose_a=transpose_a)
    return tf.cast(tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype), transpose_a=transpose_a), a.dtype)


@keras.saving.register_keras_serializable(package="grasptpu")
class GroupDropoutBiLSTM(FusedBiLSTM):
    """The layer's name before it became FusedBiLSTM, so model folders trained with `--lstm grouped`
    then still load: Keras 3 finds a layer's weights in the file under its class name (snake case),
    so the old name must be a class, not only an alias. Nothing builds it any more."""


# What a model file names our layers by (their registered names): pass to keras.models.load_model.
CUSTOM_OBJECTS = {keras.saving.get_registered_name(c): c for c in (FusedBiLSTM, GroupDropoutBiLSTM)}
