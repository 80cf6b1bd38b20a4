"""Shrink a converted TFLite flatbuffer without changing one computed value.

Why: the export graph unrolls 12 time steps, and the int8 converter gives every step's
FULLY_CONNECTED its own int32 bias tensor with per-channel scales, although all twelve are equal
(every step's input shares one scale). With ~900 long tensor names as well, metadata outweighed
the int8 weights: measured on a 1-layer BiLSTM(40) over 369 units, 281 KB int8 against 599 KB
float, where the weights alone are 4x smaller. This pass
1. merges constant tensors that are equal in type, shape, bytes and quantisation;
2. drops tensors and buffers nothing uses any more, renumbering the references;
3. replaces inner tensor names with short ones (the model's input and output keep theirs).
`host.quantize` proves the result gives bit-identical outputs before keeping it.
"""

from __future__ import annotations


def _key(tensor, data) -> tuple:
    q = tensor.quantization
    quant = None if q is None else (tuple(q.scale if q.scale is not None else ()),
                                   tuple(q.zeroPoint if q.zeroPoint is not None else ()), q.quantizedDimension)
    return (tensor.type, tuple(tensor.shape if tensor.shape is not None else ()), bytes(data), quant)


def _remap(indices, table: dict) -> list:
    return [] if indices is None else [table[i] if i >= 0 else i for i in indices]


def slim(flat: bytes) -> bytes:
    """The same model in fewer bytes (see the module docstring)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flat, 0)
    for gi, graph in enumerate(model.subgraphs):
        canonical: dict = {}
        merge = {}
        for i, t in enumerate(graph.tensors):
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is not None and len(data):
                merge[i] = canonical.setdefault(_key(t, data), i)
        for op in graph.operators:
            op.inputs = [merge.get(i, i) for i in op.inputs] if op.inputs is not None else None
        used = {i for op in graph.operators for part in (op.inputs, op.outputs, op.intermediates)
                if part is not None for i in part if i >= 0}
        used |= set(graph.inputs) | set(graph.outputs)
        order = sorted(used)
        renumber = {old: new for new, old in enumerate(order)}
        keep_names = set(graph.inputs) | set(graph.outputs)
        tensors = []
        for old in order:
            t = graph.tensors[old]
            if old not in keep_names:
                t.name = f"t{renumber[old]}".encode()
            tensors.append(t)
        graph.tensors = tensors
        for op in graph.operators:
            op.inputs, op.outputs = _remap(op.inputs, renumber), _remap(op.outputs, renumber)
            if op.intermediates is not None:
                op.intermediates = _remap(op.intermediates, renumber)
        graph.inputs, graph.outputs = _remap(graph.inputs, renumber), _remap(graph.outputs, renumber)
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == gi:
                for io in list(sig.inputs or []) + list(sig.outputs or []):
                    io.tensorIndex = renumber[io.tensorIndex]
    referenced = sorted({0} | {t.buffer for g in model.subgraphs for t in g.tensors}
                        | {md.buffer for md in model.metadata or []})
    new_buffer = {old: new for new, old in enumerate(referenced)}
    model.buffers = [model.buffers[i] for i in referenced]
    for g in model.subgraphs:
        for t in g.tensors:
            t.buffer = new_buffer[t.buffer]
    for md in model.metadata or []:
        md.buffer = new_buffer[md.buffer]
    builder = flatbuffers.Builder(len(flat))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
