"""int8 conversion of zero padding: a ZeroPadding2D before an int8 layer pads in float, then quantizes.

LCE's converter moves the fake quantization of a padded tensor before the ``PAD`` (a same-scale
op), so the flatbuffer quantized the input and padded it in int8, which LiteRT 2.2 runs with its
reference kernel (3% of XNORAlexNet's ARM instructions). The conversion moves the ``QUANTIZE``
back after the ``PAD`` (``convert.int8._pad_before_quantize``).

Oracles: the op and tensor types read from the flatbuffer; the flatbuffer as LCE wrote it, before
that step (outputs bit for bit); and ``int8_reference``, the Keras model that computes what the
int8 flatbuffer computes (within the int8 rules of test_convert.py, or one int8 step where no
binary layer amplifies a step). Each model is converted once (in a module-scoped fixture, or
in the one test that uses it).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import convert, zoo
from xnor_keras.testing_utils import calibrate_batchnorm

L = tf.keras.layers
SIZE = 67  # XNORAlexNet's smallest input (63) rounded up to a stride-4 fit, as in test_convert.py


def _images(shape, n=16, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _convert_both(model, calibration):
    """(int8 flatbuffer, the same as LCE wrote it: without moving the PADs)."""
    int8 = convert.convert(model, int8_float_layers=True, calibration_data=calibration)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("xnor_keras.convert.converter._pad_before_quantize", lambda flatbuffer: (flatbuffer, 0))
        as_lce_wrote = convert.convert(model, int8_float_layers=True, calibration_data=calibration)
    return int8, as_lce_wrote


def _graph(flatbuffer: bytes) -> list[types.SimpleNamespace]:
    """Every op of the main subgraph: name, input / output tensor indices and their types, and
    the quantization scale of each output (None where it has none)."""
    from tensorflow.lite.python import schema_py_generated as schema

    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0).subgraphs[0]

    def scale(i):
        q = graph.tensors[i].quantization
        return None if q is None or q.scale is None or not len(q.scale) else float(q.scale[0])

    return [
        types.SimpleNamespace(
            name=name,
            inputs=[i for i in op.inputs if i >= 0],
            outputs=list(op.outputs),
            input_types=[type_names[graph.tensors[i].type] for i in op.inputs if i >= 0],
            output_types=[type_names[graph.tensors[i].type] for i in op.outputs],
            output_scales=[scale(i) for i in op.outputs],
        )
        for name, op in zip(convert.op_names(flatbuffer), graph.operators)
    ]


def _readers(ops, tensor: int) -> list:
    return [op for op in ops if tensor in op.inputs]


def _assert_pads_in_float_before_int8(flatbuffer: bytes, pads: int) -> None:
    """`pads` PAD ops, each float32 -> float32, read by one QUANTIZE whose int8 output feeds an
    int8 CONV_2D; no op pads int8."""
    ops = _graph(flatbuffer)
    found = [op for op in ops if op.name in ("PAD", "PADV2", "MIRROR_PAD")]
    assert len(found) == pads, [op.name for op in ops]
    for pad in found:
        assert pad.input_types[0] == pad.output_types[0] == "FLOAT32"
        (quantize,) = _readers(ops, pad.outputs[0])
        assert quantize.name == "QUANTIZE" and quantize.output_types == ["INT8"]
        (conv,) = _readers(ops, quantize.outputs[0])
        assert conv.name == "CONV_2D" and conv.input_types[:2] == ["INT8", "INT8"]  # input, weights


# --------------------------------------------------------------------------------------------
# XNORAlexNet: conv1_pad (ZeroPadding2D(2)) -> conv1 (int8 with int8_float_layers=True)


@pytest.fixture(scope="module")
def alexnet():
    tf.keras.utils.set_random_seed(0)
    model = zoo.XNORAlexNet(input_shape=(SIZE, SIZE, 3), classes=10, weights=None)
    calibrate_batchnorm(model, _images((SIZE, SIZE, 3), n=64, seed=0))
    calibration = _images((SIZE, SIZE, 3), n=32, seed=2)
    int8, as_lce_wrote = _convert_both(model, calibration)
    return types.SimpleNamespace(model=model, calibration=calibration, int8=int8, as_lce_wrote=as_lce_wrote,
                                 reference=convert.int8_reference(model, calibration))


def test_lce_quantizes_the_input_then_pads_in_int8(alexnet):
    """What the conversion corrects (if a later LCE pads in float itself, the step is moot)."""
    ops = _graph(alexnet.as_lce_wrote)
    quantize, pad = ops[:2]
    assert (quantize.name, quantize.input_types, quantize.output_types) == ("QUANTIZE", ["FLOAT32"], ["INT8"])
    assert pad.name == "PAD" and pad.inputs[0] == quantize.outputs[0]
    assert pad.input_types[0] == pad.output_types[0] == "INT8"


def test_int8_alexnet_pads_in_float_then_quantizes(alexnet):
    _assert_pads_in_float_before_int8(alexnet.int8, pads=1)
    assert convert.op_histogram(alexnet.int8) == convert.op_histogram(alexnet.as_lce_wrote)
    assert convert.conversion_report(alexnet.model, alexnet.int8).int8_layers == ["conv1", "fc8"]


def test_int8_alexnet_computes_bit_for_bit_what_lce_wrote(alexnet):
    x = _images((SIZE, SIZE, 3), n=16, seed=3)
    np.testing.assert_array_equal(
        convert.run_flatbuffer(alexnet.int8, x), convert.run_flatbuffer(alexnet.as_lce_wrote, x)
    )


def test_int8_alexnet_computes_what_int8_reference_computes(alexnet):
    x = _images((SIZE, SIZE, 3), n=32, seed=4)
    expected = alexnet.reference(x, training=False).numpy()
    actual = convert.run_flatbuffer(alexnet.int8, x)
    # The rules of test_convert.py: the softmax is int8 (steps of 1/256), and an int8 activation
    # one step off (BatchNorm folded into the int8 conv) that crosses a sign threshold is
    # amplified by the binary layers; most samples agree to a few steps.
    per_sample = np.abs(actual - expected).max(axis=-1)
    assert np.mean(per_sample <= 3 / 256) >= 0.8, per_sample
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.9


def test_int8_alexnet_stem_is_int8_reference_to_one_step(alexnet):
    """input -> conv1_pad -> conv1 -> BN -> ReLU -> pool1 alone: no binary layer amplifies a step,
    so every output is the reference's, or one int8 step off (the BatchNorm folded into the conv)."""
    stem = tf.keras.Model(alexnet.model.input, alexnet.model.get_layer("pool1").output)
    int8 = convert.convert(stem, int8_float_layers=True, calibration_data=alexnet.calibration)
    _assert_pads_in_float_before_int8(int8, pads=1)
    (step,) = next(op for op in _graph(int8) if op.name == "MAX_POOL_2D").output_scales
    x = _images((SIZE, SIZE, 3), n=16, seed=5)
    reference = convert.int8_reference(stem, alexnet.calibration)
    diff = np.abs(convert.run_flatbuffer(int8, x) - reference(x, training=False).numpy())
    assert diff.max() <= 1.01 * step, (diff.max(), step)
    assert np.mean(diff == 0) >= 0.5


# --------------------------------------------------------------------------------------------
# Any ZeroPadding2D before an int8 layer, by structure, not name


@pytest.fixture(scope="module")
def small():
    """`x` padded asymmetrically into an int8 conv (`alone`: only the pad reads the quantized
    input, so the PAD moves) and the same with a second conv reading `x` unpadded (`shared`:
    the quantized input has two readers, so the PAD stays int8: moving it would quantize twice)."""
    tf.keras.utils.set_random_seed(1)
    x = tf.keras.Input((9, 10, 4), name="x")
    padded = L.Conv2D(5, 3, name="c_padded")(L.ZeroPadding2D(((1, 2), (0, 3)), name="edge")(x))
    alone = tf.keras.Model(x, L.Flatten(name="flat")(padded))
    plain = L.Conv2D(5, 3, padding="same", name="c_plain")(x)
    shared = tf.keras.Model(x, L.Concatenate(name="join")([L.Flatten()(padded), L.Flatten()(plain)]))
    calibration = _images((9, 10, 4), n=16, seed=6)
    return types.SimpleNamespace(
        alone=alone, shared=shared, calibration=calibration,
        alone_fb=_convert_both(alone, calibration), shared_fb=_convert_both(shared, calibration),
    )


def test_any_zero_padding_before_an_int8_conv_pads_in_float(small):
    int8, as_lce_wrote = small.alone_fb
    _assert_pads_in_float_before_int8(int8, pads=1)
    x = _images((9, 10, 4), n=16, seed=8)
    actual = convert.run_flatbuffer(int8, x)
    np.testing.assert_array_equal(actual, convert.run_flatbuffer(as_lce_wrote, x))
    # No BatchNorm to fold: the int8 conv's output is the reference's, up to one int8 step.
    (step,) = next(op for op in _graph(int8) if op.name == "CONV_2D").output_scales
    reference = convert.int8_reference(small.alone, small.calibration)
    assert np.abs(actual - reference(x, training=False).numpy()).max() <= 1.01 * step


def test_a_shared_quantized_input_keeps_its_int8_pad(small):
    int8, as_lce_wrote = small.shared_fb
    assert int8 == as_lce_wrote
    ops = _graph(int8)
    (pad,) = [op for op in ops if op.name == "PAD"]
    assert pad.input_types[0] == "INT8" and len(_readers(ops, pad.inputs[0])) == 2
