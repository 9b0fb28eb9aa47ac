"""int8 for the full-precision and BWN layers, and the prepared copy that LCE is given.

* :func:`quantize_float_layers` adds fake-quant ops (calibrated activation ranges, per-channel
  int8 kernels) that LCE's converter turns into int8 ops: for the full-precision layers
  (``int8_float_layers=True``) and, with ``bwn_weights="int8_full"``, the BWN layers.
* :func:`int8_reference` is the Keras model that computes what the int8 flatbuffer computes.
* :func:`_pad_before_quantize` moves zero padding of the quantized float input back before
  the ``QUANTIZE`` op in the flatbuffer, where LiteRT's kernel for it is fast.

The BWN forms that keep float activations (``"int8"``, ``"int8_dynamic"``) are written into
the flatbuffer after conversion: see :mod:`xnor_keras.convert.bwn`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from xnor_keras.convert._common import ConversionError, _check_bwn_weights, _check_model, _walk_layers
from xnor_keras.convert.bwn import _opcode, bwn_layers
from xnor_keras.convert.flatbuffer import _op_name, _schema_model
from xnor_keras.convert.prepare import (
    _center_sign_thresholds,
    _fold_residual_batchnorms,
    _pool_after_batchnorm,
    inference_copy,
)

__all__ = ["int8_reference", "quantize_float_layers"]

# LCE's converter (TensorFlow's constant folding) folds ops on constants only below this size,
# measured with LCE 0.16: a fake-quant op on a 118 MB kernel becomes an int8 constant, on a
# 151 MB one (AlexNet's fc6) it stays a TensorFlow op that no TFLite runtime has.
_LCE_FOLD_LIMIT_BYTES = 128 * 2**20


def _int8_candidates(model: tf.keras.Model) -> list:
    """Plain Keras Conv2D / Dense layers (the full-precision first and last layers of the zoo
    models, ResNet's 1x1 shortcuts): LCE keeps them as float ops, int8 makes them 4x smaller."""
    return [
        layer
        for layer in _walk_layers(model)
        if type(layer) in (tf.keras.layers.Conv2D, tf.keras.layers.Dense)
        and not (type(layer) is tf.keras.layers.Dense and len(layer.input_shape) != 2)
    ]


def _selected_int8_layers(model: tf.keras.Model, int8_float_layers) -> bool | tuple[str, ...]:
    """`int8_float_layers` checked against `model`: ``True``/``False``, or the names of some of
    its plain Conv2D / Dense layers (a tuple), e.g. all but a small classifier kept float."""
    if isinstance(int8_float_layers, (bool, np.bool_)):
        return bool(int8_float_layers)
    candidates = [layer.name for layer in _int8_candidates(model)]
    try:
        names = tuple(int8_float_layers)
    except TypeError:
        names = None
    if isinstance(int8_float_layers, str) or names is None or not all(isinstance(n, str) for n in names):
        raise ConversionError(
            "Expected `int8_float_layers` to be True, False or a list of layer names (plain "
            f"Conv2D / Dense layers of the model: {candidates}). "
            f"Received: int8_float_layers={int8_float_layers!r}"
        )
    unknown = [name for name in names if name not in candidates]
    if unknown:
        raise ConversionError(
            f"Expected `int8_float_layers` to name plain Conv2D / Dense layers of model "
            f"'{model.name}' (one of {candidates}); {unknown} "
            f"{'is' if len(unknown) == 1 else 'are'} not. Received: int8_float_layers={list(names)!r}"
        )
    return names


def _fusable_chain_end(layer):
    """The last of the layers that LCE fuses into `layer`'s op: BatchNorms that follow it one by
    one, then at most one ReLU. The output range is measured there; or `layer` itself."""
    end = layer
    if getattr(layer, "activation", None) not in (None, tf.keras.activations.linear, tf.keras.activations.relu):
        return end
    while len(end.outbound_nodes) == 1:
        nxt = end.outbound_nodes[0].outbound_layer
        relu = isinstance(nxt, tf.keras.layers.ReLU) or (
            isinstance(nxt, tf.keras.layers.Activation)
            and nxt.activation in (tf.keras.activations.linear, tf.keras.activations.relu)
        )
        if not (relu or isinstance(nxt, tf.keras.layers.BatchNormalization)) or len(nxt.inbound_nodes) != 1:
            break
        end = nxt
        if relu:  # BatchNorms fold into the op, then one activation fuses; nothing after it
            break
    return end


class _Range:
    """Min/max of a tensor over the calibration data (always containing 0), then its fake quant."""

    def __init__(self):
        self.low, self.high, self.frozen = 0.0, 0.0, False

    def __call__(self, x):
        if not self.frozen:
            self.low = min(self.low, float(tf.reduce_min(x)))
            self.high = max(self.high, float(tf.reduce_max(x)))
            return x
        high = self.high if self.high > self.low else self.low + 1e-6
        return tf.quantization.fake_quant_with_min_max_args(x, min=self.low, max=high, num_bits=8)


def _fake_quant_kernel(kernel: tf.Tensor, per_channel: bool) -> tf.Tensor:
    """Symmetric int8 (narrow range), what TFLite's int8 kernels expect: per output channel for
    convolutions, per tensor for Dense (LCE 0.16 cannot transpose a per-channel FC kernel)."""
    axes = list(range(kernel.shape.rank - 1)) if per_channel else None
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8)
    fake_quant = (
        tf.quantization.fake_quant_with_min_max_vars_per_channel
        if per_channel
        else tf.quantization.fake_quant_with_min_max_vars
    )
    return fake_quant(kernel, -bound, bound, num_bits=8, narrow_range=True)


def _int8_call(layer, input_range: _Range, output_range: _Range | None):
    activation = layer.activation

    def call(inputs, *args, **kwargs):
        inputs = input_range(inputs)
        conv = isinstance(layer, tf.keras.layers.Conv2D)
        kernel = _fake_quant_kernel(tf.convert_to_tensor(layer.kernel), per_channel=conv)
        if conv:
            y = layer.convolution_op(inputs, kernel)
        else:
            y = tf.matmul(inputs, kernel)
        if layer.use_bias:
            y = tf.nn.bias_add(y, layer.bias)
        if output_range is not None:  # an activation LCE does not fuse (softmax): quantize before it
            y = output_range(y)
        return activation(y) if activation is not None else y

    return call


def _too_large_for_int8_full(model: tf.keras.Model) -> list[str]:
    """BWN layers whose float32 kernel LCE cannot quantize (see _LCE_FOLD_LIMIT_BYTES)."""
    return [
        layer.name for layer in bwn_layers(model)
        if 4 * int(np.prod(layer.kernel.shape)) >= _LCE_FOLD_LIMIT_BYTES
    ]


def _bwn_int8_call(layer, input_range: _Range, output_range: _Range | None):
    """int8 call of an inference copy's BWN layer: its kernel, alpha * sign(W), is exactly
    +-127 steps of alpha / 127 per output channel (nothing is lost); the input is int8 in its
    calibrated range. A BWN Dense layer stays the 1x1 convolution it is written as.

    The kernel variable is set to alpha * sign(W) (and the layer's alpha to 1, so that its own
    call still computes the same function) and the fake-quant bounds are constants: LCE then
    quantizes the kernel as it is. Computing either in the graph leaves a large kernel such as
    AlexNet's fc6 (151 MB) to TensorFlow's constant folding, which skips tensors above about
    128 MiB, and the fake-quant op then has no TFLite form.
    """
    unit, alpha = layer._unit_kernel_and_alpha(layer.kernel)
    alpha = np.asarray(alpha, np.float32)
    layer.kernel.latent_variable.assign(np.asarray(unit, np.float32) * alpha)
    layer._inference_alpha = tf.constant(np.ones_like(alpha))
    bound = tf.constant(np.where(alpha > 0, alpha, 1e-8).astype(np.float32))
    conv = isinstance(layer, tf.keras.layers.Conv2D)

    def call(inputs, *args, **kwargs):
        inputs = input_range(inputs)
        kernel = tf.convert_to_tensor(layer.kernel.latent_variable)
        if not conv:
            kernel = tf.reshape(kernel, [1, 1, *kernel.shape])
        kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            kernel, -bound, bound, num_bits=8, narrow_range=True
        )
        if conv:
            # The plain convolution: the BWN layer's own op would scale by alpha (now 1) again.
            y = tf.keras.layers.Conv2D.convolution_op(layer, inputs, kernel)
        else:
            x = tf.reshape(inputs, [-1, 1, 1, int(kernel.shape[2])])
            y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
            y = tf.reshape(y, tf.concat([tf.shape(inputs)[:-1], [int(kernel.shape[-1])]], axis=0))
        if layer.use_bias:
            y = tf.nn.bias_add(y, layer.bias)
        if output_range is not None:  # an activation LCE does not fuse: quantize before it
            y = output_range(y)
        return layer.activation(y) if layer.activation is not None else y

    return call


def _output_call(original_call, output_range: _Range):
    def call(inputs, *args, **kwargs):
        return output_range(original_call(inputs, *args, **kwargs))

    return call


def _check_calibration_data(
    model: tf.keras.Model, calibration_data, option: str = "int8_float_layers=True"
) -> np.ndarray:
    if calibration_data is None:
        raise ConversionError(
            f"Expected `calibration_data` with `{option}`: a few dozen typical "
            "inputs (preprocessed as for the model) from which the int8 ranges of the "
            "activations are measured. Received: calibration_data=None"
        )
    data = np.asarray(calibration_data, np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if data.ndim != len(expected) + 1 or any(
        e is not None and e != d for e, d in zip(expected, data.shape[1:])
    ):
        raise ConversionError(
            f"Expected `calibration_data` of shape (n, {', '.join(str(d) for d in expected)}), "
            f"got {data.shape}. Received: calibration_data.shape={data.shape}"
        )
    return data


def quantize_float_layers(
    copy: tf.keras.Model,
    calibration_data,
    batch_size: int = 16,
    *,
    float_layers: bool | tuple[str, ...] = True,
    bwn: bool = False,
) -> list[str]:
    """Make the plain Conv2D / Dense layers (`float_layers`) and/or the BWN layers (`bwn`) of an
    inference copy int8 for LCE, in place.

    Each such layer gets fake-quant ops that LCE's converter turns into an int8 op: its input
    and its output (after the BatchNorm and ReLU that follow it, which LCE fuses) at int8 with
    ranges measured on `calibration_data`, its kernel at symmetric per-channel int8 (exact for
    a BWN kernel). `float_layers` may name the plain layers to make int8 (the others stay
    float). Layers with binary inputs are untouched, and so are BWN layers with kernels
    of 128 MiB or more, which LCE cannot quantize (the converter gives them int8 weights with
    dynamic int8 arithmetic after conversion). The copy then computes, in Keras, what the int8
    flatbuffer computes (up to that dynamic rounding). Returns the names of the layers made int8.
    """
    data = _check_calibration_data(copy, calibration_data)
    ranges = []
    names = []
    float_candidates = _int8_candidates(copy) if float_layers else []
    if float_layers and float_layers is not True:  # names: the layers chosen among them
        float_candidates = [layer for layer in float_candidates if layer.name in float_layers]
    too_large = _too_large_for_int8_full(copy)
    bwn_candidates = [
        layer for layer in (bwn_layers(copy) if bwn else []) if layer.name not in too_large
    ]
    for layer in _walk_layers(copy):
        if layer not in float_candidates and layer not in bwn_candidates:
            continue
        end = _fusable_chain_end(layer)
        input_range, output_range = _Range(), _Range()
        ranges += [input_range, output_range]
        make_call = _bwn_int8_call if layer in bwn_candidates else _int8_call
        if end is layer and layer.activation not in (
            None, tf.keras.activations.linear, tf.keras.activations.relu
        ):
            layer.call = make_call(layer, input_range, output_range)
        else:
            layer.call = make_call(layer, input_range, None)
            end.call = _output_call(end.call, output_range)
        names.append(layer.name)
    for start in range(0, len(data), batch_size):  # eager: the ranges record min/max
        copy(data[start:start + batch_size], training=False)
    for r in ranges:
        r.frozen = True
    return names


def _has_quantize_and_pad(flatbuffer: bytes) -> bool:
    """Whether `flatbuffer` uses both ``QUANTIZE`` and ``PAD`` (read from its operator codes
    alone, without unpacking its buffers)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    codes = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.add(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    return {schema.BuiltinOperator.QUANTIZE, schema.BuiltinOperator.PAD} <= codes


def _same_quantization(a, b) -> bool:
    return (a is not None and b is not None and a.scale is not None and b.scale is not None
            and list(a.scale) == list(b.scale) and list(a.zeroPoint) == list(b.zeroPoint))


def _pad_before_quantize(flatbuffer: bytes) -> tuple[bytes, int]:
    """Rewrite ``QUANTIZE`` -> ``PAD`` (zero padding of a quantized float tensor, e.g. a
    ZeroPadding2D before the first int8 conv) as ``PAD`` -> ``QUANTIZE``, exactly.

    The converter propagates the fake quantization of a padded tensor back through the ``PAD``
    (a same-scale op), which then pads int8 with the zero point. LiteRT 2.2 runs an int8
    image-style pad with ``reference_ops::PadImpl``: ``optimized_ops::PadImageStyle`` has a
    memset / memcpy form for float32 and uint8 only. That is ~13 instructions per element,
    2.0 M of XNORAlexNet's 66.4 M per 224x224 inference on a Cortex-A72; a float pad and a
    quantize of the padded tensor cost ~0.07 M. The bytes are the same, since 0.0 quantizes to
    the zero point exactly, and the same as :func:`int8_reference`'s (it pads in float, then
    fake-quantizes). Only a ``PAD`` whose input and output share their quantization moves, and
    only when nothing else reads the quantized tensor (the input would be quantized twice).

    Returns:
        The flatbuffer (unchanged when there is nothing to move) and how many pads moved.
    """
    import flatbuffers

    if not _has_quantize_and_pad(flatbuffer):
        return flatbuffer, 0
    schema, model = _schema_model(flatbuffer)
    graph = model.subgraphs[0]
    names = [_op_name(schema, model, op) for op in graph.operators]
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs}
    readers: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            readers[t] = readers.get(t, 0) + 1
    moved = 0
    for index, pad in enumerate(graph.operators):
        if names[index] != "PAD":
            continue
        quantized, padded = pad.inputs[0], pad.outputs[0]
        q = producer.get(quantized)
        if q is None or names[q] != "QUANTIZE" or readers[quantized] != 1 or quantized in graph.outputs:
            continue
        quantize = graph.operators[q]
        source = quantize.inputs[0]
        middle, out = graph.tensors[quantized], graph.tensors[padded]
        if graph.tensors[source].type != schema.TensorType.FLOAT32 or not _same_quantization(
            middle.quantization, out.quantization
        ):
            continue
        # The quantized input's tensor becomes the padded float tensor, named after the pad.
        middle.type, middle.quantization = schema.TensorType.FLOAT32, None
        middle.shape, middle.shapeSignature = out.shape, out.shapeSignature
        middle.name = (out.name or b"") + b"_float"
        pad.inputs[0], pad.outputs = source, [quantized]
        quantize.inputs, quantize.outputs = [quantized], [padded]
        if len(out.shape) <= 4:  # a float PAD of rank <= 4 is version 1 (TFLite's op_version.cc)
            pad.opcodeIndex = _opcode(schema, model, schema.BuiltinOperator.PAD, 1)
        graph.operators[q], graph.operators[index] = pad, quantize
        names[q], names[index] = "PAD", "QUANTIZE"
        moved += 1
    if not moved:
        return flatbuffer, 0
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), moved


def _prepared_copy(
    model: tf.keras.Model,
    calibration_data: np.ndarray | None = None,
    *,
    float_layers: bool | tuple[str, ...] = True,
    bwn: bool = False,
) -> tf.keras.Model:
    """The model LCE is given: the inference copy with centred sign thresholds, without the
    BatchNorms between residual additions and signs (folded into biases), max-pools before a
    sign's BatchNorm computed after it, and, when
    `calibration_data` is given (already checked), int8 fake quantization of the float layers
    (`float_layers`) and/or the BWN layers (`bwn`)."""
    copy = inference_copy(model)
    _center_sign_thresholds(copy)
    _fold_residual_batchnorms(copy)
    _pool_after_batchnorm(copy)
    if calibration_data is not None and (float_layers or bwn):
        quantize_float_layers(copy, calibration_data, float_layers=float_layers, bwn=bwn)
    return copy


def int8_reference(
    model: tf.keras.Model,
    calibration_data,
    *,
    int8_float_layers: bool | list[str] = True,
    bwn_weights: str = "int8",
) -> tf.keras.Model:
    """The Keras model that computes what ``convert(model, int8_float_layers=...,
    bwn_weights=..., calibration_data=...)`` computes: the inference copy with the same
    fake-quant ops.

    Use it as the reference when checking an int8 flatbuffer (the float model differs from it
    by int8 rounding), and to measure what int8 costs in accuracy on your data. The BWN forms
    ``"int8"`` and ``"float"`` are exact, so they add nothing here; ``"int8_dynamic"`` rounds
    each input on the fly inside the op, which the reference does not model (compare with the
    float model, with a tolerance).
    """
    _check_model(model)
    _check_bwn_weights(bwn_weights)
    int8_float_layers = _selected_int8_layers(model, int8_float_layers)
    bwn_full = bwn_weights == "int8_full"
    option = "bwn_weights='int8_full'" if bwn_full and not int8_float_layers else "int8_float_layers=True"
    return _prepared_copy(
        model,
        _check_calibration_data(model, calibration_data, option),
        float_layers=int8_float_layers,
        bwn=bwn_full,
    )
