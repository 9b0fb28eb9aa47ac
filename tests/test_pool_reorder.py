"""Max-pools between a binary conv and the next sign's BatchNorm, computed after it (issue 19).

XNOR AlexNet's pool2 and pool5 sit between a binary conv and a BatchNorm that only feeds signs.
The converter computes them after that BatchNorm (``convert.prepare._pool_after_batchnorm``):
exactly the same numbers, since a BatchNorm with positive scales is non-decreasing, but LCE then
fuses the BatchNorm into the conv and pools bits (``LceBMaxPool2d``). The oracles: the same model
converted without the move (bit-for-bit equal outputs, its operators), the Keras model, LCE's
interpreter, and the emulated arm64 target. One small XNORAlexNet is built for the module.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import convert, zoo
from xnor_keras import layers as xl
from xnor_keras.convert import int8 as convert_int8
from xnor_keras.convert.prepare import _pool_after_batchnorm
from xnor_lite.emulate import missing_host_tools

SHAPE = (67, 67, 3)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def _randomize_batchnorms(model: tf.keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.3, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))


def _op_counts(flatbuffer: bytes) -> collections.Counter:
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())


@pytest.fixture(scope="module")
def alexnet():
    tf.keras.utils.set_random_seed(0)
    model = zoo.XNORAlexNet(input_shape=SHAPE, classes=10, weights=None, pad_values=1.0,
                            classifier_activation=None)
    _randomize_batchnorms(model, seed=0)
    return model


@pytest.fixture(scope="module")
def converted(alexnet):
    """Flatbuffers with the move and without it (the oracle), float and int8 first/last layers."""
    calibration = _images(16, seed=1)
    out = {"float": convert.convert(alexnet),
           "int8": convert.convert(alexnet, int8_float_layers=True, calibration_data=calibration)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert_int8, "_pool_after_batchnorm", lambda model: 0)
        out["float_unmoved"] = convert.convert(alexnet)
        out["int8_unmoved"] = convert.convert(alexnet, int8_float_layers=True, calibration_data=calibration)
    return out


def test_only_the_pools_after_binary_convs_move(alexnet):
    copy = convert.inference_copy(alexnet)
    assert _pool_after_batchnorm(copy) == 2
    moved = [layer.name for layer in copy.layers if "call" in vars(layer)]
    # pool1 follows the float conv1 (BN -> ReLU): moving it would only enlarge the BatchNorm's map
    assert moved == ["pool2", "conv3_bn", "pool5", "fc6_bn"]


@pytest.mark.parametrize("form", ["float", "int8"])
def test_binary_max_pools_replace_the_float_ones_with_the_same_outputs(converted, form):
    moved, unmoved = _op_counts(converted[form]), _op_counts(converted[f"{form}_unmoved"])
    assert unmoved["LceBMaxPool2d"] == 0 and moved["LceBMaxPool2d"] == 2
    assert moved["MAX_POOL_2D"] == unmoved["MAX_POOL_2D"] - 2
    # conv3_bn and fc6_bn fuse into the binary convs before the pools, with the signs after them
    assert moved["MUL"] == unmoved["MUL"] - 2 and moved["ADD"] == unmoved["ADD"] - 2
    assert moved["LceQuantize"] == unmoved["LceQuantize"] - 2
    x = _images(8, seed=2)
    np.testing.assert_array_equal(convert.run_flatbuffer(converted[form], x),
                                  convert.run_flatbuffer(converted[f"{form}_unmoved"], x))


def test_moved_flatbuffer_verifies_against_keras(alexnet, converted):
    report = convert.verify(alexnet, converted["float"], _images(8, seed=3))
    assert report.max_rel_diff <= 1e-4 and report.top1_agreement == 1.0


def test_a_batchnorm_with_a_negative_scale_keeps_its_pool():
    """max(bn(x)) == bn(max(x)) needs a non-decreasing BatchNorm: a negative gamma turns the
    max into a min, so the pool must stay before it."""
    inputs = tf.keras.Input((8, 8, 4))
    x = xl.XNORConv2D(4, 3, padding="same", pad_values=1.0, name="a")(inputs)
    x = tf.keras.layers.MaxPool2D(2, name="pool")(x)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = xl.XNORConv2D(4, 3, padding="same", pad_values=1.0, name="b")(x)
    model = tf.keras.Model(inputs, x)
    model.get_layer("bn").gamma.assign([1.0, -1.0, 1.0, 1.0])
    assert _pool_after_batchnorm(convert.inference_copy(model)) == 0
    model.get_layer("bn").gamma.assign([1.0, 0.5, 1.0, 1.0])
    assert _pool_after_batchnorm(convert.inference_copy(model)) == 1


@pytest.mark.skipif(bool(missing_host_tools()), reason=f"needs Debian packages {missing_host_tools()}")
def test_binary_max_pools_give_the_same_outputs_on_arm64(converted):
    from xnor_keras.convert.runtime import arm64_target

    x = _images(4, seed=4)
    target = arm64_target()
    np.testing.assert_array_equal(target.predict(converted["float"], x),
                                  target.predict(converted["float_unmoved"], x))
