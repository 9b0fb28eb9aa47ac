r"""XNOR-Net and Binary-Weight-Network layers: thin presets over larq's quantized layers.

=============  ===================  ==================  ==========================================
layer          input                kernel              on LCE (64-bit ARM)
=============  ===================  ==================  ==========================================
XNORConv2D     sign(x), clipped STE  alpha * sign(W)     LceBconv2d (binary op, alpha folded in)
XNORDense      sign(x), clipped STE  alpha * sign(W)     LceBconv2d (computed as a 1x1 convolution)
BWNConv2D      real x               alpha * sign(W)     float CONV_2D (no binary op for real input)
BWNDense       real x               alpha * sign(W)     float CONV_2D (1x1 convolution)
=============  ===================  ==================  ==========================================

Common to all: ``use_bias=False`` by default (a BatchNorm usually follows), a ``WeightClip``
kernel constraint at ``clip_value`` (the straight-through window; without it latent weights
drift out of the window and stop learning), and the weight gradient chosen by
``weight_gradient`` (see :func:`xnor_keras.quantizers.scaled_weight_sign`).

Dense layers are computed as 1x1 convolutions because larq's ``QuantDense`` converts to a float
``FULLY_CONNECTED`` with float +-1 weights, while a convolution converts to LCE's binary op.
Their weights keep Dense's ``(in, units)`` shape.

Padding (``pad_values``, convolutions with ``padding="same"``): the paper pads the binarized
input with 0, which is what ``pad_values=0.0`` (default) does. 0 is not a binary value, so LCE
runs an extra correction for it; ``pad_values=1.0`` pads with +1, keeps the op purely binary and
is faster on device. The two are different functions: a model trained with one should be used
with the same one.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from xnor_keras import quantizers as xq

__all__ = ["BWNConv2D", "BWNDense", "XNORConv2D", "XNORDense", "INPUT_SCALINGS"]

INPUT_SCALINGS = (None, "K")
"""Values of ``input_scaling``: ``None`` (default, as the original code) or ``"K"`` (eq. 11)."""

_PACKAGE = "xnor_keras"


class _ScaledBinaryMixin:
    """Shared by every layer here: builds the quantizers from a few paper-level settings.

    Subclasses set ``_binary_inputs``. Their config stores the settings (``input_scaling``,
    ``weight_gradient``, ``clip_value``), not the quantizer objects, which are derived again on
    load.
    """

    _binary_inputs: bool = True

    def _quantization_kwargs(self, *, input_scaling, weight_gradient, clip_value, geometry, kwargs):
        name = type(self).__name__
        for key in ("input_quantizer", "kernel_quantizer"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"`{name}` sets its own `{key}`; for custom quantizers use larq's layers with "
                    f"xnor_keras.quantizers. Received: {key}={kwargs[key]!r}"
                )
            kwargs.pop(key, None)
        if weight_gradient not in xq.WEIGHT_GRADIENTS:
            raise ValueError(
                f"Expected `weight_gradient` to be one of {xq.WEIGHT_GRADIENTS}, got "
                f"{weight_gradient!r}. Received: weight_gradient={weight_gradient!r}"
            )
        if input_scaling not in INPUT_SCALINGS:
            raise ValueError(
                f"Expected `input_scaling` to be one of {INPUT_SCALINGS}, got {input_scaling!r}. "
                f"Received: input_scaling={input_scaling!r}"
            )
        if input_scaling is not None and not self._binary_inputs:
            raise ValueError(
                f"`{name}` has real-valued inputs, so the paper's input scaling (beta / K, which "
                f"rescales binarized inputs) does not apply; use the XNOR layer instead. "
                f"Received: input_scaling={input_scaling!r}"
            )
        if input_scaling is not None and kwargs.get("data_format", "channels_last") not in (
            None,
            "channels_last",
        ):
            raise ValueError(
                "`input_scaling='K'` supports only data_format='channels_last'. "
                f"Received: data_format={kwargs['data_format']!r}"
            )
        self.input_scaling = input_scaling
        self.weight_gradient = weight_gradient
        self.clip_value = clip_value
        if not self._binary_inputs:
            input_quantizer = None
        elif input_scaling == "K":
            input_quantizer = xq.ScaledBinaryActivation(clip_value=clip_value, **geometry)
        else:
            input_quantizer = xq.BinaryActivation(clip_value=clip_value)
        constraint = kwargs.pop("kernel_constraint", None)
        return dict(
            input_quantizer=input_quantizer,
            kernel_quantizer=xq.ScaledWeightSign(gradient=weight_gradient, clip_value=clip_value),
            kernel_constraint=constraint
            if constraint is not None
            else lq.constraints.WeightClip(clip_value),
        )

    # Set by `xnor_keras.convert.inference_copy`: the kernel then holds sign(W) (+-1) and alpha
    # is this constant, so LCE sees a constant binary filter followed by a per-channel scale.
    _inference_alpha = None

    def _unit_kernel_and_alpha(self, kernel, compiled: bool = True):
        """(sign(W), alpha) of `kernel`, alpha of shape (out,).

        `kernel` is larq's quantized kernel variable (its latent weights are then binarized in
        one step by :func:`xnor_keras.quantizers.unit_sign_and_scale`), the +-1 kernel of an
        inference copy, or an already quantized alpha * sign(W) tensor (split apart).

        Convolving with the +-1 kernel and scaling afterwards makes the dot product exact: with
        binary inputs it is an integer, so a tie gives exactly 0 and sign(0) = +1 as the paper
        (and LCE's integer kernels) say. Convolving with +-alpha directly rounds such ties to
        +-tiny, which flips about 1% of the next layer's signs at random.
        """
        quantizer = getattr(kernel, "quantizer", None)
        latent = getattr(kernel, "latent_variable", None)
        if self._inference_alpha is None and type(quantizer) is xq.ScaledWeightSign and latent is not None:
            # larq's quantized kernel variable: binarize its latent weights in one step instead
            # of running the quantizer (alpha * sign(W)) and dividing alpha back out.
            unit, alpha = xq.unit_sign_and_scale(
                tf.convert_to_tensor(latent), quantizer.gradient, quantizer.clip_value,
                compiled=compiled,
            )
            if quantizer.gradient != "autodiff":
                # "paper" and "ste" hold alpha constant: its gradient would be discarded, but
                # the tape would still compute it (sum(dy * conv output), an activation-sized
                # product per layer and step). Cut it here.
                alpha = tf.stop_gradient(alpha)
            return unit, alpha
        kernel = tf.convert_to_tensor(kernel)
        if self._inference_alpha is not None:
            return kernel, tf.cast(self._inference_alpha, kernel.dtype)
        return (_split_unit_and_alpha if compiled else _split)(kernel)

    def _scaled(self, inputs, compute):
        """Run `compute(inputs)` with bias and activation held back, times K, then them."""
        scale = self.input_quantizer.scale(inputs)
        with lq.utils.patch_object(self, "activation", None), lq.utils.patch_object(
            self, "use_bias", False
        ):
            outputs = compute(inputs)
        outputs = outputs * tf.cast(scale, outputs.dtype)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.pop("input_quantizer", None)
        config.pop("kernel_quantizer", None)
        return {
            **config,
            "input_scaling": self.input_scaling,
            "weight_gradient": self.weight_gradient,
            "clip_value": self.clip_value,
        }


def _split(kernel):
    axes = list(range(kernel.shape.rank - 1))
    alpha = tf.stop_gradient(tf.reduce_max(tf.math.abs(kernel), axis=axes))
    safe_alpha = tf.where(alpha > 0, alpha, tf.ones_like(alpha))
    return kernel / safe_alpha, safe_alpha


# Elementwise passes over the whole kernel, fused by XLA (see xnor_keras.quantizers.XLA).
_split_unit_and_alpha = xq._compiled(_split)


class _ScaledBinaryConv2D(_ScaledBinaryMixin, lq.layers.QuantConv2D):
    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        *,
        input_scaling: str | None = None,
        weight_gradient: str = "paper",
        clip_value: float = 1.0,
        use_bias: bool = False,
        **kwargs,
    ):
        geometry = dict(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            dilation_rate=kwargs.get("dilation_rate", 1),
        )
        if not self._binary_inputs and pad_values != 0.0:
            raise ValueError(
                f"`{type(self).__name__}` has real-valued inputs, which are zero padded; "
                f"`pad_values` only chooses how binarized inputs are padded. "
                f"Received: pad_values={pad_values!r}"
            )
        quantization = self._quantization_kwargs(
            input_scaling=input_scaling,
            weight_gradient=weight_gradient,
            clip_value=clip_value,
            geometry=geometry,
            kwargs=kwargs,
        )
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            pad_values=pad_values,
            use_bias=use_bias,
            **quantization,
            **kwargs,
        )

    def build(self, input_shape):
        if tf.TensorShape(input_shape).rank != 4:
            raise ValueError(
                f"Expected the input of `{type(self).__name__}` '{self.name}' to have 4 dimensions "
                f"(batch, height, width, channels), got shape {tuple(input_shape)}."
            )
        super().build(input_shape)

    _border_correction = False

    def convolution_op(self, inputs, kernel):
        unit_kernel, alpha = self._unit_kernel_and_alpha(kernel)
        # The input quantizer may compute in another dtype than the layer (a mixed-precision
        # model loaded under the float32 policy): follow the inputs, as larq's kernel read does.
        unit_kernel = tf.cast(unit_kernel, inputs.dtype)
        outputs = super().convolution_op(inputs, unit_kernel)
        if self._border_correction:
            outputs += self._padding_contribution(inputs, unit_kernel)
        return outputs * tf.cast(alpha, inputs.dtype)

    def _padding_contribution(self, inputs, unit_kernel):
        """What the `pad_values` border adds to a zero-padded convolution, (1, h, w, out).

        conv(pad(x, v)) = conv(pad(x, 0)) + conv(pad(0, v)) by linearity; the second term does
        not depend on x, so it is one convolution of a single frame image. With binary inputs
        and the +-1 kernel all three are sums of integers: the result is exactly larq's.
        """
        frame = tf.zeros(tf.concat([[1], tf.shape(inputs)[1:]], axis=0), inputs.dtype)
        frame = tf.pad(frame, self._get_padding_same(inputs), constant_values=self.pad_values)
        with lq.utils.patch_object(self, "padding", "valid"):
            return super().convolution_op(frame, unit_kernel)

    def call(self, inputs, training=None):
        # Training with pad_values != 0 computes the same outputs as larq's explicit pad + VALID
        # convolution, as a zero-padded convolution plus the border's constant contribution:
        # oneDNN's backward pass is several times slower on the padded form where maps are
        # small (4.6x for 3x3 on 1x1 maps, 2.2x for XNORResNet18 at 32x32). Inference keeps
        # larq's form, which is the pattern Larq Compute Engine turns into its padded bconv.
        if training and not self._is_native_padding:
            with lq.utils.patch_object(self, "_is_native_padding", True), lq.utils.patch_object(
                self, "_border_correction", True
            ):
                return self._call(inputs)
        return self._call(inputs)

    def _call(self, inputs):
        if self.input_scaling is None:
            return super().call(inputs)
        return self._scaled(inputs, super().call)


class _ScaledBinaryDense(_ScaledBinaryMixin, lq.layers.QuantDense):
    def __init__(
        self,
        units: int,
        *,
        input_scaling: str | None = None,
        weight_gradient: str = "paper",
        clip_value: float = 1.0,
        use_bias: bool = False,
        **kwargs,
    ):
        # A dense layer is a 1x1 convolution over a 1x1 "image" of `in` channels, so its K is the
        # paper's beta: the mean of |x| over all inputs, one scalar per example.
        quantization = self._quantization_kwargs(
            input_scaling=input_scaling,
            weight_gradient=weight_gradient,
            clip_value=clip_value,
            geometry=dict(kernel_size=1, strides=1, padding="valid", dilation_rate=1),
            kwargs=kwargs,
        )
        super().__init__(units, use_bias=use_bias, **quantization, **kwargs)

    def call(self, inputs):
        # Same arithmetic as Dense, written as a 1x1 convolution so that Larq Compute Engine
        # turns it into its binary convolution instead of a float FULLY_CONNECTED.
        in_dim = int(self.kernel.shape[0])
        outer_shape = tf.shape(inputs)[:-1]
        x = tf.reshape(inputs, [-1, 1, 1, in_dim])
        if self.input_scaling is None:
            y = self._conv(x)
        else:
            y = self._scaled(x, self._conv)
        y = tf.reshape(y, tf.concat([outer_shape, [self.units]], axis=0))
        y.set_shape(inputs.shape[:-1].concatenate([self.units]))
        return y

    def _conv(self, x):
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        with lq.context.quantized_scope(True):
            unit_kernel, alpha = self._unit_kernel_and_alpha(self.kernel)
        unit_kernel = tf.reshape(tf.cast(unit_kernel, x.dtype), [1, 1, -1, self.units])
        y = tf.nn.conv2d(x, unit_kernel, strides=1, padding="VALID") * tf.cast(alpha, x.dtype)
        if self.use_bias:
            y = tf.nn.bias_add(y, self.bias)
        if self.activation is not None:
            y = self.activation(y)
        return y


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class XNORConv2D(_ScaledBinaryConv2D):
    r"""XNOR-Net convolution: binary input and alpha-scaled binary kernel (paper section 3.2).

    .. math:: y = (\mathrm{sign}(x) \circledast \mathrm{sign}(W)) \odot \alpha
              \quad [\odot K \text{ with input\_scaling="K"}]

    Args:
        filters, kernel_size, strides, padding: as ``tf.keras.layers.Conv2D``.
        pad_values: value the binarized input is padded with for ``padding="same"``: 0.0
            (paper, default) or 1.0 (faster on LCE; see the module docstring).
        input_scaling: ``None`` (default, as the original code) or ``"K"`` to multiply the output
            by the paper's K map (eq. 11). K is float work that LCE cannot fuse; the paper
            reports it adds < 1% top-1.
        weight_gradient: ``"paper"`` (default), ``"ste"`` or ``"autodiff"``.
        clip_value: straight-through window of both quantizers and the weight clip.
        use_bias: default False.
        **kwargs: any other ``Conv2D`` argument (``dilation_rate``, ``activation``, ...).

    Example:
        >>> layer = XNORConv2D(64, 3, padding="same", pad_values=1.0)
        >>> layer(tf.random.normal((2, 8, 8, 32))).shape
        TensorShape([2, 8, 8, 64])
    """

    _binary_inputs = True


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class BWNConv2D(_ScaledBinaryConv2D):
    r"""Binary-Weight-Network convolution: real input, alpha-scaled binary kernel (section 3.1).

    .. math:: y = x * (\alpha\,\mathrm{sign}(W))

    Same arguments as :class:`XNORConv2D` except ``input_scaling``, which does not apply to
    real-valued inputs.

    Example:
        >>> BWNConv2D(64, 3)(tf.random.normal((2, 8, 8, 32))).shape
        TensorShape([2, 6, 6, 64])
    """

    _binary_inputs = False


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class XNORDense(_ScaledBinaryDense):
    r"""XNOR-Net fully connected layer, computed as a 1x1 convolution so LCE binarizes it.

    .. math:: y = (\mathrm{sign}(x) \cdot \mathrm{sign}(W)) \odot \alpha
              \quad [\odot \beta \text{ with input\_scaling="K"}, \beta = \mathrm{mean}|x|]

    Args:
        units: output features.
        input_scaling, weight_gradient, clip_value, use_bias: as :class:`XNORConv2D`.
        **kwargs: any other ``Dense`` argument.

    Example:
        >>> XNORDense(10)(tf.random.normal((4, 64))).shape
        TensorShape([4, 10])
    """

    _binary_inputs = True


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class BWNDense(_ScaledBinaryDense):
    r"""Binary-Weight-Network fully connected layer: real input, alpha-scaled binary kernel.

    Example:
        >>> BWNDense(10)(tf.random.normal((4, 64))).shape
        TensorShape([4, 10])
    """

    _binary_inputs = False
