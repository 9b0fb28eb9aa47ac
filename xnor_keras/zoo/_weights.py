"""Named pretrained weights: a registry of packed weight files, downloaded once into a cache.

A zoo builder's ``weights=`` takes ``None``, the path of a weights file, or a name registered
here for that builder (``XNORResNet18(weights="fashion_mnist")``). An entry says where the packed
file is (``https://`` or ``file://``), its sha256, the model, ``classes`` and ``input_shape`` it
fits, and the accuracy it reaches. The first use downloads the file into the cache folder
(``$XNOR_KERAS_CACHE/weights``, default ``~/.cache/xnor_keras/weights``), checks its sha256 and
refuses it on a mismatch; later uses check the cached copy and do not download again.

Weights that ship with the package are listed in ``weights/index.json`` beside this module and
registered at import (``zoo/publish_weights.py`` writes them from a training run).

Example (registering weights hosted elsewhere):
    >>> from xnor_keras.zoo import PretrainedWeights, register_weights
    >>> register_weights(PretrainedWeights(
    ...     model="XNORResNet18", name="my_cifar10", url="https://example.org/r18.xbw",
    ...     sha256="<64 hex digits>", classes=10, input_shape=(32, 32, 3),
    ...     dataset="cifar10", accuracy=0.81))
    >>> model = xnor_keras.zoo.XNORResNet18(weights="my_cifar10")
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "PretrainedWeights",
    "WeightsDownloadError",
    "cache_dir",
    "fetch_weights",
    "get_weights",
    "list_weights",
    "named_weights",
    "register_weights",
    "resolve_weights",
]

CACHE_ENV = "XNOR_KERAS_CACHE"
"""Environment variable naming the cache folder (weights go in its ``weights`` subfolder)."""

_SCHEMES = ("https://", "http://", "file://")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class WeightsDownloadError(ValueError):
    """Named weights could not be fetched, or what was fetched is not what the registry says."""


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One registered set of weights for one zoo builder.

    Attributes:
        model: the zoo builder they fit (``"XNORResNet18"``).
        name: the name ``weights=`` takes (``"fashion_mnist"``).
        url: where the packed file (:mod:`xnor_keras.binary_weights`) is: ``https://`` or
            ``file://``.
        sha256: the file's sha256, 64 lowercase hex digits.
        classes: the number of classes of the classifier they were trained with.
        input_shape: the (height, width, channels) they were trained at.
        dataset: the dataset they were trained and evaluated on.
        accuracy: top-1 accuracy on `dataset`'s test split, as the run that made them measured.
        description: one line for listings (recipe, epochs, ...).
        options: the builder's keyword arguments the weights were trained with (e.g.
            ``{"pad_values": 1.0}``); the builder applies them and refuses a different value.
        raw_input_shape: if set, the model built with these weights (and no ``input_shape`` or
            ``input_tensor``) takes raw images of this shape with pixel values 0-255: a
            ``Resizing`` layer to `input_shape` and a ``Rescaling`` layer computing
            ``(x / 255 - mean) / std`` run inside the model, as the training pipeline did.
            ``input_shape=`` the trained shape builds the bare network instead.
        mean, std: the per-channel (or single) normalisation of the training pipeline.
    """

    model: str
    name: str
    url: str
    sha256: str
    classes: int
    input_shape: tuple
    dataset: str
    accuracy: float
    description: str = ""
    options: dict = dataclasses.field(default_factory=dict)
    raw_input_shape: tuple | None = None
    mean: tuple = (0.0,)
    std: tuple = (1.0,)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.raw_input_shape is not None:
            raw = tuple(self.raw_input_shape)
            object.__setattr__(self, "raw_input_shape", raw)
            if len(raw) != 3 or not all(isinstance(v, int) and v > 0 for v in raw) or raw[-1] != self.input_shape[-1]:
                raise ValueError(
                    "Expected `raw_input_shape` to be (height, width, channels) with the channels of "
                    f"`input_shape` {self.input_shape}. Received: raw_input_shape={self.raw_input_shape!r}"
                )
        for field in ("mean", "std"):
            values = getattr(self, field)
            if len(values) not in (1, self.input_shape[-1]) or (field == "std" and min(values) <= 0):
                raise ValueError(
                    f"Expected `{field}` to hold 1 or {self.input_shape[-1]} value(s)"
                    + (" above 0" if field == "std" else "") + f". Received: {field}={values!r}"
                )
        object.__setattr__(self, "sha256", str(self.sha256).lower())
        if not self.url.startswith(_SCHEMES):
            raise ValueError(f"Expected `url` to start with one of {_SCHEMES}. Received: url={self.url!r}")
        if not _SHA256.match(self.sha256):
            raise ValueError(f"Expected `sha256` to be 64 hex digits. Received: sha256={self.sha256!r}")
        if len(self.input_shape) != 3 or not all(isinstance(v, int) and v > 0 for v in self.input_shape):
            raise ValueError(
                f"Expected `input_shape` to be (height, width, channels). Received: input_shape={self.input_shape!r}"
            )
        if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 1:
            raise ValueError(f"Expected `classes` to be a positive integer. Received: classes={self.classes!r}")

    @property
    def filename(self) -> str:
        """The cached file's name: the hash is in it, so new weights never reuse a stale file."""
        return f"{self.model}-{self.name}-{self.sha256[:16]}.xbw"


_WEIGHTS: dict[tuple[str, str], PretrainedWeights] = {}


def register_weights(entry: PretrainedWeights, *, replace: bool = False) -> PretrainedWeights:
    """Register `entry` for ``entry.model``'s ``weights=entry.name``; returns it.

    Raises:
        ValueError: the name is already taken for that model (unless `replace`).
    """
    key = (entry.model, entry.name)
    if key in _WEIGHTS and _WEIGHTS[key] != entry and not replace:
        raise ValueError(f"Weights {entry.name!r} are already registered for {entry.model}.")
    _WEIGHTS[key] = entry
    return entry


PACKAGED_DIR = Path(__file__).resolve().parent / "weights"
"""Weights that ship inside the package: the packed files and ``index.json``, their registry entries."""


def _register_packaged(folder: Path = PACKAGED_DIR) -> None:
    """Register every entry of ``folder/index.json`` at a ``file://`` address inside the package."""
    index = folder / "index.json"
    if not index.is_file():
        return
    import json

    for record in json.loads(index.read_text()):
        record = dict(record)
        url = (folder / record.pop("file")).as_uri()
        register_weights(PretrainedWeights(url=url, **record))


def list_weights(model: str | None = None) -> list[PretrainedWeights]:
    """Registered weights, for `model` only if given, sorted by model and name."""
    return [entry for key, entry in sorted(_WEIGHTS.items()) if model is None or key[0] == model]


def get_weights(model: str, name: str) -> PretrainedWeights:
    """The entry registered as `name` for `model`.

    Raises:
        ValueError: no such entry; the message lists the names `model` has.
    """
    entry = _WEIGHTS.get((model, name))
    if entry is None:
        known = [e.name for e in list_weights(model)]
        raise ValueError(
            f"Unknown weights {name!r} for {model}: expected None, the path of an existing weights "
            f"file, or a registered name ({', '.join(map(repr, known)) if known else 'none registered yet'}). "
            f"Received: weights={name!r}"
        )
    return entry


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$XNOR_KERAS_CACHE/weights``, default ``~/.cache/xnor_keras/weights``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xnor_keras"
    return Path(root).expanduser() / "weights"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_weights(entry: PretrainedWeights, *, directory: str | os.PathLike | None = None) -> Path:
    """The local path of `entry`'s file: downloaded once into the cache, its sha256 checked.

    A cached file is checked on every use; one whose hash is wrong (changed on disk) is
    downloaded again. A download is written to a temporary file and renamed only once its hash
    matches, so the cache never holds a partial or unverified file.

    Raises:
        WeightsDownloadError: the download failed, or its sha256 is not the registered one.
    """
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / entry.filename
    if path.is_file() and _sha256(path) == entry.sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=folder)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", None) or error
                raise WeightsDownloadError(
                    f"Could not download weights {entry.name!r} for {entry.model} from {entry.url}: {reason}"
                ) from None
        if digest.hexdigest() != entry.sha256:
            raise WeightsDownloadError(
                f"Refusing weights {entry.name!r} for {entry.model} from {entry.url}: their sha256 is "
                f"{digest.hexdigest()}, the registry expects {entry.sha256} (a changed or corrupted "
                "file; nothing was cached)."
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def named_weights(model: str, weights) -> PretrainedWeights | None:
    """The registry entry `weights` names for `model`, or None when it is not a registered name."""
    if isinstance(weights, str):
        return _WEIGHTS.get((model, weights))
    return None


def apply_entry_options(entry: PretrainedWeights, options: dict) -> dict:
    """`options` with `entry`'s training options added; a different given value is an error."""
    merged = dict(options)
    for key, value in entry.options.items():
        if key in merged and merged[key] != value:
            raise ValueError(
                f"{entry.model}(weights={entry.name!r}) was trained with {key}={value!r}; leave "
                f"`{key}` out or set it to {value!r}. Received: {key}={merged[key]!r}"
            )
        merged[key] = value
    return merged


def raw_image_input(entry: PretrainedWeights, tf):
    """Raw images of ``entry.raw_input_shape`` in (a new Input), resized and normalised out."""
    inputs = tf.keras.Input(shape=entry.raw_input_shape, name="image")
    x = inputs
    if entry.raw_input_shape[:2] != entry.input_shape[:2]:
        x = tf.keras.layers.Resizing(*entry.input_shape[:2], interpolation="bilinear", name="resize")(x)
    mean, std = (v if len(v) > 1 else v[0] for v in (entry.mean, entry.std))
    import numpy as np

    scale = 1.0 / (255.0 * np.asarray(std, "float32"))
    offset = -np.asarray(mean, "float32") / np.asarray(std, "float32")
    return tf.keras.layers.Rescaling(scale.tolist(), offset.tolist(), name="normalize")(x)


def resolve_weights(
    model: str, weights, *, include_top: bool, classes, input_shape, input_tensor
) -> tuple[object, int, tuple | None]:
    """A builder's (weights, classes, input_shape) with a registered name made a local file.

    For a registered name: `classes` and `input_shape` default to the entry's, and given ones
    must match it (`input_shape` only in its channels without the top); then the file is
    fetched. Anything else passes through unchanged (``classes=None`` becomes 1000).

    Raises:
        ValueError: wrong `classes` or `input_shape` for the named weights, or an unknown name
            that is not an existing path either.
        WeightsDownloadError: see :func:`fetch_weights`.
    """
    from xnor_keras.zoo._common import _is_weights_file

    if not isinstance(weights, str) or (model, weights) not in _WEIGHTS:
        if isinstance(weights, str) and not _is_weights_file(weights):
            get_weights(model, weights)  # raises, listing the known names
        return weights, 1000 if classes is None else classes, input_shape
    entry = _WEIGHTS[(model, weights)]
    fits = f"{model}(weights={weights!r}) was trained with"
    if include_top:
        if classes is not None and classes != entry.classes:
            raise ValueError(
                f"{fits} classes={entry.classes} ({entry.dataset}); leave `classes` out or set it "
                f"to {entry.classes}. Received: classes={classes!r}"
            )
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is not None:
        given = tuple(input_shape)
        if include_top and given != entry.input_shape:
            raise ValueError(
                f"{fits} input_shape={entry.input_shape}; leave `input_shape` out or set it to "
                f"{entry.input_shape}. Received: input_shape={input_shape!r}"
            )
        if not include_top and (len(given) != 3 or given[-1] != entry.input_shape[-1]):
            raise ValueError(
                f"{fits} {entry.input_shape[-1]} input channels; `input_shape` must end in "
                f"{entry.input_shape[-1]}. Received: input_shape={input_shape!r}"
            )
    elif input_tensor is None:
        input_shape = entry.input_shape
    return str(fetch_weights(entry)), entry.classes if classes is None else classes, input_shape


_register_packaged()
