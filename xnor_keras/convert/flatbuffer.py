"""Reading flatbuffers: operator names, which ops each Keras layer became, int8 layers."""

from __future__ import annotations

import collections

from xnor_keras.convert._common import _COPY_NAME, BINARY_OPS, LCE_OPS

__all__ = ["op_histogram", "op_names", "with_metadata"]


def _schema_model(flatbuffer: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema, schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)


def _op_name(schema, model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return code.customCode.decode()
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return builtin[max(code.builtinCode, code.deprecatedBuiltinCode)]


def op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of the flatbuffer's main subgraph, in order (custom ops by their name)."""
    schema, model = _schema_model(flatbuffer)
    return [_op_name(schema, model, op) for op in model.subgraphs[0].operators]


def op_histogram(flatbuffer: bytes) -> dict[str, int]:
    """How many times each operator occurs, most frequent first."""
    return dict(collections.Counter(op_names(flatbuffer)).most_common())


def _tensor_layers(name: bytes) -> list[str]:
    """Layer names mentioned in a (possibly fused, ';'-joined) TFLite tensor name."""
    found = []
    for part in name.decode(errors="replace").split(";"):
        pieces = part.split("/")
        if len(pieces) >= 2 and pieces[0] == _COPY_NAME:
            found.append(pieces[1])
    return found


def _ops_by_layer(flatbuffer: bytes) -> dict[str, list[str]]:
    """Map layer name -> TFLite ops attributed to it (by the tensor names LCE keeps)."""
    schema, model = _schema_model(flatbuffer)
    graph = model.subgraphs[0]
    by_layer: dict[str, list[str]] = collections.defaultdict(list)
    for op in graph.operators:
        name = _op_name(schema, model, op)
        if name in BINARY_OPS:
            # A binary conv's output is often named after the BatchNorm fused into it; its
            # input, the binarized activation, is named inside the conv layer's own scope.
            owners = _tensor_layers(graph.tensors[op.inputs[0]].name)[:1]
        else:
            owners = [
                layer for i in op.outputs for layer in _tensor_layers(graph.tensors[i].name)
            ]
        for layer in dict.fromkeys(owners):
            by_layer[layer].append(name)
    return by_layer


def _int8_layers(flatbuffer: bytes, skip: frozenset[int] = frozenset()) -> list[str]:
    """Layers whose CONV_2D / FULLY_CONNECTED op runs with int8 weights (int8_float_layers),
    except the operators with an index in `skip`."""
    schema, model = _schema_model(flatbuffer)
    graph = model.subgraphs[0]
    found: dict[str, None] = {}
    for index, op in enumerate(graph.operators):
        if index in skip or _op_name(schema, model, op) not in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            continue
        if graph.tensors[op.inputs[1]].type != schema.TensorType.INT8:
            continue
        # The weights' tensor is named after the layer whose kernel it is.
        for layer in _tensor_layers(graph.tensors[op.inputs[1]].name) or [
            layer for i in op.outputs for layer in _tensor_layers(graph.tensors[i].name)
        ]:
            found[layer] = None
    return list(found)


def _unknown_custom_ops(flatbuffer: bytes) -> list[str]:
    """Custom ops of `flatbuffer` that LCE does not implement, with their layers where known."""
    schema, model = _schema_model(flatbuffer)
    custom = {
        code.customCode.decode() for code in model.operatorCodes if code.customCode
    } - set(LCE_OPS)
    by_op: dict[str, list[str]] = {name: [] for name in sorted(custom)}
    for layer, ops in _ops_by_layer(flatbuffer).items():
        for name in dict.fromkeys(ops):
            if name in by_op:
                by_op[name].append(layer)
    return [
        name + (f" (layer {', '.join(repr(layer) for layer in layers)})" if layers else "")
        for name, layers in by_op.items()
    ]


def with_metadata(flatbuffer: bytes, name: str, data: bytes) -> bytes:
    """`flatbuffer` with a metadata entry `name` holding `data` (replacing one of that name).

    TFLite keeps metadata beside the graph: runtimes ignore entries they do not know, and
    `xnor_lite.Interpreter` reads its settings from ``"xnor_lite.runtime"``
    (`xnor_lite.interpreter.read_metadata` reads an entry back).
    """
    import flatbuffers
    import numpy as np

    schema, model = _schema_model(flatbuffer)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(data), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(flatbuffer) + len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
