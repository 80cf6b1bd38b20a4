"""An opt-in bidirectional LSTM layer (`grasptpu train --lstm grouped`): Keras' LSTM arithmetic,
with input dropout masks shared by groups of windows so the input projection multiplies only the
kept units. Faster, and measured less accurate; Keras' own layer is the default.

Why it exists (docs/method.md, "Training speed"): on 2 cores a training step of MRec41's
two-layer detector (568 units, batch 256) spends about half its time projecting the first
layer's inputs, 12 bins x 568 units x 160 gate columns per window and direction, and Keras' LSTM
drops 80 % of those inputs (the paper's dropout 0.8) only after multiplying them. Keras draws one
input mask per window; this layer draws one per *group* of windows of the shuffled batch
(MASK_GROUPS groups), each keeping exactly round(n x (1 - dropout)) units, and gathers those
units' inputs and kernel rows, so a group's projection is a matmul of the kept units only. Each
unit is still kept with probability 1 - dropout and the kept inputs are scaled so their
expectation is unchanged; what changes is that the windows of a group share their mask, and that
costs accuracy. Measured: 25 against 16 ms per training step (MRec41's detector shape); in
paired runs (same seed and split, 9 pairs) 1.5 points lower object accuracy and 1.3 points lower
detector F1 on average, 7 pairs worse, 2 better. Exact per-window masks cannot skip the dropped
units' arithmetic: gathering them per window was no faster than the dense matmul.

Everything else is Keras' `Bidirectional(LSTM(..., unroll=True))`, so a trained
model exports as Keras' does (host/quantize/export.py reads `direction_weights()`): gate order
i, f, c, o in each direction's kernel, recurrent kernel and bias; sigmoid gates and tanh
activation; Glorot-uniform kernels, orthogonal recurrent kernels, zero biases with the forget
gate's at one; the backward direction reads the window from its last bin, its sequence output is
put back in time order, and the two directions are concatenated. Inference (and dropout 0) is
that layer's arithmetic up to rounding (the bias is added before h @ U, Keras adds it after);
tests/test_bilstm.py checks outputs and gradients against it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

MASK_GROUPS = 8  # windows of a 256-window batch share a mask in groups of 32
DIRECTIONS = ("forward", "backward")


def _unit_forget_bias(units: int):
    """Keras' unit_forget_bias: zeros, except ones for the forget gate (i, f, c, o order)."""
    def init(shape, dtype=None):
        return tf.cast(tf.concat([tf.zeros([units]), tf.ones([units]), tf.zeros([2 * units])], 0), dtype or "float32")
    return init


@keras.saving.register_keras_serializable(package="grasptpu")
class GroupDropoutBiLSTM(keras.layers.Layer):
    """A bidirectional LSTM over a (batch, bins, features) window; see the module docstring.

    Args:
        units: LSTM units per direction (the output has 2 x units features).
        return_sequences: return every bin's output (batch, bins, 2 x units), else the last.
        dropout: fraction of input features dropped in training (0 <= dropout < 1).
        kernel_regularizer, recurrent_regularizer: Keras regularizers (or their names / configs).
        mask_groups: groups of windows per batch that share one input mask.
        seed: dropout seed; None draws from Keras' global seed (keras.utils.set_random_seed).
    """

    def __init__(self, units: int, return_sequences: bool = False, dropout: float = 0.0,
                 kernel_regularizer=None, recurrent_regularizer=None, mask_groups: int = MASK_GROUPS,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.units, self.return_sequences, self.dropout = int(units), bool(return_sequences), float(dropout)
        self.mask_groups, self.seed = int(mask_groups), seed
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
        outputs = []
        for (kernel, recurrent, bias), backward in zip(self.cells, (False, True)):
            z = self._project(inputs, kernel, training) + bias
            outputs.append(self._recur(z, recurrent, backward))
        return tf.concat(outputs, -1)

    def _project(self, x, kernel, training):
        """x @ kernel for every bin at once, the inputs dropped in training (`_dropped`)."""
        n, bins = int(x.shape[-1]), int(x.shape[1])
        if training and self.dropout > 0:
            return self._dropped(x, kernel, n, bins)
        return tf.reshape(tf.matmul(tf.reshape(x, [-1, n]), kernel), [-1, bins, 4 * self.units])

    def _dropped(self, x, kernel, n: int, bins: int):
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
            parts.append(tf.matmul(rows, tf.gather(kernel, kept[g]), transpose_a=True))
        z = tf.concat(parts, 0) * (n / keep)
        return tf.reshape(z, [-1, bins, 4 * self.units])

    def _recur(self, z, recurrent, backward: bool):
        """Keras' LSTM cell over the projected bins (z already holds x @ kernel + bias)."""
        u = self.units
        steps = tf.unstack(z, axis=1)
        if backward:
            steps = steps[::-1]
        h = tf.zeros_like(steps[0][:, :u])
        c = h
        outputs = []
        for zt in steps:
            i, f, g, o = tf.split(zt + tf.matmul(h, recurrent), 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            outputs.append(h)
        if not self.return_sequences:
            return h
        return tf.stack(outputs[::-1] if backward else outputs, axis=1)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units, "return_sequences": self.return_sequences,
                "dropout": self.dropout, "mask_groups": self.mask_groups, "seed": self.seed,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)
                if self.kernel_regularizer else None,
                "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer)
                if self.recurrent_regularizer else None}


# What a model file names our layer by (its registered name): pass to keras.models.load_model.
CUSTOM_OBJECTS = {keras.saving.get_registered_name(GroupDropoutBiLSTM): GroupDropoutBiLSTM}
