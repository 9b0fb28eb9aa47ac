"""Keras model -> TFLite flatbuffer with Larq Compute Engine, and running it on LCE's interpreter.

The library returns bytes; :func:`save_tflite` writes them atomically (a temporary file renamed
into place, so a failure never leaves a partial ``.tflite``).
"""

from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path

import larq as lq
import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

__all__ = ["TARGETS", "convert", "inference_copy", "op_histogram", "op_names", "run_flatbuffer", "save_tflite"]

TARGETS = ("arm", "xcore")


def _binary_kernel_layers(model: tf.keras.Model):
    """Every layer (nested models included) whose kernel larq quantizes to 1 bit."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _binary_kernel_layers(layer)
        elif getattr(getattr(layer, "kernel_quantizer", None), "precision", None) == 1:
            yield layer


def inference_copy(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` whose binary kernels are constants, ready for LCE.

    Each 1-bit kernel quantizer (alpha * sign(W), or larq's sign) is evaluated once and its result
    stored as the layer's weights, and the quantizer removed. The copy computes the same function,
    but LCE no longer has to constant-fold the quantizer: it does so only for kernels below about
    128 MiB, so without this a large layer such as XNOR AlexNet's fc6 (6x6x256x4096) stays a float
    convolution that recomputes alpha at every inference (306 MiB flatbuffer instead of ~24 MiB).
    """
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in _binary_kernel_layers(copy):
        kernel = layer.kernel
        with lq.context.quantized_scope(True):
            quantized = tf.convert_to_tensor(layer.kernel_quantizer(kernel.latent_variable))
        kernel.latent_variable.assign(quantized)
        kernel.quantizer = None
    return copy


def convert(model: tf.keras.Model, *, target: str = "arm") -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with LCE's binary ops.

    Args:
        model: a built ``tf.keras.Model`` (Keras 2).
        target: ``"arm"`` (64-bit ARM: Raspberry Pi, Android; also runs on x86 through LCE's
            interpreter) or ``"xcore"``.

    Returns:
        The flatbuffer as bytes.
    """
    if not isinstance(model, tf.keras.Model):
        raise ValueError(
            f"Expected `model` to be a tf.keras.Model, got {type(model).__name__}. "
            f"Received: model={model!r}"
        )
    if target not in TARGETS:
        raise ValueError(f"Expected `target` to be one of {TARGETS}, got {target!r}. Received: target={target!r}")
    return lce.convert_keras_model(inference_copy(model), target=target)


def op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of the flatbuffer's main subgraph, in order (custom ops by their name)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        if code.customCode:
            names.append(code.customCode.decode())
        else:
            names.append(builtin[max(code.builtinCode, code.deprecatedBuiltinCode)])
    return names


def op_histogram(flatbuffer: bytes) -> dict[str, int]:
    """How many times each operator occurs, most frequent first."""
    return dict(collections.Counter(op_names(flatbuffer)).most_common())


def run_flatbuffer(flatbuffer: bytes, x: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run a converted model on LCE's interpreter (the fastest kernel on x86: indirect BGEMM)."""
    interpreter = lce.testing.Interpreter(
        flatbuffer, num_threads=num_threads, use_indirect_bgemm=True
    )
    return np.asarray(interpreter.predict(np.asarray(x, np.float32)))


def save_tflite(flatbuffer: bytes, path: str | os.PathLike) -> Path:
    """Write `flatbuffer` to `path` atomically; returns the path."""
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
