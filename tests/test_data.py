"""TFDS pipelines: shapes, dtypes, value ranges, determinism, preprocessing math (mock data);
MNIST-format datasets prepared offline from local IDX files (real Fashion-MNIST where installed)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from xnor_keras import data

from conftest import read_idx


def _batches(name, n=2, **kwargs):
    # download=False: mock data needs no preparation (and MNIST-format builders would look for
    # their local files or the network first).
    kwargs = {"batch_size": 4, "training": True, "seed": 1, "download": False, **kwargs}
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


@pytest.mark.parametrize("seed", [0, 5])
def test_epoch_keyed_stream_restarts_exactly_at_any_epoch(seed):
    """start_epoch=1 yields exactly what start_epoch=0 yields after its first epoch (24 mock
    images, batch 4: 6 batches an epoch), whatever global seed TF has (0 included); each epoch
    is shuffled and augmented anew."""
    tf.keras.utils.set_random_seed(seed)
    from_0 = _batches("cifar10", n=18, start_epoch=0, seed=seed)
    from_1 = _batches("cifar10", n=12, start_epoch=1, seed=seed)
    for (xa, ya), (xb, yb) in zip(from_0[6:], from_1):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    first, second = (np.concatenate([y for _, y in from_0[e * 6:(e + 1) * 6]]) for e in (0, 1))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)  # same images, new order
    unaugmented = _batches("cifar10", n=6, start_epoch=0, seed=seed, augment=False)
    assert [y.tolist() for _, y in unaugmented] == [y.tolist() for _, y in from_0[:6]]  # same order,
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(unaugmented, from_0[:6]))  # no crops
    with pytest.raises(ValueError, match="`start_epoch`"):
        _batches("cifar10", start_epoch=-1)


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


# ---- MNIST-format datasets from local IDX files, with no network ------------------------------


def _sorted_examples(images: np.ndarray, labels: np.ndarray):
    """Examples in a canonical order (TFDS shuffles them when it writes its records)."""
    images = images.reshape(len(images), -1)
    order = np.lexsort(np.concatenate([images, labels[:, None]], axis=1).T[::-1])
    return images[order], labels[order]


@pytest.mark.parametrize("split, stem", [("train", "train"), ("test", "t10k")])
def test_prepared_from_idx_files_equals_a_numpy_parse(fashion_subset, fashion_data_dir, split, stem, no_network):
    builder = data.prepare_from_idx("fashion_mnist", fashion_subset, data_dir=fashion_data_dir)
    got = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    suffix = ".gz" if split == "train" else ""
    want_images = read_idx(fashion_subset / f"{stem}-images-idx3-ubyte{suffix}")
    want_labels = read_idx(fashion_subset / f"{stem}-labels-idx1-ubyte{suffix}")
    assert got["image"].shape == (len(want_images), 28, 28, 1) and got["image"].dtype == np.uint8
    for a, b in zip(_sorted_examples(got["image"], got["label"]), _sorted_examples(want_images, want_labels)):
        np.testing.assert_array_equal(a, b)
    assert builder.info.splits[split].num_examples == len(want_labels)


def test_load_dataset_prepares_once_offline_then_reads_the_records(tmp_path, fashion_subset, no_network):
    messages = []
    kwargs = dict(batch_size=500, training=False, seed=0, data_dir=tmp_path, source_dir=fashion_subset,
                  log=messages.append)
    x, y = next(iter(data.load_dataset("fashion_mnist", "test", **kwargs)))
    assert len(messages) == 1 and "preparing TFDS fashion_mnist" in messages[0]
    info_file = next(tmp_path.rglob("dataset_info.json"))
    stamp = info_file.stat().st_mtime_ns
    again = next(iter(data.load_dataset("fashion_mnist", "test", **kwargs)))
    assert len(messages) == 1 and info_file.stat().st_mtime_ns == stamp  # not prepared twice
    np.testing.assert_array_equal(x.numpy(), again[0].numpy())
    # The pipeline's values are the IDX bytes, normalised with Fashion-MNIST's mean and std.
    mean, std = data.NORMALIZATION["fashion_mnist"]
    raw = np.rint((x.numpy()[..., 0] * std[0] + mean[0]) * 255).astype(np.uint8)
    want = _sorted_examples(read_idx(fashion_subset / "t10k-images-idx3-ubyte"), read_idx(fashion_subset / "t10k-labels-idx1-ubyte"))
    for a, b in zip(_sorted_examples(raw, y.numpy().astype(np.uint8)), want):
        np.testing.assert_array_equal(a, b)


def test_missing_idx_files_give_one_clear_error(tmp_path, no_network):
    (tmp_path / "src").mkdir()
    with pytest.raises(ValueError, match="lacks train-images-idx3-ubyte, train-labels-idx1-ubyte"):
        data.load_dataset("fashion_mnist", "train", batch_size=4, training=True, data_dir=tmp_path,
                          source_dir=tmp_path / "src")
    with pytest.raises(ValueError, match="'kmnist' is not prepared.*IDX files.*source_dir"):
        data.load_dataset("kmnist", "train", batch_size=4, training=True, data_dir=tmp_path, download=False)


def test_no_files_and_no_network_fail_fast_with_what_to_do(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("offline")

    for owner, name in ((socket.socket, "connect"), (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, offline)
    monkeypatch.setitem(data.LOCAL_SOURCES, "fashion_mnist", (str(tmp_path / "not_installed"), "dataset-fashion-mnist"))
    with pytest.raises(ValueError, match=r"no network .*sudo apt-get install dataset-fashion-mnist.*--source-dir"):
        data.load_dataset("fashion_mnist", "train", batch_size=4, training=True, data_dir=tmp_path)


def test_source_dir_only_for_mnist_format_datasets(tmp_path, fashion_subset):
    with pytest.raises(ValueError, match="MNIST-format.*dataset='cifar10'"):
        data.load_dataset("cifar10", "train", batch_size=4, training=True, source_dir=fashion_subset)
    with pytest.raises(ValueError, match="MNIST-format.*dataset='emnist'"):
        data.prepare_from_idx("emnist", fashion_subset, data_dir=tmp_path)


def test_any_mnist_format_dataset_prepares_from_local_files(tmp_path, fashion_subset, no_network):
    # kmnist has no Debian package; the same files in the same format stand in for its own.
    builder = data.prepare_from_idx("kmnist", fashion_subset, data_dir=tmp_path)
    assert builder.info.splits["test"].num_examples == 500
    assert builder.info.features["label"].names[0] == "o"
