"""Tests for :mod:`xnor_keras.zoo`: the XNOR, BWN and float AlexNet / ResNet-18 builders.

Most tests are parametrized over :func:`xnor_keras.zoo.list_models`, so a newly registered model
is covered without editing this file. Variants follow the registry's naming convention
``<KIND><Family>`` (``XNORAlexNet``, ``BWNAlexNet``, ``AlexNet``); a family's float twin carries
the bare family name.

What is checked:

* Keras-applications behaviour: output shapes for ``include_top`` and every ``pooling``, classes,
  logits, ``input_tensor`` (also a layer output), ``weights=PATH``, argument validation with
  messages that name the argument and show the received value.
* Serialization: config round trip, and ``.keras`` / ``.h5`` reload in a fresh process without
  ``custom_objects`` (one XNOR model per family plus BWNResNet18, to keep the run short).
* Training: a few optimizer steps on a fixed batch lower the loss on that batch (XNOR and BWN).
* Architecture: the paper's block order BN -> BinActiv -> BinConv (BN -> ReLU -> Conv for the
  twins), which layers are binary, channel counts, and that the float / BWN twins have the XNOR
  model's layer names and shapes (plus their ``*_relu`` layers).
* The 224x224 figures (MACs, binary fraction, binary weights), written out by hand from the layer
  lists in the module docstrings and compared with ``larq.models.ModelProfile`` /
  ``larq.models.summary``. Only these tests build 224x224 models, each once.
* ResNet-18's ``stem="cifar"``: the family fixture builds it too (OPTION_SETS, 16x16), so every
  architecture / config test covers it; its own tests check the stem layers, the smallest input
  (8x8), the error for a bad value, a fresh-process ``.keras`` reload and the MACs at 32x32.

Everything else uses the smallest convenient inputs (AlexNet 67x67, ResNet 32x32) and few
classes, so the file runs in well under three minutes on two CPU cores.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import xnor_keras as xk
from xnor_keras import zoo
from xnor_keras.testing_utils import assert_saved_model_roundtrip

MODELS = zoo.list_models()
KIND_PREFIXES = (("XNOR", "xnor"), ("BWN", "bwn"))
BINARY_LAYER_TYPES = {"xnor": xk.XNORConv2D, "bwn": xk.BWNConv2D, "float": tf.keras.layers.Conv2D}

# Smallest input each family accepts (its module's MIN_INPUT_SIZE) and the size the tests use.
MIN_SIZE = {"AlexNet": 63, "ResNet18": 32}
SMALL_SIZE = {"AlexNet": 67, "ResNet18": 32}
# Channels of the include_top=False output (pool5 for AlexNet, post_relu for ResNet-18).
FEATURE_CHANNELS = {"AlexNet": 256, "ResNet18": 512}

ALEXNET_BINARY = ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
RESNET18_BINARY = tuple(
    f"conv{stage}_block{block}_{i}_conv" for stage in (2, 3, 4, 5) for block in (1, 2) for i in (1, 2)
)
# The layers that are binarized in the XNOR / BWN variants of each family (plain Conv2D in float).
BINARY_NAMES = {"AlexNet": ALEXNET_BINARY, "ResNet18": RESNET18_BINARY}

CLASSES = 4
BATCH = 2

# Architecture options the family fixture covers besides each family's defaults:
# (family, options, input side). The CIFAR stem at 16x16 keeps every stage's map above 1x1.
OPTION_SETS = {"ResNet18-stem=cifar": ("ResNet18", {"stem": "cifar"}, 16)}
RESNET_MODELS = [name for name in MODELS if name.endswith("ResNet18")]


# --------------------------------------------------------------------------------------------
# Helpers


def _kind(name: str) -> str:
    for prefix, kind in KIND_PREFIXES:
        if name.startswith(prefix):
            return kind
    return "float"


def _family(name: str) -> str:
    for prefix, _ in KIND_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _families() -> list[str]:
    return sorted({_family(name) for name in MODELS})


def _models_of_kind(kind: str) -> list[str]:
    return [name for name in MODELS if _kind(name) == kind]


def _size(name: str) -> int:
    return SMALL_SIZE[_family(name)]


def _build(name: str, **kwargs) -> tf.keras.Model:
    """`name` at its small test size with CLASSES classes (kwargs override)."""
    size = _size(name)
    kwargs = {"input_shape": (size, size, 3), "classes": CLASSES, **kwargs}
    return zoo.get_model(name, **kwargs)


def _images(size: int, batch: int = BATCH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, size, size, 3)).astype("float32")


def _perturb_non_kernel_weights(model: tf.keras.Model, seed: int = 0) -> None:
    """Give BatchNorm statistics and biases non-default values, so that a round trip that drops
    them fails. Kernels keep their (random) initial values."""
    rng = np.random.default_rng(seed)
    values = []
    for weight, value in zip(model.weights, model.get_weights()):
        if "moving_variance" in weight.name:
            value = rng.uniform(0.5, 1.5, value.shape)
        elif "moving_mean" in weight.name or "bias" in weight.name:
            value = rng.normal(0.0, 0.1, value.shape)
        values.append(value.astype(np.float32))
    model.set_weights(values)


def _parents(model: tf.keras.Model, name: str) -> list[str]:
    """Names of the layers feeding layer `name` (its first call)."""
    node = model.get_layer(name).inbound_nodes[0]
    return [layer.name for layer in tf.nest.flatten(node.inbound_layers)]


def _block_base(conv_name: str) -> str:
    """``conv3`` -> ``conv3``; ``conv2_block1_1_conv`` -> ``conv2_block1_1`` (the BN/ReLU prefix)."""
    return conv_name[: -len("_conv")] if conv_name.endswith("_conv") else conv_name


def _is_binary_layer(layer) -> bool:
    return isinstance(layer, (xk.XNORConv2D, xk.BWNConv2D, xk.XNORDense, xk.BWNDense))


# --------------------------------------------------------------------------------------------
# Fixtures


def _variant_sets() -> dict[str, tuple[str, dict, int]]:
    defaults = {family: (family, {}, SMALL_SIZE[family]) for family in _families()}
    return {**defaults, **OPTION_SETS}


def _input_size(variants: dict[str, tf.keras.Model]) -> int:
    return next(iter(variants.values())).input_shape[1]


@pytest.fixture(scope="module", params=sorted(_variant_sets()))
def family_variants(request) -> tuple[str, dict[str, tf.keras.Model]]:
    """One family's registered variants (with its defaults, or one of OPTION_SETS), built once
    at a small size with CLASSES classes and non-default BatchNorm statistics and biases:
    (family, {kind: model}). Tests must not change them."""
    family, options, size = _variant_sets()[request.param]
    tf.keras.utils.set_random_seed(0)
    variants = {
        _kind(name): _build(name, input_shape=(size, size, 3), **options)
        for name in MODELS
        if _family(name) == family
    }
    for seed, model in enumerate(variants.values()):
        _perturb_non_kernel_weights(model, seed)
    return family, variants


@pytest.fixture(scope="module")
def xnor_alexnet_224() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    return zoo.XNORAlexNet()


@pytest.fixture(scope="module")
def xnor_resnet18_224() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    return zoo.XNORResNet18()


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_variant_of_both_families():
    expected = {"AlexNet", "BWNAlexNet", "XNORAlexNet", "ResNet18", "BWNResNet18", "XNORResNet18"}
    assert expected <= set(MODELS)
    assert MODELS == sorted(MODELS)
    assert set(_families()) <= set(SMALL_SIZE), "add a new family's sizes to the tables above"


def test_get_model_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="NoSuchNet") as info:
        zoo.get_model("NoSuchNet")
    message = str(info.value)
    assert "XNORAlexNet" in message
    for name in MODELS:
        assert name in message


def test_register_model_rejects_a_different_builder_under_a_taken_name():
    def XNORAlexNet(**kwargs):  # noqa: N802  (same name as the registered builder)
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="XNORAlexNet"):
        zoo.register_model(XNORAlexNet)
    assert zoo.register_model(zoo.XNORAlexNet) is zoo.XNORAlexNet  # re-registering is a no-op


# --------------------------------------------------------------------------------------------
# Outputs


def test_include_top_output_is_class_probabilities(family_variants):
    family, variants = family_variants
    x = _images(_input_size(variants))
    for kind, model in variants.items():
        probabilities = model(x, training=False).numpy()
        assert model.output_shape == (None, CLASSES), kind
        assert probabilities.shape == (BATCH, CLASSES), kind
        assert (probabilities >= 0).all(), kind
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5, err_msg=kind)
        assert model.get_layer("predictions").dtype == "float32"


@pytest.mark.parametrize("name", MODELS)
def test_logits_at_the_smallest_input_size(name):
    # The documented minimum builds; classifier_activation=None leaves the logits alone.
    size = MIN_SIZE[_family(name)]
    model = _build(name, input_shape=(size, size, 3), classes=5, classifier_activation=None)
    logits = model(_images(size), training=False).numpy()
    assert logits.shape == (BATCH, 5)
    assert model.get_layer("predictions").activation is tf.keras.activations.linear
    assert not np.allclose(logits.sum(axis=1), 1.0, atol=1e-3)
    assert (logits < 0).any(), "softmax outputs are never negative; these should be logits"


@pytest.mark.parametrize("pooling", [None, "avg", "max"])
@pytest.mark.parametrize("name", MODELS)
def test_include_top_false_output_shape(name, pooling):
    size = _size(name)
    model = _build(name, include_top=False, pooling=pooling)
    channels = FEATURE_CHANNELS[_family(name)]
    features = model(_images(size), training=False)
    if pooling is None:
        assert len(model.output_shape) == 4
        assert model.output_shape[-1] == channels
        assert features.shape[0] == BATCH and features.shape[-1] == channels
    else:
        assert model.output_shape == (None, channels)
        assert features.shape == (BATCH, channels)
        assert model.layers[-1].name == f"{pooling}_pool"
    # No classifier without the top.
    layer_names = {layer.name for layer in model.layers}
    assert "predictions" not in layer_names


# --------------------------------------------------------------------------------------------
# input_tensor


@pytest.mark.parametrize("name", MODELS)
def test_input_tensor_is_used_as_the_model_input(name):
    size = _size(name)
    inputs = tf.keras.Input((size, size, 3), name="my_input")
    model = zoo.get_model(name, input_tensor=inputs, classes=CLASSES)
    assert len(model.inputs) == 1 and model.inputs[0] is inputs
    assert model.input_shape == (None, size, size, 3)
    assert model(_images(size), training=False).shape == (BATCH, CLASSES)


@pytest.mark.parametrize("name", MODELS)
def test_layer_output_as_input_tensor_keeps_the_source_inputs(name):
    size = _size(name)
    inputs = tf.keras.Input((size, size, 3), name="raw_pixels")
    rescaled = tf.keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    model = zoo.get_model(name, input_tensor=rescaled, classes=CLASSES)
    assert len(model.inputs) == 1 and model.inputs[0] is inputs
    assert "rescale" in [layer.name for layer in model.layers]
    pixels = np.random.default_rng(0).uniform(0, 255, (BATCH, size, size, 3)).astype("float32")
    assert model(pixels, training=False).shape == (BATCH, CLASSES)


# --------------------------------------------------------------------------------------------
# Serialization


def _logits(model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
    """The input of the `predictions` activation (softmax saturates, logits show differences)."""
    head = tf.keras.Model(model.inputs, model.get_layer("predictions").input)
    return head(x, training=False).numpy()


def test_config_roundtrip_rebuilds_an_identical_model(family_variants):
    family, variants = family_variants
    x = _images(_input_size(variants))
    for kind, model in variants.items():
        config = model.get_config()
        clone = tf.keras.Model.from_config(config)
        assert json.dumps(clone.get_config(), sort_keys=True, default=str) == json.dumps(
            config, sort_keys=True, default=str
        ), kind
        assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
        assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
        clone.set_weights(model.get_weights())
        np.testing.assert_array_equal(_logits(clone, x), _logits(model, x), err_msg=kind)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize(
    "name, options, formats",
    [
        ("XNORAlexNet", {}, ("keras", "h5")),
        ("XNORResNet18", {}, ("keras", "h5")),
        ("BWNResNet18", {}, ("keras", "h5")),
        ("XNORResNet18", {"stem": "cifar"}, ("keras",)),
    ],
    ids=["XNORAlexNet", "XNORResNet18", "BWNResNet18", "XNORResNet18-stem=cifar"],
)
def test_save_and_reload_in_fresh_process(name, options, formats, tmp_path):
    model = _build(name, classifier_activation=None, **options)
    _perturb_non_kernel_weights(model)
    assert_saved_model_roundtrip(model, _images(_size(name)), tmp_path, formats=formats)


@pytest.mark.parametrize(
    "name, filename",
    [(name, "weights.h5") for name in _models_of_kind("xnor")]
    + [("XNORResNet18", "ckpt")],  # a TF checkpoint prefix: `ckpt.index` exists, `ckpt` does not
)
def test_weights_path_loads_saved_weights(name, filename, tmp_path):
    source = _build(name, classifier_activation=None)
    _perturb_non_kernel_weights(source)
    path = tmp_path / filename
    source.save_weights(str(path))
    loaded = _build(name, classifier_activation=None, weights=str(path))
    for expected, actual in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(actual, expected)
    x = _images(_size(name))
    np.testing.assert_array_equal(loaded(x, training=False), source(x, training=False))


# --------------------------------------------------------------------------------------------
# Training


# The float twins are plain Keras layers; training them tests Keras, not xnor_keras.
@pytest.mark.parametrize("name", _models_of_kind("xnor") + _models_of_kind("bwn"))
def test_a_few_training_steps_lower_the_loss_on_the_batch(name):
    size = _size(name)
    x = _images(size, batch=8, seed=1)
    y = np.arange(8) % CLASSES  # every class present, fixed
    model = _build(name, classifier_activation=None)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(tf.keras.optimizers.Adam(1e-3), loss_fn)

    # Training mode throughout: the loss that fit() minimises, BatchNorm on batch statistics.
    before = float(loss_fn(y, model(x, training=True)))
    model.fit(x, y, batch_size=8, epochs=5, shuffle=False, verbose=0)
    after = float(loss_fn(y, model(x, training=True)))
    assert np.isfinite(before) and np.isfinite(after)
    assert after < before, f"loss did not decrease: {before:.4f} -> {after:.4f}"


# --------------------------------------------------------------------------------------------
# Architecture


def test_twins_have_the_xnor_layer_names_and_shapes(family_variants):
    family, variants = family_variants
    xnor = variants["xnor"]
    binary = [layer.name for layer in xnor.layers if isinstance(layer, xk.XNORConv2D)]
    assert sorted(binary) == sorted(BINARY_NAMES[family])
    xnor_layers = {layer.name: layer for layer in xnor.layers}
    for kind in ("bwn", "float"):
        twin = variants[kind]
        twin_layers = {layer.name: layer for layer in twin.layers}
        # The only difference in names: the twin's ReLU before each binarized conv.
        assert set(twin_layers) - set(xnor_layers) == {f"{_block_base(n)}_relu" for n in binary}
        assert set(xnor_layers) - set(twin_layers) == set()
        for relu in set(twin_layers) - set(xnor_layers):
            assert isinstance(twin_layers[relu], tf.keras.layers.ReLU)
        for name, layer in xnor_layers.items():
            twin_layer = twin_layers[name]
            assert twin_layer.output_shape == layer.output_shape, (kind, name)
            if name in binary:
                assert type(twin_layer) is BINARY_LAYER_TYPES[kind], (kind, name)
            else:
                assert type(twin_layer) is type(layer), (kind, name)
            if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
                assert twin_layer.kernel.shape == layer.kernel.shape, (kind, name)
        assert twin.count_params() == xnor.count_params()


def test_block_order_is_bn_then_binarized_conv(family_variants):
    family, variants = family_variants
    for kind, model in variants.items():
        for conv in BINARY_NAMES[family]:
            base = _block_base(conv)
            if kind == "xnor":
                # BN -> BinActiv -> BinConv: the sign lives in the XNOR layer, the BN feeds it.
                assert _parents(model, conv) == [f"{base}_bn"], (kind, conv)
            else:
                assert _parents(model, conv) == [f"{base}_relu"], (kind, conv)
                assert _parents(model, f"{base}_relu") == [f"{base}_bn"], (kind, conv)
            bn = model.get_layer(f"{base}_bn")
            assert isinstance(bn, tf.keras.layers.BatchNormalization)
            assert not bn.center and not bn.scale  # Torch's affine=false


def test_no_relu_follows_a_binarized_conv(family_variants):
    family, variants = family_variants
    for kind, model in variants.items():
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.ReLU):
                parents = _parents(model, layer.name)
                assert not set(parents) & set(BINARY_NAMES[family]), (kind, layer.name, parents)


def test_binarized_layer_channels_are_multiples_of_32(family_variants):
    family, variants = family_variants
    for kind, model in variants.items():
        for name in BINARY_NAMES[family]:
            kernel_shape = model.get_layer(name).kernel.shape
            assert kernel_shape[-2] % 32 == 0, (kind, name, kernel_shape)  # input channels
            assert kernel_shape[-1] % 32 == 0, (kind, name, kernel_shape)  # filters


def test_xnor_alexnet_binary_layers_are_conv2_to_fc7():
    model = _build("XNORAlexNet")
    binary = [layer.name for layer in model.layers if _is_binary_layer(layer)]
    assert binary == list(ALEXNET_BINARY)
    assert all(isinstance(model.get_layer(name), xk.XNORConv2D) for name in ALEXNET_BINARY)
    plain_convs = [layer.name for layer in model.layers if type(layer) is tf.keras.layers.Conv2D]
    assert plain_convs == ["conv1", "fc8"]
    assert _parents(model, "conv3") == ["conv3_bn"]
    assert _parents(model, "fc8") == ["fc8_relu"]
    assert _parents(model, "fc8_relu") == ["fc8_bn"]
    # fc6 covers the whole pool5 map (1x1 at 67x67).
    assert model.get_layer("pool5").output_shape == (None, 1, 1, 256)
    assert model.get_layer("fc6").kernel.shape == (1, 1, 256, 4096)
    assert model.get_layer("fc8").kernel.shape == (1, 1, 4096, CLASSES)


def test_xnor_resnet18_has_16_binary_convs_and_3_projections():
    model = _build("XNORResNet18")
    binary = [layer.name for layer in model.layers if _is_binary_layer(layer)]
    assert len(binary) == 16
    assert sorted(binary) == sorted(RESNET18_BINARY)
    assert all(isinstance(model.get_layer(name), xk.XNORConv2D) for name in binary)
    plain_convs = sorted(layer.name for layer in model.layers if type(layer) is tf.keras.layers.Conv2D)
    assert plain_convs == ["conv1", "conv3_block1_0_conv", "conv4_block1_0_conv", "conv5_block1_0_conv"]
    for stage in (3, 4, 5):
        projection = model.get_layer(f"conv{stage}_block1_0_conv")
        assert projection.kernel_size == (1, 1) and projection.strides == (2, 2)
        assert _parents(model, f"conv{stage}_block1_0_bn") == [projection.name]
    adds = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Add)]
    assert len(adds) == 8
    assert type(model.get_layer("fc")) is tf.keras.layers.Dense


# --------------------------------------------------------------------------------------------
# ResNet-18's stem

_WIDTH = {2: 64, 3: 128, 4: 256, 5: 512}


@pytest.mark.parametrize("name", RESNET_MODELS)
def test_resnet18_cifar_stem_is_one_3x3_stride_1_conv_without_pool(name):
    # At the CIFAR stem's smallest input (8x8) the stages see 8, 4, 2 and 1: total stride 8.
    cifar = _build(name, input_shape=(8, 8, 3), classes=5, classifier_activation=None, stem="cifar")
    conv1 = cifar.get_layer("conv1")
    assert type(conv1) is tf.keras.layers.Conv2D
    assert conv1.kernel.shape == (3, 3, 3, 64) and conv1.strides == (1, 1) and conv1.padding == "same"
    assert "pool1" not in [layer.name for layer in cifar.layers]
    assert not [layer for layer in cifar.layers if isinstance(layer, tf.keras.layers.MaxPool2D)]
    assert _parents(cifar, "conv2_block1_1_bn") == ["conv1_relu"]
    for stage, side in zip((2, 3, 4, 5), (8, 4, 2, 1)):
        assert cifar.get_layer(f"conv{stage}_block2_add").output_shape == (None, side, side, _WIDTH[stage])
    logits = cifar(_images(8), training=False).numpy()
    assert logits.shape == (BATCH, 5) and np.isfinite(logits).all()

    # Same names and kernel shapes as the ImageNet stem, but for conv1 and the missing pool1.
    imagenet = _build(name, classes=5, classifier_activation=None)
    shapes = {w.name: tuple(w.shape) for w in imagenet.weights}
    assert {layer.name for layer in imagenet.layers} - {layer.name for layer in cifar.layers} == {"pool1"}
    assert {layer.name for layer in cifar.layers} <= {layer.name for layer in imagenet.layers}
    different = {w.name for w in cifar.weights if shapes[w.name] != tuple(w.shape)}
    assert different == {"conv1/kernel:0"}
    assert imagenet.get_layer("conv1").kernel.shape == (7, 7, 3, 64)


@pytest.mark.parametrize("value", ["CIFAR", "resnet", None, 3])
@pytest.mark.parametrize("name", RESNET_MODELS)
def test_bad_stem_is_named_with_the_allowed_values(name, value):
    with pytest.raises(ValueError, match=re.escape(f"stem={value!r}")) as info:
        _build(name, stem=value)
    assert "`stem`" in str(info.value) and "('imagenet', 'cifar')" in str(info.value)


def test_alexnet_has_no_stem_option():
    with pytest.raises(ValueError, match=re.escape("stem='cifar'")) as info:
        _build("XNORAlexNet", stem="cifar")
    assert "unexpected option" in str(info.value)


@pytest.mark.parametrize("name", RESNET_MODELS)
def test_smallest_input_depends_on_the_stem(name):
    with pytest.raises(ValueError, match=re.escape("input_shape=(7, 7, 3)")) as info:
        _build(name, input_shape=(7, 7, 3), stem="cifar")
    assert "at least 8" in str(info.value) and "stem='cifar'" in str(info.value)
    with pytest.raises(ValueError, match=re.escape("input_shape=(16, 16, 3)")) as info:
        _build(name, input_shape=(16, 16, 3))  # fine with the CIFAR stem: the error says so
    assert "at least 32" in str(info.value) and "stem='cifar' accepts 8x8" in str(info.value)


def test_xnor_resnet18_cifar_stem_32_figures():
    tf.keras.utils.set_random_seed(0)
    model = zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
    # 32 -> conv1 3/1 "same": 32 -> stages at 32, 16, 8, 4 (no max-pool).
    hand_macs = {"conv1": 32 * 32 * 64 * 3 * 3 * 3, "fc": 512 * 10}
    side = 32
    for stage, (filters, previous) in zip((2, 3, 4, 5), ((64, 64), (128, 64), (256, 128), (512, 256))):
        base = f"conv{stage}_block1"
        if stage > 2:
            side //= 2
            hand_macs[f"{base}_0_conv"] = side * side * filters * 1 * 1 * previous
        hand_macs[f"{base}_1_conv"] = side * side * filters * 3 * 3 * previous
        hand_macs[f"{base}_2_conv"] = side * side * filters * 3 * 3 * filters
        for i in (1, 2):
            hand_macs[f"conv{stage}_block2_{i}_conv"] = side * side * filters * 3 * 3 * filters
    hand_total = sum(hand_macs.values())
    hand_binary = sum(hand_macs[name] for name in RESNET18_BINARY)

    assert hand_macs["conv1"] == 1_769_472  # "conv1 1.8 M"
    assert sum(v for k, v in hand_macs.items() if k.startswith("conv2")) == 150_994_944  # 151 M
    for stage in (3, 4, 5):  # "each stage ... 134 M"
        assert sum(v for k, v in hand_macs.items() if k.startswith(f"conv{stage}")) == 134_217_728
    assert hand_total == 555_422_720  # "0.555 G MACs" (README, resnet.py)
    assert round(hand_binary / hand_total, 3) == 0.985  # README: "98.5% of MACs"

    profile = lq.models.ModelProfile(model)
    assert _conv_macs(model) == hand_macs
    assert profile.op_count("mac") == hand_total
    assert profile.op_count("mac", 1) == hand_binary
    ratio = f"{hand_binary / hand_total:.4f}"
    assert re.search(rf"Ratio of MACs that are binarized\s+{re.escape(ratio)}", _summary_text(model))
    # "15x the ImageNet stem's 37.0 M at that size" (stages at 8, 4, 2, 1).
    imagenet = lq.models.ModelProfile(zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10))
    assert imagenet.op_count("mac") == 37_016_576
    assert round(hand_total / imagenet.op_count("mac")) == 15


# --------------------------------------------------------------------------------------------
# The 224x224 figures, by hand


def _conv_macs(model: tf.keras.Model) -> dict[str, int]:
    """larq's MACs per layer (only layers that have any)."""
    profile = lq.models.ModelProfile(model)
    return {
        lp.name: lp.op_count("mac")
        for lp in profile.layer_profiles
        if lp.op_count("mac")  # None or 0 for layers without MACs
    }


def _summary_text(model: tf.keras.Model) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        lq.models.summary(model)
    return buffer.getvalue()


def test_xnor_alexnet_224_figures(xnor_alexnet_224):
    model = xnor_alexnet_224
    # out_h * out_w * filters * kh * kw * in_channels, from the module docstring's layer list:
    # 224 + 2*2 pad -> conv1 11/4: 55 -> pool 27 -> conv2 27 -> pool 13 -> conv3-5 13 -> pool 6.
    hand_macs = {
        "conv1": 55 * 55 * 96 * 11 * 11 * 3,
        "conv2": 27 * 27 * 256 * 5 * 5 * 96,
        "conv3": 13 * 13 * 384 * 3 * 3 * 256,
        "conv4": 13 * 13 * 384 * 3 * 3 * 384,
        "conv5": 13 * 13 * 256 * 3 * 3 * 384,
        "fc6": 1 * 1 * 4096 * 6 * 6 * 256,
        "fc7": 1 * 1 * 4096 * 1 * 1 * 4096,
        "fc8": 1 * 1 * 1000 * 1 * 1 * 4096,
    }
    hand_binary_weights = (
        5 * 5 * 96 * 256  # conv2
        + 3 * 3 * 256 * 384  # conv3
        + 3 * 3 * 384 * 384  # conv4
        + 3 * 3 * 384 * 256  # conv5
        + 6 * 6 * 256 * 4096  # fc6
        + 1 * 1 * 4096 * 4096  # fc7
    )
    hand_total = sum(hand_macs.values())
    hand_binary = sum(hand_macs[name] for name in ALEXNET_BINARY)

    assert hand_total == 1_135_256_096  # "1.135 G MACs"
    assert hand_binary_weights == 58_236_928  # "58.2 M binary weights"
    assert hand_binary / hand_total == pytest.approx(0.904, abs=5e-4)  # "90.4% binary"

    profile = lq.models.ModelProfile(model)
    assert _conv_macs(model) == hand_macs
    assert profile.op_count("mac") == hand_total
    assert profile.op_count("mac", 1) == hand_binary
    assert profile.weight_count(1) == hand_binary_weights
    summary = _summary_text(model)
    assert re.search(r"Ratio of MACs that are binarized\s+0\.9035", summary), summary[-1500:]


def test_xnor_resnet18_224_figures(xnor_resnet18_224):
    model = xnor_resnet18_224
    # 224 -> conv1 7/2 "same": 112 -> pool 3/2 "same": 56 -> stages at 56, 28, 14, 7.
    hand_macs = {
        "conv1": 112 * 112 * 64 * 7 * 7 * 3,
        # conv2: 64 channels at 56x56, no projection.
        "conv2_block1_1_conv": 56 * 56 * 64 * 3 * 3 * 64,
        "conv2_block1_2_conv": 56 * 56 * 64 * 3 * 3 * 64,
        "conv2_block2_1_conv": 56 * 56 * 64 * 3 * 3 * 64,
        "conv2_block2_2_conv": 56 * 56 * 64 * 3 * 3 * 64,
        # conv3: 128 channels at 28x28; block1 downsamples from 64 channels.
        "conv3_block1_0_conv": 28 * 28 * 128 * 1 * 1 * 64,
        "conv3_block1_1_conv": 28 * 28 * 128 * 3 * 3 * 64,
        "conv3_block1_2_conv": 28 * 28 * 128 * 3 * 3 * 128,
        "conv3_block2_1_conv": 28 * 28 * 128 * 3 * 3 * 128,
        "conv3_block2_2_conv": 28 * 28 * 128 * 3 * 3 * 128,
        # conv4: 256 channels at 14x14.
        "conv4_block1_0_conv": 14 * 14 * 256 * 1 * 1 * 128,
        "conv4_block1_1_conv": 14 * 14 * 256 * 3 * 3 * 128,
        "conv4_block1_2_conv": 14 * 14 * 256 * 3 * 3 * 256,
        "conv4_block2_1_conv": 14 * 14 * 256 * 3 * 3 * 256,
        "conv4_block2_2_conv": 14 * 14 * 256 * 3 * 3 * 256,
        # conv5: 512 channels at 7x7.
        "conv5_block1_0_conv": 7 * 7 * 512 * 1 * 1 * 256,
        "conv5_block1_1_conv": 7 * 7 * 512 * 3 * 3 * 256,
        "conv5_block1_2_conv": 7 * 7 * 512 * 3 * 3 * 512,
        "conv5_block2_1_conv": 7 * 7 * 512 * 3 * 3 * 512,
        "conv5_block2_2_conv": 7 * 7 * 512 * 3 * 3 * 512,
        "fc": 512 * 1000,
    }
    hand_binary_weights = (
        4 * 3 * 3 * 64 * 64  # conv2: four 64 -> 64
        + 3 * 3 * 64 * 128 + 3 * 3 * 3 * 128 * 128  # conv3: one 64 -> 128, three 128 -> 128
        + 3 * 3 * 128 * 256 + 3 * 3 * 3 * 256 * 256  # conv4
        + 3 * 3 * 256 * 512 + 3 * 3 * 3 * 512 * 512  # conv5
    )
    hand_total = sum(hand_macs.values())
    hand_binary = sum(hand_macs[name] for name in RESNET18_BINARY)
    hand_projections = sum(hand_macs[f"conv{s}_block1_0_conv"] for s in (3, 4, 5))

    assert hand_total == 1_814_073_344  # 1.81 G MACs (ResNet-18 is often quoted as "1.8 G")
    assert hand_projections == 19_267_584  # "19.3 M" of the MACs, about 1%
    assert hand_binary_weights == 10_985_472

    profile = lq.models.ModelProfile(model)
    assert _conv_macs(model) == hand_macs
    assert profile.op_count("mac") == hand_total
    assert profile.op_count("mac", 1) == hand_binary
    assert profile.weight_count(1) == hand_binary_weights
    ratio = f"{hand_binary / hand_total:.4f}"
    assert re.search(rf"Ratio of MACs that are binarized\s+{re.escape(ratio)}", _summary_text(model))


# --------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize("name", _models_of_kind("xnor"))
def test_xnor_options_reach_every_binary_layer(name):
    model = _build(name, pad_values=1.0, input_scaling="K", weight_gradient="ste", clip_value=0.5)
    binary = [layer for layer in model.layers if _is_binary_layer(layer)]
    assert binary
    for layer in binary:
        assert isinstance(layer, xk.XNORConv2D)
        assert layer.pad_values == 1.0
        assert layer.input_scaling == "K"
        assert layer.weight_gradient == "ste"
        assert layer.clip_value == 0.5
    assert np.isfinite(model(_images(_size(name)), training=False).numpy()).all()


@pytest.mark.parametrize("name", _models_of_kind("xnor"))
def test_xnor_defaults_are_the_paper_settings(name):
    model = _build(name)
    for layer in model.layers:
        if _is_binary_layer(layer):
            assert layer.pad_values == 0.0
            assert layer.input_scaling is None
            assert layer.weight_gradient == "paper"
            assert layer.clip_value == 1.0


@pytest.mark.parametrize(
    "option, value", [("pad_values", 0.5), ("input_scaling", "beta"), ("weight_gradient", "nope")]
)
@pytest.mark.parametrize("name", _models_of_kind("xnor"))
def test_xnor_rejects_bad_option_values(name, option, value):
    with pytest.raises(ValueError, match=re.escape(f"{option}={value!r}")):
        _build(name, **{option: value})


@pytest.mark.parametrize("option, value", [("pad_values", 1.0), ("input_scaling", "K")])
@pytest.mark.parametrize("name", _models_of_kind("bwn"))
def test_bwn_rejects_binary_input_options(name, option, value):
    with pytest.raises(ValueError, match=re.escape(f"{option}={value!r}")):
        _build(name, **{option: value})


@pytest.mark.parametrize(
    "option, value",
    [("weight_gradient", "ste"), ("clip_value", 0.5), ("pad_values", 1.0), ("input_scaling", "K")],
)
@pytest.mark.parametrize("name", _models_of_kind("float"))
def test_float_rejects_binarization_options(name, option, value):
    with pytest.raises(ValueError, match=re.escape(f"{option}={value!r}")):
        _build(name, **{option: value})


@pytest.mark.parametrize("name", MODELS)
def test_unknown_option_is_named(name):
    with pytest.raises(ValueError, match=re.escape("foo=1")) as info:
        _build(name, foo=1)
    assert name in str(info.value)


# --------------------------------------------------------------------------------------------
# Argument validation


def _bad_arguments(name: str) -> list:
    too_small = MIN_SIZE[_family(name)] - 1
    return [
        ("weights", "imagenet"),
        ("weights", "/nonexistent.h5"),
        ("classes", 0),
        ("classes", 2.5),
        ("classes", True),
        ("input_shape", (224, 224)),
        ("input_shape", (too_small, too_small, 3)),
        ("pooling", "sum"),
        ("include_top", "yes"),
        ("classifier_activation", "no_such_activation"),
    ]


@pytest.mark.parametrize(
    "name, argument, value",
    [(name, argument, value) for name in MODELS for argument, value in _bad_arguments(name)],
)
def test_bad_argument_is_named_with_its_value(name, argument, value):
    with pytest.raises(ValueError, match=re.escape(f"{argument}={value!r}")):
        _build(name, **{argument: value})


@pytest.mark.parametrize("name", [n for n in MODELS if _family(n) == "AlexNet"])
def test_alexnet_top_needs_a_fixed_input_size(name):
    with pytest.raises(ValueError, match=re.escape("input_shape=(None, None, 3)")):
        _build(name, input_shape=(None, None, 3))
