"""Input pipelines over tensorflow-datasets (TFDS), with the paper's ImageNet preprocessing.

:func:`load_dataset` returns a batched, prefetched ``tf.data.Dataset`` of ``(image, label)`` for
``imagenet2012`` (TFDS manual download), ``cifar10``, ``mnist``, ``fashion_mnist`` or any TFDS
image-classification dataset by name.

Preprocessing (all normalisation constants live in :data:`NORMALIZATION`):

* ImageNet-style (``imagenet2012`` and any dataset whose images are larger than 64 px): as in the
  paper, the shorter side is resized to 256; training takes a random 224x224 crop and a random
  horizontal flip, evaluation the central 224x224 crop.
* Small images (CIFAR, MNIST, ...): training pads by 4 pixels, takes a random crop of the
  original size and (for non-digit datasets) a random horizontal flip; evaluation uses the image
  as is. ``image_size`` resizes both (e.g. MNIST's 28x28 to ResNet's minimum 32x32).

Then ``(x / 255 - mean) / std`` per channel. Random augmentation is keyed by ``(seed, epoch,
example position)`` with stateless ops, so a pipeline with a seed yields the same batches every
time, even with parallel ``map``; with ``start_epoch`` a training pipeline is an endless stream
of epochs, each shuffled by ``(seed, epoch)``, so a run can restart at any epoch exactly.

Offline MNIST-format data: TFDS's ``mnist``, ``fashion_mnist`` and ``kmnist`` builders read four IDX
files. :func:`prepare_from_idx` hands those builders local files instead of URLs (Debian's
``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist/``, or any folder holding the
four files, gzipped or not) and writes the usual TFDS records into the data directory, once,
without touching the network. :func:`load_dataset` does this by itself when the files are there.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import socket
import tempfile
import urllib.parse
from pathlib import Path
from typing import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds

__all__ = [
    "DatasetInfo",
    "IDX_FILES",
    "LOCAL_SOURCES",
    "NORMALIZATION",
    "dataset_info",
    "find_idx_source",
    "load_dataset",
    "normalize",
    "prepare_from_idx",
    "preprocess_imagenet",
    "preprocess_small",
    "split_size",
]

AUTOTUNE = tf.data.AUTOTUNE

NORMALIZATION = {
    # mean and std per channel of images scaled to [0, 1]
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}
"""Per-dataset (mean, std); other datasets use ImageNet's (or 0.5 / 0.5 for grayscale)."""

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""The four files of an MNIST-format dataset, per split (each may also end in ``.gz``)."""

LOCAL_SOURCES = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"),
}
"""Where a Debian package puts a dataset's IDX files: TFDS name -> (folder, package)."""

_NO_FLIP = ("mnist", "fashion_mnist", "emnist", "kmnist", "svhn_cropped")
IMAGENET_RESIZE = 256
IMAGENET_CROP = 224


class DatasetInfo:
    """What a pipeline needs to know about a dataset: classes, channels, splits, image size."""

    def __init__(self, name: str, num_classes: int, channels: int, splits: Sequence[str], image_size,
                 split_sizes: dict | None = None):
        self.name = name
        self.num_classes = num_classes
        self.channels = channels
        self.splits = tuple(splits)
        self.split_sizes = dict(split_sizes or {})  # split name -> examples, where known
        self.image_size = image_size  # (h, w) or None when images vary in size

    @property
    def imagenet_style(self) -> bool:
        return self.name == "imagenet2012" or self.image_size is None or max(self.image_size) > 64

    def __repr__(self) -> str:
        return (
            f"DatasetInfo({self.name!r}, classes={self.num_classes}, channels={self.channels}, "
            f"splits={self.splits}, image_size={self.image_size})"
        )


def _builder(name: str, data_dir: str | os.PathLike | None):
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected `dataset` to be a TFDS dataset name. Received: dataset={name!r}")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise ValueError(
            f"Expected `data_dir` to be an existing directory (where TFDS datasets are stored). "
            f"Received: data_dir={os.fspath(data_dir)!r}"
        )
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"Unknown TFDS dataset {name!r}; pass a name from `tfds.list_builders()` such as "
            f"imagenet2012, cifar10, mnist, fashion_mnist. Received: dataset={name!r}"
        ) from error


def _is_idx_builder(builder) -> bool:
    # "MNIST-format": the builder reads the four IDX files with TFDS's MNIST split generator
    # (mnist, fashion_mnist, kmnist; not emnist, which reads a zip of its own).
    mnist_cls = tfds.image_classification.MNIST
    return isinstance(builder, mnist_cls) and type(builder)._split_generators is mnist_cls._split_generators


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_source(dataset: str, source_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder with `dataset`'s four IDX files: `source_dir`, else its Debian package's folder.

    Returns:
        The folder, or None when `source_dir` is None and no package has installed the files.

    Raises:
        ValueError: `source_dir` is given but lacks some of the four files.
    """
    if source_dir is None:
        folder = LOCAL_SOURCES.get(dataset, (None,))[0]
        if folder is None:
            return None
        folder = Path(folder)
        return folder if all(_idx_path(folder, n) for pair in IDX_FILES.values() for n in pair) else None
    folder = Path(source_dir)
    missing = [n for pair in IDX_FILES.values() for n in pair if _idx_path(folder, n) is None]
    if missing:
        raise ValueError(
            f"Expected `source_dir` to hold the four IDX files of an MNIST-format dataset (each "
            f"may end in .gz); {folder} lacks {', '.join(missing)}. Received: source_dir={os.fspath(source_dir)!r}"
        )
    return folder


def _idx_count(path: Path) -> int:
    """Number of items in an IDX file, from its header (magic, then big-endian dimensions)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(8)
    if len(header) < 8 or header[:2] != b"\0\0" or header[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {header[:4].hex()})")
    return int.from_bytes(header[4:8], "big")


class _LocalFiles:
    """Stands in for TFDS's download manager: answers each URL with the local file of that name.

    Gzipped files are decompressed into `scratch` when first asked for. Anything else a builder
    asks of a download manager fails loudly, so a local preparation can never reach the network.
    """

    def __init__(self, folder: Path, scratch: Path):
        self._folder = folder
        self._scratch = scratch

    def _local(self, url: str) -> str:
        name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gz")
        path = _idx_path(self._folder, name)
        if path is None:
            raise FileNotFoundError(f"{self._folder} has no {name} (nor {name}.gz)")
        if path.suffix != ".gz":
            return os.fspath(path)
        target = self._scratch / name
        if not target.exists():
            with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return os.fspath(target)

    def download_and_extract(self, url_or_urls):
        return tf.nest.map_structure(self._local, url_or_urls)

    def __getattr__(self, name):
        raise AttributeError(f"local IDX preparation does not support `dl_manager.{name}`")


@functools.lru_cache(maxsize=None)
def _local_builder_class(cls):
    class LocalIDX(cls, skip_registration=True):
        # Same name and version as TFDS's builder, so the records land where TFDS looks for them.
        name = cls.name

        def _split_generators(self, dl_manager):
            generators = super()._split_generators(_LocalFiles(self._idx_folder, self._idx_scratch))
            for generator in generators:
                kwargs = generator.gen_kwargs
                images, labels = _idx_count(Path(kwargs["data_path"])), _idx_count(Path(kwargs["label_path"]))
                if images != labels:
                    raise ValueError(
                        f"{generator.name} split: {images} images but {labels} labels in {self._idx_folder}"
                    )
                kwargs["num_examples"] = images  # the files' own count, so subsets work too
            return generators

        # TFDS announces a "download" here; the caller's `log` line says what really happens.
        def _log_download_bytes(self):
            pass

        def _log_download_done(self):
            pass

    LocalIDX.__name__ = LocalIDX.__qualname__ = f"Local{cls.__name__}"
    return LocalIDX


def prepare_from_idx(
    dataset: str,
    source_dir: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    log=None,
):
    """Prepare TFDS's `dataset` from local IDX files, with no network, unless already prepared.

    Args:
        dataset: an MNIST-format TFDS dataset (``fashion_mnist``, ``mnist``, ``kmnist``).
        source_dir: folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each may end in ``.gz``);
            default: the Debian package's folder (:data:`LOCAL_SOURCES`).
        data_dir: TFDS data directory to write into (default: TFDS's own).
        log: called with one line when it prepares (default: silent).

    Returns:
        The TFDS builder, prepared: ``builder.as_dataset(...)`` reads the records.

    Raises:
        ValueError: not an MNIST-format dataset, or no files to prepare it from.
    """
    builder = _builder(dataset, data_dir)
    if builder.is_prepared():
        return builder
    if not _is_idx_builder(builder):
        raise ValueError(
            f"Expected an MNIST-format TFDS dataset (mnist, fashion_mnist, kmnist) to prepare from "
            f"IDX files. Received: dataset={dataset!r}"
        )
    folder = find_idx_source(dataset, source_dir)
    if folder is None:
        raise ValueError(_no_source_message(dataset, builder.data_dir))
    local = _local_builder_class(type(builder))(data_dir=None if data_dir is None else os.fspath(data_dir))
    if log is not None:
        log(f"preparing TFDS {dataset} from the IDX files in {folder} into {local.data_dir} (once) ...")
    with tempfile.TemporaryDirectory(prefix="xnor_keras_idx_") as scratch:
        local._idx_folder, local._idx_scratch = folder, Path(scratch)
        local.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return _builder(dataset, data_dir)


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _no_source_message(dataset: str, data_dir) -> str:
    message = f"{dataset!r} is not prepared in {data_dir} and its IDX files are not here. "
    if dataset in LOCAL_SOURCES:
        folder, package = LOCAL_SOURCES[dataset]
        message += f"Install them with `sudo apt-get install {package}` (they go to {folder}), or "
    return message + "pass the folder holding the four IDX files as `source_dir` (--source-dir)."


def dataset_info(
    name: str, data_dir: str | os.PathLike | None = None, *, source_dir: str | os.PathLike | None = None, log=None
) -> DatasetInfo:
    """Classes, channels, splits (with their sizes) and image size of a TFDS image-classification
    dataset.

    An MNIST-format dataset that is not prepared yet is prepared first from its local IDX files
    (`source_dir`, or the Debian package's folder) when they are there: before that, TFDS knows
    no split sizes, and a run would not know it can hold out a validation split."""
    builder = _builder(name, data_dir)
    if _is_idx_builder(builder) and not builder.is_prepared() and find_idx_source(name, source_dir):
        builder = prepare_from_idx(name, source_dir, data_dir=data_dir, log=log)
    info = builder.info
    image_key, label_key = _keys(info.features, name)
    shape = info.features[image_key].shape
    return DatasetInfo(
        name,
        num_classes=info.features[label_key].num_classes,
        channels=shape[-1] or 3,
        splits=list(info.splits.keys()),
        image_size=None if None in shape[:2] else tuple(shape[:2]),
        split_sizes={name: split.num_examples for name, split in info.splits.items()},
    )


def split_size(name: str, split: str, data_dir: str | os.PathLike | None = None) -> int:
    """Examples in `split` of a prepared dataset; `split` may be a TFDS slice (``"train[:-5000]"``).

    From the dataset's metadata where TFDS has it, else by reading the split once (datasets
    whose metadata lacks split sizes, e.g. TFDS's mock data)."""
    builder = _builder(name, data_dir)
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, AssertionError):
        pass
    try:
        ds = builder.as_dataset(split=split)
    except (KeyError, ValueError, AssertionError, tf.errors.OpError) as error:
        raise ValueError(f"Unknown split {split!r} of {name!r}: {error}. Received: split={split!r}") from error
    count = int(ds.cardinality())
    if count < 0:  # unknown or infinite: count it
        count = int(ds.reduce(0, lambda n, _: n + 1))
    return count


def _keys(features, name: str) -> tuple[str, str]:
    image = "image" if "image" in features else None
    label = "label" if "label" in features else None
    if image is None or label is None:
        raise ValueError(
            f"Dataset {name!r} is not an image-classification dataset with 'image' and 'label' "
            f"features (it has {sorted(features.keys())})."
        )
    return image, label


def normalize(image: tf.Tensor, dataset: str) -> tf.Tensor:
    """Scale a uint8 image to [0, 1] and normalise with the dataset's mean and std."""
    channels = image.shape[-1]
    mean, std = NORMALIZATION.get(
        dataset, NORMALIZATION["imagenet2012"] if channels == 3 else ((0.5,) * channels, (0.5,) * channels)
    )
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean[:channels])) / tf.constant(std[:channels])


def _resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new = tf.cast(tf.math.round(shape * scale), tf.int32)
    return tf.image.resize(image, new, method="bilinear", antialias=True)


def preprocess_imagenet(
    image: tf.Tensor, training: bool, seed: tf.Tensor | None = None, crop: int = IMAGENET_CROP
) -> tf.Tensor:
    """Paper's preprocessing: shorter side to 256 (scaled with `crop`), random or central crop.

    Returns a float image in [0, 255] (normalise afterwards).
    """
    resize = round(crop * IMAGENET_RESIZE / IMAGENET_CROP)
    image = _resize_shorter_side(image, resize)
    if training:
        image = tf.image.stateless_random_crop(image, (crop, crop, tf.shape(image)[-1]), seed=seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    else:
        shape = tf.shape(image)
        top = (shape[0] - crop) // 2
        left = (shape[1] - crop) // 2
        image = image[top : top + crop, left : left + crop, :]
    return image


def preprocess_small(
    image: tf.Tensor, training: bool, seed: tf.Tensor | None = None, flip: bool = True, pad: int = 4
) -> tf.Tensor:
    """CIFAR-style: random crop after `pad`-pixel padding (+ horizontal flip) for training."""
    image = tf.cast(image, tf.float32)
    if training:
        shape = tf.shape(image)
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, shape, seed=seed)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image


def load_dataset(
    dataset: str,
    split: str,
    *,
    batch_size: int,
    training: bool,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    seed: int | None = None,
    cache: bool = False,
    shuffle_buffer: int = 10_000,
    download: bool = True,
    manual_dir: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    drop_remainder: bool | None = None,
    augment: bool = True,
    start_epoch: int | None = None,
    log=None,
) -> tf.data.Dataset:
    """A batched ``(image, label)`` pipeline over a TFDS dataset.

    Args:
        dataset: TFDS name (``imagenet2012``, ``cifar10``, ``mnist``, ``fashion_mnist``, ...).
        split: TFDS split expression (``"train"``, ``"validation"``, ``"test"``, ``"train[:90%]"``).
        batch_size: global batch size.
        training: shuffle, augment and drop the last partial batch (unless `drop_remainder`).
        data_dir: where TFDS keeps prepared datasets (default: TFDS's own, ~/tensorflow_datasets).
        image_size: output side in pixels (default 224 for ImageNet-style data, else native).
        seed: makes shuffling and augmentation deterministic.
        cache: cache decoded examples in memory (small datasets).
        shuffle_buffer: shuffle buffer size (examples).
        download: let TFDS download and prepare the data if missing (needs network).
        manual_dir: folder holding manually downloaded archives (ImageNet's ILSVRC2012 tars).
        source_dir: folder with the four IDX files of an MNIST-format dataset, to prepare it
            from with no network (default for ``fashion_mnist``: Debian's package, if installed).
        drop_remainder: override the batching default (True when training).
        augment: with `training`, apply the random crop (and flip); False shuffles only.
        start_epoch: with `training`, return an endless stream of epochs starting at this one
            (0 for a new run): epoch ``e`` is shuffled by ``(seed, e)`` and augmented by
            ``(seed, e, position)``, and batches never straddle two epochs. So a run resumed at
            epoch ``e`` sees the very batches a run that never stopped would have seen (fit it
            with ``steps_per_epoch = examples // batch_size``). None: one epoch, reshuffled at
            each iteration by TF's seed sequence (not reproducible from the middle of a run).
        log: called with one line when a dataset is prepared from local files.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 NHWC images, int64 labels)``, prefetched.

    Raises:
        ValueError: unknown dataset, missing data directory or data, bad arguments.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}")
    builder = _builder(dataset, data_dir)
    image_key, label_key = _keys(builder.info.features, dataset)
    idx_builder = _is_idx_builder(builder)
    if source_dir is not None and not idx_builder:
        raise ValueError(
            f"Expected `source_dir` only with an MNIST-format dataset (mnist, fashion_mnist, kmnist). "
            f"Received: dataset={dataset!r}, source_dir={os.fspath(source_dir)!r}"
        )
    if idx_builder and not builder.is_prepared():
        folder = find_idx_source(dataset, source_dir)
        if folder is not None:
            builder = prepare_from_idx(dataset, folder, data_dir=data_dir, log=log)
        elif download and not _reachable(type(builder).URL):
            # TFDS would retry each of the four files for minutes before giving up.
            raise ValueError(
                f"Could not load split {split!r} of {dataset!r}: no network ({type(builder).URL} is "
                f"unreachable). {_no_source_message(dataset, builder.data_dir)}"
            )
    download_config = None
    if manual_dir is not None:
        if not os.path.isdir(manual_dir):
            raise ValueError(f"Expected `manual_dir` to be an existing directory. Received: manual_dir={os.fspath(manual_dir)!r}")
        download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
    try:
        if download:
            builder.download_and_prepare(download_config=download_config)
        ds = builder.as_dataset(split=split, shuffle_files=training, read_config=tfds.ReadConfig(shuffle_seed=seed))
    except (AssertionError, FileNotFoundError, OSError, ValueError, tf.errors.OpError) as error:
        if dataset == "imagenet2012":
            hint = (
                " ImageNet must be downloaded by hand: put ILSVRC2012_img_train.tar and "
                "ILSVRC2012_img_val.tar in a folder and pass it as `manual_dir`."
            )
        elif idx_builder:
            hint = " " + _no_source_message(dataset, builder.data_dir)
        else:
            hint = " Without network access, prepare it elsewhere and copy the TFDS data directory."
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"Could not load split {split!r} of {dataset!r} from {builder.data_dir}: {first}.{hint}"
        ) from error

    shape = builder.info.features[image_key].shape
    imagenet_style = dataset == "imagenet2012" or None in shape[:2] or max(shape[:2]) > 64
    flip = dataset not in _NO_FLIP
    crop = image_size or (IMAGENET_CROP if imagenet_style else None)

    if start_epoch is not None and (isinstance(start_epoch, bool) or not isinstance(start_epoch, int)
                                    or start_epoch < 0):
        raise ValueError(f"Expected `start_epoch` to be None or an epoch >= 0. Received: start_epoch={start_epoch!r}")
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    randomize = training and augment
    drop = training if drop_remainder is None else drop_remainder
    base_seed = tf.constant([seed or 0, 0], tf.int64)

    def prepare(epoch, index, example):
        image, label = example
        # Stateless ops keyed by (seed, epoch, position): crop uses the key, flip the next one.
        example_seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(base_seed, epoch), 2 * index)
        if imagenet_style:
            image = preprocess_imagenet(image, randomize, example_seed, crop=crop)
        else:
            image = preprocess_small(image, randomize, example_seed, flip=flip)
            if crop is not None:
                image = tf.image.resize(image, (crop, crop), method="bilinear")
        return normalize(image, dataset), tf.cast(label, tf.int64)

    def one_epoch(source, epoch, shuffle_seed, reshuffle):
        if training:
            source = source.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
        source = source.enumerate().map(lambda index, example: prepare(epoch, index, example),
                                        num_parallel_calls=AUTOTUNE, deterministic=seed is not None or None)
        return source.batch(batch_size, drop_remainder=drop)

    def keyed_epoch(epoch):
        # Inside this traced function the graph-level seed is the run's (never 0: TF's seed
        # helper would then compare the tensor op seed with 0 in Python), the op seed the epoch.
        tf.random.set_seed(abs(seed or 0) + 1)
        return one_epoch(ds, epoch, epoch, False)

    if training and start_epoch is not None:
        ds = tf.data.Dataset.counter(start_epoch).flat_map(keyed_epoch)
    else:
        ds = one_epoch(ds, tf.constant(0, tf.int64), seed, True)
    options = tf.data.Options()
    options.deterministic = seed is not None
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)
