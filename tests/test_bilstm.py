"""grasptpu's training layer computes Keras' Bidirectional(LSTM), and drops inputs per group of windows."""

from __future__ import annotations

import numpy as np
import pytest

from host.train.bilstm import GroupDropoutBiLSTM


def _pair(sequences: bool, n: int = 7, units: int = 5, dropout: float = 0.0):
    """Our layer and Keras' unrolled Bidirectional(LSTM), built on (12, n) and holding the same
    random weights (large enough to saturate some gates)."""
    import keras

    ours = GroupDropoutBiLSTM(units, return_sequences=sequences, dropout=dropout)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=sequences, unroll=True))
    ours.build((None, 12, n))
    theirs.build((None, 12, n))
    rng = np.random.default_rng(5)
    weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs, rng


@pytest.mark.parametrize("sequences", [False, True])
def test_outputs_and_gradients_are_keras_bidirectional_lstm(sequences):
    import tensorflow as tf

    ours, theirs, rng = _pair(sequences)
    x = tf.constant(rng.normal(0, 1, (6, 12, 7)).astype(np.float32))
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)
    grads = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(layer(x, training=True)))  # dropout 0: training = inference
        grads.append(tape.gradient(loss, layer.trainable_weights))
    for g_ours, g_theirs in zip(*grads):
        np.testing.assert_allclose(g_ours, g_theirs, atol=1e-4)


def test_initial_weights_are_keras_lstm_initialisers():
    import keras

    keras.utils.set_random_seed(0)
    layer = GroupDropoutBiLSTM(4)
    layer.build((None, 12, 6))
    fwd, bwd = layer.direction_weights()
    for kernel, recurrent, bias in (fwd, bwd):
        assert kernel.shape == (6, 16) and recurrent.shape == (4, 16)
        np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(4), atol=1e-5)  # orthonormal rows
        assert np.abs(kernel).max() <= np.sqrt(6 / (6 + 16)) + 1e-6  # Glorot uniform's bound
        np.testing.assert_array_equal(bias, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])  # unit forget bias
    assert not np.array_equal(fwd[0], bwd[0])


@pytest.mark.parametrize("batch", [16, 13, 3])  # divisible by the groups, not, and fewer windows than groups
def test_a_group_of_windows_shares_one_mask_keeping_exactly_the_kept_share(batch):
    """With an identity kernel the projection is the dropped input itself: every window keeps
    exactly round(n x 0.25) units scaled by n / keep, the same in all its bins and for all the
    windows of its group; groups draw their own masks, and each batch draws anew."""
    import tensorflow as tf

    n, groups = 16, 4
    layer = GroupDropoutBiLSTM(n // 4, dropout=0.75, mask_groups=groups, seed=1)
    layer.build((None, 12, n))
    kernel = layer.cells[0][0]
    kernel.assign(np.eye(n, dtype=np.float32))
    x = tf.ones((batch, 12, n))
    first = layer._project(x, kernel, training=True).numpy()
    keep = round(n * 0.25)
    assert first.shape == (batch, 12, n)
    assert set(np.unique(first)) <= {0.0, n / keep}
    assert ((first != 0).sum(-1) == keep).all()
    assert (first == first[:, :1]).all()  # one mask per window for all its bins
    size = batch // groups
    bounds = [g * size for g in range(groups)] + [batch]
    masks = [first[bounds[g]:bounds[g + 1], 0] for g in range(groups) if bounds[g + 1] > bounds[g]]
    assert all((m == m[:1]).all() for m in masks)  # shared within a group
    if batch >= 8:
        assert len({m[0].tobytes() for m in masks}) > 1  # groups draw their own
    again = layer._project(x, kernel, training=True).numpy()
    assert not np.array_equal(first, again)
    np.testing.assert_array_equal(layer._project(x, kernel, training=False), x)  # inference keeps all


def test_dropout_keeps_every_input_expectation():
    """Averaged over many batches, each unit's dropped input is the input (kept with probability
    keep / n, scaled by n / keep)."""
    import tensorflow as tf

    n = 10
    layer = GroupDropoutBiLSTM(n // 4 + 1, dropout=0.7, mask_groups=8, seed=2)
    layer.build((None, 12, n))
    kernel = tf.constant(np.eye(n, 4 * layer.units, dtype=np.float32))
    x = tf.ones((8, 1, n))
    mean = np.mean([layer._project(x, kernel, training=True).numpy()[:, 0, :n] for _ in range(400)], axis=(0, 1))
    np.testing.assert_allclose(mean, 1.0, atol=0.1)


def test_a_model_with_the_layer_saves_and_loads_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((12, 7))
    x = GroupDropoutBiLSTM(5, return_sequences=True, dropout=0.5, kernel_regularizer="l2", name="bilstm_0")(inputs)
    x = GroupDropoutBiLSTM(5, recurrent_regularizer=keras.regularizers.L1L2(0.01, 0.01), name="bilstm_1")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    windows = np.random.default_rng(0).normal(0, 1, (4, 12, 7)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(windows), model.predict_on_batch(windows), atol=1e-6)
    layer = loaded.get_layer("bilstm_0")
    assert (layer.dropout, layer.return_sequences, layer.mask_groups) == (0.5, True, 8)
    # the regularisers came back: L2 on both directions' kernels, L1L2 on both recurrent kernels
    np.testing.assert_allclose(sorted(float(v) for v in loaded.losses), sorted(float(v) for v in model.losses))
    assert len(loaded.losses) == 4
