"""What every part of the converter shares: targets, op names, the error type, layer walking."""

from __future__ import annotations

from typing import Iterator

import tensorflow as tf


TARGETS = ("arm", "xcore")
BINARY_OPS = ("LceBconv2d",)
# The custom ops LCE 0.16 registers; any other custom op in a flatbuffer has no kernel anywhere.
LCE_OPS = ("LceBconv2d", "LceBMaxPool2d", "LceDequantize", "LceQuantize")
_IO_TYPES = {"float32": tf.float32, "int8": tf.int8}
# How a BWN layer (real inputs, +-alpha weights; no LCE op) is stored and computed:
#   "int8"          int8 weights in the file, float32 arithmetic (bit-exact; no calibration)
#   "int8_dynamic"  int8 weights, int8 arithmetic on inputs rounded on the fly (no calibration)
#   "int8_full"     int8 weights and int8 activations, ranges from `calibration_data`
#   "float"         float32 weights, as LCE writes them
BWN_WEIGHTS = ("int8", "int8_dynamic", "int8_full", "float")
# Short name given to the inference copy: LCE keeps only 50 characters of each tensor name, and
# the report finds layers by name, so the model-name prefix should not eat them.
_COPY_NAME = "m"


class ConversionError(ValueError):
    """The model cannot be converted; the message says why and what to do."""


def _check_bwn_weights(value) -> None:
    if not isinstance(value, str) or value not in BWN_WEIGHTS:
        raise ConversionError(
            f"Expected `bwn_weights` to be one of {BWN_WEIGHTS}, got {value!r}. "
            f"Received: bwn_weights={value!r}"
        )


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
