"""The export graph computes what the trained model computes, from Edge-TPU-listed ops only."""

from __future__ import annotations

import numpy as np
import pytest

from host.quantize.export import check_equivalent, export_model
from host.train.model import build_model, fixed_hp

EDGE_TPU_OPS = {  # Coral, "TensorFlow models on the Edge TPU", supported operations (as TFLite names)
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
}


def small_model(layers: int, n_units: int = 9, n_classes: int = 5, lstm: str = "keras"):
    rng = np.random.default_rng(layers)
    hp = {"bilstm_layers": layers, "units": 16, "dropout": 0.0, "kernel_regularizer": "none",
          "recurrent_regularizer": "none", "learning_rate": 1e-3}
    mean = rng.uniform(0.5, 3.0, n_units)
    var = rng.uniform(0.3, 4.0, n_units)
    model = build_model(fixed_hp(hp), n_units, n_classes, 12, mean, var, lstm=lstm)
    for w in model.trainable_weights:  # random weights big enough to saturate some gates
        w.assign(rng.normal(0, 0.4, w.shape).astype(np.float32))
    return model, rng


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("lstm", ["fused-bf16", "keras", "grouped"])  # the default layer and two opt-in ones
def test_export_equals_the_trained_model(layers, lstm):
    model, rng = small_model(layers, lstm=lstm)
    exported = export_model(model, 12, 9)
    windows = rng.poisson(1.5, (24, 12, 9)).astype(np.float32)
    assert check_equivalent(model, exported, windows, atol=1e-5) < 1e-5
    assert exported.input_shape == (1, 12, 9)


def test_a_wrong_export_is_caught():
    model, rng = small_model(1)
    exported = export_model(model, 12, 9)
    w = exported.get_layer("softmax").get_weights()
    exported.get_layer("softmax").set_weights([w[0] * 1.5, w[1]])
    with pytest.raises(AssertionError, match="export differs"):
        check_equivalent(model, exported, rng.poisson(1.5, (8, 12, 9)).astype(np.float32))


def test_export_converts_to_listed_ops_only():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model, rng = small_model(2)
    exported = export_model(model, 12, 9)
    converter = tf.lite.TFLiteConverter.from_keras_model(exported)
    flat = converter.convert()
    ops = {op["op_name"] for op in Interpreter(model_content=flat)._get_ops_details()}
    assert ops <= EDGE_TPU_OPS, ops - EDGE_TPU_OPS
    assert "UNPACK" not in ops and "FULLY_CONNECTED" in ops
