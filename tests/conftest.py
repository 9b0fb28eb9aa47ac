"""Shared fixtures: a clean Keras session and fixed seeds for every test."""

from __future__ import annotations

import numpy as np
import pytest

import xnor_keras  # noqa: F401  (binds tf.keras to Keras 2 before TensorFlow is used)
import tensorflow as tf


@pytest.fixture(autouse=True)
def clean_session():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield
    tf.keras.mixed_precision.set_global_policy("float32")
    tf.keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
