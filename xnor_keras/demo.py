"""Offline end-to-end demo: train float / BWN / XNOR twins, convert the XNOR net, check it on LCE.

Runs with no network: the data is scikit-learn's bundled 8x8 handwritten digits (1,797 images),
upsampled to 16x16, with a held-out split fixed by the seed. Usage::

    python -m xnor_keras.demo [--epochs N] [--output-dir DIR] [--seed S] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from xnor_keras import convert as xconvert
from xnor_keras.layers import BWNConv2D, XNORConv2D

__all__ = ["KINDS", "digits_net", "load_digits", "main"]

KINDS = ("float", "bwn", "xnor")


def load_digits(seed: int = 0, test_fraction: float = 0.2, size: int = 16):
    """scikit-learn's digits as NHWC float32 images in [0, 1], split train / held-out by `seed`."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    images = (data.images / 16.0).astype("float32")[..., None]
    images = tf.image.resize(images, (size, size), method="bilinear").numpy()
    labels = data.target.astype("int64")
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def _conv(kind: str, filters: int, kernel_size: int, name: str, **kwargs):
    if kind == "xnor":
        return XNORConv2D(filters, kernel_size, name=name, **kwargs)
    if kind == "bwn":
        return BWNConv2D(filters, kernel_size, name=name, **kwargs)
    return tf.keras.layers.Conv2D(filters, kernel_size, use_bias=False, name=name, **kwargs)


def digits_net(kind: str = "xnor", input_shape=(16, 16, 1), classes: int = 10) -> tf.keras.Model:
    """A small net in the paper's layout: float first and last layer, binary blocks between.

    Binary blocks use the paper's order BN -> BinActiv -> BinConv -> Pool; the float and BWN
    twins put a ReLU where the binary activation was. The "fully connected" layer is a
    convolution over the whole 2x2 feature map, as the paper's fc6.
    """
    if kind not in KINDS:
        raise ValueError(f"Expected `kind` to be one of {KINDS}, got {kind!r}. Received: kind={kind!r}")
    layers = tf.keras.layers
    inputs = tf.keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPool2D(2, name="pool1")(x)
    for name, filters, kernel, padding, pool in (
        ("conv2", 64, 3, "same", True),
        ("conv3", 128, 3, "same", True),
        ("fc4", 256, 2, "valid", False),
    ):
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        if kind != "xnor":
            x = layers.ReLU(name=f"{name}_relu")(x)
        x = _conv(kind, filters, kernel, name, padding=padding)(x)
        if pool:
            x = layers.MaxPool2D(2, name=f"{name}_pool")(x)
    x = layers.BatchNormalization(name="fc5_bn")(x)
    x = layers.ReLU(name="fc5_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(classes, activation="softmax", name="fc5")(x)
    return tf.keras.Model(inputs, outputs, name=f"digits_{kind}")


def _latency_ms(flatbuffer: bytes, x: np.ndarray, runs: int) -> float:
    import larq_compute_engine as lce

    interpreter = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True)
    sample = x[:1]
    for _ in range(3):
        interpreter.predict(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.predict(sample)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xnor_keras.demo",
        description="Train float / BWN / XNOR twins on the bundled digits, convert the XNOR net "
        "with Larq Compute Engine, verify it on LCE's interpreter and print a report.",
    )
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed for split and init (default 0)")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("demo_out"), help="where the .tflite goes (default demo_out)"
    )
    parser.add_argument("--quick", action="store_true", help="2 epochs, for smoke tests")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.quick:
        args.epochs = 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    (x_train, y_train), (x_test, y_test) = load_digits(args.seed)
    print(
        f"digits: {len(x_train)} train / {len(x_test)} held-out images, 16x16, 10 classes; "
        f"{args.epochs} epochs each",
        flush=True,
    )
    results = {}
    for kind in KINDS:
        tf.keras.utils.set_random_seed(args.seed)
        model = digits_net(kind)
        model.compile(
            tf.keras.optimizers.Adam(1e-3 if kind == "float" else 2e-3),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"  trained {kind:5s}: held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        results[kind] = {"model": model, "accuracy": accuracy}

    print("converting the XNOR and float nets with Larq Compute Engine ...", flush=True)
    for kind in ("xnor", "float"):
        start = time.perf_counter()
        results[kind]["flatbuffer"] = xconvert.convert(results[kind]["model"])
        results[kind]["convert_s"] = time.perf_counter() - start
    xnor = results["xnor"]
    path = xconvert.save_tflite(xnor["flatbuffer"], args.output_dir / "digits_xnor.tflite")

    keras_probs = xnor["model"].predict(x_test, verbose=0)
    tflite_probs = xconvert.run_flatbuffer(xnor["flatbuffer"], x_test)
    agreement = float(np.mean(keras_probs.argmax(-1) == tflite_probs.argmax(-1)))
    tflite_accuracy = float(np.mean(tflite_probs.argmax(-1) == y_test))
    max_diff = float(np.abs(keras_probs - tflite_probs).max())
    ops = xconvert.op_histogram(xnor["flatbuffer"])
    latency = {k: _latency_ms(results[k]["flatbuffer"], x_test, runs=50) for k in ("xnor", "float")}
    size = {k: len(results[k]["flatbuffer"]) for k in ("xnor", "float")}

    print()
    print("model   held-out acc   flatbuffer      host latency (LCE interpreter, 1 thread)")
    for kind in KINDS:
        row = f"{kind:7s} {results[kind]['accuracy']:12.3f}"
        if kind in size:
            row += f"   {size[kind] / 1024:8.1f} KiB   {latency[kind]:8.3f} ms"
        print(row)
    print()
    print(f"XNOR flatbuffer: {path} ({size['xnor'] / 1024:.1f} KiB, {size['float'] / size['xnor']:.1f}x "
          f"smaller than float); ops: {ops}")
    print(f"verification on LCE's interpreter: top-1 agreement with Keras {agreement:.3f}, "
          f"held-out accuracy {tflite_accuracy:.3f}, max |prob diff| {max_diff:.2e}")
    if ops.get("LceBconv2d", 0) != 3:
        print(f"error: expected conv2, conv3 and fc4 as 3 LceBconv2d ops, got {ops}", file=sys.stderr)
        return 1
    if agreement < 0.95:
        print(f"error: converted model agrees with Keras on only {agreement:.1%} of images", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
