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
from xnor_keras import training
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


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xnor_keras.demo",
        description="Train float / BWN / XNOR twins on the bundled digits, convert them with Larq "
        "Compute Engine, verify the XNOR flatbuffer on LCE's interpreter and print a report.",
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
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_digits(args.seed)
    print(
        f"digits: {len(x_train)} train / {len(x_test)} held-out images, 16x16, 10 classes; "
        f"{args.epochs} epochs each, Adam 2e-3 with x0.1 steps at 2/3 and 9/10 of training",
        flush=True,
    )
    milestones = ((round(args.epochs * 2 / 3), 0.1), (round(args.epochs * 0.9), 0.01))
    results = {}
    for kind in KINDS:
        tf.keras.utils.set_random_seed(args.seed)
        model = digits_net(kind)
        model.compile(tf.keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(
            x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0,
            callbacks=[tf.keras.callbacks.LearningRateScheduler(training.step_schedule(2e-3, milestones))],
        )
        _, accuracy = model.evaluate(x_test, y_test, verbose=0)
        print(f"  trained {kind:5s}: held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
        results[kind] = {"model": model, "accuracy": accuracy}

    print("converting with Larq Compute Engine and timing on its interpreter ...", flush=True)
    for kind in KINDS:
        flatbuffer, seconds = xconvert.timed_convert(results[kind]["model"])
        results[kind].update(
            flatbuffer=flatbuffer, convert_s=seconds, latency=xconvert.measure_latency(flatbuffer, x_test[:1], runs=50)["median_ms"]
        )
    xnor = results["xnor"]
    verification = xconvert.verify(xnor["model"], xnor["flatbuffer"], x_test)
    tflite_accuracy = float(np.mean(xconvert.run_flatbuffer(xnor["flatbuffer"], x_test).argmax(-1) == y_test))
    path = xconvert.save_tflite(xnor["flatbuffer"], args.output_dir / "digits_xnor.tflite")
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
