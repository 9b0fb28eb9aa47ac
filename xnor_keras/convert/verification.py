"""Verification: the flatbuffer on LCE's interpreter against the Keras model, with explanations."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from xnor_keras.convert._common import _has_binary_input, _walk_layers
from xnor_keras.convert.int8 import _prepared_copy
from xnor_keras.convert.runtime import check_target, run_flatbuffer

__all__ = ["Verification", "verify"]

# A value entering a binary activation this close to 0, relative to the largest in its layer, is
# a tie up to float32 rounding (~8 ulp): LCE's fused threshold may send it to either side.
_TIE_MARGIN = 1e-6


@dataclasses.dataclass
class Verification:
    """Keras vs the flatbuffer on a target's runtime (LCE's), on the same inputs.

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
    target: str = "host"  # "host": LCE's x86-64 wheel; "arm64": LCE's aarch64 kernels, emulated
    lossy: bool = False  # int8: judged by top-1 agreement alone

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
    target: str = "host",
    lossy: bool = False,
) -> Verification:
    """Run `flatbuffer` on `target` and compare it with `model` on the same inputs.

    Args:
        model: the Keras model that was converted.
        flatbuffer: its conversion (float32 input and output).
        x: inputs; default `samples` standard-normal images of the model's input shape.
        samples, seed: size and seed of the default inputs.
        rtol: tolerance on max |difference| relative to max |Keras output|.
        min_agreement: tolerance on the top-1 agreement (for outputs with more than one class).
        target: "host" runs LCE's x86-64 interpreter; "arm64" runs LCE's aarch64 kernels on the
            emulated arm64 target (``xnor_lite.emulate``; needs qemu-user, debootstrap and
            g++-aarch64-linux-gnu, and sets itself up once, in about 2 minutes).
        lossy: the flatbuffer rounds on purpose (int8 activations, int8_dynamic) and `model` is
            the matching reference (``int8_reference``): it is judged by its top-1 agreement
            alone, on real inputs; the relative difference (int8 steps, and the binary signs
            they move) is reported, not judged. Below `min_agreement` it is a conversion error.

    Returns:
        A :class:`Verification`; ``passed`` is False above tolerance, and ``explanation`` says
        what differs and why.
    """
    check_target(target)
    if x is None:
        shape = tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Expected `x` for a model with a variable input shape {shape}; pass input data."
            )
        x = np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)
    x = np.asarray(x, np.float32)
    expected = np.asarray(model(x, training=False), np.float64)
    actual = np.asarray(run_flatbuffer(flatbuffer, x, target=target), np.float64).reshape(expected.shape)
    max_abs, max_rel, agreement = _compare(expected, actual)

    reference_model = _prepared_copy(model)
    reference = np.asarray(reference_model(x, training=False), np.float64)
    _, ref_rel, ref_agreement = _compare(reference, actual)

    names = [layer.name for layer in _walk_layers(model) if _has_binary_input(layer)]
    flips: dict[str, int] = {}
    zeros: dict[str, int] = {}
    # Samples with a value entering a binary activation within float32 rounding of 0 (relative to
    # that layer's largest): exact ties, and near ties that LCE's fused float threshold may
    # round to the other side.
    tied_sample = np.zeros(len(x), bool)
    total = 0
    if names:
        mine = _binary_inputs(model, names, x)
        exact = _binary_inputs(reference_model, names, x)
        for name, a, b in zip(names, mine, exact):
            total += a.size
            flips[name] = int(np.count_nonzero((a >= 0) != (b >= 0)))
            zeros[name] = int(np.count_nonzero(b == 0))
            margin = _TIE_MARGIN * float(np.abs(b).max())
            tied_sample |= np.any(np.abs(b.reshape(len(x), -1)) <= margin, axis=1)
    tie_signs, unresolved = sum(flips.values()), sum(zeros.values())
    # Samples that differ from the exact reference beyond tolerance.
    per_sample = np.abs(reference - actual).reshape(len(x), -1).max(axis=1)
    differing = per_sample / max(float(np.abs(reference).max()), 1e-12) > rtol

    if max_rel <= rtol and agreement >= min_agreement:
        passed, explanation = True, "The flatbuffer matches the Keras model within tolerance."
    elif lossy and agreement >= min_agreement:
        passed = True
        explanation = (
            f"int8 conversion: top-1 agreement {agreement:.1%} with the int8 reference (at least "
            f"{min_agreement:.1%} required); the max relative difference {max_rel:.2e} is int8 "
            "rounding and the binary signs it moves, reported, not judged."
        )
    elif ref_rel <= rtol and ref_agreement >= min_agreement and tie_signs:
        passed = True
        explanation = (
            f"The flatbuffer matches the exact reference (max relative difference {ref_rel:.2e}) "
            f"and differs from the float32 Keras model only through {tie_signs} of {total} sign "
            f"inputs that are exact ties (a binary dot product exactly on a BatchNorm threshold), "
            f"in {_where(flips)}: Keras decides them by float32 rounding, the converted model as "
            "sign(0) = +1. Trained BatchNorm statistics almost never sit exactly on a tie."
        )
    elif (differing.any() and tied_sample[differing].all() and agreement >= min_agreement
          and differing.mean() <= 1 - min_agreement):
        # On real inputs a trained net rarely, but sometimes, puts a binary dot product exactly
        # (or within float32 rounding) on its BatchNorm threshold; LCE decides such a tie by the
        # rounding of its fused threshold, and the sample's later layers follow. As many samples
        # may differ so as top-1 disagreements are allowed, and each one must carry such a tie.
        passed = True
        explanation = (
            f"{int(differing.sum())} of {len(x)} samples differ from the exact reference (max "
            f"relative difference {ref_rel:.2e}), each through a sign input within float32 "
            f"rounding of its threshold ({unresolved} exactly 0, in {_where(zeros) or 'no layer'}), "
            f"which LCE decides by the rounding of its fused BatchNorm threshold; top-1 agreement "
            f"is {agreement:.1%} and the other {int((~differing).sum())} samples match within "
            f"tolerance."
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
        target=target,
        lossy=lossy,
    )
