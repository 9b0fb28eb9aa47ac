"""Keras model -> TFLite flatbuffer with Larq Compute Engine, verified on LCE's runtime, with a report.

* :func:`convert` returns flatbuffer bytes in which every binarized layer is an LCE binary op
  (``LceBconv2d``) with alpha folded in; :func:`save_tflite` writes them atomically.
* :func:`verify` runs the flatbuffer on LCE's interpreter and compares it with the Keras model.
* :func:`conversion_report` says, for each quantized Keras layer, which TFLite ops it became.

One module per concern, dependencies pointing one way:

* ``_common``: targets, op names, :class:`ConversionError`, walking a model's layers.
* ``prepare``: the inference copy (binary kernels as constants, centred sign thresholds, the
  BatchNorms between residual additions and signs folded into biases).
* ``int8``: int8 fake quantization of layers, the prepared copy LCE is given, and the padding of
  a quantized input moved before its ``QUANTIZE`` in the flatbuffer.
* ``bwn``: int8 weights for BWN layers, written into the flatbuffer; which form each took.
* ``converter``: the LCE call (:func:`convert`), :func:`save_tflite`.
* ``flatbuffer``: reading a flatbuffer (op names, which ops each layer became).
* ``runtime``: running a flatbuffer on LCE's interpreter (outputs, latency).
* ``verification``: :func:`verify`, flatbuffer against Keras.
* ``report``: :func:`conversion_report`.

Example:
    >>> import xnor_keras
    >>> from xnor_keras import convert
    >>> model = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
    >>> flatbuffer = convert.convert(model)
    >>> convert.verify(model, flatbuffer).passed
    True
"""

from __future__ import annotations

# `lce` stays reachable as `xnor_keras.convert.lce` (tests patch LCE's entry points through it).
import larq_compute_engine as lce

from xnor_keras.convert._common import (
    BINARY_OPS,
    BWN_WEIGHTS,
    LCE_OPS,
    TARGETS,
    ConversionError,
)
from xnor_keras.convert.bwn import bwn_weight_forms
from xnor_keras.convert.converter import _lce_convert, convert, save_tflite, timed_convert
from xnor_keras.convert.flatbuffer import op_histogram, op_names
from xnor_keras.convert.int8 import _prepared_copy, int8_reference, quantize_float_layers
from xnor_keras.convert.prepare import (
    _center_sign_thresholds,
    _lce_misreads_zero_padding,
    inference_copy,
)
from xnor_keras.convert.report import ConversionReport, LayerConversion, conversion_report
from xnor_keras.convert.runtime import measure_latency, run_flatbuffer
from xnor_keras.convert.verification import Verification, verify

__all__ = [
    "BWN_WEIGHTS",
    "TARGETS",
    "ConversionError",
    "ConversionReport",
    "LayerConversion",
    "Verification",
    "bwn_weight_forms",
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
