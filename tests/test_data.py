"""TFDS pipelines on mock data: shapes, dtypes, value ranges, determinism, preprocessing math."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from xnor_keras import data


def _batches(name, n=2, **kwargs):
    kwargs = {"batch_size": 4, "training": True, "seed": 1, **kwargs}
    with tfds.testing.mock_data(num_examples=24):
        return [(x.numpy(), y.numpy()) for x, y in data.load_dataset(name, "train", **kwargs).take(n)]


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("cifar10", {}, (4, 32, 32, 3)),
        ("mnist", {"image_size": 32}, (4, 32, 32, 1)),
        ("fashion_mnist", {}, (4, 28, 28, 1)),
        ("imagenet2012", {}, (4, 224, 224, 3)),
        ("imagenet2012", {"image_size": 64, "training": False}, (4, 64, 64, 3)),
    ],
)
def test_pipeline_shapes_dtypes_and_ranges(name, kwargs, shape):
    batches = _batches(name, **kwargs)
    x, y = batches[0]
    assert x.shape == shape and x.dtype == np.float32
    assert y.dtype == np.int64 and y.shape == (4,)
    classes = data.dataset_info(name).num_classes
    assert 0 <= y.min() and y.max() < classes
    # (x/255 - mean) / std with x in [0, 255] stays within these bounds for every dataset here.
    mean, std = data.NORMALIZATION[name]
    low = min((0 - m) / s for m, s in zip(mean, std))
    high = max((1 - m) / s for m, s in zip(mean, std))
    assert low - 1e-5 <= x.min() and x.max() <= high + 1e-5


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_same_seed_same_batches_other_seed_other_batches(name):
    first, again = _batches(name), _batches(name)
    other = _batches(name, seed=2)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_evaluation_is_not_augmented():
    a = _batches("cifar10", training=False, seed=1)
    b = _batches("cifar10", training=False, seed=7)
    for (xa, _), (xb, _) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)


def test_normalize_matches_formula():
    image = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) * 10
    mean, std = data.NORMALIZATION["cifar10"]
    expected = (image / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(data.normalize(tf.constant(image), "cifar10").numpy(), expected, rtol=1e-5)


def test_imagenet_eval_is_resize_shorter_side_then_centre_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(300, 400, 3)).astype(np.uint8)
    out = data.preprocess_imagenet(tf.constant(image), training=False, crop=224).numpy()
    # Independent path: shorter side 300 -> 256, so 400 -> 341 (rounded); centre 224 crop.
    resized = tf.image.resize(image, (256, 341), antialias=True).numpy()
    top, left = (256 - 224) // 2, (341 - 224) // 2
    np.testing.assert_allclose(out, resized[top : top + 224, left : left + 224], atol=1e-3)


def test_imagenet_training_crop_is_a_window_of_the_resized_image():
    image = np.random.default_rng(1).integers(0, 255, size=(256, 256, 3)).astype(np.uint8)
    seed = tf.constant([3, 4], tf.int32)
    out = data.preprocess_imagenet(tf.constant(image), training=True, seed=seed, crop=224).numpy()
    assert out.shape == (224, 224, 3)
    resized = tf.image.resize(image, (256, 256), antialias=True).numpy()
    windows = [
        resized[i : i + 224, j : j + 224]
        for i in range(33)
        for j in range(33)
    ]
    assert any(np.allclose(out, w) or np.allclose(out, w[:, ::-1]) for w in windows)


def test_unknown_dataset_is_rejected():
    with pytest.raises(ValueError, match="dataset='no_such_dataset'"):
        data.load_dataset("no_such_dataset", "train", batch_size=4, training=True)


def test_missing_data_dir_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="data_dir="):
        data.load_dataset("cifar10", "train", batch_size=4, training=True, data_dir=tmp_path / "nope")


def test_bad_batch_size_is_rejected():
    with pytest.raises(ValueError, match="batch_size=0"):
        data.load_dataset("cifar10", "train", batch_size=0, training=True)


def test_data_not_prepared_offline_names_the_dataset(tmp_path):
    with pytest.raises(ValueError, match="imagenet2012.*manual"):
        data.load_dataset("imagenet2012", "train", batch_size=4, training=True, data_dir=tmp_path, download=False)
