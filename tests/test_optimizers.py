"""xnor_keras.optimizers: Keras' Adam / SGD with the latent weights' WeightClip inside the update.

Oracle: Keras' own optimizer with its separate constraint pass, trained from the same weights on
the same batches. The fused update is the same arithmetic in one XLA function, so the weights
agree to float rounding and the losses to a tolerance.
"""

from __future__ import annotations

import json

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import layers as xl
from xnor_keras import optimizers as xo
from xnor_keras import training

L = tf.keras.layers
PAIRS = {
    "adam": (xo.Adam, tf.keras.optimizers.Adam, {}),
    "sgd": (xo.SGD, tf.keras.optimizers.SGD, {"momentum": 0.9}),
}


def _model(clip_value: float = 1.0) -> tf.keras.Model:
    """XNOR and BWN layers (WeightClip), a float conv, and a Dense with a non-WeightClip constraint."""
    inputs = tf.keras.Input((8, 8, 3))
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="first")(inputs)
    x = L.BatchNormalization(name="bn0")(x)
    x = xl.XNORConv2D(32, 3, padding="same", clip_value=clip_value, name="xnor")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = xl.BWNConv2D(32, 3, padding="same", clip_value=clip_value, name="bwn")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(4, kernel_constraint=tf.keras.constraints.NonNeg(), name="fc")(x)
    return tf.keras.Model(inputs, outputs)


def _data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 3)).astype(np.float32), rng.integers(0, 4, n)


def _train(optimizer, *, clip_value=1.0, epochs=2, seed=0):
    tf.keras.utils.set_random_seed(seed)
    model = _model(clip_value)
    model.compile(optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]


def _latent(model, name):
    return model.get_layer(name).kernel.latent_variable.numpy()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_fused_update_matches_keras_with_its_constraint_pass(name):
    fused_cls, keras_cls, kwargs = PAIRS[name]
    fused, fused_loss = _train(fused_cls(1e-3, **kwargs))
    plain, plain_loss = _train(keras_cls(1e-3, **kwargs))
    np.testing.assert_allclose(fused_loss, plain_loss, rtol=1e-4)
    for a, b in zip(fused.trainable_variables, plain.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5, err_msg=a.name)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_latent_weights_stay_in_the_clip_window_and_constraints_come_back(name):
    fused_cls, _, kwargs = PAIRS[name]
    # A large rate pushes many weights past the window: the fused clip must hold them at +-c.
    model, _ = _train(fused_cls(0.5, **kwargs), clip_value=0.05, epochs=1)
    for layer in ("xnor", "bwn"):
        latent = _latent(model, layer)
        assert np.abs(latent).max() <= 0.05 + 1e-7, layer
        assert np.isclose(np.abs(latent), 0.05).mean() > 0.1, layer  # the clip was active
        constraint = model.get_layer(layer).kernel.constraint
        assert type(constraint) is lq.constraints.WeightClip and constraint.clip_value == 0.05
    # Other constraints keep Keras' own pass.
    assert (model.get_layer("fc").kernel.numpy() >= 0).all()
    assert isinstance(model.get_layer("fc").kernel.constraint, tf.keras.constraints.NonNeg)


def test_fused_clip_value_reads_only_weight_clip():
    model = _model(0.25)
    assert xo.fused_clip_value(model.get_layer("xnor").kernel) == 0.25
    assert xo.fused_clip_value(model.get_layer("fc").kernel) is None
    assert xo.fused_clip_value(model.get_layer("first").kernel) is None


def test_training_helper_returns_the_fused_optimizers():
    assert type(training.make_optimizer("adam", 1e-3)) is xo.Adam
    sgd = training.make_optimizer("sgd", 0.1, momentum=0.8, weight_decay=1e-4)
    assert type(sgd) is xo.SGD and sgd.momentum == 0.8 and sgd.weight_decay == 1e-4


def test_model_saved_with_the_optimizer_reloads_without_custom_objects(tmp_path):
    model, _ = _train(xo.Adam(1e-3), epochs=1)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = tf.keras.models.load_model(path)
    assert type(reloaded.optimizer) is xo.Adam
    assert json.dumps(reloaded.optimizer.get_config(), sort_keys=True, default=str) == json.dumps(
        model.optimizer.get_config(), sort_keys=True, default=str
    )
    x, y = _data(8, seed=1)
    reloaded.fit(x, y, batch_size=8, epochs=1, verbose=0)  # keeps training
    assert np.abs(_latent(reloaded, "xnor")).max() <= 1.0


def test_clipped_variables_take_the_fused_path_and_skip_keras_constraint_pass(monkeypatch):
    model = _model(0.5)
    optimizer = xo.Adam(0.1)
    fused, constrained = [], []
    original = xo._FusedWeightClipMixin._clipped_update_xla

    def spy(self, gradient, variable, clip, key):
        fused.append((variable.name, clip))
        return original(self, gradient, variable, clip, key)

    class Spy(tf.keras.constraints.Constraint):  # Keras' pass would call it
        def __call__(self, w):
            constrained.append(w.name)
            return w

    monkeypatch.setattr(xo._FusedWeightClipMixin, "_clipped_update_xla", spy)
    model.get_layer("fc").kernel._constraint = Spy()
    variables = model.trainable_variables
    optimizer.apply_gradients(zip([tf.ones_like(v) for v in variables], variables))
    assert sorted(fused) == [("bwn/kernel:0", 0.5), ("xnor/kernel:0", 0.5)]
    assert constrained == ["fc/kernel:0"]
    assert np.abs(_latent(model, "xnor")).max() <= 0.5
