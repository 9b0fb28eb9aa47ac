"""The conversion report: for each quantized Keras layer, which TFLite ops it became, and totals."""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Iterator

import larq as lq
import numpy as np
import tensorflow as tf

from xnor_keras.convert._common import BINARY_OPS, _has_binary_input, _has_binary_kernel, _walk_layers
from xnor_keras.convert.bwn import _bwn_ops, bwn_layers
from xnor_keras.convert.flatbuffer import _int8_layers, _ops_by_layer, op_histogram
from xnor_keras.convert.prepare import _lce_misreads_zero_padding
from xnor_keras.convert.verification import Verification

__all__ = ["ConversionReport", "LayerConversion", "conversion_report"]


@dataclasses.dataclass
class LayerConversion:
    """What one quantized Keras layer became in the flatbuffer."""

    name: str
    keras_class: str
    macs: int
    ops: list[str]
    binary: bool
    note: str
    # BWN layers only: the form of the weights ("int8", "int8_dynamic", "int8_full", "float";
    # see convert(bwn_weights=...)), read from the flatbuffer.
    bwn_weights: str | None = None


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
        forms = collections.Counter(layer.bwn_weights for layer in self.layers if layer.bwn_weights)
        if forms:
            lines.append("BWN layer weights: " + ", ".join(f"{k} x{v}" for k, v in forms.items()))
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
            runtime = "LCE interpreter" if v.target == "host" else "LCE aarch64 kernels, emulated arm64"
            lines.append(
                f"verification ({v.samples} inputs, {runtime}): "
                f"{'PASSED' if v.passed else 'FAILED'}; max |diff| {v.max_abs_diff:.3g} "
                + (f"(relative {v.max_rel_diff:.2e}, int8 rounding: not judged); top-1 agreement "
                   f"{v.top1_agreement:.1%} (at least {v.min_agreement:.1%})" if v.lossy else
                   f"(relative {v.max_rel_diff:.2e}, tolerance {v.rtol:g}); top-1 agreement "
                   f"{v.top1_agreement:.1%}")
            )
            if not v.explanation.startswith("The flatbuffer matches the Keras"):
                lines.append("  " + v.explanation)
        return "\n".join(lines)


_BWN_FORM_NOTES = {
    "int8": "int8 +-alpha weights (exact), float32 arithmetic",
    "int8_dynamic": "int8 +-alpha weights (exact), int8 arithmetic on inputs rounded on the fly",
    "int8_full": "int8 +-alpha weights (exact) and int8 activations (calibrated)",
    "float": "float32 +-alpha weights",
    "not found": "no convolution with its weights was found",
}


def _layer_note(layer, ops: list[str], binary: bool, bwn_form: str | None = None) -> str:
    if binary:
        return ""
    if not _has_binary_input(layer):
        return (
            "real-valued input: LCE has no op for real activations x binary weights, so it runs "
            f"as a TFLite convolution with {_BWN_FORM_NOTES.get(bwn_form, bwn_form)} "
            f"(bwn_weights={bwn_form!r})"
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
    bwn_ops = _bwn_ops(model, flatbuffer)
    bwn_forms = dict(bwn_ops.values())
    profile = {p.name: p for p in _layer_profiles(lq.models.ModelProfile(model))}
    bwn = bwn_layers(model)
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
                note=_layer_note(layer, ops, binary, bwn_forms.get(layer.name, "not found")),
                bwn_weights=bwn_forms.get(layer.name, "not found") if layer in bwn else None,
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
        # Full-precision layers made int8; BWN layers say their form in `layers`.
        int8_layers=_int8_layers(flatbuffer, skip=frozenset(bwn_ops)),
    )


def _layer_profiles(profile) -> Iterator:
    for p in profile.layer_profiles:
        if hasattr(p, "layer_profiles"):
            yield from _layer_profiles(p)
        else:
            yield p
