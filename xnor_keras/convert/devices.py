"""One switch for a target device: the converter options and runtime settings measured best there.

`plan(model, "pi4")` says, for this model on a Raspberry Pi 4, which converter options to use
(int8 first/last layers, the BWN weight form) and which runtime settings `xnor_lite.Interpreter`
should take (XNNPACK on or off, threads, LCE's kernel), each with the measurement behind it. The
settings travel inside the flatbuffer (metadata ``"xnor_lite.runtime"``), so the interpreter on
the device follows them without being told.

The figures are guest instructions per steady inference at 224², 1 thread, on the emulated
aarch64 target with ai-edge-litert 2.2.0 (`bench/arm64.py --cpu ...`, BENCHMARKS.md "ARM"):
`cortex-a72` for the Pi 4 and `cortex-a76` for the Pi 5 (dot-product, no SVE/SME). Instructions
are not cycles. ``arm64`` is any ARMv8.0-A core: the Pi 4's choices, the lowest common ground.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from xnor_keras.convert._common import _has_binary_input, _has_binary_kernel, _walk_layers
from xnor_keras.convert.int8 import _int8_candidates

__all__ = ["DEVICES", "Device", "DevicePlan", "plan"]


@dataclasses.dataclass(frozen=True)
class Device:
    """A target core: its name for `--device`, what it is, and the qemu CPU that stands in for it."""

    name: str
    description: str
    qemu_cpu: str


DEVICES = {
    "pi4": Device("pi4", "Raspberry Pi 4 (4x Cortex-A72: NEON, no dot-product)", "cortex-a72"),
    "pi5": Device("pi5", "Raspberry Pi 5 (4x Cortex-A76: NEON with dot-product, no SVE/SME)", "cortex-a76"),
    "arm64": Device("arm64", "any 64-bit ARM core (ARMv8.0-A; the Pi 4's choices)", "cortex-a72"),
}

# Measured with bench/arm64.py on ai-edge-litert 2.2.0: guest instructions per steady inference,
# 224², 1 thread, on qemu's cortex-a72 (Pi 4) and cortex-a76 (Pi 5) CPU models.
_INT8 = {
    "pi4": "int8 first/last layers: XNORAlexNet 75.5 -> 55.2 M instructions, XNORResNet18 "
           "118.0 -> 94.7 M (Cortex-A72, no dot-product: xnor_lite's own int8 convolution)",
    "pi5": "int8 first/last layers: XNORAlexNet 75.5 -> 43.0 M instructions, XNORResNet18 "
           "118.0 -> 81.3 M (Cortex-A76, dot-product)",
}
# bench/sensitivity.py on the published Fashion-MNIST XNORResNet18, all 10,000 test images.
_XNOR_AGREEMENT = (
    "int8 first layer on an XNOR net: accuracy kept (92.57% on arm64 against 92.56%) but ~96% top-1 "
    "agreement with the float model, as much as +-0.5 grey levels of input noise moves the float "
    "model itself; add --exact for a file that follows it decision for decision (float first layer)"
)
# (device, kind of net) -> (use XNNPACK, why)
_XNNPACK = {
    ("pi4", "xnor"): (False, "XNNPACK off: XNORAlexNet 54.5 M instructions without it, 146.7 M with "
                             "(its int8 11x11 first layer); XNORResNet18 93.2 M against 188.5 M"),
    ("pi5", "xnor"): (False, "XNNPACK off: XNORAlexNet 42.3 M instructions without it, 59.0 M with; "
                             "XNORResNet18 79.8 M against 86.4 M"),
    ("pi4", "bwn"): (False, "XNNPACK off: with int8_full, BWNAlexNet 277.1 M instructions without it, "
                            "339.4 M with; BWNResNet18 422.4 M against 531.1 M"),
    ("pi5", "bwn"): (True, "XNNPACK on: with int8_full, BWNAlexNet 153.6 M instructions with it, "
                           "175.6 M without; BWNResNet18 226.6 M against 235.4 M"),
    # The float twins cost the same on both cores.
    **{(device, "float"): (True, "XNNPACK on: AlexNet 428.8 M instructions with it, 462.7 M "
                                 "without; ResNet18 667.3 M against 687.2 M") for device in ("pi4", "pi5")},
}
# --device ... --exact: no int8 activations. Same figures on both cores (bench/arm64.py --cpu
# cortex-a72 | cortex-a76: the float and binary kernels do not use dot-product).
_EXACT = {
    "xnor": "exact: full-precision layers float32, so the file follows the float model decision for "
            "decision (top-1 agreement 99.99% on the published XNORResNet18, all 10,000 test images: one differs); "
            "on the Pi 4 it costs XNORAlexNet 74.8 M instructions against 54.5 M with int8 (pad_values=1), "
            "XNORResNet18 116.5 M against 93.2 M",
    "bwn": "exact: full-precision layers float32 and BWN weights stored int8 with float32 arithmetic "
           "(bwn_weights='int8', bit for bit the float filters): as fast as the float twin (BWNAlexNet "
           "428.8 M instructions, BWNResNet18 667.3 M, with XNNPACK) at a quarter of its weight bytes",
}
_EXACT_XNNPACK = {
    "xnor": (False, "XNNPACK off: XNORAlexNet (pad_values=1, float first/last layers) 74.8 M instructions "
                    "without it, 95.7 M with; XNORResNet18 116.5 M against 135.8 M"),
    "bwn": (True, "XNNPACK on: BWNAlexNet (float arithmetic) 428.8 M instructions with it, 462.7 M "
                  "without; BWNResNet18 667.3 M against 687.2 M"),
}
_BWN_FORM = {
    "pi4": "BWN layers as int8_full (int8 weights and activations): BWNAlexNet 277.1 M instructions "
           "against 428.8 M for the float twin at its best, BWNResNet18 422.4 M against 667.3 M",
    "pi5": "BWN layers as int8_full (int8 weights and activations): BWNAlexNet 153.6 M instructions "
           "against 428.8 M for the float twin at its best, BWNResNet18 226.6 M against 667.3 M",
}


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What `--device` chose for a model: converter options, runtime settings, and why."""

    device: Device
    kind: str  # "xnor" (binary activations), "bwn" (binary weights only) or "float"
    convert_options: dict
    runtime: dict
    reasons: list[str]

    @property
    def needs_calibration(self) -> bool:
        return bool(self.convert_options.get("int8_float_layers")) or (
            self.convert_options.get("bwn_weights") == "int8_full"
        )

    def metadata(self) -> bytes:
        """The JSON recorded in the flatbuffer for `xnor_lite.Interpreter`."""
        return json.dumps({"device": self.device.name, **self.runtime}, sort_keys=True).encode()

    def describe(self) -> str:
        lines = [f"device {self.device.name}: {self.device.description}; a {self.kind.upper()} net"]
        lines += [f"  - {reason}" for reason in self.reasons]
        return "\n".join(lines)


# A classifier this small stays float32 under --device: int8 saves at most 0.75 MiB and no
# measurable time, and its per-tensor int8 (LCE 0.16 cannot transpose a per-channel FC kernel)
# moves decisions. Measured on the Fashion-MNIST nets published at 32x32 (LCE's x86 interpreter, all
# 10,000 test images, BWN int8_full): BWNResNet18 top-1 agreement with Keras 99.25% -> 99.67%
# (99.65% on arm64), XNORResNet18 95.40% -> 95.42% (its int8 first layer decides there).
_FLOAT_CLASSIFIER_BYTES = 2**20
# Layers that leave values as they are or only reshape them: what may follow a classifier.
_OUTPUT_LAYERS = (
    tf.keras.layers.Activation, tf.keras.layers.Softmax, tf.keras.layers.Flatten, tf.keras.layers.Reshape,
)


def _small_classifier(model: tf.keras.Model):
    """The model's classifier (its last plain Conv2D / Dense, followed by nothing but softmax or
    reshapes) when its float32 kernel is at most _FLOAT_CLASSIFIER_BYTES; else None."""
    candidates = _int8_candidates(model)
    if not candidates:
        return None
    last = layer = candidates[-1]
    while layer.outbound_nodes:
        if len(layer.outbound_nodes) != 1:
            return None
        layer = layer.outbound_nodes[0].outbound_layer
        if not isinstance(layer, _OUTPUT_LAYERS):
            return None
    if layer.output is not model.outputs[0] and last.output is not model.outputs[0]:
        return None
    return last if 4 * int(np.prod(last.kernel.shape)) <= _FLOAT_CLASSIFIER_BYTES else None


def _kind(model: tf.keras.Model) -> str:
    layers = list(_walk_layers(model))
    if any(_has_binary_input(layer) for layer in layers):
        return "xnor"
    if any(_has_binary_kernel(layer) for layer in layers):
        return "bwn"
    return "float"


def plan(model: tf.keras.Model, device: str, *, exact: bool = False) -> DevicePlan:
    """The options and settings measured best for `model` on `device` ("pi4", "pi5", "arm64").

    With `exact`, the fastest form that computes what the Keras model computes: no int8
    activations (the full-precision layers stay float32; BWN weights are stored int8 and
    computed in float32, bit for bit), with the runtime settings measured best for that form.
    An XNOR net's int8 first layer moves ~5% of its top-1 decisions (BENCHMARKS.md); this is
    the file that follows the float model decision for decision.

    Raises:
        ValueError: an unknown device, naming the known ones.
    """
    if device not in DEVICES:
        raise ValueError(
            f"Expected `device` to be one of {sorted(DEVICES)}, got {device!r}. Received: device={device!r}"
        )
    kind = _kind(model)
    measured_as = "pi4" if device == "arm64" else device
    use_xnnpack, why = _XNNPACK[(measured_as, kind)]
    if exact and kind != "float":
        # The device's runtime settings with the model's own arithmetic: no int8 activations;
        # BWN weights stored int8 but computed in float32 (bit for bit the float filter).
        options = {"bwn_weights": "int8"} if kind == "bwn" else {}
        use_xnnpack, why = _EXACT_XNNPACK[kind]
        reasons = [_EXACT[kind]]
        return _finish(device, kind, options, use_xnnpack, why, reasons)
    if kind == "float":
        # A float net's "first and last layers" are all its layers: int8 would be a different
        # model, which --device does not decide for you (convert with --int8-float-layers).
        options = {}
        reasons = ["float net: kept float32 (the float twins are the baseline; "
                   "--int8-float-layers makes every layer int8)"]
    else:
        classifier = _small_classifier(model)
        int8_layers = [layer.name for layer in _int8_candidates(model) if layer is not classifier]
        options, reasons = {}, []
        if int8_layers:
            options["int8_float_layers"] = True if classifier is None else int8_layers
            reasons.append(_INT8[measured_as])
            if kind == "xnor":
                reasons.append(_XNOR_AGREEMENT)
        if classifier is not None:
            kib = 4 * int(np.prod(classifier.kernel.shape)) / 2**10
            reasons.append(
                f"classifier {classifier.name!r} kept float32 ({kib:,.0f} KiB): int8 would save "
                "almost nothing and moves decisions (BWNResNet18 on Fashion-MNIST, 32x32 weights: top-1 "
                "agreement with Keras 99.25% with it int8, 99.67% float)"
            )
    if kind == "bwn":
        options["bwn_weights"] = "int8_full"
        reasons.append(_BWN_FORM[measured_as])
    return _finish(device, kind, options, use_xnnpack, why, reasons)


def _finish(device: str, kind: str, options: dict, use_xnnpack: bool, why: str, reasons: list) -> DevicePlan:
    reasons.append(why)
    reasons.append("threads: all of the device's cores (LCE's BGEMM, ruy and XNNPACK split the work)")
    reasons.append("kernels: xnor_lite's default (LCE's aarch64 BGEMM, xnor_lite's binary and int8 GEMVs "
                   "for batch-1 fully connected layers and, on cores without dot-product, its int8 "
                   "convolution; indirect_bgemm is for x86)")
    runtime = {"use_xnnpack": use_xnnpack, "num_threads": "cores", "kernel": "default"}
    return DevicePlan(DEVICES[device], kind, options, runtime, reasons)
