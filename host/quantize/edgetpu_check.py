"""Will this TFLite model map to the Edge TPU? A check that needs no compiler.

It reads the flatbuffer (TFLite's own schema, as shipped with ai-edge-litert) and checks every
operator and tensor against Coral's published requirements ("TensorFlow models on the Edge TPU",
coral.ai/docs/edgetpu/models-intro, summarised in docs/coral-board.md):
- full 8-bit quantisation: every activation tensor int8/uint8 with quantisation parameters;
  constants int8/uint8 (weights) or int32 (biases, shapes, axes); no float anywhere;
- static tensor sizes (no -1 in a shape signature), constant parameters;
- tensors of rank 1-3, or higher rank with only the 3 innermost dimensions > 1;
- batch 1 at the input; one subgraph;
- only the listed operations, with their listed limits (below, `_op_limits`);
- op versions no newer than Coral's software knows: its runtime (tflite_runtime 2.5) and
  `edgetpu_compiler` 16 are built on TFLite 2.5 and refuse a higher version ("Operation version
  not supported"; on the board the model does not even load). `CORAL_MAX_OP_VERSION` holds the
  highest version TFLite 2.5 registers per op, from its source (docs/coral-board.md).

The compiler cuts the graph once: the first op that cannot map, and every op after it, run on the
CPU. So the report names that first op and why, and the mapped share is the ops before it. The
compiler has limits this check cannot see (some reshapes of large tensors, on-chip memory): only
`edgetpu_compiler` is the final word (`grasptpu compile`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from host.errors import GrasptpuError

# Coral's supported-operations table, as TFLite builtin operator names.
EDGE_TPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE",
    "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV",
})
CORAL_TFLITE = "2.5"
# The highest version of each builtin op that TFLite 2.5's op resolver registers: the
# `AddBuiltin(BuiltinOperator_X, Register_X(), min_version, max_version)` calls of
# tensorflow/lite/kernels/register.cc at tag v2.5.0 (commit a4dfb8d1a71, the commit Coral's
# libedgetpu "Grouper" release and its tflite_runtime 2.5.0.post1 are built from), read from the
# source and confirmed against the compiled BuiltinOpResolver of the official tensorflow-cpu 2.5.0
# wheel; docs/coral-board.md has the evidence, and what edgetpu_compiler 16 was seen to refuse.
# Every version from 1 to the maximum is registered (BROADCAST_TO starts at 2). An op absent
# here is unknown to TFLite 2.5.
CORAL_MAX_OP_VERSION: dict[str, int] = {
    "ABS": 3, "ADD": 3, "ADD_N": 1, "ARG_MAX": 2, "ARG_MIN": 2, "AVERAGE_POOL_2D": 3, "BATCH_MATMUL": 4,
    "BATCH_TO_SPACE_ND": 3, "BIDIRECTIONAL_SEQUENCE_LSTM": 3, "BIDIRECTIONAL_SEQUENCE_RNN": 3,
    "BROADCAST_TO": 3, "CALL_ONCE": 1, "CAST": 1, "CEIL": 1, "COMPLEX_ABS": 1, "CONCATENATION": 3,
    "CONV_2D": 5, "CONV_3D": 1, "COS": 1, "CUMSUM": 1, "DENSIFY": 1, "DEPTHWISE_CONV_2D": 6,
    "DEPTH_TO_SPACE": 2, "DEQUANTIZE": 4, "DIV": 2, "ELU": 1, "EMBEDDING_LOOKUP": 3,
    "EMBEDDING_LOOKUP_SPARSE": 1, "EQUAL": 3, "EXP": 1, "EXPAND_DIMS": 1, "FAKE_QUANT": 2, "FILL": 3,
    "FLOOR": 1, "FLOOR_DIV": 2, "FLOOR_MOD": 1, "FULLY_CONNECTED": 9, "GATHER": 5, "GATHER_ND": 3,
    "GREATER": 2, "GREATER_EQUAL": 2, "HARD_SWISH": 1, "HASHTABLE": 1, "HASHTABLE_FIND": 1,
    "HASHTABLE_IMPORT": 1, "HASHTABLE_LOOKUP": 1, "HASHTABLE_SIZE": 1, "IF": 1, "IMAG": 1,
    "L2_NORMALIZATION": 2, "L2_POOL_2D": 1, "LEAKY_RELU": 2, "LESS": 2, "LESS_EQUAL": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1, "LOG": 1, "LOGICAL_AND": 1, "LOGICAL_NOT": 1, "LOGICAL_OR": 1,
    "LOGISTIC": 3, "LOG_SOFTMAX": 2, "LSH_PROJECTION": 1, "LSTM": 4, "MATRIX_DIAG": 1,
    "MATRIX_SET_DIAG": 1, "MAXIMUM": 4, "MAX_POOL_2D": 3, "MEAN": 3, "MINIMUM": 4, "MIRROR_PAD": 2,
    "MUL": 4, "NEG": 1, "NON_MAX_SUPPRESSION_V4": 1, "NON_MAX_SUPPRESSION_V5": 1, "NOT_EQUAL": 3,
    "ONE_HOT": 1, "PACK": 3, "PAD": 3, "PADV2": 3, "POW": 1, "PRELU": 1, "QUANTIZE": 2, "RANGE": 1,
    "RANK": 1, "REAL": 1, "REDUCE_ANY": 1, "REDUCE_MAX": 3, "REDUCE_MIN": 3, "REDUCE_PROD": 1, "RELU": 3,
    "RELU6": 3, "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4,
    "REVERSE_SEQUENCE": 1, "REVERSE_V2": 3, "RFFT2D": 1, "RNN": 3, "ROUND": 1, "RSQRT": 2, "SCATTER_ND": 1,
    "SEGMENT_SUM": 1, "SELECT": 2, "SELECT_V2": 1, "SHAPE": 1, "SIN": 1, "SKIP_GRAM": 1, "SLICE": 5,
    "SOFTMAX": 3, "SPACE_TO_BATCH_ND": 3, "SPACE_TO_DEPTH": 2, "SPARSE_TO_DENSE": 3, "SPLIT": 4,
    "SPLIT_V": 2, "SQRT": 1, "SQUARE": 1, "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STRIDED_SLICE": 5,
    "SUB": 5, "SUM": 2, "SVDF": 4, "TANH": 3, "TILE": 2, "TOPK_V2": 2, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "UNIDIRECTIONAL_SEQUENCE_RNN": 3, "UNIQUE": 1, "UNPACK": 4,
    "WHERE": 1, "WHILE": 1, "ZEROS_LIKE": 1,
}
QUANTISED = ("INT8", "UINT8")
SOFTMAX_MAX_ELEMENTS = 16000


@dataclass
class OpCheck:
    index: int
    op: str
    version: int = 1
    problems: list[str] = field(default_factory=list)

    @property
    def max_version(self) -> int | None:
        """The highest version of this op that Coral's runtime and compiler accept (None: unknown to them)."""
        return CORAL_MAX_OP_VERSION.get(self.op)

    @property
    def supported(self) -> bool:
        return not self.problems


@dataclass
class Report:
    path: str
    ops: list[OpCheck]
    model_problems: list[str]

    @property
    def first_unmapped(self) -> OpCheck | None:
        if self.model_problems and self.ops:
            return self.ops[0]
        return next((op for op in self.ops if not op.supported), None)

    @property
    def mapped(self) -> int:
        first = self.first_unmapped
        return len(self.ops) if first is None else first.index

    @property
    def mapped_share(self) -> float:
        return self.mapped / len(self.ops) if self.ops else 0.0

    def summary(self) -> dict:
        first = self.first_unmapped
        return {"ops": len(self.ops), "mapped": self.mapped, "mapped_share": self.mapped_share,
                "model_problems": self.model_problems,
                "first_unmapped": None if first is None else {"index": first.index, "op": first.op,
                                                               "why": "; ".join(first.problems or self.model_problems)},
                "op_counts": _op_counts(self.ops), "op_versions": op_versions(self.ops)}


def _op_counts(ops: list[OpCheck]) -> dict[str, int]:
    names, counts = np.unique([o.op for o in ops], return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts)}


def op_versions(ops: list[OpCheck]) -> dict[str, dict]:
    """Per op type: the versions the model uses and the highest Coral's software accepts."""
    out: dict[str, dict] = {}
    for op in ops:
        entry = out.setdefault(op.op, {"versions": [], "coral_max": op.max_version})
        if op.version not in entry["versions"]:
            entry["versions"].append(op.version)
    return {name: {**e, "versions": sorted(e["versions"])} for name, e in sorted(out.items())}


def _version_problems(op: OpCheck) -> list[str]:
    if op.op.startswith("CUSTOM:"):
        return []  # custom ops carry no builtin version; the operation list already refuses them
    if op.max_version is None:
        return [f"{op.op} is unknown to TFLite {CORAL_TFLITE}, Coral's runtime and compiler"]
    if op.version > op.max_version:
        return [f"{op.op} version {op.version} is newer than Coral's runtime (TFLite {CORAL_TFLITE}) and "
                f"edgetpu_compiler 16 accept (up to {op.max_version}): convert with an older TensorFlow or "
                "avoid the feature that needs it"]
    return []


class _Model:
    """Just the parts of a TFLite flatbuffer the check needs, with readable names."""

    def __init__(self, buf: bytes, path: str) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.schema = schema
        if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
            raise GrasptpuError(f"{path}: not a TFLite model (no TFL3 identifier); give a .tflite file")
        try:
            self.model = schema.Model.GetRootAs(buf, 0)
            self.n_subgraphs = self.model.SubgraphsLength()
            self.graph = self.model.Subgraphs(0)
            self.op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
            self.type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        except Exception as exc:  # a damaged buffer fails in many ways inside flatbuffers
            raise GrasptpuError(f"{path}: damaged TFLite file ({type(exc).__name__}); re-run `grasptpu quantize`") from None

    def op_version(self, op) -> int:
        return int(self.model.OperatorCodes(op.OpcodeIndex()).Version())

    def op_name(self, op) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            return f"CUSTOM:{(code.CustomCode() or b'?').decode(errors='replace')}"
        return name

    def tensor(self, index: int) -> dict:
        t = self.graph.Tensors(int(index))
        buffer = self.model.Buffers(t.Buffer())
        q = t.Quantization()
        signature = t.ShapeSignatureAsNumpy()
        return {"name": (t.Name() or b"").decode(errors="replace"), "shape": [int(x) for x in t.ShapeAsNumpy()]
                if t.ShapeLength() else [], "signature": [] if isinstance(signature, int) else signature.tolist(),
                "type": self.type_names.get(t.Type(), str(t.Type())),
                "constant": buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0),
                "quantised": q is not None and q.ScaleLength() > 0, "index": int(index)}

    def constant_values(self, index: int) -> np.ndarray | None:
        t = self.graph.Tensors(int(index))
        buffer = self.model.Buffers(t.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = {"INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8, "INT64": np.int64,
                 "FLOAT32": np.float32}.get(self.type_names.get(t.Type(), ""))
        return None if dtype is None else buffer.DataAsNumpy().view(dtype)

    def options(self, op, kind: str):
        table = op.BuiltinOptions()
        if table is None or op.BuiltinOptionsType() != getattr(self.schema.BuiltinOptions, kind, None):
            return None
        opts = getattr(self.schema, kind)()
        opts.Init(table.Bytes, table.Pos)
        return opts


def _tensor_problems(t: dict) -> list[str]:
    out = []
    if t["constant"]:
        if t["type"] not in QUANTISED + ("INT32",):
            out.append(f"constant {t['name']!r} is {t['type']}, not 8-bit quantised")
    elif t["type"] not in QUANTISED:
        out.append(f"tensor {t['name']!r} is {t['type']}, not int8/uint8")
    elif not t["quantised"]:
        out.append(f"tensor {t['name']!r} has no quantisation parameters")
    if any(d < 0 for d in t["signature"]) or any(d < 0 for d in t["shape"]):
        out.append(f"tensor {t['name']!r} has a dynamic size {t['signature'] or t['shape']}")
    shape = t["shape"]
    if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
        out.append(f"tensor {t['name']!r} has shape {shape}: rank > 3 with an outer dimension > 1")
    return out


def _axis(m: _Model, op, input_pos: int, rank: int) -> int | None:
    values = m.constant_values(op.InputsAsNumpy()[input_pos])
    if values is None or values.size == 0:
        return None
    axis = int(values.reshape(-1)[0])
    return axis + rank if axis < 0 else axis


def _op_limits(m: _Model, op, name: str, inputs: list[dict], outputs: list[dict]) -> list[str]:
    """The per-operation limits of Coral's table that a flatbuffer shows."""
    none = m.schema.ActivationFunctionType.NONE
    rank = len(inputs[0]["shape"]) if inputs else 0
    if name == "FULLY_CONNECTED":
        o = m.options(op, "FullyConnectedOptions")
        if o is not None and o.WeightsFormat() != m.schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
            return ["fully-connected weights not in the default format"]
        if outputs and sum(d > 1 for d in outputs[0]["shape"]) > 1:
            return [f"fully-connected output {outputs[0]['shape']} is not one-dimensional"]
    elif name in ("CONCATENATION", "AVERAGE_POOL_2D", "MAX_POOL_2D"):
        kind = {"CONCATENATION": "ConcatenationOptions"}.get(name, "Pool2DOptions")
        o = m.options(op, kind)
        if o is not None and o.FusedActivationFunction() != none:
            return [f"{name.lower()} with a fused activation"]
        if name == "CONCATENATION":
            consts = [t for t in inputs if t["constant"]]
            if consts and (len(inputs) != 2 or any(np.any(m.constant_values(t["index"])) for t in consts)):
                return ["concatenation with a constant input that is not a zero pad"]
    elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = m.options(op, "Conv2DOptions" if name == "CONV_2D" else "DepthwiseConv2DOptions")
        if o is not None and o.DilationHFactor() != o.DilationWFactor():
            return ["different dilation in x and y"]
    elif name == "SOFTMAX":
        shape = inputs[0]["shape"]
        if sum(d > 1 for d in shape) > 1 or int(np.prod(shape)) > SOFTMAX_MAX_ELEMENTS:
            return [f"softmax input {shape}: only a 1-D input of at most {SOFTMAX_MAX_ELEMENTS} elements maps"]
    elif name == "SPLIT":  # SPLIT's axis is its first input
        data_rank = len(inputs[1]["shape"]) if len(inputs) > 1 else 0
        if _axis(m, op, 0, data_rank) == 0:
            return ["split along the batch dimension"]
    elif name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "PAD", "PACK"):
        if name == "PACK":
            o = m.options(op, "PackOptions")
            if o is not None and o.Axis() == 0:
                return ["pack along the batch dimension"]
        elif len(inputs) > 1:
            values = m.constant_values(inputs[1]["index"])
            if name == "PAD" and values is not None and values.size >= 2 and np.any(values.reshape(-1, 2)[0]):
                return ["padding in the batch dimension"]
            if name != "PAD" and values is not None and np.any((values.reshape(-1) % max(rank, 1)) == 0):
                return [f"{name.lower()} over the batch dimension"]
    return []


def check_model(path: Path) -> Report:
    """Check every operator and tensor of a TFLite file; see the module docstring for the rules."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise GrasptpuError(f"{path}: cannot read ({exc.strerror})") from None
    m = _Model(buf, str(path))
    model_problems = []
    if m.n_subgraphs != 1:
        model_problems.append(f"{m.n_subgraphs} subgraphs: the Edge TPU takes a model with one")
    for i in m.graph.InputsAsNumpy():
        shape = m.tensor(i)["shape"]
        if shape and shape[0] != 1:
            model_problems.append(f"input batch size {shape[0]}: the Edge TPU runs batch 1")
    ops = []
    for j in range(m.graph.OperatorsLength()):
        op = m.graph.Operators(j)
        name = m.op_name(op)
        check = OpCheck(j, name, m.op_version(op))
        if name not in EDGE_TPU_OPS:
            check.problems.append(f"{name} is not on the Edge TPU's operation list")
        too_new = _version_problems(check)
        if too_new:  # not a cut: Coral's runtime and compiler refuse the whole model
            model_problems.append(f"op #{j}: {too_new[0]}; Coral's runtime will not load this model at all")
            check.problems += too_new
        inputs = [m.tensor(i) for i in op.InputsAsNumpy() if i >= 0]
        outputs = [m.tensor(i) for i in op.OutputsAsNumpy() if i >= 0]
        for t in inputs + outputs:
            check.problems += _tensor_problems(t)
        if check.supported:
            check.problems += _op_limits(m, op, name, inputs, outputs)
        ops.append(check)
    return Report(str(path), ops, model_problems)
