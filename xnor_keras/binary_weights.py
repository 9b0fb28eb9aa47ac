r"""Packed binary weights: 1 bit per binarized weight plus alpha, every other weight as a float.

Full-precision kernels (shortcut and first/last convolutions, the classifier) may instead be
stored as int8 with one float32 scale per output channel (``int8_kernels``): 4x smaller, lossy
once (the round to int8), then exact: loading gives exactly ``int8 * scale``.

Training keeps float32 *latent* weights W behind every binarized kernel; the network only ever
uses :math:`\alpha\,\mathrm{sign}(W)`. This module stores exactly that: per binarized kernel its
sign bits (1 bit a weight) and alpha (one float32 per output channel); every other weight
(full-precision layers, BatchNorm statistics, biases) as float32, or float16 on request.

* :func:`save_binary_weights` / :func:`pack_binary_weights` write / return the packed file.
* :func:`load_binary_weights` loads it into a model of the same architecture: the binarized
  forward pass is then identical to the saved model's.
* :func:`binary_weights_summary` describes a file or a model: per layer the shape, bits, alpha
  statistics and the fraction of +1.
* :func:`read_binary_weights` parses and checks a file without a model.

What the latent weights become after loading
--------------------------------------------
The file does not hold the latent weights, only their signs and alpha, so loading sets each
binarized kernel's latent weights to :math:`\pm\alpha` of their output channel (the sign from the
file). Exactly: the magnitudes within a channel differ from alpha by at most one part in
:math:`2^{23}/n` (0.1% for AlexNet's fc6, :math:`n = 9216`), chosen so that the layer's own
:math:`\mathrm{mean}|W|` recomputes alpha bit for bit. The forward pass is therefore identical;
training continues from there like a fine-tuning run whose latent weights all sit at the same
distance alpha from zero: the first update that crosses zero flips a sign, where the original
latent weights (some near zero, some at the clip) would have flipped others first. For short
fine-tuning with a small learning rate that is what you want; to resume the original training
exactly, keep the Keras weights (``model.save_weights``), which hold the latent floats and this
file cannot. Optimizer state is never stored.

File format (versions 1 to 3)
-----------------------------
All integers and arrays little-endian::

    offset 0   8 bytes  magic b"XNORBITS"
    offset 8   uint32   format version (1)
    offset 12  uint32   H, the length of the header
    offset 16  H bytes  header: UTF-8 JSON (below); from version 3, zlib-compressed (RFC 1950)
    16 + H     P bytes  payload: the arrays, at the offsets the header gives (relative to 16 + H)

The file is exactly 16 + H + P bytes (a shorter one is truncated). Header keys: ``format``,
``version``, ``xnor_keras_version``, ``model`` (``name``, ``class``, ``input_shapes``,
``output_shapes`` of the model it came from), ``float_dtype``, ``payload_bytes``,
``payload_sha256``, and ``layers``: a list, in the model's order, of ``{"name", "class",
"weights"}``; each weight is ``{"name", "shape", "encoding", ...}`` with

* ``encoding: "sign_bits"``: ``bits`` = ``[offset, nbytes]`` of the signs of the kernel in C
  order packed 8 to a byte, least significant bit first (``np.packbits(bitorder="little")``),
  bit 1 = +1 (sign(0) = +1), bit 0 = -1; ``alpha`` = ``[offset, nbytes]`` of float32 alpha, one
  per output channel (last axis). The kernel is :math:`\alpha\,(2b - 1)`.
* ``encoding: "float32"`` / ``"float16"`` (or the dtype of a non-float weight such as
  ``"int64"``): ``data`` = ``[offset, nbytes]`` of the raw values in C order.
* ``encoding: "int8_per_channel"`` (version 2): ``data`` = ``[offset, nbytes]`` of int8 values
  q in [-127, 127] in C order, ``scale`` = ``[offset, nbytes]`` of float32 s, one per output
  channel (last axis). The weight is ``float32(q * s)``, with s = max|W| / 127 of the channel.

* Version 3 is version 2 with the header zlib-compressed: a ResNet-18's header (one record per
  weight) shrinks from ~8.7 KB to ~1.5 KB. Files with int8 weights are written as version 3;
  version 2 files are still read.

A file without int8 weights is written as version 1, so readers of version 1 still read it.

Which layers are binarized: those whose kernel quantizer has ``precision == 1`` and produces
:math:`\pm c` per output channel (xnor_keras' XNOR/BWN layers, larq layers with ``ste_sign`` or
``magnitude_aware_sign``); an inference copy (``xnor_keras.convert.inference_copy``) has no
kernel quantizer and is stored as floats.

Example:
    >>> model = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
    >>> save_binary_weights(model, "r18.xbw")
    >>> fresh = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
    >>> load_binary_weights(fresh, "r18.xbw")
    >>> print(binary_weights_summary("r18.xbw"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import zlib
import warnings
from pathlib import Path
from typing import Iterator

import larq as lq
import numpy as np
import tensorflow as tf

from xnor_keras import quantizers as xq
from xnor_keras._io import write_atomically
from xnor_keras.layers import _ScaledBinaryMixin

__all__ = [
    "FLOAT_DTYPES",
    "FORMAT_VERSION",
    "MAGIC",
    "READABLE_VERSIONS",
    "BinaryWeightsError",
    "BinaryWeightsFile",
    "BinaryWeightsSummary",
    "WeightSummary",
    "binary_weights_summary",
    "is_binary_weights_file",
    "load_binary_weights",
    "pack_binary_weights",
    "parse_binary_weights",
    "read_binary_weights",
    "save_binary_weights",
    "write_atomically",
]

MAGIC = b"XNORBITS"
FORMAT_VERSION = 3
"""The newest version this module writes (a file without int8 weights is written as 1)."""
READABLE_VERSIONS = (1, 2, 3)
FLOAT_DTYPES = ("float32", "float16")
SUFFIX = ".xbw"
"""Conventional file suffix (not required)."""

_FORMAT_NAME = "xnor_keras binary weights"
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_SIGN_BITS = "sign_bits"
_INT8 = "int8_per_channel"
# How many times loading re-spreads a channel's magnitudes before accepting an alpha that differs
# in its last bit (never needed in our measurements: one correction always sufficed).
_ALPHA_FIX_ROUNDS = 4


class BinaryWeightsError(ValueError):
    """A packed weights file is unreadable or does not fit the model; the message says what differs."""


# --------------------------------------------------------------------------------------------
# Which weights are binarized, and their signs and alpha


def _layers(model: tf.keras.Model, prefix: str = "") -> Iterator[tuple[str, tf.keras.layers.Layer]]:
    """(name, layer) for every layer with weights, nested models flattened as "outer/inner"."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def _short_name(variable, index: int, taken: set) -> str:
    name = getattr(variable, "name", "") or f"weight_{index}"
    name = name.rsplit("/", 1)[-1].split(":", 1)[0]
    return name if name not in taken else f"{name}_{index}"


def _latent(variable):
    return getattr(variable, "latent_variable", variable)


def _is_binarized_kernel(layer, variable) -> bool:
    quantizer = getattr(layer, "kernel_quantizer", None)
    return (
        getattr(quantizer, "precision", None) == 1
        and getattr(layer, "kernel", None) is variable
        and getattr(variable, "latent_variable", None) is not None
    )


def _sign_and_alpha(layer, name: str, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sign as bool "is +1", alpha (out,)) of the kernel `latent` as `layer` binarizes it.

    Computed by the function the layer's forward pass uses, so alpha is the one the saved model
    computed with, to the bit.
    """
    quantizer = layer.kernel_quantizer
    if isinstance(layer, _ScaledBinaryMixin) and type(quantizer) is xq.ScaledWeightSign:
        unit, alpha = xq.unit_sign_and_scale(
            tf.constant(latent), quantizer.gradient, quantizer.clip_value
        )
        return unit.numpy() > 0, alpha.numpy().astype(np.float32)
    with lq.context.quantized_scope(True):
        quantized = np.asarray(quantizer(tf.constant(latent)), np.float32)
    magnitude = np.abs(quantized)
    alpha = magnitude.reshape(-1, magnitude.shape[-1]).max(axis=0)
    if not np.array_equal(magnitude, np.broadcast_to(alpha, magnitude.shape)):
        raise BinaryWeightsError(
            f"Layer '{name}': its kernel quantizer {type(quantizer).__name__} has precision 1 but "
            "does not produce +-alpha per output channel, so its kernel cannot be stored as sign "
            "bits and alpha."
        )
    return quantized >= 0, alpha


def _latent_for(sign: np.ndarray, alpha: np.ndarray, adjust: np.ndarray) -> np.ndarray:
    r"""Latent weights with the signs `sign` whose channel mean of |W| is exactly alpha.

    All magnitudes of a channel are multiples of u = ulp(fl(n alpha)) (K of them in all, spread
    as evenly as integers allow), so every partial sum is exact in float32 whatever order the
    reduction adds in: the sum is fl(n alpha) and the mean rounds to alpha. `adjust` moves K by a
    unit for channels where the reduction divided differently.
    """
    shape = sign.shape
    out = shape[-1]
    n = sign.size // out
    total = (n * alpha.astype(np.float64)).astype(np.float32)
    ulp = np.spacing(total).astype(np.float64)
    units = np.rint(total / ulp).astype(np.int64) + adjust
    # Channels where spreading does not apply (alpha 0, or subnormal) get plain +-alpha.
    plain = (alpha <= 0) | ~np.isfinite(alpha) | (units < n) | (total < np.finfo(np.float32).tiny)
    per, extra = np.divmod(np.maximum(units, 0), n)
    # per * ulp and (per + 1) * ulp are exact in float32 (at most 24 significant bits).
    low = np.where(plain, alpha, per * ulp).astype(np.float32)
    high = np.where(plain, alpha, (per + 1) * ulp).astype(np.float32)
    rank = np.arange(n, dtype=np.int64)[:, None]
    magnitude = np.where(rank < extra[None, :], high[None, :], low[None, :])
    return np.where(sign.reshape(n, out), magnitude, -magnitude).reshape(shape)


def _latent_reproducing(layer, name: str, sign: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Latent weights for `layer` that it binarizes to exactly sign and alpha (see module doc)."""
    adjust = np.zeros(alpha.shape, np.int64)
    for _ in range(_ALPHA_FIX_ROUNDS):
        latent = _latent_for(sign, alpha, adjust)
        got_sign, got_alpha = _sign_and_alpha(layer, name, latent)
        if not np.array_equal(got_sign, sign):  # only if a quantizer disagrees with sign(0)=+1
            raise BinaryWeightsError(
                f"Layer '{name}': its kernel quantizer does not reproduce the stored signs from "
                "+-alpha latent weights."
            )
        wrong = got_alpha != alpha
        if not wrong.any():
            break
        adjust = adjust + np.where(wrong, np.where(got_alpha > alpha, -1, 1), 0)
    else:
        warnings.warn(
            f"Layer '{name}': alpha of {int(wrong.sum())} output channel(s) differs from the file's "
            f"in its last bits (relative {float(np.max(np.abs(got_alpha / alpha - 1)[wrong])):.1g}); "
            "outputs may differ from the saved model's by as much.",
            stacklevel=3,
        )
    return latent


# --------------------------------------------------------------------------------------------
# Writing


def _check_float_dtype(float_dtype) -> str:
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"Expected `float_dtype` to be one of {FLOAT_DTYPES}, got {float_dtype!r}. "
            f"Received: float_dtype={float_dtype!r}"
        )
    return float_dtype


def _check_model(model) -> None:
    if not isinstance(model, tf.keras.Model):
        raise ValueError(
            f"Expected `model` to be a tf.keras.Model, got {type(model).__name__}. "
            f"Received: model={model!r}"
        )
    if not model.built:
        raise ValueError("Expected `model` to be built (its weights created); call it once or give it an input shape.")


def _shapes(tensors) -> list:
    return [list(t.shape) for t in tensors] if tensors else []


def _int8_layer_names(model: tf.keras.Model, int8_kernels) -> set[str]:
    """The layers whose full-precision `kernel` `int8_kernels` asks to store as int8."""
    if int8_kernels is None:
        return set()
    eligible = {
        name for name, layer in _layers(model)
        if getattr(layer, "kernel", None) is not None and not _is_binarized_kernel(layer, layer.kernel)
        and len(layer.kernel.shape) >= 2 and layer.kernel.dtype.is_floating
    }
    if int8_kernels == "all":
        return eligible
    if isinstance(int8_kernels, str) or not all(isinstance(n, str) for n in int8_kernels):
        raise ValueError(
            "Expected `int8_kernels` to be None, 'all' or a list of layer names, got "
            f"{int8_kernels!r}. Received: int8_kernels={int8_kernels!r}"
        )
    unknown = sorted(set(int8_kernels) - eligible)
    if unknown:
        raise ValueError(
            f"Expected `int8_kernels` to name layers with a full-precision kernel, got "
            f"{_names(unknown)}; those layers are: {_names(sorted(eligible), limit=12)}. "
            f"Received: int8_kernels={list(int8_kernels)!r}"
        )
    return set(int8_kernels)


def _int8_per_channel(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q int8, scale float32 per output channel): symmetric, q = round(W / s), s = max|W| / 127."""
    flat = value.astype(np.float64).reshape(-1, value.shape[-1])
    largest = np.abs(flat).max(axis=0)
    scale = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(flat / scale.astype(np.float64)), -127, 127).astype(np.int8)
    return q.reshape(value.shape), scale


def pack_binary_weights(model: tf.keras.Model, *, float_dtype: str = "float32",
                        int8_kernels=None) -> bytes:
    """The packed weights file of `model` as bytes (see the module docstring for the format).

    Args:
        model: a built Keras model.
        float_dtype: ``"float32"`` (default, lossless) or ``"float16"`` for every weight that is not
            binarized (alpha stays float32).
        int8_kernels: full-precision kernels to store as int8 with a scale per output channel:
            None (default), ``"all"`` (every full-precision Conv2D/Dense kernel), or a list of
            layer names (e.g. a ResNet's 1x1 shortcut convolutions). Lossy: check the accuracy.

    Returns:
        The file's bytes.

    Raises:
        ValueError: `float_dtype` or `int8_kernels` is not supported, or a float16 weight would
            overflow.
        BinaryWeightsError: a 1-bit kernel quantizer that is not +-alpha per channel.
    """
    float_dtype = _check_float_dtype(float_dtype)
    _check_model(model)
    int8_layers = _int8_layer_names(model, int8_kernels)
    chunks: list[bytes] = []
    offset = 0

    def put(data: bytes) -> list[int]:
        nonlocal offset
        chunks.append(data)
        span = [offset, len(data)]
        offset += len(data)
        return span

    layers = []
    for layer_name, layer in _layers(model):
        entries, taken = [], set()
        for index, variable in enumerate(layer.weights):
            weight_name = _short_name(_latent(variable), index, taken)
            taken.add(weight_name)
            value = np.asarray(_latent(variable).numpy())
            entry = {"name": weight_name, "shape": list(value.shape)}
            if _is_binarized_kernel(layer, variable):
                sign, alpha = _sign_and_alpha(layer, layer_name, value.astype(np.float32))
                entry["encoding"] = _SIGN_BITS
                entry["bits"] = put(np.packbits(sign.ravel(), bitorder="little").tobytes())
                entry["alpha"] = put(alpha.astype("<f4").tobytes())
            elif layer_name in int8_layers and variable is layer.kernel:
                q, scale = _int8_per_channel(value)
                entry["encoding"] = _INT8
                entry["data"] = put(q.tobytes())
                entry["scale"] = put(scale.astype("<f4").tobytes())
            else:
                if value.dtype.kind == "f":
                    if float_dtype == "float16":
                        _check_float16_range(value, layer_name, weight_name)
                    encoding = float_dtype
                else:
                    encoding = value.dtype.name
                entry["encoding"] = encoding
                entry["data"] = put(value.astype(np.dtype(encoding).newbyteorder("<")).tobytes())
            entries.append(entry)
        layers.append({"name": layer_name, "class": type(layer).__name__, "weights": entries})

    payload = b"".join(chunks)
    from xnor_keras import __version__

    version = FORMAT_VERSION if int8_layers else 1
    header = {
        "format": _FORMAT_NAME,
        "version": version,
        "xnor_keras_version": __version__,
        "model": {
            "name": model.name,
            "class": type(model).__name__,
            "input_shapes": _shapes(getattr(model, "inputs", None)),
            "output_shapes": _shapes(getattr(model, "outputs", None)),
        },
        "float_dtype": float_dtype,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "layers": layers,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if version >= 3:
        header_bytes = zlib.compress(header_bytes, 9)
    return _PREFIX.pack(MAGIC, version, len(header_bytes)) + header_bytes + payload


def _check_float16_range(value: np.ndarray, layer: str, weight: str) -> None:
    largest = float(np.max(np.abs(value))) if value.size else 0.0
    if largest > np.finfo(np.float16).max:
        raise ValueError(
            f"Layer '{layer}' weight '{weight}' has values up to {largest:g}, beyond float16's range "
            f"({np.finfo(np.float16).max:g}); save it with float_dtype='float32'."
        )


def save_binary_weights(
    model: tf.keras.Model, path: str | os.PathLike, *, float_dtype: str = "float32", int8_kernels=None
) -> Path:
    """Write `model`'s packed weights to `path` atomically; returns the path.

    Args:
        model: a built Keras model.
        path: where to write (conventionally ``*.xbw``); its folder is created.
        float_dtype: ``"float32"`` (default) or ``"float16"``; see :func:`pack_binary_weights`.
        int8_kernels: None, ``"all"`` or layer names; see :func:`pack_binary_weights`.

    Returns:
        `path` as a :class:`pathlib.Path`.
    """
    return write_atomically(
        pack_binary_weights(model, float_dtype=float_dtype, int8_kernels=int8_kernels), path
    )


# --------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class BinaryWeightsFile:
    """A parsed, checked packed weights file.

    Attributes:
        header: the JSON header (see the module docstring).
        payload: the raw arrays.
        source: where it was read from (for messages).
        file_bytes: the size of the whole file.
    """

    header: dict
    payload: bytes
    source: str = "<bytes>"
    file_bytes: int = 0

    @property
    def model_name(self) -> str:
        return self.header["model"]["name"]

    @property
    def layers(self) -> list[dict]:
        return self.header["layers"]

    def _entry(self, layer: str, weight: str) -> dict:
        for record in self.layers:
            if record["name"] == layer:
                for entry in record["weights"]:
                    if entry["name"] == weight:
                        return entry
                raise KeyError(f"{self.source}: layer '{layer}' has no weight '{weight}'")
        raise KeyError(f"{self.source}: no layer '{layer}'")

    def _array(self, span: list[int], dtype: str) -> np.ndarray:
        start, size = span
        return np.frombuffer(self.payload, np.dtype(dtype).newbyteorder("<"), size // np.dtype(dtype).itemsize, start)

    def sign_and_alpha(self, layer: str, weight: str = "kernel") -> tuple[np.ndarray, np.ndarray]:
        """(signs as a ±1 int8 array of the kernel's shape, alpha (out,) float32) of a binarized kernel."""
        entry = self._entry(layer, weight)
        if entry["encoding"] != _SIGN_BITS:
            raise KeyError(f"{self.source}: layer '{layer}' weight '{weight}' is {entry['encoding']}, not binarized")
        return _decode_signs(self, entry), self._array(entry["alpha"], "float32").copy()

    def weight(self, layer: str, weight: str) -> np.ndarray:
        """The value of a weight as the network uses it (alpha * sign for a binarized kernel)."""
        entry = self._entry(layer, weight)
        if entry["encoding"] == _SIGN_BITS:
            sign, alpha = self.sign_and_alpha(layer, weight)
            return sign.astype(np.float32) * alpha
        if entry["encoding"] == _INT8:
            q = self._array(entry["data"], "int8").reshape(entry["shape"])
            return q.astype(np.float32) * self._array(entry["scale"], "float32")
        return self._array(entry["data"], entry["encoding"]).reshape(entry["shape"]).copy()


def _decode_signs(file: BinaryWeightsFile, entry: dict) -> np.ndarray:
    size = int(np.prod(entry["shape"], dtype=np.int64))
    bits = np.unpackbits(file._array(entry["bits"], "uint8"), count=size, bitorder="little")
    return (bits.astype(np.int8) * 2 - 1).reshape(entry["shape"])


def _fail(source: str, message: str) -> BinaryWeightsError:
    return BinaryWeightsError(f"{source}: {message}")


def parse_binary_weights(data: bytes, source: str = "<bytes>") -> BinaryWeightsFile:
    """Parse and check packed weights `data` (magic, version, header, size, checksum).

    Raises:
        BinaryWeightsError: naming what is wrong (not this format, another version, truncated,
            corrupted).
    """
    data = bytes(data)
    if not data.startswith(MAGIC[: len(data)]) or (len(data) >= len(MAGIC) and not data.startswith(MAGIC)):
        raise _fail(source, f"not an xnor_keras binary weights file (it does not start with {MAGIC!r}).")
    if len(data) < _PREFIX.size:
        raise _fail(source, f"truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte preamble.")
    _, version, header_size = _PREFIX.unpack_from(data)
    if version not in READABLE_VERSIONS:
        newer = " (written by a newer xnor_keras; upgrade it)" if version > FORMAT_VERSION else ""
        raise _fail(
            source,
            f"format version {version}{newer}; this xnor_keras reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}.",
        )
    header_end = _PREFIX.size + header_size
    if len(data) < header_end:
        raise _fail(source, f"truncated: {len(data)} bytes, the header alone ends at byte {header_end}.")
    try:
        raw_header = data[_PREFIX.size : header_end]
        header = json.loads((zlib.decompress(raw_header) if version >= 3 else raw_header).decode("utf-8"))
        payload_size = int(header["payload_bytes"])
        layers = header["layers"]
        header["model"]["name"]
    except (ValueError, KeyError, TypeError, zlib.error) as error:
        raise _fail(source, f"corrupted header ({error}).") from None
    actual = len(data) - header_end
    if actual < payload_size:
        raise _fail(
            source,
            f"truncated: {len(data)} bytes, {payload_size - actual} fewer than the header announces "
            f"({header_end + payload_size}).",
        )
    if actual > payload_size:
        raise _fail(source, f"{actual - payload_size} unexpected bytes after the end of the data.")
    payload = data[header_end:]
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise _fail(source, "corrupted: the data's sha256 differs from the one in its header.")
    try:
        for record in layers:
            for entry in record["weights"]:
                _check_entry(entry, payload_size)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise _fail(source, f"corrupted header: layer '{record.get('name')}': {error}") from None
    return BinaryWeightsFile(header=header, payload=payload, source=source, file_bytes=len(data))


def _check_entry(entry: dict, payload_size: int) -> None:
    """Raise ValueError unless `entry`'s spans lie in the payload and fit its shape and encoding."""
    size = int(np.prod(entry["shape"], dtype=np.int64))
    if entry["encoding"] == _SIGN_BITS:
        if len(entry["shape"]) < 2:
            raise ValueError(f"binarized weight '{entry['name']}' has shape {entry['shape']}")
        expected = {"bits": -(-size // 8), "alpha": 4 * int(entry["shape"][-1])}
    elif entry["encoding"] == _INT8:
        if len(entry["shape"]) < 2:
            raise ValueError(f"int8 weight '{entry['name']}' has shape {entry['shape']}")
        expected = {"data": size, "scale": 4 * int(entry["shape"][-1])}
    else:
        expected = {"data": size * np.dtype(entry["encoding"]).itemsize}
    for key, nbytes in expected.items():
        start, length = (int(v) for v in entry[key])
        if length != nbytes or start < 0 or start + length > payload_size:
            raise ValueError(
                f"weight '{entry['name']}' {key} spans bytes [{start}, {start + length}) of "
                f"{payload_size}, expected {nbytes} bytes"
            )


def read_binary_weights(path: str | os.PathLike) -> BinaryWeightsFile:
    """Read and check the packed weights file at `path` (see :func:`parse_binary_weights`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BinaryWeightsError(f"{path}: cannot read it ({error.strerror or error}).") from None
    return parse_binary_weights(data, str(path))


def is_binary_weights_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a file that starts with this format's magic bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Loading


def _describe(file: BinaryWeightsFile, model: tf.keras.Model, strict: bool) -> tuple[list, list[str]]:
    """Match the file's layers to the model's: (pairs of (layer name, layer, record), differences)."""
    records = {record["name"]: record for record in file.layers}
    ours = list(_layers(model))
    differences = []
    missing = [name for name, _ in ours if name not in records]
    if missing:
        differences.append(f"the file has no weights for the model's layer(s) {_names(missing)}")
    extra = [name for name in records if name not in {n for n, _ in ours}]
    if extra and strict:
        differences.append(f"the file has weights for layer(s) the model lacks: {_names(extra)}")
    pairs = []
    for name, layer in ours:
        record = records.get(name)
        if record is None:
            continue
        if record["class"] != type(layer).__name__:
            differences.append(f"layer '{name}' is a {record['class']} in the file, a {type(layer).__name__} in the model")
            continue
        if len(record["weights"]) != len(layer.weights):
            differences.append(
                f"layer '{name}' has {len(record['weights'])} weights in the file, {len(layer.weights)} in the model"
            )
            continue
        for entry, variable in zip(record["weights"], layer.weights):
            shape = tuple(variable.shape)
            what = f"layer '{name}' weight '{entry['name']}'"
            if tuple(entry["shape"]) != shape:
                differences.append(f"{what} has shape {tuple(entry['shape'])} in the file, {shape} in the model")
            binarized = _is_binarized_kernel(layer, variable)
            if binarized != (entry["encoding"] == _SIGN_BITS):
                differences.append(
                    f"{what} is {'binarized' if not binarized else 'full precision'} in the file, "
                    f"{'binarized' if binarized else 'full precision'} in the model"
                )
        pairs.append((name, layer, record))
    return pairs, differences


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_binary_weights(
    model: tf.keras.Model, path: str | os.PathLike, *, strict: bool = True
) -> BinaryWeightsFile:
    """Load a packed weights file into `model`, which must have the architecture it came from.

    Every check runs before any weight is written: on an error the model is unchanged. Binarized
    kernels get latent weights of +-alpha (see the module docstring for what that means for
    fine-tuning); every other weight gets the stored value (float16 files: rounded to float16).

    Args:
        model: a built model with the same layers (names, classes, weight shapes, which kernels
            are binarized) as the saved one.
        path: the file, or its bytes.
        strict: with False, layers in the file that the model lacks are ignored (e.g. the
            classifier, for an ``include_top=False`` model); every model layer must still be
            in the file.

    Returns:
        The parsed file (its header names the model it came from).

    Raises:
        BinaryWeightsError: the file is unreadable (not this format, another version,
            truncated, corrupted) or does not fit `model`; the message names what differs.
    """
    _check_model(model)
    file = parse_binary_weights(path) if isinstance(path, (bytes, bytearray)) else read_binary_weights(path)
    pairs, differences = _describe(file, model, strict)
    if differences:
        shown = "; ".join(differences[:8])
        more = f"; and {len(differences) - 8} more differences" if len(differences) > 8 else ""
        raise BinaryWeightsError(
            f"{file.source} (saved from model '{file.model_name}') does not fit model "
            f"'{model.name}': {shown}{more}."
        )
    assignments = []
    for name, layer, record in pairs:
        for entry, variable in zip(record["weights"], layer.weights):
            target = _latent(variable)
            if entry["encoding"] == _SIGN_BITS:
                sign, alpha = file.sign_and_alpha(name, entry["name"])
                value = _latent_reproducing(layer, name, sign > 0, alpha)
            else:
                value = file.weight(name, entry["name"])
            assignments.append((target, value.astype(target.dtype.as_numpy_dtype)))
    for target, value in assignments:
        target.assign(value)
    return file


# --------------------------------------------------------------------------------------------
# Summary


@dataclasses.dataclass(frozen=True)
class WeightSummary:
    """One stored weight: where it is, how it is stored, and for binarized kernels alpha and signs."""

    layer: str
    layer_class: str
    weight: str
    shape: tuple
    encoding: str
    stored_bytes: int
    alpha_min: float | None = None
    alpha_mean: float | None = None
    alpha_max: float | None = None
    plus_one_fraction: float | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.stored_bytes / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class BinaryWeightsSummary:
    """What a packed weights file (or a model packed as one) holds, and its size."""

    model_name: str
    float_dtype: str
    file_bytes: int
    weights: list[WeightSummary]

    @property
    def weight_count(self) -> int:
        return sum(w.size for w in self.weights)

    @property
    def binary_weight_count(self) -> int:
        return sum(w.size for w in self.weights if w.encoding == _SIGN_BITS)

    @property
    def latent_float32_bytes(self) -> int:
        """What the same weights take as float32 (a Keras weights file, give or take its overhead)."""
        return 4 * self.weight_count

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "float_dtype": self.float_dtype,
            "file_bytes": self.file_bytes,
            "weight_count": self.weight_count,
            "binary_weight_count": self.binary_weight_count,
            "latent_float32_bytes": self.latent_float32_bytes,
            "weights": [{**dataclasses.asdict(w), "shape": list(w.shape)} for w in self.weights],
        }

    def format_table(self) -> str:
        rows = [("layer", "weight", "shape", "stored as", "bytes", "alpha min / mean / max", "+1")]
        for w in self.weights:
            binarized = w.encoding == _SIGN_BITS
            rows.append((
                w.layer,
                w.weight,
                "x".join(map(str, w.shape)) or "scalar",
                "1 bit + alpha" if binarized else w.encoding,
                f"{w.stored_bytes:,d}",
                f"{w.alpha_min:.4g} / {w.alpha_mean:.4g} / {w.alpha_max:.4g}" if binarized else "",
                f"{w.plus_one_fraction:.1%}" if binarized else "",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(cell.rjust(width) if i == 4 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        lines.append(
            f"model '{self.model_name}': {self.weight_count:,d} weights, {self.binary_weight_count:,d} "
            f"binarized; other weights as {self.float_dtype}"
        )
        lines.append(
            f"file: {self.file_bytes:,d} bytes ({self.file_bytes / 1e6:.2f} MB); as float32: "
            f"{self.latent_float32_bytes:,d} bytes ({self.latent_float32_bytes / 1e6:.1f} MB), "
            f"{self.latent_float32_bytes / max(self.file_bytes, 1):.1f}x larger"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def binary_weights_summary(source) -> BinaryWeightsSummary:
    """Summarize a packed weights file, its bytes, or a model (packed in memory, float32).

    Args:
        source: a path, the bytes of a file, a :class:`BinaryWeightsFile`, or a Keras model.

    Returns:
        A :class:`BinaryWeightsSummary`; ``print()`` it for a table.

    Raises:
        BinaryWeightsError: the file is unreadable.
    """
    if isinstance(source, tf.keras.Model):
        source = pack_binary_weights(source)
    if isinstance(source, (bytes, bytearray)):
        file = parse_binary_weights(source)
    elif isinstance(source, BinaryWeightsFile):
        file = source
    else:
        file = read_binary_weights(source)
    weights = []
    for record in file.layers:
        for entry in record["weights"]:
            spans = [entry[k] for k in ("bits", "alpha", "data", "scale") if k in entry]
            stats = {}
            if entry["encoding"] == _SIGN_BITS:
                sign, alpha = file.sign_and_alpha(record["name"], entry["name"])
                stats = dict(
                    alpha_min=float(alpha.min()) if alpha.size else 0.0,
                    alpha_mean=float(alpha.mean()) if alpha.size else 0.0,
                    alpha_max=float(alpha.max()) if alpha.size else 0.0,
                    plus_one_fraction=float(np.mean(sign > 0)) if sign.size else 0.0,
                )
            weights.append(WeightSummary(
                layer=record["name"],
                layer_class=record["class"],
                weight=entry["name"],
                shape=tuple(entry["shape"]),
                encoding=entry["encoding"],
                stored_bytes=sum(size for _, size in spans),
                **stats,
            ))
    return BinaryWeightsSummary(
        model_name=file.model_name,
        float_dtype=file.header.get("float_dtype", "float32"),
        file_bytes=file.file_bytes,
        weights=weights,
    )
