"""The validation pass of every training epoch, with each bin's input projection computed once.

Why: a window's first BiLSTM layer multiplies each of its 12 bins by the input kernel, and
neighbouring windows of a trial share 11 of their 12 bins; in inference (no dropout) a bin's
projection does not depend on the window it sits in. Keras' validation projects every bin of
every window, 12 times over; `BinValidation` projects each bin of the validation trials once,
gathers every window's 12 projected bins from them, and runs the rest of the network as usual
(docs/method.md, "Training speed"). The scores are Keras' own: the compiled loss with the
regularisation terms (what `model.evaluate` reports as `val_loss`) and accuracy or mean absolute
error, over every validation window, in float32; they equal Keras' validation up to float
rounding (tests/test_validate.py).

It applies to models whose first layers are the input standardisation and grasptpu's fused
BiLSTM (host/train/bilstm.py, every `--lstm` but `keras`); `bin_validation` returns None for
others, and training then validates the Keras way.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from host.data.windows import WindowSet
from host.train.bilstm import FusedBiLSTM

CHUNK_WINDOWS = 4096  # windows per pass of the recurrence: bounds memory, not the result


def _layers(model) -> list:
    """The model's layers in order, its input layer left out (build_model makes a chain)."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def supported(model) -> bool:
    """Whether `model` starts with the standardisation and a fused BiLSTM (all build_model chains do
    for the fused kinds)."""
    layers = _layers(model)
    return (len(layers) > 2 and isinstance(layers[0], keras.layers.Normalization)
            and isinstance(layers[1], FusedBiLSTM))


class BinValidation(keras.callbacks.Callback):
    """Adds `val_loss` and `val_accuracy` (classifier) or `val_mae` (regressor) to each epoch's
    logs, before the callbacks that read them (early stopping, the learning-rate schedule, the
    tuner, the history): put it first in the list, and leave `validation_data` out of `fit`.

    Args:
        counts: the session's binned counts (one tensor, shared with the training feed).
        windows: the validation windows (their end rows index `counts`).
        chunk: windows per recurrence pass (memory only).
    """

    def __init__(self, counts: tf.Tensor, windows: WindowSet, chunk: int = CHUNK_WINDOWS) -> None:
        super().__init__()
        first = windows.end_row - (windows.window_bins - 1)
        # every row a validation window reads, once; each window's bins as positions among them
        rows, inverse = np.unique(first[:, None] + np.arange(windows.window_bins)[None, :], return_inverse=True)
        self.rows = tf.constant(rows.astype(np.int64))
        self.positions = inverse.reshape(len(windows), windows.window_bins).astype(np.int64)
        self.counts, self.chunk = counts, max(1, int(chunk))
        self.regression = windows.target is not None
        y = windows.target if self.regression else windows.label
        self.y = np.asarray(y, np.float32 if self.regression else np.int32)
        self._project = self._windows = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.scores())

    def scores(self) -> dict:
        """val_loss and the compiled metric, over every validation window (the model as it is now)."""
        if self._project is None:
            self._trace()
        projected = self._project(self.rows)
        loss = metric = 0.0
        for lo in range(0, len(self.y), self.chunk):  # a few chunks, not windows
            hi = min(lo + self.chunk, len(self.y))
            chunk_loss, chunk_metric = self._windows(*projected, tf.constant(self.positions[lo:hi]),
                                                     tf.constant(self.y[lo:hi]))
            loss += float(chunk_loss) * (hi - lo)
            metric += float(chunk_metric)
        n = max(len(self.y), 1)
        return {"val_loss": loss / n, "val_mae" if self.regression else "val_accuracy": metric / n}

    def _trace(self) -> None:
        """The two graph functions: every row projected by both directions, then windows scored."""
        norm, first, *rest = _layers(self.model)
        bins = self.positions.shape[1]
        model, counts, regression = self.model, self.counts, self.regression

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
        def project(rows):
            x = tf.cast(tf.gather(counts, rows), tf.float32)
            n = x.shape[-1]
            x = tf.reshape(norm(tf.reshape(x, [-1, 1, n])), [-1, n])  # as a (rows, 1 bin, units) batch
            return tuple(tf.matmul(x, kernel) + bias for kernel, _, bias in first.cells)

        units = 4 * first.units
        specs = [tf.TensorSpec([None, units], tf.float32)] * len(first.cells)

        @tf.function(input_signature=[*specs, tf.TensorSpec([None, bins], tf.int64),
                                      tf.TensorSpec([None], tf.float32 if regression else tf.int32)])
        def windows(*args):
            *projected, positions, y = args
            x = first.recur_projected([tf.gather(z, positions) for z in projected])
            for layer in rest:
                x = layer(x, training=False)
            loss = model.compute_loss(y=y, y_pred=x, training=False)  # the compiled loss + regularisation
            if regression:
                return loss, tf.reduce_sum(tf.abs(y - x[:, 0]))
            hits = tf.cast(tf.argmax(x, axis=-1, output_type=tf.int32) == y, tf.float32)
            return loss, tf.reduce_sum(hits)

        self._project, self._windows = project, windows


def bin_validation(model, counts: tf.Tensor, windows: WindowSet) -> BinValidation | None:
    """The bin-projected validation for `model`, or None where it does not apply (Keras' layer)."""
    return BinValidation(counts, windows) if supported(model) else None
