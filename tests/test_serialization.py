"""Models built from xnor_keras layers save and reload in every Keras format.

The reload happens in a fresh process that imports only `xnor_keras` (no `custom_objects`), so a
missing registration fails here. One model, built once for the module.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import xnor_keras as xk
from xnor_keras.testing_utils import assert_saved_model_roundtrip


def _build_model():
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn1")(x)
    x = xk.XNORConv2D(8, 3, padding="same", name="xnor_zero_pad")(x)
    x = tf.keras.layers.BatchNormalization(name="bn2")(x)
    x = xk.XNORConv2D(
        8, 3, padding="same", pad_values=1.0, input_scaling="K", weight_gradient="ste",
        clip_value=0.5, use_bias=True, name="xnor_k",
    )(x)
    x = xk.BWNConv2D(8, 3, strides=2, name="bwn")(x)
    x = tf.keras.layers.Flatten()(x)
    x = xk.XNORDense(16, input_scaling="K", name="xnor_fc")(x)
    x = xk.BWNDense(4, use_bias=True, weight_gradient="autodiff", name="bwn_fc")(x)
    return tf.keras.Model(inputs, x)


@pytest.fixture(scope="module")
def model_and_data():
    tf.keras.utils.set_random_seed(1)
    model = _build_model()
    model.compile("adam", "mse")
    x = np.random.default_rng(1).normal(size=(6, 8, 8, 3)).astype("float32")
    # One training step so BatchNorm statistics and optimizer slots are not at their defaults.
    model.fit(x, np.zeros((6, 4), "float32"), epochs=1, verbose=0)
    return model, x


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel"])
def test_save_and_reload_in_fresh_process(model_and_data, tmp_path, fmt):
    model, x = model_and_data
    assert_saved_model_roundtrip(model, x, tmp_path, formats=[fmt])


def test_model_config_roundtrip_rebuilds_same_layers(model_and_data):
    model, x = model_and_data
    clone = tf.keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(clone(x, training=False), model(x, training=False))
