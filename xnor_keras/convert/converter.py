"""The LCE call: Keras model -> flatbuffer bytes (:func:`convert`), and writing them to disk."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import larq_compute_engine as lce
import numpy as np
import tensorflow as tf

from xnor_keras._io import write_atomically
from xnor_keras.convert._common import (
    _IO_TYPES,
    TARGETS,
    ConversionError,
    _check_bwn_weights,
    _check_model,
)
from xnor_keras.convert.bwn import int8_bwn_filters
from xnor_keras.convert.flatbuffer import _unknown_custom_ops
from xnor_keras.convert.int8 import (
    _check_calibration_data,
    _pad_before_quantize,
    _prepared_copy,
    _selected_int8_layers,
    _too_large_for_int8_full,
)

__all__ = ["convert", "save_tflite", "timed_convert"]


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
    int8_float_layers: bool | list[str] = False,
    bwn_weights: str = "int8",
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
            does. A list of layer names makes only those layers int8 (e.g. all but a small
            classifier, which int8 would cost agreement and save nothing).
        bwn_weights: how the Binary-Weight-Network layers (real inputs, +-alpha weights; LCE
            has no op for them) are stored and computed; all int8 forms store the weights
            exactly (int8 +-1 or +-127 steps of alpha per output channel, 4x smaller):

            * ``"int8"`` (default): int8 in the file, float32 arithmetic; outputs are bit for
              bit those of ``"float"``. No calibration; as fast as float (weights are unpacked
              once, when the interpreter is prepared).
            * ``"int8_dynamic"``: int8 arithmetic on inputs rounded to int8 on the fly (TFLite's
              hybrid kernel). No calibration; outputs move by ~1e-3 relative.
            * ``"int8_full"``: int8 weights and activations, ranges measured on
              `calibration_data`: the fastest by far on x86 (see BENCHMARKS.md);
              :func:`int8_reference` computes what it does. A BWN kernel of 128 MiB or more
              (AlexNet's fc6), which LCE cannot quantize, gets ``"int8_dynamic"`` with a warning.
            * ``"float"``: float32 weights, as LCE writes them.
        calibration_data: inputs for the int8 ranges (required with `int8_float_layers` and
            ``bwn_weights="int8_full"``); a few dozen typical, preprocessed inputs.

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
    _check_bwn_weights(bwn_weights)
    int8_float_layers = _selected_int8_layers(model, int8_float_layers)
    bwn_full = bwn_weights == "int8_full"
    calibration = None
    if int8_float_layers or bwn_full:
        option = "int8_float_layers=True" if int8_float_layers else "bwn_weights='int8_full'"
        calibration = _check_calibration_data(model, calibration_data, option)
    too_large = _too_large_for_int8_full(model) if bwn_full else []
    if too_large:
        warnings.warn(
            f"BWN layers {too_large} have kernels of 128 MiB or more, which LCE's converter "
            "cannot quantize; they get exact int8 weights with dynamic int8 arithmetic "
            "(bwn_weights='int8_dynamic') instead of calibrated int8 activations.",
            stacklevel=2,
        )
    copy = _prepared_copy(model, calibration, float_layers=int8_float_layers, bwn=bwn_full)
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
    # The converter pads a quantized input in int8, which LiteRT runs with its reference kernel.
    flatbuffer, _ = _pad_before_quantize(flatbuffer)
    if bwn_weights in ("int8", "int8_dynamic"):
        flatbuffer, _ = int8_bwn_filters(model, flatbuffer, form=bwn_weights)
    elif bwn_full and too_large:
        flatbuffer, _ = int8_bwn_filters(model, flatbuffer, form="int8_dynamic")
    return flatbuffer


def timed_convert(model: tf.keras.Model, **kwargs) -> tuple[bytes, float]:
    """:func:`convert`, and how long it took in seconds."""
    start = time.perf_counter()
    flatbuffer = convert(model, **kwargs)
    return flatbuffer, time.perf_counter() - start


def save_tflite(flatbuffer: bytes, path: str | os.PathLike) -> Path:
    """Write `flatbuffer` to `path` atomically (temp file + rename); returns the path."""
    return write_atomically(flatbuffer, path)
