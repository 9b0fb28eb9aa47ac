"""Reusable test contracts: independent numpy oracles and round-trip assertions.

Each helper is one contract, reused by the tests of every layer and model:

* :func:`numpy_sign`, :func:`numpy_conv2d`, :func:`numpy_input_scale`: the paper's math written
  directly in numpy (loops, no TensorFlow), the oracles the TensorFlow code is checked against.
* :func:`assert_config_roundtrip`: ``from_config(get_config())`` gives an identical config.
* :func:`assert_saved_model_roundtrip`: a model saved as ``.keras`` / ``.h5`` / SavedModel loads in a
  *fresh Python process* with only ``import xnor_keras`` (no ``custom_objects``) and predicts the same.
* :func:`tflite_op_names`: the operators of a converted flatbuffer, in graph order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = [
    "assert_config_roundtrip",
    "assert_saved_model_roundtrip",
    "calibrate_batchnorm",
    "every_lce_op_model",
    "numpy_conv2d",
    "numpy_input_scale",
    "numpy_sign",
    "run_cli",
    "run_python",
    "tflite_op_names",
]


def numpy_sign(x) -> np.ndarray:
    """sign with sign(0) = +1, as the paper's binarization."""
    x = np.asarray(x)
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def numpy_conv2d(
    x: np.ndarray,
    kernel: np.ndarray,
    strides=1,
    padding: str = "valid",
    dilation_rate=1,
    pad_value: float = 0.0,
) -> np.ndarray:
    """A plain NHWC cross-correlation in numpy (float64), TensorFlow's 'same' split of padding.

    Args:
        x: (batch, height, width, in) input.
        kernel: (kh, kw, in, out) kernel.
        strides, dilation_rate: int or pair.
        padding: "same" or "valid".
        pad_value: constant used for "same" padding.

    Returns:
        (batch, out_h, out_w, out) float64 array.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    (sh, sw), (dh, dw) = _pair(strides), _pair(dilation_rate)
    kh, kw = kernel.shape[:2]
    if padding == "same":
        ph = _same_padding(x.shape[1], kh, sh, dh)
        pw = _same_padding(x.shape[2], kw, sw, dw)
        x = np.pad(x, [(0, 0), ph, pw, (0, 0)], constant_values=pad_value)
    out_h = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    out_w = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * sh : i * sh + (kh - 1) * dh + 1 : dh, j * sw : j * sw + (kw - 1) * dw + 1 : dw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def numpy_input_scale(x: np.ndarray, kernel_size, strides=1, padding="valid", dilation_rate=1):
    """The paper's K (eq. 11): A = mean_c |I|, K = A * k, k a box of 1/(kh*kw), zero padding."""
    kh, kw = _pair(kernel_size)
    a = np.abs(np.asarray(x, np.float64)).mean(axis=-1, keepdims=True)
    box = np.full((kh, kw, 1, 1), 1.0 / (kh * kw))
    return numpy_conv2d(a, box, strides, padding, dilation_rate, pad_value=0.0)


def assert_config_roundtrip(obj) -> None:
    """`type(obj).from_config(obj.get_config())` has exactly the same config."""
    config = obj.get_config()
    clone = type(obj).from_config(config)
    before = json.dumps(config, sort_keys=True, default=str)
    after = json.dumps(clone.get_config(), sort_keys=True, default=str)
    assert before == after, f"config changed in round trip:\n{before}\n!=\n{after}"


def run_python(code: str, *, cwd: str | os.PathLike | None = None, timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter; return its stdout, fail with its stderr on error."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)  # the fresh process must not depend on the parent's setup
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"subprocess failed with exit code {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result.stdout


# Prepended to a child process's code: any import of TensorFlow, Keras, larq, LCE or xnor_keras
# fails, as on a device that has only numpy, ai-edge-litert and xnor_lite.
REFUSE_TENSORFLOW = """
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "larq", "larq_compute_engine", "xnor_keras"):
            raise ImportError("refused in this test: " + name)
sys.meta_path.insert(0, _Refuse())
"""


_LOAD_AND_PREDICT = """
import numpy as np
import xnor_keras  # registers every custom object; nothing else is imported on purpose
import tensorflow as tf

x = np.load({x_path!r})
for path, out in {jobs!r}:
    model = tf.keras.models.load_model(path)
    np.save(out, model(x, training=False).numpy())
print("ok")
"""


def assert_saved_model_roundtrip(
    model,
    x: np.ndarray,
    directory: str | os.PathLike,
    formats: Iterable[str] = ("keras", "h5", "savedmodel"),
    atol: float = 0.0,
) -> None:
    """Save `model` in each format; reload each in a fresh process; outputs must match.

    The fresh process imports only ``xnor_keras`` and TensorFlow, so this proves that every
    custom object is registered by importing the package (no ``custom_objects`` needed).
    """
    directory = Path(directory)
    x = np.asarray(x)
    x_path = str(directory / "x.npy")
    np.save(x_path, x)
    expected = model(x, training=False).numpy()
    jobs: list[tuple[str, str]] = []
    for fmt in formats:
        if fmt == "keras":
            path = directory / "model.keras"
            model.save(path)
        elif fmt == "h5":
            path = directory / "model.h5"
            model.save(path)
        elif fmt == "savedmodel":
            path = directory / "saved_model"
            model.save(path, save_format="tf")
        else:
            raise ValueError(f"Expected `formats` to contain keras, h5, savedmodel; got {fmt!r}")
        jobs.append((str(path), str(directory / f"out_{fmt}.npy")))
    run_python(_LOAD_AND_PREDICT.format(x_path=x_path, jobs=jobs))
    for (path, out), fmt in zip(jobs, formats):
        np.testing.assert_allclose(
            np.load(out), expected, atol=atol, rtol=0, err_msg=f"{fmt} reload differs ({path})"
        )


def tflite_op_names(flatbuffer: bytes) -> list[str]:
    """Operator names of a TFLite flatbuffer's main subgraph, in order (custom ops by name)."""
    from xnor_keras.convert import op_names

    return op_names(flatbuffer)


def calibrate_batchnorm(model, x) -> None:
    """Set every BatchNorm's moving statistics to those of `x` (one forward pass, momentum 0).

    Stands in for a trained model in conversion tests: the statistics come from real
    activations, so (as after training) almost no value entering a sign is exactly 0 or exactly
    on a threshold.
    """
    import tensorflow as tf

    bns = [layer for layer in model.submodules if isinstance(layer, tf.keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    # One batch's mean of alpha * (integer dot products) is alpha times a rational number, which
    # can put a threshold exactly on an attainable value; after real training (moving averages
    # while alpha changes) it practically never is. A tiny jitter restores that.
    rng = np.random.default_rng(0)
    for bn in bns:
        std = np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
        bn.moving_mean.assign(np.asarray(bn.moving_mean) + 1e-3 * std * rng.standard_normal(std.shape))


def every_lce_op_model():
    """A small XNOR model (16x16x3 -> 10) whose conversion uses all four LCE ops.

    A MaxPool before a binary convolution becomes LceBMaxPool2d, and a sign that feeds a float
    op becomes LceQuantize + LceDequantize.
    """
    import larq as lq
    import tensorflow as tf

    from xnor_keras.layers import XNORConv2D

    inputs = tf.keras.Input((16, 16, 3))
    h = tf.keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    h = tf.keras.layers.BatchNormalization()(h)
    h = tf.keras.layers.MaxPool2D()(h)
    h = XNORConv2D(64, 3, padding="same", pad_values=1.0)(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = XNORConv2D(64, 3, padding="valid")(h)
    h = tf.keras.layers.BatchNormalization()(h)
    h = tf.keras.layers.Lambda(lambda t: lq.math.sign(t))(h)
    h = tf.keras.layers.GlobalAveragePooling2D()(h)
    outputs = tf.keras.layers.Dense(10, activation="softmax")(h)
    return tf.keras.Model(inputs, outputs)


def run_cli(main, argv, capsys) -> tuple[int, str, str]:
    """Run a CLI entry point `main(argv)` in-process under pytest's `capsys`:
    (exit code, stdout, stderr), an argparse exit counting as its code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
