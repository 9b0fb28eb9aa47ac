"""The inference copy LCE converts: binary kernels as constants, sign thresholds centred.

* :func:`inference_copy` evaluates each 1-bit kernel quantizer once and stores the result.
* :func:`_center_sign_thresholds` moves BatchNorm thresholds before binary activations halfway
  between attainable values, so LCE's rounding cannot flip a sign.
* :func:`_fold_residual_batchnorms` removes the BatchNorms between a residual addition and the
  signs it feeds, which LCE cannot fuse (a float multiply and add over the whole map), by carrying
  their thresholds along the residual stream as biases that LCE fuses into its binary conv.
* :func:`_pool_after_batchnorm` lets a max-pool between a binary conv and the BatchNorm of the
  next sign run after that BatchNorm, so LCE fuses the BatchNorm into the conv and pools bits.
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

from xnor_keras.convert._common import _COPY_NAME, _has_binary_kernel, _walk_layers
from xnor_keras.layers import _ScaledBinaryMixin

__all__ = ["inference_copy"]


def _clone_without_init(layer: tf.keras.layers.Layer) -> tf.keras.layers.Layer:
    """Clone `layer` from its config with zero initializers: every weight is overwritten next,
    and drawing ~60 M random numbers for AlexNet's kernels would cost half a second."""
    config = layer.get_config()
    for key in ("kernel_initializer", "bias_initializer", "depthwise_initializer",
                "pointwise_initializer", "embeddings_initializer"):
        if key in config:
            config[key] = {"class_name": "Zeros", "config": {}}
    try:
        return layer.__class__.from_config(config)
    except Exception:  # a layer whose config does not round-trip that way: clone as Keras does
        return layer.__class__.from_config(layer.get_config())


def _latent(variable):
    return getattr(variable, "latent_variable", variable)


def inference_copy(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` whose binary kernels are constants, ready for LCE.

    Each 1-bit kernel quantizer (alpha * sign(W), or larq's sign) is evaluated once and its result
    stored as the layer's weights, and the quantizer removed. The copy computes the same function,
    but LCE no longer has to constant-fold the quantizer: it does so only for kernels below about
    128 MiB, so without this a large layer such as XNOR AlexNet's fc6 (6x6x256x4096) stays a float
    convolution that recomputes alpha at every inference (306 MiB flatbuffer instead of ~23 MiB).
    """
    copy = tf.keras.models.clone_model(model, clone_function=_clone_without_init)
    copy._name = _COPY_NAME
    pairs = [
        (c, m) for c, m in zip(_walk_layers(copy), _walk_layers(model)) if _has_binary_kernel(c)
    ]
    binarized = {id(_latent(c.kernel)) for c, _ in pairs}
    # Copy every weight except the binary kernels, which are written once, binarized, below.
    for target, source in zip(copy.weights, model.weights):
        if id(_latent(target)) not in binarized:
            _latent(target).assign(_latent(source))
    for layer, original in pairs:
        kernel = layer.kernel
        if isinstance(layer, _ScaledBinaryMixin):
            # Our layers compute conv(x, sign(W)) * alpha (exact at ties): store sign(W) and
            # give alpha as a constant, which LCE folds into its binary conv's output scale.
            # Computed by the original layer's own code, eagerly: XLA would compile one program
            # per kernel shape in every fresh process (~1 s for AlexNet), for a single use.
            with lq.context.quantized_scope(True):
                unit_kernel, alpha = original._unit_kernel_and_alpha(original.kernel, compiled=False)
            kernel.latent_variable.assign(unit_kernel)
            layer._inference_alpha = tf.constant(alpha.numpy())
            if _lce_misreads_zero_padding(layer):
                # Binarize in a form LCE does not fuse, so this layer stays an (exact) float
                # convolution with +-1 weights instead of LCE's mis-padded binary kernel.
                layer.input_quantizer = _plain_sign
        else:
            with lq.context.quantized_scope(True):
                quantized = original.kernel_quantizer(original.kernel.latent_variable)
            kernel.latent_variable.assign(quantized)
        kernel.quantizer = None
    return copy


def _lce_misreads_zero_padding(layer) -> bool:
    """True for a zero-padded 'same' binary conv whose input map is smaller than its kernel.

    Measured with LCE 0.16: there its optimized kernels (default and indirect BGEMM) apply a
    wrong zero-padding correction (the reference kernel is right), e.g. every 3x3 conv on a 2x2
    or 1x1 map, as in ResNet-18's last stages at 32x32 input. Such maps are tiny, so running
    these layers as float convolutions costs little.
    """
    if not (
        isinstance(layer, _ScaledBinaryMixin)
        and layer._binary_inputs
        and isinstance(layer, tf.keras.layers.Conv2D)
        and layer.padding == "same"
        and layer.pad_values == 0.0
    ):
        return False
    spatial = tuple(layer.input_shape[1:3])
    if None in spatial:
        return False  # unknown at conversion time; see the deployment guide
    effective = [(k - 1) * d + 1 for k, d in zip(layer.kernel_size, layer.dilation_rate)]
    return any(size < k for size, k in zip(spatial, effective))


def _plain_sign(x: tf.Tensor) -> tf.Tensor:
    """sign with sign(0) = +1, written so that LCE does not turn the next conv into LceBconv2d."""
    return tf.cast(x >= 0, x.dtype) * 2.0 - 1.0


def _single_inbound_layer(layer):
    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return None
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, list) else [inbound]
    return inbound[0] if len(inbound) == 1 else None


def _is_exact_xnor_output(layer) -> bool:
    """Output is alpha * (integer dot product of +-1 values) per channel: nothing added to it."""
    return (
        isinstance(layer, _ScaledBinaryMixin)
        and layer._binary_inputs
        and layer.input_scaling is None
        and not layer.use_bias
        and layer.activation in (None, tf.keras.activations.linear)
    )


def _center_sign_thresholds(model: tf.keras.Model) -> int:
    """Move BatchNorm thresholds that decide binary activations halfway between attainable values.

    Pattern: an XNOR layer (output alpha * D, D an integer dot product) -> optional max-pool ->
    BatchNorm -> only XNOR layers (which take its sign). The sign is then decided by
    D >= t (or D <= t) for a per-channel threshold t. Any threshold strictly between the same two
    integers gives identical signs, so we move it to the half-integer: ties (D == t, where
    Keras says sign(0) = +1) keep their sign, and a margin of alpha*|scale|/2 makes the result
    immune to rounding in LCE's kernels (its zero-padding correction is float arithmetic).
    Thresholds within 1e-6 of an integer are taken as that integer (float noise in the BN
    statistics). Returns how many BatchNorm layers were changed.
    """
    changed = 0
    for bn in model.layers:
        if not isinstance(bn, tf.keras.layers.BatchNormalization) or len(bn.inbound_nodes) != 1:
            continue
        rank = len(bn.input_shape)
        if list(np.atleast_1d(bn.axis) % rank) != [rank - 1]:
            continue  # statistics per channel (last axis) only
        producer = _single_inbound_layer(bn)
        if isinstance(producer, tf.keras.layers.MaxPooling2D):
            producer = _single_inbound_layer(producer)
        if producer is None or not _is_exact_xnor_output(producer) or producer._inference_alpha is None:
            continue
        consumers = [node.outbound_layer for node in bn.outbound_nodes]
        if not consumers or not all(
            isinstance(c, _ScaledBinaryMixin) and c._binary_inputs and c.input_scaling is None
            for c in consumers
        ):
            continue
        alpha = np.asarray(producer._inference_alpha, np.float64).reshape(-1)
        mean = np.asarray(bn.moving_mean, np.float64)
        scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        if bn.scale:
            scale = scale * np.asarray(bn.gamma, np.float64)
        beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
        usable = (alpha > 0) & (scale != 0)
        safe_scale = np.where(usable, scale, 1.0)
        offset = beta / safe_scale
        t = (mean - offset) / np.where(usable, alpha, 1.0)
        nearest = np.round(t)
        t = np.where(np.abs(t - nearest) <= 1e-6 * np.maximum(1.0, np.abs(t)), nearest, t)
        t_centered = np.where(safe_scale > 0, np.ceil(t) - 0.5, np.floor(t) + 0.5)
        new_mean = np.where(usable, alpha * t_centered + offset, mean)
        bn.moving_mean.assign(new_mean.astype(bn.moving_mean.dtype.as_numpy_dtype))
        changed += 1
    return changed


def _consumers(layer) -> list:
    return [node.outbound_layer for node in layer.outbound_nodes]


def _inbound_layers(layer) -> list:
    """The layers whose outputs feed `layer`'s only call, in order (with repeats)."""
    inbound = layer.inbound_nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _per_channel_batch_norm(layer) -> bool:
    if not isinstance(layer, tf.keras.layers.BatchNormalization) or len(layer.inbound_nodes) != 1:
        return False
    rank = len(layer.input_shape)
    return list(np.atleast_1d(layer.axis) % rank) == [rank - 1]


def _takes_plain_sign(layer) -> bool:
    """An XNOR layer: its output depends on its input only through sign(x), sign(0) = +1."""
    return isinstance(layer, _ScaledBinaryMixin) and layer._binary_inputs and layer.input_scaling is None


def _sign_threshold(bn) -> np.ndarray | None:
    """Per channel t with sign(bn(x)) == sign(x - t), where `bn` feeds only plain signs.

    Holds when every channel's scale gamma / sqrt(var + eps) is positive: then bn(x) >= 0 exactly
    when x >= t = mean - beta / scale. None where `bn` is not such a BatchNorm.
    """
    if not _per_channel_batch_norm(bn):
        return None
    consumers = _consumers(bn)
    if not consumers or not all(_takes_plain_sign(c) for c in consumers):
        return None
    scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    if bn.scale:
        scale = scale * np.asarray(bn.gamma, np.float64)
    if not np.all(scale > 0):
        return None
    mean = np.asarray(bn.moving_mean, np.float64)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
    return mean - beta / scale


def _biasable_input(add) -> tf.keras.layers.Layer | None:
    """An input of `add` that can take any per-channel bias: a convolution (or our Dense) whose
    only consumer is `add`, with a linear activation and the output shape of `add`."""
    for layer in _inbound_layers(add):
        if not (isinstance(layer, _ScaledBinaryMixin) or type(layer) is tf.keras.layers.Conv2D):
            continue
        if (
            len(layer.inbound_nodes) == 1
            and _consumers(layer) == [add]
            and layer.activation in (None, tf.keras.activations.linear)
            and tuple(layer.output_shape) == tuple(add.output_shape)
        ):
            return layer
    return None


def _is_pointwise_conv(layer) -> bool:
    """A plain 1x1 convolution: an offset in its input moves its output by W^T offset exactly
    (no padding can touch a 1x1 window, whatever `padding`)."""
    return (
        type(layer) is tf.keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and layer.activation in (None, tf.keras.activations.linear)
        and len(layer.inbound_nodes) == 1
    )


def _absorbs_offset(consumer, add) -> bool:
    """True if `consumer` of `add` can be rewritten to compute the same from add - offset."""
    if _per_channel_batch_norm(consumer):
        return True  # moving_mean - offset
    if isinstance(consumer, tf.keras.layers.Add):
        return len(consumer.inbound_nodes) == 1 and _biasable_input(consumer) is not None
    if _is_pointwise_conv(consumer):
        following = _consumers(consumer)
        return consumer.use_bias or (len(following) == 1 and _per_channel_batch_norm(following[0]))
    return False


def _add_to_bias(layer, delta: np.ndarray) -> None:
    """bias += delta, creating a zero bias first in a layer built without one."""
    if not layer.use_bias:
        # Trainable and after the kernel, as a layer built with use_bias=True has it (its config
        # now says so): a copy of this model then gets its weights in the same order.
        with tf.name_scope(layer.name):
            layer.bias = layer.add_weight(
                "bias", shape=(int(layer.kernel.shape[-1]),), initializer="zeros", trainable=True
            )
        layer.use_bias = True
    layer.bias.assign((np.asarray(layer.bias, np.float64) + delta).astype(np.float32))


def _shift_moving_mean(bn, delta: np.ndarray) -> None:
    mean = np.asarray(bn.moving_mean, np.float64) - delta
    bn.moving_mean.assign(mean.astype(bn.moving_mean.dtype.as_numpy_dtype))


def _identity_call(inputs, *args, **kwargs):
    return tf.identity(inputs)


def _make_identity(bn) -> None:
    """`bn` passes its input through. Its statistics are also set to a threshold of 0, so a copy
    made from its config and weights (which loses this call) still takes the same signs, and
    folding that copy again moves nothing."""
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, bn.moving_mean.dtype.as_numpy_dtype))
    if bn.center:
        bn.beta.assign(np.zeros(bn.beta.shape, bn.beta.dtype.as_numpy_dtype))
    bn.call = _identity_call


def _fold_residual_batchnorms(model: tf.keras.Model) -> int:
    """Remove BatchNorms that sit between a residual addition and the signs it feeds.

    Pattern (XNOR ResNets): ``Add`` -> BatchNorm -> only XNOR layers (which take its sign). LCE
    fuses such a BatchNorm nowhere (it becomes a float MUL and ADD over the whole map), yet
    sign(bn(s)) = sign(s - t) for a per-channel threshold t (positive scales). So each such
    ``Add`` computes s - t instead of s, its BatchNorm becomes the identity, and the offset is
    paid for where it is free:

    * into the ``Add``: a bias on one of its inputs, a convolution that feeds only the ``Add``
      (the block's last binary conv): bias = (offsets of the inputs) - t. LCE fuses it into
      ``LceBconv2d``'s output bias, as it does alpha into the output multiplier;
    * out of the ``Add``, for every other consumer: a BatchNorm's moving mean moves by -t; a 1x1
      convolution (the projection shortcut) gets W^T t into its bias, or its following
      BatchNorm's moving mean moves by -W^T t; a following ``Add`` subtracts t through the bias
      of its own convolution input.

    Everything is exact in real arithmetic: outputs differ by float32 rounding, and every sign
    by nothing but rounding at an exact tie. An ``Add`` is left as it is if any of this does not
    apply (a consumer of another kind, no convolution input to carry the bias). Returns how many
    BatchNorm layers were removed.
    """
    adds = [
        layer for layer in model.layers
        if isinstance(layer, tf.keras.layers.Add) and len(layer.inbound_nodes) == 1
        and all(tuple(i.shape) == tuple(layer.output_shape) for i in layer.input)
    ]
    offsets, folded = {}, []
    for add in adds:
        consumers = _consumers(add)
        bn = next((c for c in consumers if _sign_threshold(c) is not None), None)
        if bn is None or _biasable_input(add) is None:
            continue
        if all(c is bn or _absorbs_offset(c, add) for c in consumers):
            offsets[add] = _sign_threshold(bn)
            folded.append(bn)
    for add in adds:
        incoming = [offsets[p] for p in _inbound_layers(add) if p in offsets]
        if add not in offsets and not incoming:
            continue
        own = offsets.get(add, 0.0)
        _add_to_bias(_biasable_input(add), sum(incoming) - own)
    for add, offset in offsets.items():
        for consumer in _consumers(add):
            if consumer in folded:
                _make_identity(consumer)
            elif _per_channel_batch_norm(consumer):
                _shift_moving_mean(consumer, offset)
            elif _is_pointwise_conv(consumer):
                kernel = np.asarray(consumer.kernel, np.float64)[0, 0]
                moved = offset @ kernel  # (in,) @ (in, out): how far the output moves
                if consumer.use_bias:
                    _add_to_bias(consumer, moved)
                else:
                    _shift_moving_mean(_consumers(consumer)[0], moved)
    return len(folded)



def _pool_after_batchnorm(model: tf.keras.Model) -> int:
    """Compute MaxPool -> BatchNorm -> sign as BatchNorm -> MaxPool -> sign, exactly.

    Pattern (XNOR AlexNet's pool2 / pool5, the paper's BinConv -> Pool -> BN -> BinActiv): a
    max-pool of an XNOR layer's output (its only consumer) whose only consumer is a per-channel
    BatchNorm with positive scales that feeds only XNOR layers (which take its sign). After a
    float layer (AlexNet's pool1) the move would not pay: the BatchNorm would run on the
    unpooled map, 4x larger, and nothing would fuse it. A BatchNorm with positive scales is non-decreasing in
    every channel, also in float32 (x - mean, x * scale and x + beta each round monotonically),
    so max(bn(x)) == bn(max(x)) bit for bit. Computed in the new order, LCE fuses the BatchNorm
    into the binary conv before the pool (its output multiplier and bias), turns
    sign(max-pool(x)) into its binary max-pool of sign(x) (``LceBMaxPool2d``) and lets the conv
    write bits: the float max-pool, the float BatchNorm and the sign op leave the flatbuffer.

    Done by swapping the two layers' calls (the pool calls the BatchNorm first, the BatchNorm
    passes its input through), so the graph and the weights stay as they are. A copy rebuilt from
    the config computes the original order, the same function. Returns how many pools moved.
    """
    moved = 0
    for pool in model.layers:
        if not isinstance(pool, tf.keras.layers.MaxPooling2D) or len(pool.inbound_nodes) != 1:
            continue
        producer = _single_inbound_layer(pool)
        if not (
            isinstance(producer, _ScaledBinaryMixin) and producer._binary_inputs
            and producer.activation in (None, tf.keras.activations.linear) and _consumers(producer) == [pool]
        ):
            continue  # after a float layer the BatchNorm would only run on the larger map
        consumers = _consumers(pool)
        if len(consumers) != 1 or _sign_threshold(consumers[0]) is None:
            continue
        bn = consumers[0]
        pool_call, bn_call = pool.call, bn.call

        def call(inputs, *args, _pool_call=pool_call, _bn_call=bn_call, **kwargs):
            return _pool_call(_bn_call(inputs, training=False))

        pool.call = call
        bn.call = _identity_call
        moved += 1
    return moved
