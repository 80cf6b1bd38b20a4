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

CHUNK_WINDOWS = 4096  # windows per pass (and at most 12x as many rows projected): bounds memory, not the result


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
        chunk: windows per pass; a pass projects only the rows its windows read (memory only).
    """

    def __init__(self, counts: tf.Tensor, windows: WindowSet, chunk: int = CHUNK_WINDOWS) -> None:
        super().__init__()
        order = np.argsort(windows.end_row, kind="stable")  # the mean does not depend on the order
        first = windows.end_row[order] - (windows.window_bins - 1)
        # every row a validation window reads, once, sorted; a window's 12 rows are consecutive
        # integers, so they are consecutive in `rows` too: from `self.first` on
        self.rows = np.unique(first[:, None] + np.arange(windows.window_bins)[None, :]).astype(np.int64)
        self.first = np.searchsorted(self.rows, first).astype(np.int64)
        self.bins, self.counts, self._chunk = windows.window_bins, counts, max(1, int(chunk))
        self.regression = windows.target is not None
        y = windows.target if self.regression else windows.label
        self.y = np.asarray(y, np.float32 if self.regression else np.int32)[order]
        # each pass's inputs as tensors, made once: every epoch scores the same windows
        self._passes = [(tf.constant(self.rows[rows]), tf.constant(self.first[windows] - rows.start),
                         tf.constant(self.y[windows]), windows.stop - windows.start)
                        for windows, rows in self.chunks()]
        self._score = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.scores())

    def chunks(self):
        """(windows lo:hi, rows lo:hi) per pass: the windows in end-row order, and the rows they read."""
        for lo in range(0, len(self.y), self._chunk):  # a few chunks, not windows
            hi = min(lo + self._chunk, len(self.y))
            yield slice(lo, hi), slice(int(self.first[lo]), int(self.first[hi - 1]) + self.bins)

    def scores(self) -> dict:
        """val_loss and the compiled metric, over every validation window (the model as it is now)."""
        if self._score is None:
            self._score = self._trace()
        loss = metric = 0.0
        for rows, starts, y, size in self._passes:
            chunk_loss, chunk_metric = self._score(rows, starts, y)
            loss += float(chunk_loss) * size  # Keras weighs a batch's loss by its size
            metric += float(chunk_metric)
        n = max(len(self.y), 1)
        return {"val_loss": loss / n, "val_mae" if self.regression else "val_accuracy": metric / n}

    def _trace(self):
        """The graph function scoring one pass: its rows projected by both directions, each window's
        bins gathered from them, then the recurrences and the rest of the network."""
        norm, first, *rest = _layers(self.model)
        model, counts, regression = self.model, self.counts, self.regression
        offsets = tf.range(self.bins, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64),
                                      tf.TensorSpec([None], tf.float32 if regression else tf.int32)])
        def score(rows, starts, y):
            x = tf.cast(tf.gather(counts, rows), tf.float32)
            n = x.shape[-1]
            x = tf.reshape(norm(tf.reshape(x, [-1, 1, n])), [-1, n])  # as a (rows, 1 bin, units) batch
            positions = starts[:, None] + offsets[None, :]
            x = first.recur_projected([tf.gather(tf.matmul(x, kernel) + bias, positions)
                                       for kernel, _, bias in first.cells])
            for layer in rest:
                x = layer(x, training=False)
            loss = model.compute_loss(y=y, y_pred=x, training=False)  # the compiled loss + regularisation
            if regression:
                return loss, tf.reduce_sum(tf.abs(y - x[:, 0]))
            hits = tf.cast(tf.argmax(x, axis=-1, output_type=tf.int32) == y, tf.float32)
            return loss, tf.reduce_sum(hits)

        return score


def bin_validation(model, counts: tf.Tensor, windows: WindowSet) -> BinValidation | None:
    """The bin-projected validation for `model`, or None where it does not apply (Keras' layer)."""
    return BinValidation(counts, windows) if supported(model) else None
