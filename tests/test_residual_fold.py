"""Folding the BatchNorms after XNOR ResNets' residual additions into biases (issue 19).

A BatchNorm between a residual ``Add`` and the XNOR layers that take its sign is a float MUL and
ADD over the whole map on LCE; the converter carries its threshold along the residual stream as
biases instead (``convert.prepare._fold_residual_batchnorms``). The oracles are independent of
that code: the original Keras model (its outputs and the signs entering every binary layer), the
same model converted without the fold (its operators, attributed to layers by tensor name), LCE's
interpreter, and the emulated arm64 target. One small model is built for the module.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import convert, zoo
from xnor_keras import layers as xl
from xnor_keras.convert import int8 as convert_int8
from xnor_keras.convert.flatbuffer import _ops_by_layer
from xnor_keras.convert.prepare import _fold_residual_batchnorms
from xnor_keras.testing_utils import calibrate_batchnorm
from xnor_lite.emulate import missing_host_tools

SHAPE = (32, 32, 3)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


def _randomize_batchnorms(model: tf.keras.Model, seed: int) -> None:
    """Calibrated statistics, then means moved by up to ~1 std and variances scaled by 0.5-2:
    thresholds far from 0 and from one another, so the fold has something to carry."""
    calibrate_batchnorm(model, _images(16, seed))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            std = np.sqrt(np.asarray(layer.moving_variance) + layer.epsilon)
            shift = 0.5 * std * rng.standard_normal(std.shape)
            layer.moving_mean.assign(np.asarray(layer.moving_mean) + shift)
            layer.moving_variance.assign(np.asarray(layer.moving_variance) * rng.uniform(0.5, 2.0, std.shape))


def _residual_sign_batchnorms(model: tf.keras.Model) -> list[str]:
    """BatchNorms whose input is an Add and whose every consumer is an XNOR layer, read from the
    graph of `model`."""
    found = []
    for layer in model.layers:
        if not isinstance(layer, tf.keras.layers.BatchNormalization):
            continue
        producer = layer.inbound_nodes[0].inbound_layers
        consumers = [node.outbound_layer for node in layer.outbound_nodes]
        if isinstance(producer, tf.keras.layers.Add) and all(
            isinstance(c, (xl.XNORConv2D, xl.XNORDense)) for c in consumers
        ):
            found.append(layer.name)
    return found


def _sign_inputs(model: tf.keras.Model, names: list[str], x: np.ndarray) -> list[np.ndarray]:
    probe = tf.keras.Model(model.inputs, [model.get_layer(name).input for name in names])
    return [np.asarray(v) for v in probe(x, training=False)]


@pytest.fixture(scope="module")
def resnet():
    """XNORResNet18 at 32x32 (logits out, pad_values=1 as on ARM) with randomized statistics."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.XNORResNet18(
        input_shape=SHAPE, classes=10, weights=None, pad_values=1.0, classifier_activation=None
    )
    _randomize_batchnorms(model, seed=0)
    return model


@pytest.fixture(scope="module")
def converted(resnet):
    """Flatbuffers, float and int8_float_layers, with the fold and without it (the oracle's)."""
    calibration = _images(16, seed=1)
    int8 = dict(int8_float_layers=True, calibration_data=calibration)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert_int8, "_fold_residual_batchnorms", lambda model: 0)
        unfolded = convert.convert(resnet)
        unfolded_int8 = convert.convert(resnet, **int8)
        unfolded_reference = convert.int8_reference(resnet, calibration)
    return {
        "unfolded": unfolded,
        "unfolded_int8": unfolded_int8,
        "unfolded_int8_reference": unfolded_reference,
        "float": convert.convert(resnet),
        "int8": convert.convert(resnet, **int8),
        "calibration": calibration,
    }


def test_the_pattern_is_every_residual_block_but_the_first(resnet):
    folded = _residual_sign_batchnorms(resnet)
    # The first block's BatchNorm follows the stem's ReLU -> max-pool, not an Add.
    assert len(folded) == 7 and "conv2_block1_1_bn" not in folded and "conv3_block1_1_bn" in folded
    assert _fold_residual_batchnorms(convert.inference_copy(resnet)) == 7


def test_prepared_copy_computes_what_the_model_computes(resnet):
    copy = convert_int8._prepared_copy(resnet)
    for seed in (2, 3):
        x = _images(8, seed)
        expected = resnet(x, training=False).numpy()
        actual = copy(x, training=False).numpy()
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
        np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))


def test_prepared_copy_takes_the_same_sign_into_every_binary_layer(resnet):
    copy = convert_int8._prepared_copy(resnet)
    names = [layer.name for layer in resnet.layers if isinstance(layer, xl.XNORConv2D)]
    assert len(names) == 16
    x = _images(8, seed=4)
    for name, a, b in zip(names, _sign_inputs(resnet, names, x), _sign_inputs(copy, names, x)):
        np.testing.assert_array_equal(a >= 0, b >= 0, err_msg=name)
    # ... and the copy really skips the folded BatchNorms: what enters their XNOR layers is the
    # residual stream minus the moving mean (these BatchNorms have no affine parameters).
    folded = _residual_sign_batchnorms(resnet)
    consumers = [resnet.get_layer(bn).outbound_nodes[0].outbound_layer.name for bn in folded]
    streams = _sign_inputs(resnet, folded, x)  # the inputs of the BatchNorms: the Add outputs
    for bn, stream, carried in zip(folded, streams, _sign_inputs(copy, consumers, x)):
        expected = stream - resnet.get_layer(bn).moving_mean.numpy()
        np.testing.assert_allclose(carried, expected, rtol=0, atol=1e-5 * np.abs(expected).max(), err_msg=bn)


def test_folding_a_prepared_copy_again_changes_nothing(resnet):
    """verify() prepares its model again (the int8 reference, in the CLI): the copy of a copy
    computes the same function."""
    copy = convert_int8._prepared_copy(resnet)
    again = convert_int8._prepared_copy(copy)
    x = _images(8, seed=5)
    np.testing.assert_allclose(again(x, training=False), copy(x, training=False), rtol=0, atol=1e-5)


def test_flatbuffer_has_no_ops_of_the_folded_batchnorms(resnet, converted):
    folded = _residual_sign_batchnorms(resnet)
    before, after = _ops_by_layer(converted["unfolded"]), _ops_by_layer(converted["float"])
    for name in folded:
        assert sorted(before[name]) == ["ADD", "MUL"], name  # what the oracle's conversion shows
        assert name not in after, (name, after.get(name))
    unfolded = convert.op_histogram(converted["unfolded"])
    folded_ops = convert.op_histogram(converted["float"])
    assert unfolded["MUL"] - folded_ops["MUL"] == len(folded)
    assert unfolded["ADD"] - folded_ops["ADD"] == len(folded)
    # The biases fused into the binary convolutions: no other op came or went.
    assert folded_ops["LceBconv2d"] == unfolded["LceBconv2d"] == 16
    rest = lambda h: {k: v for k, v in h.items() if k not in ("MUL", "ADD")}  # noqa: E731
    assert rest(folded_ops) == rest(unfolded)
    # What remains: the 8 residual adds, and the two BatchNorms that do not follow an Add.
    adds = [layer.name for layer in resnet.layers if isinstance(layer, tf.keras.layers.Add)]
    assert folded_ops["ADD"] == len(adds) + 2 and folded_ops["MUL"] == 2
    assert sorted(after["conv2_block1_1_bn"]) == ["ADD", "MUL"] and set(after["post_bn"]) == {"ADD", "MUL"}


def test_folded_flatbuffer_verifies_against_keras(resnet, converted):
    v = convert.verify(resnet, converted["float"], _images(8, seed=6))
    assert v.passed, v.explanation
    assert v.max_rel_diff <= 1e-4 and v.top1_agreement == 1.0 and v.tie_signs == 0


def test_int8_float_layers_flatbuffer_is_folded_too(resnet, converted):
    folded = _residual_sign_batchnorms(resnet)
    ops = _ops_by_layer(converted["int8"])
    assert not set(folded) & set(ops)
    histogram = convert.op_histogram(converted["int8"])
    float_histogram = convert.op_histogram(converted["float"])
    assert (histogram["MUL"], histogram["ADD"]) == (float_histogram["MUL"], float_histogram["ADD"])
    assert histogram["LceBconv2d"] == 16
    report = convert.conversion_report(resnet, converted["int8"])
    shortcuts = [layer.name for layer in resnet.layers if layer.name.endswith("_0_conv")]
    assert set(shortcuts) <= set(report.int8_layers)


def _int8_input_range(flatbuffer: bytes, layer: str) -> tuple[float, float, float]:
    """(low, high, step) of the int8 input of `layer`'s CONV_2D, from the flatbuffer."""
    from xnor_keras.convert.flatbuffer import _op_name, _schema_model, _tensor_layers

    schema, model = _schema_model(flatbuffer)
    graph = model.subgraphs[0]
    for op in graph.operators:
        if _op_name(schema, model, op) != "CONV_2D":
            continue
        if _tensor_layers(graph.tensors[op.inputs[1]].name)[:1] == [layer]:
            q = graph.tensors[op.inputs[0]].quantization
            step, zero = float(q.scale[0]), int(q.zeroPoint[0])
            return step * (-128 - zero), step * (127 - zero), step
    raise AssertionError(f"no CONV_2D for {layer}")


def test_int8_shortcuts_are_calibrated_on_the_folded_stream(resnet, converted):
    """The int8 range of the first projection shortcut's input is that of the folded stream
    (s - t), not the original one (s). Later shortcuts see the int8 stem's rounding move signs,
    which an untrained net amplifies, so only the first is compared."""
    name = "conv3_block1_0_conv"
    low, high, step = _int8_input_range(converted["int8"], name)
    calibration = converted["calibration"]
    folded = _sign_inputs(convert_int8._prepared_copy(resnet), [name, name], calibration)[0]
    original = _sign_inputs(resnet, [name, name], calibration)[0]
    assert abs(low - min(0.0, folded.min())) <= 3 * step and abs(high - max(0.0, folded.max())) <= 3 * step
    assert max(abs(low - min(0.0, original.min())), abs(high - max(0.0, original.max()))) > 10 * step
    unfolded_low, unfolded_high, unfolded_step = _int8_input_range(converted["unfolded_int8"], name)
    assert abs(unfolded_low - min(0.0, original.min())) <= 3 * unfolded_step


def test_int8_float_layers_flatbuffer_computes_what_int8_reference_computes(resnet, converted):
    """As verify() judges int8 (the CLI's call): top-1 agreement with the int8 reference, here
    the folded, fake-quantized copy. On an untrained XNOR net int8 rounding moves signs that the
    16 binary layers amplify, so the bar is the conversion without the fold, on the same inputs."""
    x = _images(64, seed=7)

    def agreement(flatbuffer, reference):
        expected = reference(x, training=False).numpy()
        return float(np.mean(convert.run_flatbuffer(flatbuffer, x).argmax(-1) == expected.argmax(-1)))

    reference = convert.int8_reference(resnet, converted["calibration"])
    bar = agreement(converted["unfolded_int8"], converted["unfolded_int8_reference"]) - 0.05
    assert bar >= 0.7  # the oracle itself is not broken
    v = convert.verify(reference, converted["int8"], x, rtol=0.1, min_agreement=bar, lossy=True)
    assert v.passed, v.explanation
    assert agreement(converted["int8"], reference) == v.top1_agreement


@pytest.mark.parametrize(
    "build",
    [
        lambda: zoo.BWNResNet18(input_shape=SHAPE, classes=10),
        lambda: zoo.ResNet18(input_shape=SHAPE, classes=10),
        lambda: zoo.XNORResNet18(input_shape=SHAPE, classes=10, input_scaling="K"),
    ],
    ids=["BWNResNet18", "ResNet18", "XNORResNet18-K"],
)
def test_models_without_plain_signs_after_adds_are_untouched(build):
    """BWN and float ResNets put a ReLU after the BatchNorm; with K scaling the XNOR layers do
    not take a plain sign. Nothing may change."""
    model = build()
    _randomize_batchnorms(model, seed=8)
    copy = convert.inference_copy(model)
    weights = [w.copy() for w in copy.get_weights()]
    assert _fold_residual_batchnorms(copy) == 0
    assert len(copy.get_weights()) == len(weights)
    for after, before in zip(copy.get_weights(), weights):
        np.testing.assert_array_equal(after, before)
    assert not any("call" in vars(layer) for layer in copy.layers)


@pytest.mark.skipif(bool(missing_host_tools()), reason=f"needs Debian packages {missing_host_tools()}")
def test_folded_flatbuffer_gives_the_same_outputs_on_arm64(resnet, converted):
    from xnor_keras.convert.runtime import arm64_target

    x = _images(4, seed=9)
    arm = arm64_target().predict(converted["float"], x)
    host = convert.run_flatbuffer(converted["float"], x)
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-5 * max(1.0, float(np.abs(host).max())))
    keras = resnet(x, training=False).numpy()
    np.testing.assert_allclose(arm, keras, rtol=0, atol=1e-4 * float(np.abs(keras).max()))
