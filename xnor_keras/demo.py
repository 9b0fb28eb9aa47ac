"""Offline end-to-end demo: train float / BWN / XNOR twins, convert the XNOR net, check it on LCE.

Runs with no network on real images: Fashion-MNIST (28x28 grayscale, 10 classes) from Debian's
``dataset-fashion-mnist`` (or ``--source-dir``), prepared once into the TFDS data directory by
:func:`xnor_keras.data.prepare_from_idx` and read through :func:`xnor_keras.data.load_dataset`.
The demo trains on a subset of the training split and reports accuracy on the test split. Usage::

    python -m xnor_keras.demo [--epochs N] [--train-images N] [--test-images N] [--output-dir DIR]
                              [--data-dir DIR] [--source-dir DIR] [--seed S] [--quick]
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
from xnor_keras import data, training
from xnor_keras._compat import native_log_filter, quiet_tensorflow_logs
from xnor_keras.layers import BWNConv2D, XNORConv2D

__all__ = ["KINDS", "demo_net", "load_fashion_mnist", "main"]

KINDS = ("float", "bwn", "xnor")
DATASET = "fashion_mnist"
# Sized so that `make demo` stays under 3 minutes on 2 cores (measured in the README).
EPOCHS, TRAIN_IMAGES, TEST_IMAGES, BATCH_SIZE, LEARNING_RATE = 6, 6000, 2000, 64, 2e-3


def load_fashion_mnist(
    train_images: int, test_images: int, *, data_dir=None, source_dir=None, log=None
):
    """The first `train_images` / `test_images` of Fashion-MNIST's train / test splits, normalised.

    Prepares TFDS's ``fashion_mnist`` from local IDX files first if needed (no network).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: float32 NHWC images, int64 labels.
    """
    data.prepare_from_idx(DATASET, source_dir, data_dir=data_dir, log=log)
    arrays = []
    for split, count in (("train", train_images), ("test", test_images)):
        ds = data.load_dataset(DATASET, f"{split}[:{count}]", batch_size=count, training=False,
                               data_dir=data_dir, seed=0, download=False)
        x, y = next(iter(ds))
        arrays.append((x.numpy(), y.numpy()))
    return tuple(arrays)


def _conv(kind: str, filters: int, kernel_size: int, name: str, **kwargs):
    if kind == "xnor":
        return XNORConv2D(filters, kernel_size, name=name, **kwargs)
    if kind == "bwn":
        return BWNConv2D(filters, kernel_size, name=name, **kwargs)
    return tf.keras.layers.Conv2D(filters, kernel_size, use_bias=False, name=name, **kwargs)


def demo_net(kind: str = "xnor", input_shape=(28, 28, 1), classes: int = 10) -> tf.keras.Model:
    """A small net in the paper's layout: float first and last layer, binary blocks between.

    Binary blocks use the paper's order BN -> BinActiv -> BinConv -> Pool; the float and BWN
    twins put a ReLU where the binary activation was. The "fully connected" layer is a
    convolution over the whole remaining feature map (3x3 for 28x28 input), as the paper's fc6.
    """
    if kind not in KINDS:
        raise ValueError(f"Expected `kind` to be one of {KINDS}, got {kind!r}. Received: kind={kind!r}")
    layers = tf.keras.layers
    inputs = tf.keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.MaxPool2D(2, name="pool1")(x)
    side = min(input_shape[:2]) // 8  # the map left after three 2x2 pools
    for name, filters, kernel, padding, pool in (
        ("conv2", 64, 3, "same", True),
        ("conv3", 128, 3, "same", True),
        ("fc4", 256, side, "valid", False),
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
    return tf.keras.Model(inputs, outputs, name=f"demo_{kind}")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xnor_keras.demo",
        description="Train float / BWN / XNOR twins on Fashion-MNIST (offline, from Debian's "
        "dataset-fashion-mnist), convert them with Larq Compute Engine, verify the XNOR flatbuffer "
        "on LCE's interpreter and print a report.",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES,
                        help=f"images from the training split (default {TRAIN_IMAGES:,d} of 60,000)")
    parser.add_argument("--test-images", type=int, default=TEST_IMAGES,
                        help=f"held-out images from the test split (default {TEST_IMAGES:,d} of 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default 0)")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("demo_out"), help="where the .tflite goes (default demo_out)"
    )
    parser.add_argument("--data-dir", type=Path, help="TFDS data directory (default: TFDS's, ~/tensorflow_datasets)")
    parser.add_argument("--source-dir", type=Path,
                        help="folder with Fashion-MNIST's four IDX files (default: /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 512 images, for smoke tests")
    args = parser.parse_args(argv)
    for flag in ("epochs", "train_images", "test_images"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.quick:
        args.epochs, args.train_images, args.test_images = 1, min(args.train_images, 512), min(args.test_images, 256)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    quiet_tensorflow_logs()
    started = time.perf_counter()
    try:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(
            args.train_images, args.test_images, data_dir=args.data_dir, source_dir=args.source_dir,
            log=lambda line: print(line, flush=True),
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Fashion-MNIST: {len(x_train):,d} train / {len(x_test):,d} held-out (test split) images, 28x28, "
        f"10 classes; {args.epochs} epochs each, Adam {LEARNING_RATE:g} with x0.1 steps at 2/3 and 9/10 of training",
        flush=True,
    )
    milestones = ((round(args.epochs * 2 / 3), 0.1), (round(args.epochs * 0.9), 0.01))
    results = {}
    for kind in KINDS:
        tf.keras.utils.set_random_seed(args.seed)
        model = demo_net(kind, input_shape=x_train.shape[1:])
        model.compile(tf.keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(
            x_train, y_train, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0,
            callbacks=[tf.keras.callbacks.LearningRateScheduler(training.step_schedule(LEARNING_RATE, milestones))],
        )
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"  trained {kind:5s}: held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        results[kind] = {"model": model, "accuracy": accuracy}

    print("converting with Larq Compute Engine and timing on its interpreter ...", flush=True)
    with native_log_filter():  # LCE's interpreter announces its XNNPACK delegate whatever the log level
        for kind in KINDS:
            flatbuffer, seconds = xconvert.timed_convert(results[kind]["model"])
            results[kind].update(
                flatbuffer=flatbuffer, convert_s=seconds,
                latency=xconvert.measure_latency(flatbuffer, x_test[:1], runs=50)["median_ms"],
            )
        xnor = results["xnor"]
        verification = xconvert.verify(xnor["model"], xnor["flatbuffer"], x_test)
        tflite_accuracy = float(np.mean(xconvert.run_flatbuffer(xnor["flatbuffer"], x_test).argmax(-1) == y_test))
    path = xconvert.save_tflite(xnor["flatbuffer"], args.output_dir / "fashion_mnist_xnor.tflite")
    report = xconvert.conversion_report(xnor["model"], xnor["flatbuffer"], verification=verification)

    float_size, float_latency = len(results["float"]["flatbuffer"]), results["float"]["latency"]
    print()
    print("model   held-out acc   flatbuffer (vs float)     latency (vs float)")
    for kind in KINDS:
        r = results[kind]
        size = len(r["flatbuffer"])
        print(
            f"{kind:7s} {r['accuracy']:12.3f}   {size / 1024:8.1f} KiB ({float_size / size:4.1f}x)"
            f"   {r['latency']:7.3f} ms ({float_latency / r['latency']:4.2f}x)"
        )
    # Standard error of an accuracy p on n images is sqrt(p (1 - p) / n) (floored at one image);
    # a difference of two such has sqrt(2) times that; allow two of those.
    acc = {k: results[k]["accuracy"] for k in KINDS}
    n = len(y_test)
    p = float(np.mean(list(acc.values())))
    noise = 2 * np.sqrt(2) * np.sqrt(max(p * (1 - p), 1 / n) / n)
    ordered = acc["float"] + noise >= acc["bwn"] and acc["bwn"] + noise >= acc["xnor"]
    print()
    print(
        f"paper's ordering float >= BWN >= XNOR: {'holds' if ordered else 'does NOT hold'} within "
        f"noise (+-{noise:.1%}, two standard errors of a difference on {len(y_test)} images)"
    )
    print(
        f"XNOR: {report.binary_mac_fraction:.0%} of MACs in LCE binary ops "
        f"({', '.join(f'{k} x{v}' for k, v in report.op_histogram.items() if k.startswith('Lce'))}); "
        f"written to {path}"
    )
    print(
        f"verification on LCE's interpreter ({len(x_test)} held-out images): "
        f"{'PASSED' if verification.passed else 'FAILED'}, top-1 agreement with Keras "
        f"{verification.top1_agreement:.3f}, max |prob diff| {verification.max_abs_diff:.1e}; "
        f"flatbuffer held-out accuracy {tflite_accuracy:.3f}"
    )
    print(f"whole demo: {time.perf_counter() - started:.0f} s")
    if report.op_histogram.get("LceBconv2d", 0) != 3:
        print(f"error: expected conv2, conv3 and fc4 as 3 LceBconv2d ops, got {report.op_histogram}", file=sys.stderr)
        return 1
    if not verification.passed:
        print(f"error: {verification.explanation}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
