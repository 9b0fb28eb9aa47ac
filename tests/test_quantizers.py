"""Tests for :mod:`xnor_keras.quantizers` against independent numpy oracles.

Every expected value is written in numpy, either in :mod:`xnor_keras.testing_utils`
(``numpy_sign``, ``numpy_conv2d``, ``numpy_input_scale``) or as an explicit formula / loop in
this file; the TensorFlow code is never compared with itself. Gradients are taken with
``tf.GradientTape`` under a random upstream gradient, on inputs that include exact zeros (signed
and unsigned), values exactly at the clip, just inside and just outside it, and values beyond 1.

Reference: Rastegari et al., "XNOR-Net", ECCV 2016, arXiv:1603.05279, sections 3.1 and 3.2.
"""

from __future__ import annotations

import json

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import quantizers
from xnor_keras.quantizers import (
    BinaryActivation,
    ScaledBinaryActivation,
    ScaledWeightSign,
    binary_activation,
    input_scale,
    scaled_weight_sign,
    weight_scale,
)
from xnor_keras.testing_utils import (
    assert_config_roundtrip,
    numpy_conv2d,
    numpy_input_scale,
    numpy_sign,
)

KERNEL_SHAPES = [(3, 3, 2, 4), (3, 5, 2, 3), (6, 3)]
CLIP_VALUES = [1.0, 0.5]

# (kernel_size, strides, padding, dilation_rate, input shape NHWC)
GEOMETRIES = [
    pytest.param(1, 1, "valid", 1, (2, 5, 7, 3), id="k1-s1-valid"),
    pytest.param(3, 1, "valid", 1, (2, 6, 5, 3), id="k3-s1-valid"),
    pytest.param(3, 1, "same", 1, (1, 5, 7, 2), id="k3-s1-same"),
    pytest.param(3, 2, "same", 1, (1, 7, 6, 3), id="k3-s2-same"),
    pytest.param(3, 2, "valid", 1, (2, 8, 7, 2), id="k3-s2-valid"),
    pytest.param((3, 5), 1, "same", 1, (1, 6, 9, 2), id="k3x5-s1-same"),
    pytest.param((3, 5), 2, "valid", 1, (1, 9, 10, 3), id="k3x5-s2-valid"),
    pytest.param(3, 1, "same", 2, (1, 7, 8, 2), id="k3-d2-same"),
    pytest.param(3, 1, "valid", 2, (2, 8, 6, 2), id="k3-d2-valid"),
]


# --------------------------------------------------------------------------------------------
# Inputs and numpy oracles


def _edge_values(clip: float) -> np.ndarray:
    """Exact zeros, the clip itself, just inside / outside the clip, and beyond 1, both signs."""
    inside, outside = clip * 0.999, clip * 1.001
    return np.array(
        [0.0, -0.0, clip, -clip, inside, -inside, outside, -outside, 1.7, -2.5], np.float32
    )


def _tensor_with_edges(shape, clip: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform values in (-2 clip, 2 clip) with the edge values written over the first entries."""
    x = rng.uniform(-2 * clip, 2 * clip, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    edges = _edge_values(clip)
    flat[: min(len(edges), flat.size)] = edges[: flat.size]
    return flat.reshape(shape)


def _alpha(w: np.ndarray) -> np.ndarray:
    """Paper eq. 6: mean |W| over every axis but the last, kept broadcastable."""
    w = np.asarray(w, np.float64)
    return np.abs(w).mean(axis=tuple(range(w.ndim - 1)), keepdims=True)


def _mask(x: np.ndarray, clip: float) -> np.ndarray:
    return (np.abs(np.asarray(x, np.float64)) <= clip).astype(np.float64)


def _numpy_weight_grad(w: np.ndarray, dy: np.ndarray, mode: str, clip: float) -> np.ndarray:
    """dC/dW for W~ = alpha sign(W), with g = dy = dC/dW~ and m = 1{|W| <= clip}.

    * paper:    g (1/n + alpha m)
    * ste:      g alpha m
    * autodiff: W~_j = alpha sign(W_j), alpha = sum_k |W_k| / n over the same output channel, so
      dW~_j/dW_i = alpha m_i [i == j] + sign(W_j) d|W_i|/dW_i / n, and d|W|/dW = np.sign(W) (0 at
      0, as TensorFlow's Abs gradient). Summing against g_j over the channel:
      alpha m_i g_i + np.sign(W_i) / n * sum_j g_j sign(W_j).
    """
    w = np.asarray(w, np.float64)
    dy = np.asarray(dy, np.float64)
    n = int(np.prod(w.shape[:-1]))
    alpha, mask = _alpha(w), _mask(w, clip)
    if mode == "paper":
        return dy * (1.0 / n + alpha * mask)
    if mode == "ste":
        return dy * alpha * mask
    channel_sum = (dy * numpy_sign(w)).sum(axis=tuple(range(w.ndim - 1)), keepdims=True)
    return alpha * mask * dy + np.sign(w) / n * channel_sum


def _same_pad_before(size: int, k: int, stride: int, dilation: int) -> int:
    """Rows (or columns) of zeros TensorFlow puts before the input for 'same' padding."""
    effective = (k - 1) * dilation + 1
    out = -(-size // stride)
    return max((out - 1) * stride + effective - size, 0) // 2


def _numpy_input_scale_grad(x, g, kernel_size, strides, padding, dilation_rate) -> np.ndarray:
    """d sum(G * K) / dx with explicit loops: the box filter's adjoint, then d mean_c|x| / dx.

    Each output position (i, j) averaged the kh*kw inputs its (dilated, strided) window covered;
    it scatters G[i, j] / (kh * kw) back to each of them (zero-padding positions get nothing).
    """
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel_size), pair(strides), pair(dilation_rate)
    x = np.asarray(x, np.float64)
    g = np.asarray(g, np.float64)
    batch, height, width, channels = x.shape
    if padding == "same":
        top, left = _same_pad_before(height, kh, sh, dh), _same_pad_before(width, kw, sw, dw)
    else:
        top = left = 0
    grad_a = np.zeros((batch, height, width))
    for b in range(batch):
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                for p in range(kh):
                    for q in range(kw):
                        row = i * sh + p * dh - top
                        col = j * sw + q * dw - left
                        if 0 <= row < height and 0 <= col < width:
                            grad_a[b, row, col] += g[b, i, j, 0] / (kh * kw)
    return np.sign(x) / channels * grad_a[..., None]


def _grad(fn, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fn(x), d sum(dy * fn(x)) / dx) with a GradientTape."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y.numpy(), tape.gradient(y, x, output_gradients=tf.constant(dy, y.dtype)).numpy()


# --------------------------------------------------------------------------------------------
# 1. Forward


@pytest.mark.parametrize("use_class", [False, True], ids=["function", "class"])
def test_binary_activation_forward_is_sign_with_sign0_plus1(use_class, rng):
    x = _tensor_with_edges((2, 4, 5, 3), 1.0, rng)
    x.reshape(-1)[10:14] = 0.0  # a few more exact zeros
    y = (BinaryActivation()(x) if use_class else binary_activation(x)).numpy()
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(y, numpy_sign(x))
    np.testing.assert_array_equal(y[x == 0], 1.0)


@pytest.mark.parametrize("shape", [(3, 3, 2, 4), (6, 3)], ids=["conv", "dense"])
def test_scaled_weight_sign_forward_is_alpha_times_sign(shape, rng):
    w = _tensor_with_edges(shape, 1.0, rng)
    alpha = _alpha(w)
    assert alpha.shape == (1,) * (len(shape) - 1) + (shape[-1],)
    np.testing.assert_allclose(weight_scale(w).numpy(), alpha, rtol=1e-6)
    np.testing.assert_allclose(scaled_weight_sign(w).numpy(), alpha * numpy_sign(w), rtol=1e-6)
    np.testing.assert_allclose(ScaledWeightSign()(w).numpy(), alpha * numpy_sign(w), rtol=1e-6)


def test_scaled_weight_sign_docstring_example():
    w = np.array([[1.0, -0.5], [-3.0, 0.0]], np.float32)  # alpha = [2.0, 0.25]; sign(0) = +1
    np.testing.assert_array_equal(scaled_weight_sign(w).numpy(), [[2.0, -0.25], [-2.0, 0.25]])


# --------------------------------------------------------------------------------------------
# 2. Gradients


@pytest.mark.parametrize("clip", CLIP_VALUES)
@pytest.mark.parametrize("use_class", [False, True], ids=["function", "class"])
def test_binary_activation_gradient_is_clipped_ste(clip, use_class, rng):
    x = _tensor_with_edges((3, 4, 5), clip, rng)
    dy = rng.normal(size=x.shape).astype(np.float32)
    fn = BinaryActivation(clip_value=clip) if use_class else lambda t: binary_activation(t, clip)
    y, grad = _grad(fn, x, dy)
    np.testing.assert_array_equal(y, numpy_sign(x))
    np.testing.assert_allclose(grad, dy * _mask(x, clip), rtol=1e-6, atol=0)
    # the edge values hit both sides of the window
    assert grad[np.abs(x) > clip].size and not grad[np.abs(x) > clip].any()


@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("clip", CLIP_VALUES)
@pytest.mark.parametrize("mode", ["paper", "ste", "autodiff"])
def test_scaled_weight_sign_gradient(mode, clip, shape, rng):
    w = _tensor_with_edges(shape, clip, rng)
    dy = rng.normal(size=shape).astype(np.float32)
    y, grad = _grad(lambda t: scaled_weight_sign(t, gradient=mode, clip_value=clip), w, dy)
    np.testing.assert_allclose(y, _alpha(w) * numpy_sign(w), rtol=1e-6)
    np.testing.assert_allclose(grad, _numpy_weight_grad(w, dy, mode, clip), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["paper", "ste", "autodiff"])
def test_scaled_weight_sign_class_gradient(mode, rng):
    w = _tensor_with_edges((3, 3, 2, 3), 0.5, rng)
    dy = rng.normal(size=w.shape).astype(np.float32)
    _, grad = _grad(ScaledWeightSign(gradient=mode, clip_value=0.5), w, dy)
    np.testing.assert_allclose(grad, _numpy_weight_grad(w, dy, mode, 0.5), rtol=1e-5, atol=1e-6)


def test_weight_gradient_modes_differ_where_expected(rng):
    """paper - ste = dy / n exactly, so clipped weights still move under 'paper' only."""
    w = _tensor_with_edges((2, 2, 2, 2), 1.0, rng)
    dy = rng.normal(size=w.shape).astype(np.float32)
    _, paper = _grad(lambda t: scaled_weight_sign(t, "paper"), w, dy)
    _, ste = _grad(lambda t: scaled_weight_sign(t, "ste"), w, dy)
    np.testing.assert_allclose(paper - ste, dy / 8.0, rtol=1e-5, atol=1e-7)
    outside = np.abs(w) > 1.0
    assert outside.any() and not ste[outside].any() and paper[outside].all()


@pytest.mark.parametrize("kernel_size, strides, padding, dilation_rate, shape", GEOMETRIES)
def test_input_scale_forward(kernel_size, strides, padding, dilation_rate, shape, rng):
    x = _tensor_with_edges(shape, 1.0, rng)
    k = input_scale(x, kernel_size, strides, padding, dilation_rate).numpy()
    expected = numpy_input_scale(x, kernel_size, strides, padding, dilation_rate)
    assert k.shape == expected.shape and k.shape[-1] == 1
    np.testing.assert_allclose(k, expected, rtol=1e-5, atol=1e-6)
    layer = ScaledBinaryActivation(kernel_size, strides, padding, dilation_rate)
    np.testing.assert_allclose(layer.scale(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel_size, strides, padding, dilation_rate, shape", GEOMETRIES)
def test_input_scale_gradient_is_box_filter_adjoint(
    kernel_size, strides, padding, dilation_rate, shape, rng
):
    x = _tensor_with_edges(shape, 1.0, rng)
    x[0, 0, 0, :] = 0.0  # a pixel of all-zero channels: d|x|/dx = 0 there
    out_shape = numpy_input_scale(x, kernel_size, strides, padding, dilation_rate).shape
    g = rng.normal(size=out_shape).astype(np.float32)
    _, grad = _grad(lambda t: input_scale(t, kernel_size, strides, padding, dilation_rate), x, g)
    expected = _numpy_input_scale_grad(x, g, kernel_size, strides, padding, dilation_rate)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(grad[0, 0, 0, :], 0.0)


def test_input_scale_docstring_example():
    k = input_scale(tf.fill((1, 4, 4, 2), -2.0), kernel_size=3).numpy()
    np.testing.assert_array_equal(k.ravel(), [2.0, 2.0, 2.0, 2.0])


# --------------------------------------------------------------------------------------------
# 3. Quantizer classes, aliases, larq integration


QUANTIZERS = [
    pytest.param(BinaryActivation, {"clip_value": 0.5}, id="BinaryActivation"),
    pytest.param(
        ScaledWeightSign, {"gradient": "autodiff", "clip_value": 0.5}, id="ScaledWeightSign"
    ),
    pytest.param(
        ScaledBinaryActivation,
        {"kernel_size": (3, 5), "strides": (2, 2), "padding": "same", "dilation_rate": (1, 1),
         "clip_value": 2.0},
        id="ScaledBinaryActivation",
    ),
]


@pytest.mark.parametrize("cls, kwargs", QUANTIZERS)
def test_quantizer_precision_and_config_roundtrip(cls, kwargs):
    quantizer = cls(**kwargs)
    assert quantizer.precision == 1
    assert isinstance(quantizer, lq.quantizers.Quantizer)
    config = quantizer.get_config()
    assert {key: config[key] for key in kwargs} == kwargs
    assert_config_roundtrip(quantizer)
    assert_config_roundtrip(cls())
    # a config that went through JSON (tuples become lists) still builds the same quantizer
    clone = cls.from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config


@pytest.mark.parametrize(
    "alias, cls",
    [
        ("xnor_sign", BinaryActivation),
        ("xnor_weight_sign", ScaledWeightSign),
        ("xnor_scaled_sign", ScaledBinaryActivation),
    ],
)
def test_alias_resolves_through_larq(alias, cls):
    quantizer = lq.quantizers.get(alias)
    assert type(quantizer) is cls
    assert quantizer.get_config()["clip_value"] == 1.0


def test_larq_ste_sign_not_clobbered():
    assert type(lq.quantizers.get("ste_sign")) is lq.quantizers.SteSign
    assert set(quantizers.ALIASES).isdisjoint({"ste_sign", "xnor_weight_scale"})


def test_quant_conv2d_with_aliases_builds_and_runs(rng):
    layer = lq.layers.QuantConv2D(
        4, 3, input_quantizer="xnor_sign", kernel_quantizer="xnor_weight_sign",
        kernel_constraint="weight_clip", use_bias=False,
    )
    x = _tensor_with_edges((2, 6, 5, 3), 1.0, rng)
    x_tf = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        y = layer(x_tf)
        loss = tf.reduce_sum(y * rng.normal(size=y.shape).astype(np.float32))
    grads = tape.gradient(loss, [x_tf, layer.kernel])
    assert isinstance(layer.input_quantizer, BinaryActivation)
    assert isinstance(layer.kernel_quantizer, ScaledWeightSign)
    assert y.shape == (2, 4, 3, 4)
    # layer oracle: float convolution of sign(x) with alpha * sign(W)
    kernel = layer.kernel.numpy()
    expected = numpy_conv2d(numpy_sign(x), _alpha(kernel) * numpy_sign(kernel))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


def test_scaled_binary_activation_call_and_scale(rng):
    quantizer = ScaledBinaryActivation(kernel_size=3, padding="same")
    x = _tensor_with_edges((1, 5, 6, 4), 1.0, rng)
    np.testing.assert_array_equal(quantizer(x).numpy(), numpy_sign(x))
    np.testing.assert_allclose(
        quantizer.scale(x).numpy(), numpy_input_scale(x, 3, padding="same"), rtol=1e-5, atol=1e-6
    )
    assert quantizer.scale(x).shape == (1, 5, 6, 1)


# --------------------------------------------------------------------------------------------
# 4. Bad arguments


W2 = np.ones((3, 2), np.float32)
X4 = np.ones((1, 4, 4, 2), np.float32)

# (id, call, argument the message must name, received value it must include)
_BAD = [
    ("gradient-fn", lambda: scaled_weight_sign(W2, gradient="exact"), "gradient", "'exact'"),
    ("gradient-cls", lambda: ScaledWeightSign(gradient="Paper"), "gradient", "'Paper'"),
    ("clip-0", lambda: binary_activation(X4, clip_value=0), "clip_value", "clip_value=0"),
    ("clip-neg", lambda: scaled_weight_sign(W2, clip_value=-1), "clip_value", "clip_value=-1"),
    ("clip-str", lambda: BinaryActivation(clip_value="1"), "clip_value", "clip_value='1'"),
    ("clip-0-cls", lambda: ScaledWeightSign(clip_value=0.0), "clip_value", "clip_value=0.0"),
    ("rank1-sign", lambda: scaled_weight_sign(np.ones(3, np.float32)), "kernel", "(3,)"),
    ("rank1-scale", lambda: weight_scale(np.ones(5, np.float32)), "kernel", "(5,)"),
    ("rank3", lambda: input_scale(np.ones((4, 4, 2), np.float32), 3), "input", "(4, 4, 2)"),
    ("padding-fn", lambda: input_scale(X4, 3, padding="full"), "padding", "'full'"),
    ("padding-cls", lambda: ScaledBinaryActivation(padding="causal"), "padding", "'causal'"),
    ("kernel0-fn", lambda: input_scale(X4, 0), "kernel_size", "kernel_size=(0, 0)"),
    ("kernel0-cls", lambda: ScaledBinaryActivation(kernel_size=(3, 0)), "kernel_size", "(3, 0)"),
]
BAD_ARGUMENTS = [pytest.param(*case[1:], id=case[0]) for case in _BAD]


@pytest.mark.parametrize("call, name, received", BAD_ARGUMENTS)
def test_bad_arguments_raise_value_error(call, name, received):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert name in message and received in message, message


# --------------------------------------------------------------------------------------------
# 5. Mixed precision


@pytest.mark.parametrize("mode", ["paper", "ste", "autodiff"])
def test_scaled_weight_sign_float16(mode, rng):
    w32 = _tensor_with_edges((3, 3, 4, 3), 1.0, rng).astype(np.float16).astype(np.float32)
    w16 = w32.astype(np.float16)
    dy = rng.normal(size=w32.shape).astype(np.float16)
    y16, g16 = _grad(lambda t: scaled_weight_sign(t, mode), w16, dy)
    assert y16.dtype == np.float16 and g16.dtype == np.float16
    np.testing.assert_allclose(y16, _alpha(w32) * numpy_sign(w32), rtol=2e-3)
    assert np.isfinite(g16).all()
    expected = _numpy_weight_grad(w32, dy.astype(np.float32), mode, 1.0)
    np.testing.assert_allclose(g16, expected, rtol=1e-2, atol=2e-3)


def test_quant_conv2d_mixed_float16_policy(rng):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    layer = lq.layers.QuantConv2D(
        4, 3, input_quantizer="xnor_sign", kernel_quantizer="xnor_weight_sign",
        kernel_constraint="weight_clip", use_bias=False,
    )
    x = tf.constant(_tensor_with_edges((1, 5, 5, 3), 1.0, rng))
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    grad = tape.gradient(loss, layer.kernel)
    assert y.dtype == tf.float16 and layer.kernel.dtype == tf.float32
    kernel = layer.kernel.numpy()
    oracle = numpy_conv2d(numpy_sign(x.numpy()), _alpha(kernel) * numpy_sign(kernel))
    np.testing.assert_allclose(y.numpy(), oracle, rtol=5e-3, atol=5e-3)
    assert np.isfinite(grad.numpy()).all()


_BINARIZE_AND_GRADIENT = """
import json, os
os.environ["XNOR_KERAS_XLA"] = {xla!r}
import numpy as np
import xnor_keras
import tensorflow as tf
from xnor_keras import quantizers

w = tf.Variable(np.random.default_rng(4).uniform(-1.5, 1.5, (3, 3, 8, 5)).astype(np.float32))
dy = tf.constant(np.random.default_rng(5).standard_normal((3, 3, 8, 5)).astype(np.float32))
with tf.GradientTape() as tape:
    unit, alpha = quantizers.unit_sign_and_scale(w, "paper")
    loss = tf.reduce_sum(unit * dy) + tf.reduce_sum(alpha)
grad = tape.gradient(loss, w)
print(json.dumps({{"xla": quantizers.XLA, "unit": unit.numpy().tolist(), "alpha": alpha.numpy().tolist(),
                  "grad": grad.numpy().tolist()}}))
"""


def test_xla_can_be_turned_off_and_gives_the_same_binarization():
    from xnor_keras.testing_utils import run_python

    on = json.loads(run_python(_BINARIZE_AND_GRADIENT.format(xla="1")).strip().splitlines()[-1])
    off = json.loads(run_python(_BINARIZE_AND_GRADIENT.format(xla="0")).strip().splitlines()[-1])
    assert on["xla"] is True and off["xla"] is False
    np.testing.assert_array_equal(on["unit"], off["unit"])
    np.testing.assert_allclose(on["alpha"], off["alpha"], rtol=1e-6)
    np.testing.assert_allclose(on["grad"], off["grad"], rtol=1e-5, atol=1e-7)
    w = np.random.default_rng(4).uniform(-1.5, 1.5, (3, 3, 8, 5)).astype(np.float32)
    np.testing.assert_allclose(off["alpha"], np.abs(w).mean(axis=(0, 1, 2)), rtol=1e-6)
