"""AlexNet as in the XNOR-Net paper (section 4.1) and the original code (``alexnetxnor.lua``).

Layer list (224x224 input; XNOR, BWN and float differ only in the binarized convolutions)::

    conv1   96 @ 11x11 /4, pad 2   full precision -> BN -> ReLU -> maxpool 3/2      55 -> 27
    conv2  256 @ 5x5, pad 2        BN -> BinActiv -> BinConv -> maxpool 3/2         27 -> 13
    conv3  384 @ 3x3, pad 1        BN -> BinActiv -> BinConv                        13
    conv4  384 @ 3x3, pad 1        BN -> BinActiv -> BinConv                        13
    conv5  256 @ 3x3, pad 1        BN -> BinActiv -> BinConv -> maxpool 3/2         13 -> 6
    fc6   4096 @ 6x6 (conv)        BN -> BinActiv -> BinConv                        1
    fc7   4096 @ 1x1 (conv)        BN -> BinActiv -> BinConv                        1
    fc8   classes @ 1x1 (conv)     BN -> ReLU -> full-precision conv -> softmax

The paper's block order BN -> BinActiv -> BinConv -> Pool matters: it measured 44.2% top-1 for it
against 30.3% for Conv -> BN -> Act -> Pool. No ReLU follows a binary conv and there is no dropout
(as in the original code). BatchNorm has no affine parameters (Torch's ``affine=false``).
The BWN and float twins put BN -> ReLU where XNOR has BN -> BinActiv.

fc6 is a convolution over the whole pool5 map (6x6 at 224x224), i.e. a fully connected layer in
the convolutional form LCE turns into a binary op. At other input sizes its kernel is the pool5 size,
as ``Flatten -> Dense`` would adapt. The smallest input is 63x63 (pool5 is then 1x1).
At 224x224 with 1000 classes: 1.135 G MACs, 90.4% of them in binary layers, 58.2 M binary weights.
"""

from __future__ import annotations

import tensorflow as tf

from xnor_keras.zoo import _common
from xnor_keras.zoo._common import Binarization, batch_norm, make_variant
from xnor_keras.zoo._registry import register_model

__all__ = ["AlexNet", "BWNAlexNet", "XNORAlexNet", "MIN_INPUT_SIZE"]

MIN_INPUT_SIZE = 63
DEFAULT_INPUT_SIZE = 224

# (name, filters, kernel size, max-pool after)
_FEATURE_BLOCKS = (
    ("conv2", 256, 5, True),
    ("conv3", 384, 3, False),
    ("conv4", 384, 3, False),
    ("conv5", 256, 3, True),
)


def _binary_block(x, binarization: Binarization, name: str, filters: int, kernel_size, padding: str):
    x = batch_norm(f"{name}_bn")(x)
    x = binarization.activation(x, name=f"{name}_relu")
    return binarization.conv(filters, kernel_size, padding=padding, name=name)(x)


def alexnet(
    binarization: Binarization,
    *,
    name: str,
    **app,
) -> tf.keras.Model:
    """The one AlexNet builder; see the module docstring for the layer list."""
    height, width, channels = _common.validate_common(
        **app, default_size=DEFAULT_INPUT_SIZE, min_size=MIN_INPUT_SIZE
    )
    include_top, input_tensor, weights = app["include_top"], app["input_tensor"], app["weights"]
    if include_top and (height is None or width is None):
        raise ValueError(
            "Expected a fixed `input_shape` with include_top=True (fc6 covers the whole pool5 "
            f"map). Received: input_shape={(height, width, channels)!r}"
        )
    layers = tf.keras.layers
    inputs = _common.build_inputs(input_tensor, (height, width, channels))
    x = layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
    x = layers.Conv2D(96, 11, strides=4, use_bias=False, name="conv1")(x)
    x = batch_norm("conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPool2D(3, strides=2, name="pool1")(x)
    for block_name, filters, kernel_size, pool in _FEATURE_BLOCKS:
        x = _binary_block(x, binarization, block_name, filters, kernel_size, "same")
        if pool:
            x = layers.MaxPool2D(3, strides=2, name=f"pool{block_name[-1]}")(x)

    if not include_top:
        return _common.finish_model(
            inputs, x, name=name, input_tensor=input_tensor, weights=weights, include_top=False,
            pooling_head=_common.global_pooling(app["pooling"]),
        )
    x = _binary_block(x, binarization, "fc6", 4096, tuple(x.shape[1:3]), "valid")
    x = _binary_block(x, binarization, "fc7", 4096, 1, "valid")
    x = batch_norm("fc8_bn")(x)
    x = layers.ReLU(name="fc8_relu")(x)
    x = layers.Conv2D(app["classes"], 1, name="fc8")(x)
    x = layers.Flatten(name="flatten")(x)
    x = _common.classifier_output(x, app["classifier_activation"])
    return _common.finish_model(inputs, x, name=name, input_tensor=input_tensor, weights=weights)


_ARGS = """
    Args:
        include_top: include fc6-fc8 (else the output is pool5, or its `pooling`).
        weights: None (random init), a registered name (``xnor_keras.zoo.list_weights()``) or the
            path of a weights file saved from this model (packed binary weights, .h5 or TF).
        input_tensor: optional Keras tensor to use as the input.
        input_shape: (height, width, channels); default (224, 224, 3), or the named weights'; at least 63x63.
        pooling: with include_top=False: None (4-D pool5 output), "avg" or "max".
        classes: number of classes; default 1000, or the named weights' classes.
        classifier_activation: activation of the output (None for logits).
"""

XNORAlexNet = register_model(make_variant(alexnet, "xnor", "XNORAlexNet", "xnor_alexnet", f"""XNOR-Net AlexNet: binary inputs and weights in conv2-fc7 (paper: 44.2% / 69.2% ImageNet top-1 / top-5).
{_ARGS}        pad_values: 0.0 (paper) or 1.0 (faster on LCE) for padding binarized inputs.
        input_scaling: None (default, as the original code) or "K" (paper eq. 11).
        weight_gradient: "paper" (default), "ste" or "autodiff".
        clip_value: straight-through window and weight clip (default 1).

    Example:
        >>> model = XNORAlexNet(input_shape=(64, 64, 3), classes=10)
"""))

BWNAlexNet = register_model(make_variant(alexnet, "bwn", "BWNAlexNet", "bwn_alexnet", f"""Binary-Weight-Network AlexNet: binary weights, real activations in conv2-fc7 (paper: 56.8% / 79.4%).
{_ARGS}        weight_gradient: "paper" (default), "ste" or "autodiff".
        clip_value: straight-through window and weight clip (default 1).
"""))

AlexNet = register_model(make_variant(alexnet, "float", "AlexNet", "alexnet", f"""Full-precision twin of XNORAlexNet (paper's baseline with BN: 56.6% / 80.2%).

    Same layer names and shapes, ReLU where XNOR binarizes, so speed and size compare like for like.
{_ARGS}"""))
