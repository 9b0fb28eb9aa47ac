"""Tests for :mod:`xnor_keras.layers`: XNOR / BWN convolution and dense layers.

Every numeric check compares a layer with an independent numpy oracle built from the paper's
math (:mod:`xnor_keras.testing_utils`), never with the library's own TensorFlow code:

* XNOR conv: ``sign(x) (*) (alpha * sign(W))`` (arXiv:1603.05279 section 3.2), optionally times
  K (eq. 11); BWN conv: ``x * (alpha * sign(W))`` (section 3.1, eq. 4-6).
* Dense layers: ``sign(x) @ (alpha * sign(W))``, times beta = mean|x| with ``input_scaling="K"``.

alpha is always computed in numpy from the *latent* kernel (``layer.get_weights()``), and inputs
contain exact zeros so that ``sign(0) = +1`` is exercised. The file also covers argument
validation, config round trips, the default weight clip, a compiled (XLA) and a mixed-precision
training step, and the Larq Compute Engine conversion run on LCE's interpreter.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import BWNConv2D, BWNDense, XNORConv2D, XNORDense
from xnor_keras.testing_utils import (
    assert_config_roundtrip,
    numpy_conv2d,
    numpy_input_scale,
    numpy_sign,
    tflite_op_names,
)

# float32 layer vs float64 oracle: sums of at most a few hundred terms of size ~1.
RTOL = 1e-5
ATOL = 1e-5

CONV_CASES = [
    # (kernel_size, strides, padding, pad_values, dilation_rate)
    pytest.param(3, 1, "valid", 0.0, 1, id="k3-s1-valid"),
    pytest.param(3, 2, "valid", 0.0, 1, id="k3-s2-valid"),
    pytest.param(3, 1, "valid", 0.0, 2, id="k3-d2-valid"),
    pytest.param(3, 1, "same", 0.0, 1, id="k3-s1-same-pad0"),
    pytest.param(3, 1, "same", 1.0, 1, id="k3-s1-same-pad1"),
    pytest.param(3, 2, "same", 0.0, 1, id="k3-s2-same-pad0"),
    pytest.param(3, 2, "same", 1.0, 1, id="k3-s2-same-pad1"),
    pytest.param(3, 1, "same", 0.0, 2, id="k3-d2-same-pad0"),
    pytest.param(3, 1, "same", 1.0, 2, id="k3-d2-same-pad1"),
    pytest.param((1, 3), 1, "valid", 0.0, 1, id="k1x3-s1-valid"),
    pytest.param((1, 3), 2, "same", 0.0, 1, id="k1x3-s2-same-pad0"),
    pytest.param((1, 3), 1, "same", 1.0, 1, id="k1x3-s1-same-pad1"),
]


# --------------------------------------------------------------------------------------------
# Helpers


def _input_with_zeros(rng, shape, zero_fraction=0.25) -> np.ndarray:
    """Standard normal input with a fraction of exact zeros (sign(0) must be +1)."""
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < zero_fraction] = 0.0
    return x


def _set_random_weights(layer, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """Give a built layer a random latent kernel in [-1, 1] (one exact 0) and a random bias."""
    weights = layer.get_weights()
    kernel = rng.uniform(-1.0, 1.0, weights[0].shape).astype(np.float32)
    kernel.flat[0] = 0.0
    bias = rng.standard_normal(weights[1].shape).astype(np.float32) if layer.use_bias else None
    layer.set_weights([kernel] if bias is None else [kernel, bias])
    return kernel, bias


def _binary_kernel(latent: np.ndarray) -> np.ndarray:
    """alpha * sign(W), alpha = mean |W| per output channel (paper eq. 6), in numpy."""
    alpha = np.abs(latent.astype(np.float64)).mean(axis=tuple(range(latent.ndim - 1)))
    return alpha * numpy_sign(latent.astype(np.float64))


def _latent_kernel(layer) -> np.ndarray:
    # Read outside larq's quantized scope: get_weights() returns the latent (real) variable.
    return layer.get_weights()[0]


def _finish(y: np.ndarray, bias: np.ndarray | None, activation: str | None) -> np.ndarray:
    if bias is not None:
        y = y + bias
    if activation == "relu":
        y = np.maximum(y, 0.0)
    return y


def _run_conv(layer_cls, x, rng, **kwargs):
    layer = layer_cls(**kwargs)
    layer(x)  # build
    _, bias = _set_random_weights(layer, rng)
    return layer, layer(x).numpy(), bias


# --------------------------------------------------------------------------------------------
# 1-2. XNORConv2D against the numpy oracle


@pytest.mark.parametrize("kernel_size, strides, padding, pad_values, dilation_rate", CONV_CASES)
def test_xnor_conv2d_matches_numpy(rng, kernel_size, strides, padding, pad_values, dilation_rate):
    x = _input_with_zeros(rng, (2, 7, 9, 5))
    layer, y, _ = _run_conv(
        XNORConv2D,
        x,
        rng,
        filters=4,
        kernel_size=kernel_size,
        strides=strides,
        padding=padding,
        pad_values=pad_values,
        dilation_rate=dilation_rate,
    )
    expected = numpy_conv2d(
        numpy_sign(x),
        _binary_kernel(_latent_kernel(layer)),
        strides,
        padding,
        dilation_rate,
        pad_value=pad_values,
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)
    # Training computes pad_values != 0 another way (zero padding + the border's contribution).
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape, strides, input_scaling", [
    ((3, 1, 1, 6), 1, None), ((3, 2, 2, 6), 2, None), ((3, 7, 6, 5), 2, "K"), ((3, 5, 5, 5), 1, "K"),
])
def test_xnor_conv2d_pad1_trains_with_larqs_outputs_and_gradients(rng, shape, strides, input_scaling):
    """The training path for pad_values=1 gives the inference path's (larq's) outputs exactly, and its gradients."""
    x = tf.constant(_input_with_zeros(rng, shape))
    layer = XNORConv2D(4, 3, strides=strides, padding="same", pad_values=1.0, input_scaling=input_scaling)
    layer(x)
    _set_random_weights(layer, rng)
    results = []
    for training in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * tf.sin(y))
        results.append((y.numpy(), [g.numpy() for g in tape.gradient(loss, [x, layer.kernel])]))
    (y_inference, grads_inference), (y_training, grads_training) = results
    np.testing.assert_array_equal(y_training, y_inference)  # integer sums: bit for bit
    for g_training, g_inference in zip(grads_training, grads_inference):
        np.testing.assert_allclose(g_training, g_inference, rtol=RTOL, atol=ATOL)


def test_xnor_conv2d_pad_values_change_the_output(rng):
    """pad 0 and pad +1 are different functions at the border (and only there)."""
    x = _input_with_zeros(rng, (1, 7, 9, 5))
    layer0 = XNORConv2D(4, 3, padding="same", pad_values=0.0)
    layer1 = XNORConv2D(4, 3, padding="same", pad_values=1.0)
    layer0(x), layer1(x)
    kernel, _ = _set_random_weights(layer0, rng)
    layer1.set_weights([kernel])
    y0, y1 = layer0(x).numpy(), layer1(x).numpy()
    np.testing.assert_allclose(y0[:, 1:-1, 1:-1], y1[:, 1:-1, 1:-1], rtol=RTOL, atol=ATOL)
    assert not np.allclose(y0, y1)


def test_xnor_conv2d_bias_and_activation(rng):
    x = _input_with_zeros(rng, (2, 8, 8, 5))
    layer, y, bias = _run_conv(
        XNORConv2D,
        x,
        rng,
        filters=6,
        kernel_size=3,
        padding="same",
        use_bias=True,
        activation="relu",
    )
    conv = numpy_conv2d(numpy_sign(x), _binary_kernel(_latent_kernel(layer)), padding="same")
    expected = _finish(conv, bias, "relu")
    assert (expected == 0).any() and (expected > 0).any()  # the relu really does something
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("use_bias, activation", [(False, None), (True, "relu")])
def test_xnor_conv2d_equals_plain_conv2d_on_sign_x(rng, use_bias, activation):
    """The layer oracle from STYLE.md: a float Conv2D with kernel alpha*sign(W) on sign(x)."""
    x = _input_with_zeros(rng, (2, 8, 8, 5))
    layer, y, bias = _run_conv(
        XNORConv2D, x, rng, filters=4, kernel_size=3, use_bias=use_bias, activation=activation
    )
    plain = tf.keras.layers.Conv2D(4, 3, padding="valid", use_bias=use_bias, activation=activation)
    plain.build(x.shape)
    kernel = _binary_kernel(_latent_kernel(layer)).astype(np.float32)
    plain.set_weights([kernel] if bias is None else [kernel, bias])
    np.testing.assert_allclose(y, plain(numpy_sign(x)).numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "strides, padding, pad_values, dilation_rate, use_bias, activation",
    [
        pytest.param(1, "valid", 0.0, 1, False, None, id="s1-valid"),
        pytest.param(2, "valid", 0.0, 1, True, "relu", id="s2-valid-bias-relu"),
        pytest.param(1, "valid", 0.0, 2, False, None, id="d2-valid"),
        pytest.param(1, "same", 0.0, 1, True, "relu", id="s1-same-pad0-bias-relu"),
        pytest.param(2, "same", 0.0, 1, False, None, id="s2-same-pad0"),
        pytest.param(1, "same", 0.0, 2, True, None, id="d2-same-pad0-bias"),
        pytest.param(1, "same", 1.0, 1, True, "relu", id="s1-same-pad1-bias-relu"),
        pytest.param(2, "same", 1.0, 1, False, None, id="s2-same-pad1"),
        pytest.param(1, "same", 1.0, 2, False, "relu", id="d2-same-pad1-relu"),
    ],
)
def test_xnor_conv2d_input_scaling_k_matches_eq11(
    rng, strides, padding, pad_values, dilation_rate, use_bias, activation
):
    """y = (sign(x) (*) alpha sign(W)) * K + b, K from the *real* x with zero padding (eq. 11)."""
    x = _input_with_zeros(rng, (2, 7, 9, 5))
    # Make |x| vary strongly over space so a wrong K (shape, offset, padding) cannot slip by.
    x *= np.linspace(0.1, 3.0, 9, dtype=np.float32)[None, None, :, None]
    layer, y, bias = _run_conv(
        XNORConv2D,
        x,
        rng,
        filters=4,
        kernel_size=3,
        strides=strides,
        padding=padding,
        pad_values=pad_values,
        dilation_rate=dilation_rate,
        input_scaling="K",
        use_bias=use_bias,
        activation=activation,
    )
    conv = numpy_conv2d(
        numpy_sign(x),
        _binary_kernel(_latent_kernel(layer)),
        strides,
        padding,
        dilation_rate,
        pad_value=pad_values,
    )
    k = numpy_input_scale(x, 3, strides, padding, dilation_rate)
    assert k.shape == conv.shape[:-1] + (1,)
    expected = _finish(conv * k, bias, activation)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# 3. BWNConv2D and the dense layers


@pytest.mark.parametrize(
    "strides, padding, dilation_rate",
    [(1, "valid", 1), (2, "same", 1), (1, "same", 2)],
)
def test_bwn_conv2d_matches_numpy_on_real_input(rng, strides, padding, dilation_rate):
    x = _input_with_zeros(rng, (2, 7, 9, 5))
    layer, y, bias = _run_conv(
        BWNConv2D,
        x,
        rng,
        filters=4,
        kernel_size=3,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=True,
    )
    conv = numpy_conv2d(x, _binary_kernel(_latent_kernel(layer)), strides, padding, dilation_rate)
    expected = _finish(conv, bias, None)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("input_shape", [(3, 7), (2, 5, 7)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    "layer_cls, input_scaling",
    [(XNORDense, None), (XNORDense, "K"), (BWNDense, None)],
    ids=["xnor", "xnor-K", "bwn"],
)
def test_dense_matches_numpy(rng, layer_cls, input_scaling, input_shape):
    x = _input_with_zeros(rng, input_shape)
    layer = layer_cls(6, input_scaling=input_scaling, use_bias=True, activation="relu")
    layer(x)
    _, bias = _set_random_weights(layer, rng)
    assert layer.kernel.shape == (7, 6)  # Dense's (in, units), though computed as a 1x1 conv
    y = layer(x).numpy()

    x64 = x.astype(np.float64)
    inputs = numpy_sign(x64) if layer_cls is XNORDense else x64
    out = inputs @ _binary_kernel(_latent_kernel(layer))
    if input_scaling == "K":
        out = out * np.abs(x64).mean(axis=-1, keepdims=True)  # beta, one per example (and step)
    expected = _finish(out, bias, "relu")
    assert y.shape == input_shape[:-1] + (6,)
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layer_cls", [XNORDense, BWNDense])
def test_dense_static_output_shape(layer_cls):
    inputs = tf.keras.Input((5, 7))
    outputs = layer_cls(6)(inputs)
    assert outputs.shape.as_list() == [None, 5, 6]
    assert layer_cls(6).compute_output_shape((None, 5, 7)).as_list() == [None, 5, 6]


@pytest.mark.parametrize("layer_cls", [XNORConv2D, BWNConv2D])
@pytest.mark.parametrize(
    "padding, strides, expected", [("valid", 1, [None, 5, 7, 4]), ("same", 2, [None, 4, 5, 4])]
)
def test_conv_static_output_shape(layer_cls, padding, strides, expected):
    outputs = layer_cls(4, 3, strides=strides, padding=padding)(tf.keras.Input((7, 9, 5)))
    assert outputs.shape.as_list() == expected


# --------------------------------------------------------------------------------------------
# 4. Argument validation


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(
            lambda: BWNConv2D(4, 3, input_scaling="K"), "input_scaling='K'", id="bwn-conv-K"
        ),
        pytest.param(
            lambda: BWNDense(4, input_scaling="K"), "input_scaling='K'", id="bwn-dense-K"
        ),
        pytest.param(
            lambda: BWNConv2D(4, 3, padding="same", pad_values=1.0),
            "pad_values=1.0",
            id="bwn-pad-values",
        ),
        pytest.param(
            lambda: XNORConv2D(4, 3, input_scaling="beta"),
            "input_scaling='beta'",
            id="scaling-beta",
        ),
        pytest.param(
            lambda: XNORConv2D(4, 3, weight_gradient="bogus"),
            "weight_gradient='bogus'",
            id="weight-gradient",
        ),
        pytest.param(lambda: XNORConv2D(4, 3, clip_value=0), "clip_value=0", id="clip-0"),
        pytest.param(
            lambda: XNORConv2D(4, 3, input_quantizer="ste_sign"),
            "input_quantizer='ste_sign'",
            id="input-quantizer",
        ),
        pytest.param(
            lambda: XNORDense(4, kernel_quantizer="ste_sign"),
            "kernel_quantizer='ste_sign'",
            id="kernel-quantizer",
        ),
        pytest.param(
            lambda: XNORConv2D(4, 3, input_scaling="K", data_format="channels_first"),
            "data_format='channels_first'",
            id="K-channels-first",
        ),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_xnor_conv2d_rejects_3d_input():
    with pytest.raises(ValueError, match=r"ndim=3.*\(2, 8, 3\)"):
        XNORConv2D(4, 3)(tf.zeros((2, 8, 3)))


def test_xnor_conv2d_build_names_the_wrong_shape():
    # Keras' input spec (min_ndim=4) catches 3-D inputs on call; build itself rejects 5-D ones.
    with pytest.raises(ValueError, match=r"4 dimensions.*\(2, 3, 8, 8, 3\)"):
        XNORConv2D(4, 3).build((2, 3, 8, 8, 3))


# --------------------------------------------------------------------------------------------
# 5. Config round trip


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(lambda: XNORConv2D(4, 3), id="xnor-conv-default"),
        pytest.param(
            lambda: XNORConv2D(
                4,
                (1, 3),
                padding="same",
                pad_values=1.0,
                input_scaling="K",
                weight_gradient="ste",
                clip_value=0.5,
                use_bias=True,
                dilation_rate=2,
            ),
            id="xnor-conv-custom",
        ),
        pytest.param(lambda: BWNConv2D(4, 3), id="bwn-conv-default"),
        pytest.param(
            lambda: BWNConv2D(
                4,
                3,
                padding="same",
                weight_gradient="autodiff",
                clip_value=0.5,
                use_bias=True,
            ),
            id="bwn-conv-custom",
        ),
        pytest.param(lambda: XNORDense(4), id="xnor-dense-default"),
        pytest.param(
            lambda: XNORDense(
                4, input_scaling="K", weight_gradient="ste", clip_value=0.5, use_bias=True
            ),
            id="xnor-dense-custom",
        ),
        pytest.param(lambda: BWNDense(4), id="bwn-dense-default"),
        pytest.param(
            lambda: BWNDense(4, weight_gradient="ste", clip_value=0.5, use_bias=True),
            id="bwn-dense-custom",
        ),
    ],
)
def test_config_roundtrip(layer):
    layer = layer()
    assert_config_roundtrip(layer)
    config = layer.get_config()
    assert "input_quantizer" not in config
    assert "kernel_quantizer" not in config
    clone = type(layer).from_config(config)
    for key in ("input_scaling", "weight_gradient", "clip_value", "use_bias"):
        assert getattr(clone, key) == getattr(layer, key), key
    if hasattr(layer, "pad_values"):
        assert clone.pad_values == layer.pad_values


def test_config_keeps_non_default_settings():
    config = XNORConv2D(
        4,
        3,
        padding="same",
        pad_values=1.0,
        input_scaling="K",
        weight_gradient="ste",
        clip_value=0.5,
        use_bias=True,
    ).get_config()
    assert config["pad_values"] == 1.0
    assert config["input_scaling"] == "K"
    assert config["weight_gradient"] == "ste"
    assert config["clip_value"] == 0.5
    assert config["use_bias"] is True


# --------------------------------------------------------------------------------------------
# 6. Default kernel constraint


@pytest.mark.parametrize("clip_value", [1.0, 0.5])
def test_default_kernel_constraint_clips_latent_weights(rng, clip_value):
    conv = XNORConv2D(4, 3, clip_value=clip_value)
    dense = XNORDense(3, clip_value=clip_value)
    model = tf.keras.Sequential([tf.keras.Input((6, 6, 3)), conv, tf.keras.layers.Flatten(), dense])
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1e4), loss="mse")
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    y = 100 * rng.standard_normal((4, 3)).astype(np.float32)
    before = [layer.get_weights()[0] for layer in (conv, dense)]
    model.train_on_batch(x, y)
    for layer, old in zip((conv, dense), before):
        latent = layer.get_weights()[0]
        assert not np.array_equal(latent, old), layer.name
        assert np.abs(latent).max() <= clip_value + 1e-7, layer.name
        # The step was large enough to push weights out of the window: they sit on its edge.
        assert np.isclose(np.abs(latent), clip_value).any(), layer.name


# --------------------------------------------------------------------------------------------
# 7. Training


def _tiny_model() -> tf.keras.Model:
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization()(inputs)
    x = XNORConv2D(8, 3, padding="same")(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = XNORConv2D(8, 3, input_scaling="K")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = XNORDense(8)(x)
    outputs = BWNDense(4)(x)
    return tf.keras.Model(inputs, outputs)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_tiny_model_trains_one_step(rng, policy):
    tf.keras.mixed_precision.set_global_policy(policy)
    model = _tiny_model()  # after setting the policy, so the layers pick it up
    x = rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
    x[:, ::3, ::3, :] = 0.0
    y = rng.integers(0, 4, size=(8,))
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = loss_fn(y, tf.cast(outputs, tf.float32))
    grads = tape.gradient(loss, model.trainable_weights)
    expected_dtype = tf.float16 if policy == "mixed_float16" else tf.float32
    assert outputs.dtype == expected_dtype
    assert np.isfinite(outputs.numpy()).all()
    assert np.isfinite(loss.numpy())
    binary_layers = (XNORConv2D, XNORDense, BWNDense)
    kernel_ids = {id(layer.kernel) for layer in model.layers if isinstance(layer, binary_layers)}
    assert len(kernel_ids) == 4
    for grad, weight in zip(grads, model.trainable_weights):
        assert grad is not None, weight.name
        assert np.isfinite(grad.numpy()).all(), weight.name
        if id(weight) in kernel_ids:  # every binary kernel gets a learning signal
            assert np.any(grad.numpy() != 0), weight.name

    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), loss=loss_fn, jit_compile=True)
    before = [w.copy() for w in model.get_weights()]
    train_loss = model.train_on_batch(x, y)
    assert np.isfinite(train_loss)
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))


# --------------------------------------------------------------------------------------------
# 8. Larq Compute Engine conversion


@pytest.fixture(scope="module")
def converted():
    """One model with every layer kind, its flatbuffer and a test input (built once)."""
    lce = pytest.importorskip("larq_compute_engine")
    tf.keras.backend.clear_session()
    rng = np.random.default_rng(1)
    # No exact ties anywhere a sign is taken, so Keras and LCE binarize identically:
    # * the input is kept away from 0;
    # * conv1 (same, pad +1) sums 3*3*3 = 27 products of +-1: odd, never 0;
    # * conv2 (same, pad 0) sees nonzero inputs; its border outputs may be 0, but only GAP
    #   reads them, and GAP sums 7*7 interior positions with 9*5 = 45 (odd) terms each plus
    #   border positions with an even number of terms: an odd integer times alpha, never 0;
    # * the XNORDense sums 7 (odd) products. BWNDense takes real input.
    inputs = tf.keras.Input((9, 9, 3))
    x = XNORConv2D(5, 3, padding="same", pad_values=1.0, name="conv_pad1")(inputs)
    x = XNORConv2D(7, 3, padding="same", pad_values=0.0, name="conv_pad0")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = XNORDense(9, name="xnor_dense")(x)
    outputs = BWNDense(4, name="bwn_dense")(x)
    model = tf.keras.Model(inputs, outputs)
    for layer in model.layers[1:]:
        if layer.weights:
            shape = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(-1.0, 1.0, shape).astype(np.float32)])
    x_test = rng.uniform(0.2, 1.5, (3, 9, 9, 3)).astype(np.float32)
    x_test *= rng.choice(np.array([-1.0, 1.0], np.float32), x_test.shape)
    expected = model(x_test, training=False).numpy()
    flatbuffer = lce.convert_keras_model(model)
    return flatbuffer, x_test, expected


def test_lce_conversion_uses_binary_ops(converted):
    flatbuffer, _, _ = converted
    ops = tflite_op_names(flatbuffer)
    assert ops.count("LceBconv2d") == 3, ops  # both XNORConv2D and the XNORDense
    assert ops.count("CONV_2D") == 1, ops  # the BWNDense, as a float 1x1 convolution
    assert "FULLY_CONNECTED" not in ops, ops


def test_lce_interpreter_matches_keras(converted):
    import larq_compute_engine as lce

    flatbuffer, x_test, expected = converted
    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True)
    actual = np.asarray(interpreter.predict(x_test))
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("mode", ["paper", "ste", "autodiff"])
@pytest.mark.parametrize("layer_cls", [XNORConv2D, XNORDense])
def test_kernel_gradient_equals_the_quantizer_formula(layer_cls, mode):
    """The layer's fused binarization has the gradient of conv(sign(x), alpha * sign(W)).

    The reference composes `scaled_weight_sign`, whose gradients test_quantizers checks against
    numpy formulas, with a plain convolution / matmul.
    """
    from xnor_keras.quantizers import scaled_weight_sign

    rng = np.random.default_rng(3)
    if layer_cls is XNORConv2D:
        layer = XNORConv2D(6, 3, padding="same", weight_gradient=mode)
        x = tf.constant(rng.normal(size=(2, 5, 5, 4)), tf.float32)
    else:
        layer = XNORDense(6, weight_gradient=mode)
        x = tf.constant(rng.normal(size=(3, 8)), tf.float32)
    layer.build(x.shape)
    w = rng.uniform(-1.5, 1.5, size=layer.kernel.shape).astype(np.float32)  # some outside the clip
    layer.kernel.latent_variable.assign(w)
    dy = tf.constant(rng.normal(size=layer(x).shape), tf.float32)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * dy)
    got = tape.gradient(loss, layer.kernel.latent_variable)

    latent = tf.Variable(w)
    sign_x = tf.where(x >= 0, 1.0, -1.0)
    with tf.GradientTape() as tape:
        kernel = scaled_weight_sign(latent, mode)
        if layer_cls is XNORConv2D:
            out = tf.nn.conv2d(sign_x, kernel, 1, "SAME")
        else:
            out = tf.matmul(sign_x, kernel)
        ref_loss = tf.reduce_sum(out * dy)
    expected = tape.gradient(ref_loss, latent)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
