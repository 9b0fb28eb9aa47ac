"""ResNet with XNOR-Net / BWN binary blocks, and its full-precision twin.

The XNOR-Net paper reports ResNet-18 (XNOR 51.2% / 73.2%, BWN 60.8% / 83.0% ImageNet top-1 / top-5)
but its authors never released that code, so these are our choices, each stated with its reason:

* **Stem and classifier stay full precision** (paper: first and last layers are not binarized):
  by default 7x7/2 conv 64 -> BN -> ReLU -> 3x3/2 max-pool; then BN -> ReLU -> global average
  pool -> dense.
* **Two stems** (``stem=``), for XNOR, BWN and float alike:

  - ``"imagenet"`` (default): the 7x7/2 conv and 3x3/2 max-pool above, input / 32 at the last
    stage (7x7 at 224x224, 1x1 at 32x32).
  - ``"cifar"``: 3x3/1 conv 64 -> BN -> ReLU, no max-pool (the 3x3 first layer of He et al.'s
    CIFAR-10 networks, 2016, section 4.2, at ResNet-18's width 64: the CIFAR ResNet-18 of BNN
    papers' CIFAR-10 figures), input / 8 at the last stage (4x4 at 32x32). At 32x32
    with 10 classes it costs 0.555 G MACs, 15x the ImageNet stem's 37.0 M at that size.

  Only ``conv1`` differs (and ``pool1`` is absent); every other layer keeps its name and kernel
  shape, so the two stems share all weights but ``conv1``'s.
* **Basic block in the paper's B-A-C order**: each 3x3 convolution is preceded by its own BN and
  binary activation (``BN -> BinActiv -> BinConv``), as in the paper's AlexNet blocks, so both
  convolutions of a block see binarized inputs. This makes the float twin a pre-activation ResNet
  (He et al., "Identity Mappings in Deep Residual Networks", 2016): BN -> ReLU -> Conv.
* **No ReLU after a binary convolution**: the original XNOR code has none (the next sign is the
  non-linearity), and a ReLU before a sign would make every activation +1 or 0.
* **Shortcut type B** (as the paper trained): identity where shapes match, a projection
  1x1/2 conv -> BN where the stage downsamples. The projections stay full precision: they are
  1% of the MACs (19.3 M of 1.81 G at 224x224) and carry all the information that crosses a
  stage boundary; ``binary_downsample`` is not offered until it is measured.
* BatchNorm without affine parameters and Torch's momentum, as the original code's AlexNet.

Layer names follow Keras applications: ``conv1``, ``conv2_block1_1_bn``, ``conv2_block1_1_conv``,
``conv2_block1_0_conv`` (projection), ``conv2_block1_add``, ..., ``post_bn``, ``avg_pool``,
``fc``, ``predictions``. The smallest input is the one whose last stage is 1x1: 32x32 with the
ImageNet stem, 8x8 with the CIFAR stem (every stride-2 layer then halves an even map).
At 224x224 with 1000 classes ResNet-18 has 1.81 G MACs; with the CIFAR stem at 32x32 and 10
classes, 0.555 G (conv1 1.8 M, each stage 151 M or 134 M, fc 5 k).
"""

from __future__ import annotations

import tensorflow as tf

from xnor_keras.zoo import _common
from xnor_keras.zoo._common import Binarization, batch_norm, make_variant
from xnor_keras.zoo._registry import register_model

__all__ = ["BWNResNet18", "ResNet18", "XNORResNet18", "RESNET_SPECS", "MIN_INPUT_SIZE", "MIN_INPUT_SIZES", "STEMS"]

STEMS = ("imagenet", "cifar")
"""The stems ``stem=`` takes: 7x7/2 conv + 3x3/2 max-pool, or 3x3/1 conv and no pool."""

MIN_INPUT_SIZES = {"imagenet": 32, "cifar": 8}
"""Smallest input side per stem: the last stage is then 1x1 (total stride 32, or 8)."""

MIN_INPUT_SIZE = MIN_INPUT_SIZES["imagenet"]
DEFAULT_INPUT_SIZE = 224

RESNET_SPECS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Basic blocks per stage for each depth; stage widths are 64, 128, 256, 512."""

_WIDTHS = (64, 128, 256, 512)


def basic_block(x, binarization: Binarization, filters: int, stride: int, name: str):
    """Two binarized 3x3 convolutions in B-A-C order, plus the (type B) shortcut."""
    layers = tf.keras.layers
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = batch_norm(f"{name}_0_bn")(shortcut)
    for i, conv_stride in ((1, stride), (2, 1)):
        x = batch_norm(f"{name}_{i}_bn")(x)
        x = binarization.activation(x, name=f"{name}_{i}_relu")
        x = binarization.conv(filters, 3, strides=conv_stride, padding="same", name=f"{name}_{i}_conv")(x)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def stack(x, binarization: Binarization, filters: int, blocks: int, stride: int, name: str):
    """One stage: `blocks` basic blocks, the first with `stride`."""
    for i in range(blocks):
        x = basic_block(x, binarization, filters, stride if i == 0 else 1, name=f"{name}_block{i + 1}")
    return x


def resnet(
    binarization: Binarization,
    *,
    depth: int = 18,
    stem: str = "imagenet",
    name: str,
    **app,
) -> tf.keras.Model:
    """The one ResNet builder; see the module docstring for the choices it makes."""
    if not isinstance(stem, str) or stem not in STEMS:
        raise ValueError(
            f"Expected `stem` to be one of {STEMS} (7x7/2 conv + max-pool, or 3x3/1 conv for "
            f"CIFAR-sized inputs). Received: stem={stem!r}"
        )
    if depth not in RESNET_SPECS:
        raise ValueError(f"Expected `depth` to be one of {sorted(RESNET_SPECS)}. Received: depth={depth!r}")
    note = f" with stem={stem!r}" + (" (stem='cifar' accepts 8x8 and up)" if stem == "imagenet" else "")
    height, width, channels = _common.validate_common(
        **app, default_size=DEFAULT_INPUT_SIZE, min_size=MIN_INPUT_SIZES[stem], min_size_note=note
    )
    include_top, input_tensor, weights = app["include_top"], app["input_tensor"], app["weights"]
    layers = tf.keras.layers
    inputs = _common.build_inputs(input_tensor, (height, width, channels))
    if stem == "imagenet":
        x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    else:
        x = layers.Conv2D(64, 3, strides=1, padding="same", use_bias=False, name="conv1")(inputs)
    x = batch_norm("conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    if stem == "imagenet":
        x = layers.MaxPool2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (filters, blocks) in enumerate(zip(_WIDTHS, RESNET_SPECS[depth])):
        x = stack(x, binarization, filters, blocks, 1 if stage == 0 else 2, name=f"conv{stage + 2}")
    x = batch_norm("post_bn")(x)
    x = layers.ReLU(name="post_relu")(x)
    if not include_top:
        return _common.finish_model(
            inputs, x, name=name, input_tensor=input_tensor, weights=weights, include_top=False,
            pooling_head=_common.global_pooling(app["pooling"]),
        )
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(app["classes"], name="fc")(x)
    x = _common.classifier_output(x, app["classifier_activation"])
    return _common.finish_model(inputs, x, name=name, input_tensor=input_tensor, weights=weights)


_ARGS = """
    Args:
        include_top: include the average pool and classifier (else the output is post_relu,
            or its `pooling`).
        weights: None (random init), a registered name (``xnor_keras.zoo.list_weights()``) or the
            path of a weights file saved from this model (packed binary weights, .h5 or TF).
        input_tensor: optional Keras tensor to use as the input.
        input_shape: (height, width, channels); default (224, 224, 3), or the named weights'; at
            least 32x32 (8x8 with ``stem="cifar"``).
        pooling: with include_top=False: None (4-D output), "avg" or "max".
        classes: number of classes; default 1000, or the named weights' classes.
        classifier_activation: activation of the output (None for logits).
        stem: "imagenet" (default: 7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no
            pool; for 32x32 inputs, where the ImageNet stem leaves the last stage 1x1).
"""

XNORResNet18 = register_model(make_variant(resnet, "xnor", "XNORResNet18", "xnor_resnet18", f"""XNOR-Net ResNet-18: binary inputs and weights in every 3x3 block convolution (paper: 51.2% / 73.2%).
{_ARGS}        pad_values: 0.0 (paper) or 1.0 (faster on LCE) for padding binarized inputs.
        input_scaling: None (default) or "K" (paper eq. 11).
        weight_gradient: "paper" (default), "ste" or "autodiff".
        clip_value: straight-through window and weight clip (default 1).

    Example:
        >>> model = XNORResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
""", family_options=("stem",)))

BWNResNet18 = register_model(make_variant(resnet, "bwn", "BWNResNet18", "bwn_resnet18", f"""Binary-Weight-Network ResNet-18 (paper: 60.8% / 83.0%).
{_ARGS}        weight_gradient: "paper" (default), "ste" or "autodiff".
        clip_value: straight-through window and weight clip (default 1).
""", family_options=("stem",)))

ResNet18 = register_model(make_variant(resnet, "float", "ResNet18", "resnet18", f"""Full-precision twin of XNORResNet18: pre-activation ResNet-18 with the same layer names and shapes.
{_ARGS}""", family_options=("stem",)))
