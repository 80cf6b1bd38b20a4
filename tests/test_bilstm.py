"""grasptpu's training layer computes Keras' Bidirectional(LSTM): float32 exactly, bfloat16 training
steps closely, inference in float32 always; its input dropout is Keras' (one mask per window) or
shared by groups of windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from host.train.bilstm import CUSTOM_OBJECTS, FusedBiLSTM


def _pair(sequences: bool, n: int = 7, units: int = 5, dropout: float = 0.0, precision: str = "float32",
          bins: int = 12):
    """Our layer and Keras' unrolled Bidirectional(LSTM), built on (bins, n) and holding the same
    random weights (large enough to saturate some gates)."""
    import keras

    ours = FusedBiLSTM(units, return_sequences=sequences, dropout=dropout, train_precision=precision)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=sequences, unroll=True))
    ours.build((None, bins, n))
    theirs.build((None, bins, n))
    rng = np.random.default_rng(5)
    weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in theirs.get_weights()]
    theirs.set_weights(weights)
    ours.set_weights(weights)
    return ours, theirs, rng


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("bins", [1, 2, 12])
@pytest.mark.parametrize("sequences", [False, True])
def test_outputs_and_gradients_are_keras_bidirectional_lstm(sequences, bins, graph):
    """Our hand-written gradient (weights and inputs, eagerly and in a traced step as in training)
    is TensorFlow's gradient of Keras' layer, for any window length."""
    import tensorflow as tf

    ours, theirs, rng = _pair(sequences, bins=bins)
    x = tf.constant(rng.normal(0, 1, (6, bins, 7)).astype(np.float32))
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)

    def gradients(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, training=True)))  # dropout 0: training = inference
        return tape.gradient(loss, [x, *layer.trainable_weights])

    def traced(layer):  # as in training: traced once for any batch size
        return tf.function(lambda x: gradients(layer, x), input_signature=[tf.TensorSpec([None, bins, 7])])(x)
    grads = [traced(layer) if graph else gradients(layer, x) for layer in (ours, theirs)]
    for g_ours, g_theirs in zip(*grads):
        np.testing.assert_allclose(g_ours, g_theirs, atol=1e-4)


def _outputs_and_gradients(layer, x):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        out = layer(x, training=True)
        loss = tf.reduce_sum(tf.sin(out))
    return out.numpy(), [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]


@pytest.mark.parametrize("sequences", [False, True])
def test_bfloat16_training_steps_are_close_and_inference_stays_float32(sequences):
    """A bfloat16 projection rounds inputs and kernel to 8 significant bits: training outputs
    and gradients move by about that (not more, not zero); inference is the float32 layer."""
    import tensorflow as tf

    ours, theirs, rng = _pair(sequences, n=40, precision="bfloat16")
    x = tf.constant(rng.normal(0, 1, (6, 12, 40)).astype(np.float32))
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)
    (out, grads), (out_k, grads_k) = _outputs_and_gradients(ours, x), _outputs_and_gradients(theirs, x)
    assert 0 < np.abs(out - out_k).max() < 0.02
    for g, g_k in zip(grads, grads_k):
        assert np.abs(g - g_k).max() <= 0.04 * np.abs(g_k).max()


def test_initial_weights_are_keras_lstm_initialisers():
    import keras

    keras.utils.set_random_seed(0)
    layer = FusedBiLSTM(4)
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
    layer = FusedBiLSTM(n // 4, dropout=0.75, mask_groups=groups, seed=1)
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


def test_by_default_each_window_draws_its_own_mask_for_all_its_bins():
    """Keras' input dropout: each window keeps each unit with probability 1 - dropout, scaled by
    1 / (1 - dropout), with one mask for all its bins; windows and batches draw anew."""
    import tensorflow as tf

    n = 16
    layer = FusedBiLSTM(n // 4, dropout=0.75, seed=1)
    layer.build((None, 12, n))
    kernel = layer.cells[0][0]
    kernel.assign(np.eye(n, dtype=np.float32))
    x = tf.ones((512, 12, n))
    first = layer._project(x, kernel, training=True).numpy()
    assert set(np.unique(first)) == {0.0, 4.0}
    assert (first == first[:, :1]).all()
    assert len({w.tobytes() for w in first[:, 0]}) > 400  # windows' masks differ
    assert abs((first != 0).mean() - 0.25) < 0.02
    assert not np.array_equal(first, layer._project(x, kernel, training=True).numpy())
    np.testing.assert_array_equal(layer._project(x, kernel, training=False), x)


@pytest.mark.parametrize("groups", [8, 0])
def test_dropout_keeps_every_input_expectation(groups):
    """Averaged over many batches, each unit's dropped input is the input (kept with probability
    keep / n, scaled by n / keep; or 1 - dropout, scaled by its inverse)."""
    import tensorflow as tf

    n = 10
    layer = FusedBiLSTM(n // 4 + 1, dropout=0.7, mask_groups=groups, seed=2)
    layer.build((None, 12, n))
    kernel = tf.constant(np.eye(n, 4 * layer.units, dtype=np.float32))
    x = tf.ones((8, 1, n))
    mean = np.mean([layer._project(x, kernel, training=True).numpy()[:, 0, :n] for _ in range(400)], axis=(0, 1))
    np.testing.assert_allclose(mean, 1.0, atol=0.1)


def test_a_model_with_the_layer_saves_and_loads_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((12, 7))
    x = FusedBiLSTM(5, return_sequences=True, dropout=0.5, kernel_regularizer="l2", name="bilstm_0",
                    mask_groups=8, train_precision="bfloat16")(inputs)
    x = FusedBiLSTM(5, recurrent_regularizer=keras.regularizers.L1L2(0.01, 0.01), name="bilstm_1")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    windows = np.random.default_rng(0).normal(0, 1, (4, 12, 7)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(windows), model.predict_on_batch(windows), atol=1e-6)
    layer = loaded.get_layer("bilstm_0")
    assert (layer.dropout, layer.return_sequences, layer.mask_groups, layer.train_precision) == (0.5, True, 8, "bfloat16")
    # the regularisers came back: L2 on both directions' kernels, L1L2 on both recurrent kernels
    np.testing.assert_allclose(sorted(float(v) for v in loaded.losses), sorted(float(v) for v in model.losses))
    assert len(loaded.losses) == 4


def test_a_model_saved_before_the_rename_loads_with_its_weights():
    """tests/data/grouped-layer-before-rename.keras was saved by the layer's code before the rename
    (commit b765850, class GroupDropoutBiLSTM, two layers, mask_groups 8) with its outputs on four
    windows: grasptpu's CUSTOM_OBJECTS load it in safe mode and reproduce them."""
    import keras

    data = Path(__file__).parent / "data"
    model = keras.models.load_model(data / "grouped-layer-before-rename.keras", custom_objects=CUSTOM_OBJECTS,
                                    compile=False, safe_mode=True)
    saved = np.load(data / "grouped-layer-before-rename.npz")
    np.testing.assert_allclose(model.predict_on_batch(saved["windows"]), saved["outputs"], atol=1e-6)
    layer = model.get_layer("bilstm_0")
    assert isinstance(layer, FusedBiLSTM) and (layer.mask_groups, layer.train_precision) == (8, "float32")
    assert len(model.losses) == 2  # its L2 kernel regularisers, one per direction


@pytest.mark.parametrize("kwargs,message", [({"dropout": 1.0}, "dropout must be in"),
                                            ({"train_precision": "float16"}, "train_precision must be one of"),
                                            ({"mask_groups": -1}, "mask_groups must be 0")])
def test_a_bad_argument_is_refused_when_the_layer_is_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusedBiLSTM(4, **kwargs)
