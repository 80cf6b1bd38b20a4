"""The slimming pass: fewer bytes, the very same computation (real converter, real interpreter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from host.quantize.gate import interpreter, invoke_each
from device.contract import INT8_MODEL
from host.quantize.slim import slim
from tests.conftest import int8_tflite


def _unrolled_int8(n_units: int = 9, hidden: int = 8) -> bytes:
    """A small step-by-step recurrent graph like the export's: shared Dense layers per bin."""
    import keras

    keras.utils.set_random_seed(0)  # the weights decide the calibrated ranges, hence which tables are equal
    inp = keras.Input((12, n_units), batch_size=1)
    steps = [keras.ops.reshape(s, (1, n_units)) for s in keras.ops.split(inp, 12, axis=1)]
    x_dense, h_dense = keras.layers.Dense(hidden), keras.layers.Dense(hidden, use_bias=False)
    h = None
    for x in steps:
        z = x_dense(x) if h is None else keras.layers.Add()([x_dense(x), h_dense(h)])
        h = keras.layers.Multiply()([keras.activations.sigmoid(z), keras.activations.tanh(z)])
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    return int8_tflite(model, rate=2.0, samples=30)


def _probe(flat: bytes, n: int = 50) -> np.ndarray:
    shape = tuple(interpreter(flat).get_input_details()[0]["shape"][1:])
    return np.random.default_rng(1).integers(-128, 128, (n, *shape)).astype(np.int8)


def _layout(flat: bytes) -> dict:
    """Where the tensors' sub-tables sit in the file, read with the plain (non-object) reader."""
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAs(flat, 0).Subgraphs(0)
    model = schema.Model.GetRootAs(flat, 0)
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    quant = [t.Quantization() for t in tensors if t.Quantization() is not None]
    def value(q) -> tuple:
        return tuple(np.asarray(a).tobytes() for a in (q.ScaleAsNumpy(), q.ZeroPointAsNumpy(),
                                                         q.MinAsNumpy(), q.MaxAsNumpy())) + (q.QuantizedDimension(),)

    return {"tensors": len(tensors), "quant_tables": len(quant),
            "distinct_quant_tables": len({q._tab.Pos for q in quant}),
            "distinct_quant_values": len({value(q) for q in quant}),
            "empty_buffers_used": {t.Buffer() for t in tensors
                                   if model.Buffers(t.Buffer()).DataLength() == 0},
            "buffers": model.BuffersLength()}


def test_slimming_keeps_every_output_bit_for_bit_and_shrinks_the_file():
    raw = _unrolled_int8()
    small = slim(raw)
    probe = _probe(raw)
    assert np.array_equal(invoke_each(interpreter(raw), probe), invoke_each(interpreter(small), probe))
    assert len(small) < 0.8 * len(raw), (len(raw), len(small))
    before, after = _layout(raw), _layout(small)
    assert before["distinct_quant_tables"] == before["quant_tables"]     # the converter: one each
    # shared by value, each value written once: how much that saves depends on the graph (about
    # half of this toy cell's tables are the fixed sigmoid/tanh output ranges), so no ratio here
    assert after["distinct_quant_tables"] == after["distinct_quant_values"] < after["quant_tables"]
    assert after["empty_buffers_used"] == {0}                            # the schema's empty buffer
    assert after["buffers"] < before["buffers"] / 2
    assert slim(small) == small                                          # nothing left to take


def test_the_quantised_model_on_disk_is_slimmed(quantised):
    """What `grasptpu quantize` wrote is already in the slim form (and checked bit-exact there)."""
    _, detector, _, _ = quantised
    flat = (Path(detector) / INT8_MODEL).read_bytes()
    layout = _layout(flat)
    assert layout["empty_buffers_used"] == {0}
    assert layout["distinct_quant_tables"] < layout["quant_tables"] / 2
    assert layout["distinct_quant_tables"] == layout["distinct_quant_values"]
    assert len(slim(flat)) == len(flat)


def test_options_are_shared_only_when_exactly_equal():
    """Keys are exact values: repr() would round these two boundaries to the same text."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from host.quantize.slim import _Shared

    def bucketize(*bounds):
        opts = schema.BucketizeOptionsT()
        opts.boundaries = np.array(bounds, dtype=np.float32)
        return opts

    shared = _Shared(flatbuffers.Builder(256))
    a = shared.options(bucketize(0.00012345678, 1.0))
    assert shared.options(bucketize(0.00012345678, 1.0)) == a
    assert shared.options(bucketize(0.00012345679, 1.0)) != a
