"""What every zoo builder shares: the binarization spec, argument checks, inputs and outputs."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import tensorflow as tf

from xnor_keras import binary_weights
from xnor_keras import layers as xl
from xnor_keras import quantizers as xq
from xnor_keras.zoo._weights import apply_entry_options, named_weights, raw_image_input, resolve_weights

__all__ = ["KINDS", "Binarization", "build_inputs", "finish_model", "validate_common"]

KINDS = ("xnor", "bwn", "float")
POOLINGS = (None, "avg", "max")


@dataclasses.dataclass(frozen=True)
class Binarization:
    """How the binarized layers of a zoo model are made; the only thing variants differ in.

    Attributes:
        kind: ``"xnor"`` (binary inputs and weights), ``"bwn"`` (binary weights, real inputs) or
            ``"float"`` (the full-precision twin: same shapes, ReLU where the sign was).
        pad_values: padding of binarized inputs for ``padding="same"`` (XNOR only; 0 = paper).
        input_scaling: ``None`` or ``"K"`` (XNOR only; paper eq. 11).
        weight_gradient: gradient of the alpha-scaled sign (XNOR and BWN).
        clip_value: straight-through window and weight clip (XNOR and BWN).
    """

    kind: str = "xnor"
    pad_values: float = 0.0
    input_scaling: str | None = None
    weight_gradient: str = "paper"
    clip_value: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Expected `kind` to be one of {KINDS}, got {self.kind!r}. Received: kind={self.kind!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        not_for = {
            "float": ("pad_values", "input_scaling", "weight_gradient", "clip_value"),
            "bwn": ("pad_values", "input_scaling"),
            "xnor": (),
        }[self.kind]
        for name in not_for:
            value = getattr(self, name)
            if value != defaults[name]:
                raise ValueError(
                    f"`{name}` does not apply to a {self.kind} model (it sets how binarized "
                    f"{'inputs' if name in ('pad_values', 'input_scaling') else 'weights'} work). "
                    f"Received: {name}={value!r}"
                )
        if self.pad_values not in (0.0, 1.0):
            raise ValueError(
                f"Expected `pad_values` to be 0.0 (paper) or 1.0 (faster on LCE), got "
                f"{self.pad_values!r}. Received: pad_values={self.pad_values!r}"
            )
        if self.input_scaling not in xl.INPUT_SCALINGS:
            raise ValueError(
                f"Expected `input_scaling` to be one of {xl.INPUT_SCALINGS}, got "
                f"{self.input_scaling!r}. Received: input_scaling={self.input_scaling!r}"
            )
        if self.weight_gradient not in xq.WEIGHT_GRADIENTS:
            raise ValueError(
                f"Expected `weight_gradient` to be one of {xq.WEIGHT_GRADIENTS}, got "
                f"{self.weight_gradient!r}. Received: weight_gradient={self.weight_gradient!r}"
            )
        xq._check_clip_value(self.clip_value)

    def conv(self, filters: int, kernel_size, *, name: str, strides=1, padding="valid"):
        """The binarized convolution of this variant (no bias: a BatchNorm precedes the next)."""
        if self.kind == "float":
            return tf.keras.layers.Conv2D(
                filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name
            )
        common = dict(
            strides=strides,
            padding=padding,
            weight_gradient=self.weight_gradient,
            clip_value=self.clip_value,
            name=name,
        )
        if self.kind == "bwn":
            return xl.BWNConv2D(filters, kernel_size, **common)
        return xl.XNORConv2D(
            filters, kernel_size, pad_values=self.pad_values, input_scaling=self.input_scaling, **common
        )

    def activation(self, x: tf.Tensor, *, name: str) -> tf.Tensor:
        """What precedes a binarized conv after its BatchNorm: nothing for XNOR (the sign lives in
        the XNOR layer), ReLU for the real-valued variants."""
        if self.kind == "xnor":
            return x
        return tf.keras.layers.ReLU(name=name)(x)


def validate_common(
    *,
    include_top: bool,
    weights,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    default_size: int,
    min_size: int,
    min_size_note: str = "",
) -> tuple[int | None, int | None, int]:
    """Check the Keras-applications arguments; return the (height, width, channels) to build.

    `min_size_note` is appended to the too-small-input message (why the minimum is what it is,
    or which option lowers it).

    Raises:
        ValueError: naming the argument and the received value.
    """
    if weights is not None and not _is_weights_file(weights):
        raise ValueError(
            "Expected `weights` to be None (random initialization), a registered name (see "
            "xnor_keras.zoo.list_weights()) or the path of an existing weights file (packed "
            "binary weights, .h5, or a TF checkpoint prefix saved by `model.save_weights`). "
            f"Received: weights={weights!r}"
        )
    if not isinstance(include_top, bool):
        raise ValueError(f"Expected `include_top` to be True or False. Received: include_top={include_top!r}")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"Expected `classes` to be a positive integer. Received: classes={classes!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"Expected `pooling` to be one of {POOLINGS}. Received: pooling={pooling!r}")
    if include_top:
        try:
            tf.keras.activations.get(classifier_activation)
        except ValueError as error:
            raise ValueError(
                f"Expected `classifier_activation` to be None, a Keras activation name or a "
                f"callable. Received: classifier_activation={classifier_activation!r}"
            ) from error

    if input_tensor is not None and not tf.is_tensor(input_tensor) and not tf.keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            f"Expected `input_tensor` to be a Keras tensor (e.g. from tf.keras.Input). "
            f"Received: input_tensor={input_tensor!r}"
        )
    if input_shape is None:
        if input_tensor is not None:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = (default_size, default_size, 3)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"Expected `input_shape` to be a tuple (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        ) from None
    if len(input_shape) != 3:
        raise ValueError(
            f"Expected `input_shape` to have 3 dimensions (height, width, channels), got "
            f"{len(input_shape)}. Received: input_shape={input_shape!r}"
        )
    height, width, channels = input_shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"Expected the channel dimension of `input_shape` to be a positive integer. "
            f"Received: input_shape={input_shape!r}"
        )
    for size in (height, width):
        if size is not None and (not isinstance(size, int) or size < min_size):
            raise ValueError(
                f"Expected `input_shape` height and width to be at least {min_size} for this model"
                f"{min_size_note}, got {size!r}. Received: input_shape={input_shape!r}"
            )
    return height, width, channels


def _is_weights_file(weights) -> bool:
    """An existing file, or a TF-format checkpoint prefix (an `.index` file beside it)."""
    if not isinstance(weights, (str, os.PathLike)):
        return False
    path = os.fspath(weights)
    return os.path.isfile(path) or os.path.isfile(f"{path}.index")


def build_inputs(input_tensor, input_shape: tuple) -> tf.Tensor:
    """The model's input layer, wrapping `input_tensor` when one is given (Keras applications)."""
    if input_tensor is None:
        return tf.keras.Input(shape=input_shape, name="image")
    if tf.keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return tf.keras.Input(tensor=input_tensor, shape=input_shape, name="image")


def finish_model(
    inputs: tf.Tensor,
    outputs: tf.Tensor,
    *,
    name: str,
    input_tensor,
    weights,
    include_top: bool = True,
    pooling_head: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> tf.keras.Model:
    """Make the Model (from the source inputs of `input_tensor`), then load `weights` if given.

    A packed binary weights file (:mod:`xnor_keras.binary_weights`) is recognised by its first
    bytes; without the top, its classifier layers are skipped.
    """
    if pooling_head is not None:
        outputs = pooling_head(outputs)
    model_inputs = tf.keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    model = tf.keras.Model(model_inputs, outputs, name=name)
    if weights is not None:
        if binary_weights.is_binary_weights_file(weights):
            binary_weights.load_binary_weights(model, weights, strict=include_top)
        else:
            model.load_weights(os.fspath(weights))
    return model


def global_pooling(pooling: str | None) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """The `pooling` head of include_top=False models."""
    if pooling == "avg":
        return tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")
    if pooling == "max":
        return tf.keras.layers.GlobalMaxPooling2D(name="max_pool")
    return None


_APP_DEFAULTS = dict(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
)


def make_variant(
    family: Callable[..., tf.keras.Model],
    kind: str,
    name: str,
    model_name: str,
    doc: str,
    *,
    family_options: tuple[str, ...] = (),
):
    """A public builder `name` (building a Model called `model_name`): `family` with the
    binarization of `kind`.

    The builder takes the Keras-applications keyword arguments, the binarization options that
    apply to `kind` (see :class:`Binarization`) and the `family_options` (architecture options
    every variant of the family shares, e.g. ResNet's ``stem``), which go to `family` as keywords.
    """
    binarization_options = {
        "xnor": ("pad_values", "input_scaling", "weight_gradient", "clip_value"),
        "bwn": ("weight_gradient", "clip_value"),
        "float": (),
    }[kind]
    allowed = tuple(family_options) + binarization_options

    def builder(
        *,
        include_top: bool = True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling: str | None = None,
        classes: int | None = None,
        classifier_activation="softmax",
        **options,
    ) -> tf.keras.Model:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"{name} got unexpected option(s) {unknown}; it accepts the Keras-applications "
                f"arguments {sorted(_APP_DEFAULTS)}"
                + (f" and {list(allowed)}" if allowed else "")
                + f". Received: {', '.join(f'{k}={options[k]!r}' for k in unknown)}"
            )
        entry = named_weights(name, weights)
        if entry is not None:
            options = apply_entry_options(entry, options)
            if entry.raw_input_shape is not None and input_tensor is None and (
                input_shape is None or tuple(input_shape) == entry.raw_input_shape
            ):
                # Raw images in: resizing and normalisation are layers of the model.
                input_tensor = raw_image_input(entry, tf)
                input_shape = None
        # A registered weights name becomes a local file; classes default to its (else 1000).
        weights, classes, input_shape = resolve_weights(
            name, weights, include_top=include_top, classes=classes, input_shape=input_shape,
            input_tensor=input_tensor,
        )
        app = dict(
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
        )
        architecture = {k: options.pop(k) for k in family_options if k in options}
        return family(Binarization(kind, **options), name=model_name, **architecture, **app)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    builder.kind = kind
    return builder


def classifier_output(x: tf.Tensor, activation) -> tf.Tensor:
    """The final activation, in float32 so mixed-precision models return float32 probabilities."""
    return tf.keras.layers.Activation(activation, dtype="float32", name="predictions")(x)


def batch_norm(name: str) -> tf.keras.layers.Layer:
    """BatchNorm as in the original Torch code: no affine parameters, Torch's momentum 0.1."""
    return tf.keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-4, center=False, scale=False, name=name
    )
