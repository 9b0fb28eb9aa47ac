"""int8 weights for Binary-Weight-Network layers, and which form each BWN layer took.

A BWN layer (real inputs, kernel alpha * sign(W) per output channel) has no LCE op: LCE emits a
float32 ``CONV_2D`` whose filter holds, per output channel, one magnitude c (alpha, times the
scale of a BatchNorm the converter folded in) with signs. int8 with per-channel scale c and
values +-1 stores that filter exactly, in a quarter of the bytes. LCE's converter has no option
for int8 weights with float activations (a fake-quant op on a constant kernel is folded away),
so :func:`int8_bwn_filters` rewrites the filter in the flatbuffer after conversion, as

* ``"int8"``: a ``DEQUANTIZE`` op turns the int8 filter into the float32 filter once, when the
  interpreter prepares; the convolution stays float32, bit for bit as with float weights.
* ``"int8_dynamic"``: the convolution takes the int8 filter directly (TFLite's "hybrid" kernel,
  chosen by a float32 input with an int8 filter), quantizes its input to int8 on the fly and
  multiplies in int8: the weights are exact, the activations rounded.

The third int8 form, ``"int8_full"`` (int8 activations from calibration data), is made before
conversion with fake-quant ops (:mod:`xnor_keras.convert.int8`).

BWN filters are found by content, not by tensor name (LCE keeps 50 characters of a name, and a
fused name may not mention the conv): a filter matches a BWN layer when it has its shape and
its sign pattern, up to one sign per output channel. Only a float filter that is exactly
+-c per output channel is rewritten, so no layer is ever made lossy by this step.
"""

from __future__ import annotations

import larq as lq
import numpy as np

from xnor_keras.convert._common import _has_binary_input, _has_binary_kernel, _walk_layers
from xnor_keras.convert.flatbuffer import _op_name, _schema_model
from xnor_keras.layers import _ScaledBinaryMixin

__all__ = ["bwn_layers", "bwn_weight_forms", "int8_bwn_filters"]

# CONV_2D op versions for a float32 input with an int8 filter (TFLite's op_version.cc): hybrid
# with one scale, hybrid per output channel.
_HYBRID_VERSION, _HYBRID_PER_CHANNEL_VERSION = 2, 5


def bwn_layers(model) -> list:
    """The layers of `model` with binary kernels and real-valued inputs (BWN layers)."""
    return [
        layer for layer in _walk_layers(model) if _has_binary_kernel(layer) and not _has_binary_input(layer)
    ]


def _unit_filter(layer) -> np.ndarray:
    """sign(W) of a BWN layer as +-1 int8, output channels first and flattened per channel: the
    layout of a TFLite filter (Keras' (h, w, in, out) or (in, out) becomes (out, h * w * in))."""
    with lq.context.quantized_scope(True):
        if isinstance(layer, _ScaledBinaryMixin):
            unit, _ = layer._unit_kernel_and_alpha(layer.kernel, compiled=False)
        else:  # another larq layer with a 1-bit kernel quantizer: its sign pattern
            unit = layer.kernel_quantizer(layer.kernel.latent_variable)
    unit = np.where(np.moveaxis(np.asarray(unit), -1, 0) >= 0, 1, -1).astype(np.int8)
    return unit.reshape(unit.shape[0], -1)


def _same_signs(values: np.ndarray, unit: np.ndarray) -> bool:
    """`values` (out, ...) has the sign pattern `unit` (out, n), up to one sign per channel;
    all-zero channels match anything."""
    flat = values.reshape(values.shape[0], -1)
    if flat.shape != unit.shape:
        return False
    signs = np.sign(flat).astype(np.int8)
    flip = signs[:, :1] * unit[:, :1]  # +-1 per channel (0 for an all-zero channel)
    zero = ~signs.any(axis=1)
    return bool(np.all(zero | np.all(signs == unit * flip, axis=1)))


def _as_int8(filter_: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(+-1 int8 values, per-output-channel scale c) if every output channel of the float
    `filter_` is exactly +-c, else None. An all-zero channel gets c = 1 and values 0."""
    flat = filter_.reshape(filter_.shape[0], -1)
    magnitude = np.abs(flat).max(axis=1)
    if not np.all(np.abs(flat) == magnitude[:, None]):
        return None
    values = np.sign(flat).astype(np.int8)
    return values.reshape(filter_.shape), np.where(magnitude > 0, magnitude, 1.0).astype(np.float32)


def _constant(schema, fb_model, index: int) -> np.ndarray | None:
    """The values of constant tensor `index` if it is float32 or int8, else None."""
    tensor = fb_model.subgraphs[0].tensors[index]
    data = fb_model.buffers[tensor.buffer].data
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT8: np.int8}.get(tensor.type)
    if data is None or not len(data) or dtype is None:
        return None
    return np.frombuffer(bytes(data), dtype).reshape(tensor.shape)


def _conv_filters(schema, fb_model) -> list[tuple[int, str, np.ndarray]]:
    """(operator index, form, filter values) of every CONV_2D with a constant filter; the form
    is what :func:`bwn_weight_forms` reports for a BWN layer with that filter."""
    graph = fb_model.subgraphs[0]
    producers = {out: op for op in graph.operators for out in op.outputs}
    found = []
    for index, op in enumerate(graph.operators):
        if _op_name(schema, fb_model, op) != "CONV_2D" or len(op.inputs) < 2:
            continue
        filter_index = op.inputs[1]
        values = _constant(schema, fb_model, filter_index)
        if values is not None:
            if graph.tensors[filter_index].type == schema.TensorType.FLOAT32:
                form = "float"
            elif graph.tensors[op.inputs[0]].type == schema.TensorType.FLOAT32:
                form = "int8_dynamic"
            else:
                form = "int8_full"
        else:
            producer = producers.get(filter_index)
            if producer is None or _op_name(schema, fb_model, producer) != "DEQUANTIZE":
                continue
            values = _constant(schema, fb_model, producer.inputs[0])
            if values is None:
                continue
            form = "int8"
        found.append((index, form, values))
    return found


def _match(layers, filters) -> dict[int, str]:
    """Operator index -> name of the BWN layer whose filter it is (each layer at most once)."""
    units = {layer.name: _unit_filter(layer) for layer in layers}
    matched: dict[int, str] = {}
    for index, _, values in filters:
        for name, unit in units.items():
            if _same_signs(values, unit):
                matched[index] = name
                del units[name]
                break
    return matched


def _bwn_ops(model, flatbuffer: bytes) -> dict[int, tuple[str, str]]:
    """Operator index -> (BWN layer name, form of its weights) for the convolutions of
    `flatbuffer` that are `model`'s BWN layers."""
    layers = bwn_layers(model)
    if not layers:
        return {}
    schema, fb_model = _schema_model(flatbuffer)
    filters = _conv_filters(schema, fb_model)
    forms = {index: form for index, form, _ in filters}
    return {index: (name, forms[index]) for index, name in _match(layers, filters).items()}


def bwn_weight_forms(model, flatbuffer: bytes) -> dict[str, str]:
    """For each BWN layer of `model`, the form of its weights in `flatbuffer`: ``"int8"``,
    ``"int8_dynamic"``, ``"int8_full"`` or ``"float"`` (see ``convert(bwn_weights=...)``), or
    ``"not found"`` when no convolution in the flatbuffer has its sign pattern."""
    found = dict(_bwn_ops(model, flatbuffer).values())
    return {layer.name: found.get(layer.name, "not found") for layer in bwn_layers(model)}


def int8_bwn_filters(model, flatbuffer: bytes, *, form: str = "int8") -> tuple[bytes, list[str]]:
    """Store the float ``CONV_2D`` filters of `model`'s BWN layers as exact int8 (module doc).

    Args:
        model: the Keras model `flatbuffer` was converted from.
        flatbuffer: LCE's conversion of it.
        form: ``"int8"`` (int8 storage, float32 arithmetic) or ``"int8_dynamic"``.

    Returns:
        The rewritten flatbuffer, and the names of the layers whose filters became int8.
    """
    import flatbuffers

    if form not in ("int8", "int8_dynamic"):
        raise ValueError(f"Expected `form` to be 'int8' or 'int8_dynamic', got {form!r}.")
    layers = bwn_layers(model)
    if not layers:
        return flatbuffer, []
    schema, fb_model = _schema_model(flatbuffer)
    graph = fb_model.subgraphs[0]
    filters = [f for f in _conv_filters(schema, fb_model) if f[1] == "float"]
    matched = _match(layers, filters)
    values_of = {index: values for index, _, values in filters}
    shared = _shared_inputs(graph)
    operators = []
    done = []
    for index, op in enumerate(graph.operators):
        split = _as_int8(values_of[index]) if index in matched and op.inputs[1] not in shared else None
        if split is not None:
            values, scales = split
            tensor = graph.tensors[op.inputs[1]]
            int8 = _int8_tensor(schema, tensor, scales)
            fb_model.buffers[tensor.buffer].data = values.reshape(-1).view(np.uint8)
            if form == "int8_dynamic":
                graph.tensors[op.inputs[1]] = int8
                version = _HYBRID_PER_CHANNEL_VERSION if len(int8.quantization.scale) > 1 else _HYBRID_VERSION
                code = fb_model.operatorCodes[op.opcodeIndex]
                op.opcodeIndex = _opcode(schema, fb_model, _builtin(code), max(version, code.version))
            else:
                graph.tensors.append(int8)
                dequantize = schema.OperatorT()
                dequantize.opcodeIndex = _opcode(schema, fb_model, schema.BuiltinOperator.DEQUANTIZE, 1)
                dequantize.inputs = [len(graph.tensors) - 1]
                dequantize.outputs = [op.inputs[1]]
                tensor.buffer = 0  # the float filter is computed now (buffer 0: TFLite's "none")
                operators.append(dequantize)
            done.append(matched[index])
        operators.append(op)
    graph.operators = operators
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(fb_model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), done


def _shared_inputs(graph) -> set[int]:
    """Tensors that more than one operator reads."""
    seen: set[int] = set()
    shared: set[int] = set()
    for op in graph.operators:
        for i in op.inputs:
            if i >= 0:
                (shared if i in seen else seen).add(i)
    return shared


def _int8_tensor(schema, tensor, scales: np.ndarray):
    """An int8 description of `tensor` (same shape, name and buffer) with per-channel `scales`."""
    int8 = schema.TensorT()
    int8.shape = tensor.shape
    int8.type = schema.TensorType.INT8
    int8.buffer = tensor.buffer
    int8.name = tensor.name
    quantization = schema.QuantizationParametersT()
    if np.all(scales == scales[0]):
        # One scale: TFLite runs a list of equal scales as per-tensor, reading a scale of 0.
        scales = scales[:1]
    quantization.scale = [float(s) for s in scales]
    quantization.zeroPoint = [0] * len(scales)
    quantization.quantizedDimension = 0
    int8.quantization = quantization
    return int8


def _builtin(code) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _opcode(schema, model, builtin: int, version: int) -> int:
    """Index of the operator code for `builtin` at `version`, added if missing."""
    for index, code in enumerate(model.operatorCodes):
        if not code.customCode and _builtin(code) == builtin and code.version == version:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1
