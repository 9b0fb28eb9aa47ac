r"""XNOR-Net quantizers: binary activation, alpha-scaled binary weights, beta/K input scaling.

Every quantizer here can be handed to any larq layer that takes a quantizer (by object or by its
short string alias), has ``precision = 1`` for ``larq.models.summary``, and round-trips through
``get_config``. The forward sign is ``larq.math.sign`` (``sign(sign(x) + 0.1)``), a pattern Larq
Compute Engine recognises, so ``sign(0) = +1`` everywhere.

Reference: Rastegari et al., "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
Networks", ECCV 2016, arXiv:1603.05279, sections 3.1 (binary weights) and 3.2 (XNOR-Networks).
"""

from __future__ import annotations

import functools
import numbers
import os
from typing import Sequence

import larq as lq
import tensorflow as tf

__all__ = [
    "WEIGHT_GRADIENTS",
    "BinaryActivation",
    "ScaledBinaryActivation",
    "ScaledWeightSign",
    "binary_activation",
    "input_scale",
    "scaled_weight_sign",
    "unit_sign_and_scale",
    "weight_scale",
]

WEIGHT_GRADIENTS = ("paper", "ste", "autodiff")
"""Gradient modes of :func:`scaled_weight_sign`; ``"paper"`` is the default."""

_PACKAGE = "xnor_keras"

XLA = os.environ.get("XNOR_KERAS_XLA", "1") != "0"
"""Whether the kernel binarization (alpha * sign(W) and its gradient) is compiled with XLA.

TensorFlow runs every elementwise op of a graph as its own pass over memory; over the latent
weights (58 M for XNOR AlexNet) those passes are most of what a binary layer adds to a training
step. XLA fuses them. Set the environment variable ``XNOR_KERAS_XLA=0`` before importing
xnor_keras to turn it off (for a TensorFlow build without XLA); results are the same up to
float rounding of alpha's mean.
"""


def _compiled(fn, enabled: bool = True):
    """`fn` as an XLA-compiled tf.function (unchanged when :data:`XLA` is off or not `enabled`)."""
    if not (XLA and enabled):
        return fn
    return tf.function(fn, jit_compile=True, autograph=False)


def _check_clip_value(clip_value) -> float:
    if isinstance(clip_value, bool) or not isinstance(clip_value, numbers.Real):
        raise ValueError(
            f"Expected `clip_value` to be a positive number, got {type(clip_value).__name__}. "
            f"Received: clip_value={clip_value!r}"
        )
    if not clip_value > 0:
        raise ValueError(
            f"Expected `clip_value` to be > 0, got {clip_value!r}. Received: clip_value={clip_value!r}"
        )
    return float(clip_value)


def _check_gradient(gradient) -> str:
    if gradient not in WEIGHT_GRADIENTS:
        raise ValueError(
            f"Expected `gradient` to be one of {WEIGHT_GRADIENTS}, got {gradient!r}. "
            f"Received: gradient={gradient!r}"
        )
    return gradient


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(
            f"Expected `{name}` to be a positive int or a pair of positive ints, got {value!r}. "
            f"Received: {name}={value!r}"
        )
    return value


def _check_padding(padding) -> str:
    if not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
        raise ValueError(
            f"Expected `padding` to be 'same' or 'valid', got {padding!r}. Received: padding={padding!r}"
        )
    return padding.lower()


def _ste_mask(x: tf.Tensor, clip_value: float) -> tf.Tensor:
    """1{|x| <= clip_value} in the dtype of `x`."""
    return tf.cast(tf.math.abs(x) <= tf.cast(clip_value, x.dtype), x.dtype)


# --------------------------------------------------------------------------------------------
# Pure functions


def binary_activation(x: tf.Tensor, clip_value: float = 1.0) -> tf.Tensor:
    r"""The paper's BinActiv: sign with the clipped straight-through estimator.

    \[ q(x) = \begin{cases} -1 & x < 0 \\ +1 & x \ge 0 \end{cases} \qquad
       \frac{\partial q}{\partial x} = 1_{|x| \le \text{clip\_value}} \]

    Args:
        x: input tensor.
        clip_value: half-width of the window where the gradient passes (paper: 1).

    Returns:
        A tensor of the shape and dtype of `x` with values in {-1, +1}.

    Example:
        >>> binary_activation(tf.constant([-2.0, 0.0, 0.5])).numpy()
        array([-1.,  1.,  1.], dtype=float32)
    """
    clip_value = _check_clip_value(clip_value)

    @tf.custom_gradient
    def _sign(x):
        def grad(dy):
            return dy * _ste_mask(x, clip_value)

        return lq.math.sign(x), grad

    return _sign(x)


def weight_scale(w: tf.Tensor) -> tf.Tensor:
    r"""XNOR-Net's per-output-channel scaling factor (eq. 6): :math:`\alpha = \|W\|_1 / n`.

    The mean of :math:`|W|` over every axis but the last (output channels), kept as a broadcastable
    shape ``(1, ..., 1, out)``. Accumulated in float32 so float16 kernels keep their precision.

    Args:
        w: kernel with output channels last and at least 2 dimensions.

    Returns:
        alpha, in the dtype of `w`.
    """
    w = tf.convert_to_tensor(w)
    _check_kernel_rank(w)
    axes = list(range(w.shape.rank - 1))
    alpha = tf.reduce_mean(tf.math.abs(tf.cast(w, tf.float32)), axis=axes, keepdims=True)
    return tf.cast(alpha, w.dtype)


def _check_kernel_rank(w: tf.Tensor) -> None:
    if w.shape.rank is None or w.shape.rank < 2:
        raise ValueError(
            "Expected the kernel to have at least 2 dimensions (..., input, output channels), "
            f"got shape {tuple(w.shape)}. Received: kernel rank={w.shape.rank}"
        )


def scaled_weight_sign(w: tf.Tensor, gradient: str = "paper", clip_value: float = 1.0) -> tf.Tensor:
    r"""Binary weights with XNOR-Net's scaling factor: :math:`\tilde W = \alpha\,\mathrm{sign}(W)`.

    :math:`\alpha = \|W\|_1 / n` per output channel, :math:`n` the number of weights in one filter
    (paper eq. 4-6). Three gradients are available; with
    :math:`g = \partial C / \partial \tilde W` and :math:`m = 1_{|W| \le \text{clip\_value}}`:

    * ``"paper"`` (default): :math:`g \cdot (1/n + \alpha m)`, the paper's section 3.1 formula and
      the original code's ``updateBinaryGradWeight``. It is what produced the published accuracy,
      and its :math:`1/n` term keeps moving weights that the clip window has frozen.
    * ``"ste"``: :math:`g \cdot \alpha m`, alpha treated as a constant.
    * ``"autodiff"``: the exact derivative of :math:`\alpha\,\mathrm{sign}(W)` with the STE for the
      sign: :math:`\alpha m g + \mathrm{sign}(W)/n \cdot \sum_j g_j \mathrm{sign}(W_j)`, the sum
      over the weights of the same filter (what larq-zoo's XNORNet gets from autodiff).

    Args:
        w: kernel with output channels last (conv ``(h, w, in, out)`` or dense ``(in, out)``).
        gradient: one of ``"paper"``, ``"ste"``, ``"autodiff"``.
        clip_value: half-width of the straight-through window (paper: 1).

    Returns:
        A tensor of the shape and dtype of `w` holding :math:`\pm\alpha` per output channel.

    Example:
        >>> w = tf.constant([[1.0, -0.5], [-3.0, 0.0]])
        >>> scaled_weight_sign(w).numpy()  # alpha = [2.0, 0.25]
        array([[ 2.  , -0.25],
               [-2.  ,  0.25]], dtype=float32)
    """
    gradient = _check_gradient(gradient)
    clip_value = _check_clip_value(clip_value)
    w = tf.convert_to_tensor(w)
    _check_kernel_rank(w)

    return _scaled_weight_sign_fn(gradient, clip_value)(w)


@functools.lru_cache(maxsize=None)
def _scaled_weight_sign_fn(gradient: str, clip_value: float):
    """The (compiled) function alpha * sign(W) with `gradient`, one per setting."""
    if gradient == "autodiff":
        return _compiled(lambda w: weight_scale(w) * binary_activation(w, clip_value))

    @tf.custom_gradient
    def _scaled_sign(w):
        alpha = weight_scale(w)
        n = tf.cast(tf.reduce_prod(tf.shape(w)[:-1]), w.dtype)

        def grad(dy):
            factor = alpha * _ste_mask(w, clip_value)
            if gradient == "paper":
                factor = factor + 1.0 / n
            return dy * factor

        return alpha * lq.math.sign(w), grad

    return _compiled(_scaled_sign)


def unit_sign_and_scale(
    w: tf.Tensor, gradient: str = "paper", clip_value: float = 1.0, *, compiled: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    r"""sign(W) and alpha apart, for layers computing :math:`(x \circledast \mathrm{sign}(W))\,\alpha`.

    The values of :func:`scaled_weight_sign` split in two: ``U = sign(W)`` (shape of `w`) and
    alpha (shape ``(out,)``). The gradients are the same as :func:`scaled_weight_sign`'s, given
    that the layer multiplies by alpha after convolving: with :math:`g_U = \alpha\,g`
    (:math:`g = \partial C / \partial \tilde W`) and :math:`m = 1_{|W| \le c}`, the weight
    gradient is :math:`g_U (m + 1/(n\alpha))` for ``"paper"`` and :math:`g_U m` for ``"ste"``
    (alpha held constant, as those formulas do); for ``"autodiff"`` alpha carries its own
    gradient. One difference: a filter that is exactly all zeros (alpha = 0) gets no gradient
    here, where ``"paper"`` would give it :math:`g/n`.

    Layers use this instead of the quantizer followed by a division by alpha: the same result
    in about half the passes over the kernel. With `compiled` (default) it runs XLA-compiled
    (see :data:`XLA`); ``compiled=False`` skips the compilation, for a one-off evaluation such
    as the converter's (alpha may then differ in its last bit: float rounding of the mean).
    """
    gradient = _check_gradient(gradient)
    clip_value = _check_clip_value(clip_value)
    w = tf.convert_to_tensor(w)
    _check_kernel_rank(w)
    return _unit_sign_and_scale_fn(gradient, clip_value, compiled)(w)


@functools.lru_cache(maxsize=None)
def _unit_sign_and_scale_fn(gradient: str, clip_value: float, compiled: bool = True):
    if gradient == "autodiff":
        return _compiled(
            lambda w: (binary_activation(w, clip_value), tf.reshape(weight_scale(w), [-1])),
            compiled,
        )

    @tf.custom_gradient
    def _unit_sign(w):
        alpha = tf.reshape(weight_scale(w), [-1])
        n = tf.cast(tf.reduce_prod(tf.shape(w)[:-1]), w.dtype)

        def grad(d_unit, d_alpha):
            factor = _ste_mask(w, clip_value)
            if gradient == "paper":
                factor = factor + 1.0 / (n * tf.where(alpha > 0, alpha, tf.ones_like(alpha)))
            return d_unit * factor

        return (lq.math.sign(w), tf.stop_gradient(alpha)), grad

    return _compiled(_unit_sign, compiled)


def input_scale(
    x: tf.Tensor,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    dilation_rate: int | Sequence[int] = 1,
) -> tf.Tensor:
    r"""XNOR-Net's input scaling map K (section 3.2, eq. 11).

    :math:`A = \sum_i |I_{:,:,i}| / c` (the channel mean of :math:`|I|`) and :math:`K = A * k`,
    :math:`k` a :math:`w \times h` box filter of entries :math:`1/(w h)` applied with the
    convolution's stride, padding (zeros, as eq. 11 convolves the real input) and dilation. Then
    :math:`I * W \approx (\mathrm{sign}(I) \circledast \mathrm{sign}(W)) \odot K \alpha`. The
    gradient is the exact derivative of this map.

    Args:
        x: NHWC input of the convolution (real-valued, before binarization).
        kernel_size, strides, dilation_rate: the convolution's geometry (int or pair).
        padding: ``"same"`` or ``"valid"``.

    Returns:
        K with shape ``(batch, out_h, out_w, 1)``, broadcastable over output channels.

    Example:
        >>> x = tf.fill((1, 4, 4, 2), -2.0)
        >>> input_scale(x, kernel_size=3).numpy().ravel()
        array([2., 2., 2., 2.], dtype=float32)
    """
    kernel_size = _pair(kernel_size, "kernel_size")
    strides = _pair(strides, "strides")
    dilation_rate = _pair(dilation_rate, "dilation_rate")
    padding = _check_padding(padding)
    x = tf.convert_to_tensor(x)
    if x.shape.rank != 4:
        raise ValueError(
            f"Expected the input to have 4 dimensions (batch, height, width, channels), got shape "
            f"{tuple(x.shape)}. Received: input rank={x.shape.rank}"
        )
    a = tf.reduce_mean(tf.math.abs(x), axis=-1, keepdims=True)
    box = tf.fill((*kernel_size, 1, 1), tf.constant(1.0 / (kernel_size[0] * kernel_size[1]), x.dtype))
    return tf.nn.conv2d(
        a, box, strides=strides, padding=padding.upper(), dilations=dilation_rate
    )


# --------------------------------------------------------------------------------------------
# Serializable quantizers (thin classes over the functions above)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class BinaryActivation(lq.quantizers.Quantizer):
    r"""The paper's BinActiv as a larq quantizer: sign(x) forward, clipped STE backward.

    See :func:`binary_activation`. Alias: ``"xnor_sign"``.

    Args:
        clip_value: half-width of the straight-through window (paper: 1).

    Example:
        >>> layer = lq.layers.QuantConv2D(32, 3, input_quantizer="xnor_sign")
    """

    precision = 1

    def __init__(self, clip_value: float = 1.0, **kwargs):
        self.clip_value = _check_clip_value(clip_value)
        super().__init__(**kwargs)

    def call(self, inputs):
        return binary_activation(inputs, self.clip_value)

    def get_config(self):
        return {**super().get_config(), "clip_value": self.clip_value}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ScaledWeightSign(lq.quantizers.Quantizer):
    r"""Alpha-scaled binary weights (paper eq. 6) as a larq kernel quantizer.

    Forward :math:`\alpha\,\mathrm{sign}(W)` with :math:`\alpha` the per-output-channel mean of
    :math:`|W|`; the gradient is selectable, see :func:`scaled_weight_sign`.
    Alias: ``"xnor_weight_sign"``.

    Args:
        gradient: ``"paper"`` (default), ``"ste"`` or ``"autodiff"``.
        clip_value: half-width of the straight-through window (paper: 1).

    Example:
        >>> layer = lq.layers.QuantConv2D(
        ...     32, 3, kernel_quantizer=ScaledWeightSign(gradient="paper"),
        ...     kernel_constraint="weight_clip")
    """

    precision = 1

    def __init__(self, gradient: str = "paper", clip_value: float = 1.0, **kwargs):
        self.gradient = _check_gradient(gradient)
        self.clip_value = _check_clip_value(clip_value)
        super().__init__(**kwargs)

    def call(self, inputs):
        return scaled_weight_sign(inputs, self.gradient, self.clip_value)

    def get_config(self):
        return {**super().get_config(), "gradient": self.gradient, "clip_value": self.clip_value}


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ScaledBinaryActivation(BinaryActivation):
    r"""Binary activation that also knows the paper's input scaling K (section 3.2, eq. 11).

    Called, it binarizes like :class:`BinaryActivation` (so in a plain larq layer it acts as a
    sign); :meth:`scale` returns K for the convolution geometry it was built with. The product
    with K has to happen after the convolution, which :class:`xnor_keras.layers.XNORConv2D` does
    with ``input_scaling="K"``. Alias: ``"xnor_scaled_sign"`` (3x3 window, stride 1, valid).

    Args:
        kernel_size, strides, dilation_rate: the convolution's geometry (int or pair).
        padding: ``"same"`` or ``"valid"``.
        clip_value: half-width of the straight-through window (paper: 1).

    Example:
        >>> q = ScaledBinaryActivation(kernel_size=3, padding="same")
        >>> x = tf.random.normal((1, 8, 8, 16))
        >>> q(x).shape, q.scale(x).shape
        (TensorShape([1, 8, 8, 16]), TensorShape([1, 8, 8, 1]))
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        dilation_rate: int | Sequence[int] = 1,
        clip_value: float = 1.0,
        **kwargs,
    ):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _check_padding(padding)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        super().__init__(clip_value=clip_value, **kwargs)

    def scale(self, inputs: tf.Tensor) -> tf.Tensor:
        """K for `inputs` (the real-valued input of the convolution)."""
        return input_scale(inputs, self.kernel_size, self.strides, self.padding, self.dilation_rate)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
        }


# Short aliases for `input_quantizer="xnor_sign"` etc. Distinct from larq's ("ste_sign", ...) and
# larq-zoo's ("xnor_weight_scale") entries in Keras' global custom-object table, so neither is
# clobbered.
ALIASES = {
    "xnor_sign": BinaryActivation,
    "xnor_weight_sign": ScaledWeightSign,
    "xnor_scaled_sign": ScaledBinaryActivation,
}
for _alias, _cls in ALIASES.items():
    tf.keras.utils.get_custom_objects().setdefault(_alias, _cls)
del _alias, _cls
