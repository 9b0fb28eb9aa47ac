"""Keras model -> TFLite flatbuffer with Larq Compute Engine, verified on LCE's runtime, with a report.

* :func:`convert` returns flatbuffer bytes in which every binarized layer is an LCE binary op
  (``LceBconv2d``) with alpha folded in; :func:`save_tflite` writes them atomically.
* :func:`verify` runs the flatbuffer on LCE's interpreter and compares it with the Keras model.
* :func:`conversion_report` says, for each quantized Keras layer, which TFLite ops it became.

Example:
    >>> import xnor_keras
    >>> from xnor_keras import convert
    >>> model = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
    >>> flatbuffer = convert.convert(model)
    >>> convert.verify(model, flatbuffer).passed
    True
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import larq as lq
import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

from xnor_keras.layers import _ScaledBinaryMixin

__all__ = [
    "TARGETS",
    "ConversionError",
    "ConversionReport",
    "LayerConversion",
    "Verification",
    "conversion_report",
    "convert",
    "inference_copy",
    "int8_reference",
    "measure_latency",
    "op_histogram",
    "op_names",
    "run_flatbuffer",
    "save_tflite",
    "verify",
]

TARGETS = ("arm", "xcore")
BINARY_OPS = ("LceBconv2d",)
# The custom ops LCE 0.16 registers; any other custom op in a flatbuffer has no kernel anywhere.
LCE_OPS = ("LceBconv2d", "LceBMaxPool2d", "LceDequantize", "LceQuantize")
_IO_TYPES = {"float32": tf.float32, "int8": tf.int8}
# Short name given to the inference copy: LCE keeps only 50 characters of each tensor name, and
# the report finds layers by name, so the model-name prefix should not eat them.
_COPY_NAME = "m"


class ConversionError(ValueError):
    """The model cannot be converted; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Conversion


def _walk_layers(model: tf.keras.Model) -> Iterator[tf.keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer


def _has_binary_kernel(layer) -> bool:
    return getattr(getattr(layer, "kernel_quantizer", None), "precision", None) == 1


def _has_binary_input(layer) -> bool:
    return getattr(getattr(layer, "input_quantizer", None), "precision", None) == 1


def _check_model(model) -> None:
    if not isinstance(model, tf.keras.Model):
        raise ConversionError(
            f"Expected `model` to be a tf.keras.Model, got {type(model).__name__}. "
            f"Received: model={model!r}"
        )
    if not model.built or not model.inputs:
        raise ConversionError(
            "Expected `model` to be a built model with known inputs (a functional or Sequential "
            "model with an input shape)."
        )
    for layer in _walk_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and getattr(policy, "compute_dtype", "float32") != "float32":
            raise ConversionError(
                f"The model uses mixed precision (layer '{layer.name}' computes in "
                f"{policy.compute_dtype}, policy {policy.name!r}); LCE converts float32 models. "
                "Rebuild the model under the float32 policy "
                "(tf.keras.mixed_precision.set_global_policy('float32')), load the trained "
                "weights into it (model.save_weights / load_weights) and convert that."
            )


def _clone_without_init(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
    """Clone `layer` from its config with zero initializers: every weight is overwritten next,
    and drawing ~60 M random numbers for AlexNet's kernels would cost half a second."""
    config = layer.get_config()
    for key in ("kernel_initializer", "bias_initializer", "depthwise_initializer",
                "pointwise_initializer", "embeddings_initializer"):
        if key in config:
            config[key] = {"class_name": "Zeros", "config": {}}
    try:
        return layer.__class__.from_config(config)
    except Exception:  # a layer whose config does not round-trip that way: clone as Keras does
        return layer.__class__.from_config(layer.get_config())


def _latent(variable):
    return getattr(variable, "latent_variable", variable)


def inference_copy(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` whose binary kernels are constants, ready for LCE.

    Each 1-bit kernel quantizer (alpha * sign(W), or larq's sign) is evaluated once and its result
    stored as the layer's weights, and the quantizer removed. The copy computes the same function,
    but LCE no longer has to constant-fold the quantizer: it does so only for kernels below about
    128 MiB, so without this a large layer such as XNOR AlexNet's fc6 (6x6x256x4096) stays a float
    convolution that recomputes alpha at every inference (306 MiB flatbuffer instead of ~23 MiB).
    """
    copy = tf.keras.models.clone_model(model, clone_function=_clone_without_init)
    copy._name = _COPY_NAME
    pairs = [
        (c, m) for c, m in zip(_walk_layers(copy), _walk_layers(model)) if _has_binary_kernel(c)
    ]
    binarized = {id(_latent(c.kernel)) for c, _ in pairs}
    # Copy every weight except the binary kernels, which are written once, binarized, below.
    for target, source in zip(copy.weights, model.weights):
        if id(_latent(target)) not in binarized:
            _latent(target).assign(_latent(source))
    for layer, original in pairs:
        kernel = layer.kernel
        if isinstance(layer, _ScaledBinaryMixin):
            # Our layers compute conv(x, sign(W)) * alpha (exact at ties): store sign(W) and
            # give alpha as a constant, which LCE folds into its binary conv's output scale.
            # Computed by the original layer's own code, eagerly: XLA would compile one program
            # per kernel shape in every fresh process (~1 s for AlexNet), for a single use.
            with lq.context.quantized_scope(True):
                unit_kernel, alpha = original._unit_kernel_and_alpha(original.kernel, compiled=False)
            kernel.latent_variable.assign(unit_kernel)
            layer._inference_alpha = tf.constant(alpha.numpy())
            if _lce_misreads_zero_padding(layer):
                # Binarize in a form LCE does not fuse, so this layer stays an (exact) float
                # convolution with +-1 weights instead of LCE's mis-padded binary kernel.
                layer.input_quantizer = _plain_sign
        else:
            with lq.context.quantized_scope(True):
                quantized = original.kernel_quantizer(original.kernel.latent_variable)
            kernel.latent_variable.assign(quantized)
        kernel.quantizer = None
    return copy


def _lce_misreads_zero_padding(layer) -> bool:
    """True for a zero-padded 'same' binary conv whose input map is smaller than its kernel.

    Measured with LCE 0.16: there its optimized kernels (default and indirect BGEMM) apply a
    wrong zero-padding correction (the reference kernel is right), e.g. every 3x3 conv on a 2x2
    or 1x1 map, as in ResNet-18's last stages at 32x32 input. Such maps are tiny, so running
    these layers as float convolutions costs little.
    """
    if not (
        isinstance(layer, _ScaledBinaryMixin)
        and layer._binary_inputs
        and isinstance(layer, tf.keras.layers.Conv2D)
        and layer.padding == "same"
        and layer.pad_values == 0.0
    ):
        return False
    spatial = tuple(layer.input_shape[1:3])
    if None in spatial:
        return False  # unknown at conversion time; see the deployment guide
    effective = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    return any(size < k for size, k in zip(spatial, effective))


def _plain_sign(x: tf.Tensor) -> tf.Tensor:
    """sign with sign(0) = +1, written so that LCE does not turn the next conv into LceBconv2d."""
    return tf.cast(x >= 0, x.dtype) * 2.0 - 1.0


def _single_inbound_layer(layer):
    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return None
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, list) else [inbound]
    return inbound[0] if len(inbound) == 1 else None


def _is_exact_xnor_output(layer) -> bool:
    """Output is alpha * (integer dot product of +-1 values) per channel: nothing added to it."""
    return (
        isinstance(layer, _ScaledBinaryMixin)
        and layer._binary_inputs
        and layer.input_scaling is None
        and not layer.use_bias
        and layer.activation in (None, tf.keras.activations.linear)
    )


def _center_sign_thresholds(model: tf.keras.Model) -> int:
    """Move BatchNorm thresholds that decide binary activations halfway between attainable values.

    Pattern: an XNOR layer (output alpha * D, D an integer dot product) -> optional max-pool ->
    BatchNorm -> only XNOR layers (which take its sign). The sign is then decided by
    D >= t (or D <= t) for a per-channel threshold t. Any threshold strictly between the same two
    integers gives identical signs, so we move it to the half-integer: ties (D == t, where
    Keras says sign(0) = +1) keep their sign, and a margin of alpha*|scale|/2 makes the result
    immune to rounding in LCE's kernels (its zero-padding correction is float arithmetic).
    Thresholds within 1e-6 of an integer are taken as that integer (float noise in the BN
    statistics). Returns how many BatchNorm layers were changed.
    """
    changed = 0
    for bn in model.layers:
        if not isinstance(bn, tf.keras.layers.BatchNormalization) or len(bn.inbound_nodes) != 1:
            continue
        rank = len(bn.input_shape)
        if list(np.atleast_1d(bn.axis) % rank) != [rank - 1]:
            continue  # statistics per channel (last axis) only
        producer = _single_inbound_layer(bn)
        if isinstance(producer, tf.keras.layers.MaxPooling2D):
            producer = _single_inbound_layer(producer)
        if producer is None or not _is_exact_xnor_output(producer) or producer._inference_alpha is None:
            continue
        consumers = [node.outbound_layer for node in bn.outbound_nodes]
        if not consumers or not all(
            isinstance(c, _ScaledBinaryMixin) and c._binary_inputs and c.input_scaling is None
            for c in consumers
        ):
            continue
        alpha = np.asarray(producer._inference_alpha, np.float64).reshape(-1)
        mean = np.asarray(bn.moving_mean, np.float64)
        scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        if bn.scale:
            scale = scale * np.asarray(bn.gamma, np.float64)
        beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
        usable = (alpha > 0) & (scale != 0)
        safe_scale = np.where(usable, scale, 1.0)
        offset = beta / safe_scale
        t = (mean - offset) / np.where(usable, alpha, 1.0)
        nearest = np.round(t)
        t = np.where(np.abs(t - nearest) <= 1e-6 * np.maximum(1.0, np.abs(t)), nearest, t)
        t_centered = np.where(safe_scale > 0, np.ceil(t) - 0.5, np.floor(t) + 0.5)
        new_mean = np.where(usable, alpha * t_centered + offset, mean)
        bn.moving_mean.assign(new_mean.astype(bn.moving_mean.dtype.as_numpy_dtype))
        changed += 1
    return changed


# --------------------------------------------------------------------------------------------
# int8 for the full-precision layers


def _int8_candidates(model: tf.keras.Model) -> list:
    """Plain Keras Conv2D / Dense layers (the full-precision first and last layers of the zoo
    models, ResNet's 1x1 shortcuts): LCE keeps them as float ops, int8 makes them 4x smaller."""
    return [
        layer
        for layer in _walk_layers(model)
        if type(layer) in (tf.keras.layers.Conv2D, tf.keras.layers.Dense)
        and not (type(layer) is tf.keras.layers.Dense and len(layer.input_shape) != 2)
    ]


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


def _output_call(original_call, output_range: _Range):
    def call(inputs, *args, **kwargs):
        return output_range(original_call(inputs, *args, **kwargs))

    return call


def _check_calibration_data(model: tf.keras.Model, calibration_data) -> np.ndarray:
    if calibration_data is None:
        raise ConversionError(
            "Expected `calibration_data` with `int8_float_layers=True`: a few dozen typical "
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


def quantize_float_layers(copy: tf.keras.Model, calibration_data, batch_size: int = 16) -> list[str]:
    """Make the plain Conv2D / Dense layers of an inference copy int8 for LCE, in place.

    Each such layer gets fake-quant ops that LCE's converter turns into an int8 op: its input
    and its output (after the BatchNorm and ReLU that follow it, which LCE fuses) at int8 with
    ranges measured on `calibration_data`, its kernel at symmetric per-channel int8. Binary
    layers are untouched. The copy then computes, in Keras, what the int8 flatbuffer computes.
    Returns the names of the layers made int8.
    """
    data = _check_calibration_data(copy, calibration_data)
    ranges = []
    names = []
    for layer in _int8_candidates(copy):
        end = _fusable_chain_end(layer)
        input_range, output_range = _Range(), _Range()
        ranges += [input_range, output_range]
        if end is layer and layer.activation not in (
            None, tf.keras.activations.linear, tf.keras.activations.relu
        ):
            layer.call = _int8_call(layer, input_range, output_range)
        else:
            layer.call = _int8_call(layer, input_range, None)
            end.call = _output_call(end.call, output_range)
        names.append(layer.name)
    for start in range(0, len(data), batch_size):  # eager: the ranges record min/max
        copy(data[start:start + batch_size], training=False)
    for r in ranges:
        r.frozen = True
    return names


def _prepared_copy(model: tf.keras.Model, calibration_data: np.ndarray | None = None) -> tf.keras.Model:
    """The model LCE is given: the inference copy with centred sign thresholds and, when
    `calibration_data` is given (already checked), int8 fake quantization of the float layers."""
    copy = inference_copy(model)
    _center_sign_thresholds(copy)
    if calibration_data is not None:
        quantize_float_layers(copy, calibration_data)
    return copy


def _lce_convert(model: tf.keras.Model, **options) -> bytes:
    """LCE's conversion of `model`, through a SavedModel that holds only the serving function.

    ``lce.convert_keras_model`` saves the full Keras SavedModel first, tracing a function for
    every layer; LCE reads only the serving signature, so we save that alone (the same
    signature Keras would write: inputs by name, outputs as a dict by output name). For
    XNORAlexNet this export takes ~0.6 s instead of ~2.2 s. Models this path cannot save go
    through ``convert_keras_model`` as before.
    """
    from tf_keras.src.saving.legacy import saving_utils

    with tempfile.TemporaryDirectory(prefix="xnor_keras_") as saved_model_dir:
        try:
            model.save(
                saved_model_dir,
                save_format="tf",
                include_optimizer=False,
                save_traces=False,
                signatures=saving_utils.trace_model_call(model),
            )
        except Exception:  # e.g. a custom layer without get_config: let LCE's own path try
            return lce.convert_keras_model(model, **options)
        return lce.convert_saved_model(saved_model_dir, **options)


def convert(
    model: tf.keras.Model,
    *,
    target: str = "arm",
    inference_input_type: str = "float32",
    inference_output_type: str = "float32",
    int8_float_layers: bool = False,
    calibration_data: np.ndarray | None = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with LCE's binary ops.

    Args:
        model: a built ``tf.keras.Model`` (Keras 2, float32).
        target: ``"arm"`` (64-bit ARM: Raspberry Pi 4 with a 64-bit OS, Android arm64; also runs
            on x86 through LCE's interpreter) or ``"xcore"``.
        inference_input_type, inference_output_type: ``"float32"`` or ``"int8"`` (int8 needs a
            model with fake-quantized inputs/outputs).
        int8_float_layers: also make the full-precision Conv2D / Dense layers (the first and
            last layers of the zoo models, ResNet's shortcuts) int8, with per-channel int8
            weights and activation ranges measured on `calibration_data`: XNORAlexNet goes
            from 23.9 to 11.5 MB. This changes the model's function slightly (int8 rounding);
            :func:`int8_reference` gives the Keras model that computes what the flatbuffer
            does.
        calibration_data: inputs for the int8 ranges (required with `int8_float_layers`); a
            few dozen typical, preprocessed inputs.

    Returns:
        The flatbuffer as bytes.

    Raises:
        ConversionError: the model is not convertible; the message says why.
    """
    _check_model(model)
    if target not in TARGETS:
        raise ConversionError(
            f"Expected `target` to be one of {TARGETS}, got {target!r}. Received: target={target!r}"
        )
    for name, value in (
        ("inference_input_type", inference_input_type),
        ("inference_output_type", inference_output_type),
    ):
        if value not in _IO_TYPES:
            raise ConversionError(
                f"Expected `{name}` to be one of {tuple(_IO_TYPES)}, got {value!r}. "
                f"Received: {name}={value!r}"
            )
    calibration = _check_calibration_data(model, calibration_data) if int8_float_layers else None
    copy = _prepared_copy(model, calibration)
    try:
        flatbuffer = _lce_convert(
            copy,
            target=target,
            inference_input_type=_IO_TYPES[inference_input_type],
            inference_output_type=_IO_TYPES[inference_output_type],
        )
    except Exception as error:  # the MLIR converter raises several unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"Larq Compute Engine could not convert model '{model.name}': {first_line}. "
            "Every layer must be expressible in TFLite builtin ops or LCE ops (no Python-side "
            "Lambda code)."
        ) from error
    # LCE does not fail on TF ops that TFLite lacks (tf.py_function, float64 MatMul, ...): it
    # emits them as custom ops that no runtime implements, so the flatbuffer could never run.
    unknown = _unknown_custom_ops(flatbuffer)
    if unknown:
        raise ConversionError(
            f"Larq Compute Engine could not convert model '{model.name}': "
            f"{', '.join(unknown)} "
            + ("is neither a TFLite builtin op nor an LCE op" if len(unknown) == 1
               else "are neither TFLite builtin ops nor LCE ops")
            + ", so no TFLite runtime could run the result. Every layer must be "
            "expressible in TFLite builtin ops or LCE ops (no Python-side Lambda code such as "
            "tf.py_function, no float64 arithmetic)."
        )
    return flatbuffer


def int8_reference(model: tf.keras.Model, calibration_data) -> tf.keras.Model:
    """The Keras model that computes what ``convert(model, int8_float_layers=True,
    calibration_data=...)`` computes: the inference copy with the same fake-quant ops.

    Use it as the reference when checking an int8 flatbuffer (the float model differs from it
    by int8 rounding), and to measure what int8 costs in accuracy on your data.
    """
    _check_model(model)
    return _prepared_copy(model, _check_calibration_data(model, calibration_data))


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


def save_tflite(flatbuffer: bytes, path: str | os.PathLike) -> Path:
    """Write `flatbuffer` to `path` atomically (temp file + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(flatbuffer)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------------------------
# Reading and running flatbuffers


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


def _interpreter(flatbuffer: bytes, num_threads: int = 1, use_xnnpack: bool = False):
    # Indirect BGEMM is LCE's fastest binary-conv kernel on x86 (3-4x its default there).
    return lce.testing.Interpreter(
        flatbuffer, num_threads=num_threads, use_indirect_bgemm=True, use_xnnpack=use_xnnpack
    )


def measure_latency(
    flatbuffer: bytes,
    x: np.ndarray,
    *,
    runs: int = 20,
    warmup: int = 3,
    num_threads: int = 1,
    use_xnnpack: bool = True,
) -> dict:
    """Host latency of one batch `x` on LCE's interpreter: median, min and max in ms.

    Runs LCE's fastest setting on x86: indirect BGEMM for binary convolutions and, with
    `use_xnnpack` (default), XNNPACK for the float and int8 ops (the first and last layers).
    """
    interpreter = _interpreter(flatbuffer, num_threads, use_xnnpack)
    x = np.asarray(x, np.float32)
    for _ in range(warmup):
        interpreter.predict(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.predict(x)
        times.append(1000 * (time.perf_counter() - start))
    return {
        "median_ms": float(np.median(times)),
        "min_ms": float(min(times)),
        "max_ms": float(max(times)),
        "runs": runs,
        "threads": num_threads,
        "xnnpack": use_xnnpack,
    }


def run_flatbuffer(flatbuffer: bytes, x: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run a converted (float-I/O) model on LCE's interpreter."""
    return np.asarray(_interpreter(flatbuffer, num_threads).predict(np.asarray(x, np.float32)))


# --------------------------------------------------------------------------------------------
# Verification


@dataclasses.dataclass
class Verification:
    """Keras vs the flatbuffer on LCE's interpreter, on the same inputs.

    The flatbuffer is compared with the Keras model and, where they differ, with the *exact
    reference*: the Keras inference copy that was converted, in which binary dot products are
    exact integers and every sign tie resolves to sign(0) = +1. A float32 Keras model can
    decide an exact tie by rounding noise; when that explains every difference the result
    passes, and the explanation says how many signs were ties and in which layers.
    """

    samples: int
    max_abs_diff: float  # vs the Keras model
    max_rel_diff: float  # max |diff| / max |Keras output|
    top1_agreement: float
    reference_max_rel_diff: float  # vs the exact reference
    reference_top1_agreement: float
    sign_inputs: int  # values entering binary activations
    tie_signs: int  # ... whose sign Keras's rounding decided differently from exact arithmetic
    unresolved_ties: int  # ... exactly 0 in the exact reference (random next to LCE zero padding)
    rtol: float
    min_agreement: float
    passed: bool
    explanation: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _compare(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    """(max |diff|, max |diff| / max |expected|, top-1 agreement)."""
    diff = np.abs(expected - actual)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / max(float(np.abs(expected).max()), 1e-12)
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        agreement = float(np.mean(expected.argmax(-1) == actual.argmax(-1)))
    else:
        agreement = 1.0
    return max_abs, max_rel, agreement


def _binary_inputs(model: tf.keras.Model, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    """The values entering the binary activations of layers `names` on `x`."""
    probe = tf.keras.Model(model.inputs, [model.get_layer(name).input for name in names])
    values = probe(x, training=False)
    return [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]


def _where(counts: dict[str, int], limit: int = 5) -> str:
    found = [f"{name} ({count})" for name, count in counts.items() if count]
    return ", ".join(found[:limit]) + (", ..." if len(found) > limit else "")


def verify(
    model: tf.keras.Model,
    flatbuffer: bytes,
    x: np.ndarray | None = None,
    *,
    samples: int = 8,
    seed: int = 0,
    rtol: float = 1e-3,
    min_agreement: float = 0.99,
) -> Verification:
    """Run `flatbuffer` on LCE's interpreter and compare it with `model` on the same inputs.

    Args:
        model: the Keras model that was converted.
        flatbuffer: its conversion (float32 input and output).
        x: inputs; default `samples` standard-normal images of the model's input shape.
        samples, seed: size and seed of the default inputs.
        rtol: tolerance on max |difference| relative to max |Keras output|.
        min_agreement: tolerance on the top-1 agreement (for outputs with more than one class).

    Returns:
        A :class:`Verification`; ``passed`` is False above tolerance, and ``explanation`` says
        what differs and why.
    """
    if x is None:
        shape = tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Expected `x` for a model with a variable input shape {shape}; pass input data."
            )
        x = np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)
    x = np.asarray(x, np.float32)
    expected = np.asarray(model(x, training=False), np.float64)
    actual = np.asarray(run_flatbuffer(flatbuffer, x), np.float64).reshape(expected.shape)
    max_abs, max_rel, agreement = _compare(expected, actual)

    reference_model = _prepared_copy(model)
    reference = np.asarray(reference_model(x, training=False), np.float64)
    _, ref_rel, ref_agreement = _compare(reference, actual)

    names = [layer.name for layer in _walk_layers(model) if _has_binary_input(layer)]
    flips: dict[str, int] = {}
    zeros: dict[str, int] = {}
    total = 0
    if names:
        mine = _binary_inputs(model, names, x)
        exact = _binary_inputs(reference_model, names, x)
        for name, a, b in zip(names, mine, exact):
            total += a.size
            flips[name] = int(np.count_nonzero((a >= 0) != (b >= 0)))
            zeros[name] = int(np.count_nonzero(b == 0))
    tie_signs, unresolved = sum(flips.values()), sum(zeros.values())

    if max_rel <= rtol and agreement >= min_agreement:
        passed, explanation = True, "The flatbuffer matches the Keras model within tolerance."
    elif ref_rel <= rtol and ref_agreement >= min_agreement and tie_signs:
        passed = True
        explanation = (
            f"The flatbuffer matches the exact reference (max relative difference {ref_rel:.2e}) "
            f"and differs from the float32 Keras model only through {tie_signs} of {total} sign "
            f"inputs that are exact ties (a binary dot product exactly on a BatchNorm threshold), "
            f"in {_where(flips)}: Keras decides them by float32 rounding, the converted model as "
            "sign(0) = +1. Trained BatchNorm statistics almost never sit exactly on a tie."
        )
    elif unresolved:
        passed = False
        explanation = (
            f"{unresolved} of {total} values entering binary activations are exactly 0, in "
            f"{_where(zeros)}. LCE's optimized kernels resolve such ties next to zero padding "
            "(pad_values=0) with a float correction, so their sign is random, and one flipped "
            "sign changes every later layer. These zeros come from untrained BatchNorm "
            "statistics (moving mean 0) meeting ReLU zeros or residual adds; they vanish with "
            "trained or calibrated statistics and real inputs, or with pad_values=1."
        )
    else:
        passed = False
        explanation = (
            f"Outputs differ beyond tolerance (max relative difference {max_rel:.2e}, top-1 "
            f"agreement {agreement:.1%}; vs the exact reference {ref_rel:.2e}) and no sign tie "
            "explains it: this is a conversion error. Please report it with the model."
        )
    return Verification(
        samples=len(x),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        top1_agreement=agreement,
        reference_max_rel_diff=ref_rel,
        reference_top1_agreement=ref_agreement,
        sign_inputs=total,
        tie_signs=tie_signs,
        unresolved_ties=unresolved,
        rtol=rtol,
        min_agreement=min_agreement,
        passed=passed,
        explanation=explanation,
    )


# --------------------------------------------------------------------------------------------
# Conversion report


@dataclasses.dataclass
class LayerConversion:
    """What one quantized Keras layer became in the flatbuffer."""

    name: str
    keras_class: str
    macs: int
    ops: list[str]
    binary: bool
    note: str


@dataclasses.dataclass
class ConversionReport:
    """Per quantized layer: the ops it became; totals: binary MACs, op histogram, sizes, time."""

    model_name: str
    target: str
    layers: list[LayerConversion]
    total_macs: int
    op_histogram: dict[str, int]
    flatbuffer_bytes: int
    keras_float32_bytes: int
    conversion_seconds: float | None = None
    float_twin_flatbuffer_bytes: int | None = None
    verification: Verification | None = None
    int8_layers: list[str] = dataclasses.field(default_factory=list)

    @property
    def binary_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.binary)

    @property
    def binary_mac_fraction(self) -> float:
        return self.binary_macs / self.total_macs if self.total_macs else 0.0

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["binary_macs"] = self.binary_macs
        out["binary_mac_fraction"] = self.binary_mac_fraction
        out["size_ratio_vs_keras_float32"] = self.keras_float32_bytes / self.flatbuffer_bytes
        if self.float_twin_flatbuffer_bytes:
            out["size_ratio_vs_float_twin"] = self.float_twin_flatbuffer_bytes / self.flatbuffer_bytes
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def format_table(self) -> str:
        """A plain-text table for terminals."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"Conversion report: {self.model_name} (target {self.target})", ""]
        lines.append(f"{'layer':{width}}  {'class':12}  {'MACs':>13}  {'binary':6}  ops / note")
        for layer in self.layers:
            ops = ", ".join(layer.ops) or "-"
            lines.append(
                f"{layer.name:{width}}  {layer.keras_class:12}  {layer.macs:13,d}  "
                f"{'yes' if layer.binary else 'NO':6}  {ops}"
                + (f" -- {layer.note}" if layer.note else "")
            )
        lines.append("")
        lines.append(
            f"MACs in binary ops: {self.binary_macs:,d} of {self.total_macs:,d} "
            f"({self.binary_mac_fraction:.1%})"
        )
        lines.append("ops: " + ", ".join(f"{k} x{v}" for k, v in self.op_histogram.items()))
        if self.int8_layers:
            lines.append(f"int8 layers (int8 weights and activations): {', '.join(self.int8_layers)}")
        size = (
            f"flatbuffer {self.flatbuffer_bytes / 2**20:.2f} MiB; Keras float32 weights "
            f"{self.keras_float32_bytes / 2**20:.2f} MiB "
            f"({self.keras_float32_bytes / self.flatbuffer_bytes:.1f}x smaller)"
        )
        if self.float_twin_flatbuffer_bytes:
            size += (
                f"; float twin flatbuffer {self.float_twin_flatbuffer_bytes / 2**20:.2f} MiB "
                f"({self.float_twin_flatbuffer_bytes / self.flatbuffer_bytes:.1f}x smaller)"
            )
        lines.append(size)
        if self.conversion_seconds is not None:
            lines.append(f"conversion time: {self.conversion_seconds:.1f} s")
        if self.verification is not None:
            v = self.verification
            lines.append(
                f"verification ({v.samples} inputs, LCE interpreter): "
                f"{'PASSED' if v.passed else 'FAILED'}; max |diff| {v.max_abs_diff:.3g} "
                f"(relative {v.max_rel_diff:.2e}, tolerance {v.rtol:g}); top-1 agreement "
                f"{v.top1_agreement:.1%}"
            )
            if not v.explanation.startswith("The flatbuffer matches the Keras"):
                lines.append("  " + v.explanation)
        return "\n".join(lines)


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


def _int8_layers(flatbuffer: bytes) -> list[str]:
    """Layers whose CONV_2D / FULLY_CONNECTED op runs with int8 weights (int8_float_layers)."""
    schema, model = _schema_model(flatbuffer)
    graph = model.subgraphs[0]
    found: dict[str, None] = {}
    for op in graph.operators:
        if _op_name(schema, model, op) not in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
            continue
        if graph.tensors[op.inputs[1]].type != schema.TensorType.INT8:
            continue
        # The weights' tensor is named after the layer whose kernel it is.
        for layer in _tensor_layers(graph.tensors[op.inputs[1]].name) or [
            layer for i in op.outputs for layer in _tensor_layers(graph.tensors[i].name)
        ]:
            found[layer] = None
    return list(found)


def _layer_note(layer, ops: list[str], binary: bool) -> str:
    if binary:
        return ""
    if not _has_binary_input(layer):
        return (
            "real-valued input: LCE has no op for real activations x binary weights, so it runs "
            "as a float convolution with +-alpha weights (smaller when int8-quantized, not faster)"
        )
    if _lce_misreads_zero_padding(layer):
        return (
            "kept as a float convolution on purpose: its input map is smaller than the kernel, "
            "where LCE 0.16's optimized binary kernels get zero padding wrong (pad_values=1 "
            "keeps it binary)"
        )
    if not ops:
        return "no TFLite op could be attributed to this layer (it may have been folded away)"
    return (
        "binary input and kernel, but LCE kept a float op: its kernel was not a constant of "
        "+-alpha per output channel, or the sign pattern was not recognised"
    )


def conversion_report(
    model: tf.keras.Model,
    flatbuffer: bytes,
    *,
    target: str = "arm",
    conversion_seconds: float | None = None,
    verification: Verification | None = None,
    float_twin_flatbuffer_bytes: int | None = None,
) -> ConversionReport:
    """Build the :class:`ConversionReport` of `model` converted to `flatbuffer`."""
    by_layer = _ops_by_layer(flatbuffer)
    profile = {p.name: p for p in _layer_profiles(lq.models.ModelProfile(model))}
    layers = []
    total_macs = 0
    for layer in _walk_layers(model):
        macs = (profile[layer.name].op_count("mac") or 0) if layer.name in profile else 0
        total_macs += macs
        if not (_has_binary_kernel(layer) or _has_binary_input(layer)):
            continue
        ops = by_layer.get(layer.name, [])
        binary = any(op in BINARY_OPS for op in ops)
        layers.append(
            LayerConversion(
                name=layer.name,
                keras_class=type(layer).__name__,
                macs=macs,
                ops=ops,
                binary=binary,
                note=_layer_note(layer, ops, binary),
            )
        )
    keras_bytes = 4 * sum(int(np.prod(w.shape)) for w in model.weights)
    return ConversionReport(
        model_name=model.name,
        target=target,
        layers=layers,
        total_macs=total_macs,
        op_histogram=op_histogram(flatbuffer),
        flatbuffer_bytes=len(flatbuffer),
        keras_float32_bytes=keras_bytes,
        conversion_seconds=conversion_seconds,
        float_twin_flatbuffer_bytes=float_twin_flatbuffer_bytes,
        verification=verification,
        int8_layers=_int8_layers(flatbuffer),
    )


def _layer_profiles(profile) -> Iterator:
    for p in profile.layer_profiles:
        if hasattr(p, "layer_profiles"):
            yield from _layer_profiles(p)
        else:
            yield p


def timed_convert(model: tf.keras.Model, **kwargs) -> tuple[bytes, float]:
    """:func:`convert`, and how long it took in seconds."""
    start = time.perf_counter()
    flatbuffer = convert(model, **kwargs)
    return flatbuffer, time.perf_counter() - start
