#!/usr/bin/env python
"""Packed binary weights against float32 latent weights: file sizes, save/load time, float16 cost.

For XNORResNet18 (10 classes) and XNORAlexNet (1000 classes, 224x224): build the model (seed 0,
BatchNorm statistics calibrated on random images, standing in for trained ones), write it with
``model.save_weights`` (.h5, the latent float32 weights) and with ``save_binary_weights`` (float32
and float16 for the non-binarized weights), reload each packed file into a fresh model and
compare its outputs with the original's on random inputs; for scale, also after a relative
change of 1e-5 in the float weights. Not part of the test suite.

    python bench/binary_weights_size.py            # both models (AlexNet at 224x224: ~1 min)
    python bench/binary_weights_size.py --quick    # ResNet-18 only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import xnor_keras  # noqa: E402
from xnor_keras import binary_weights as xbw  # noqa: E402
from xnor_keras.testing_utils import calibrate_batchnorm  # noqa: E402

CASES = {
    "XNORResNet18": dict(input_shape=(32, 32, 3), classes=10),  # weight count does not depend on the input size
    "XNORAlexNet": dict(input_shape=(224, 224, 3), classes=1000),
}


def measure(name: str, kwargs: dict, samples: int, folder: Path) -> dict:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = xnor_keras.zoo.get_model(name, **kwargs)
    rng = np.random.default_rng(0)
    shape = kwargs["input_shape"]
    calibrate_batchnorm(model, rng.standard_normal((8, *shape)).astype(np.float32))
    x = rng.standard_normal((samples, *shape)).astype(np.float32)
    expected = model.predict(x, batch_size=8, verbose=0)
    h5 = folder / f"{name}.h5"
    model.save_weights(str(h5))
    row = {"model": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
           "weights": model.count_params(), "keras_h5_bytes": h5.stat().st_size}
    h5.unlink()
    for dtype in xbw.FLOAT_DTYPES:
        path = folder / f"{name}-{dtype}.xbw"
        start = time.perf_counter()
        xbw.save_binary_weights(model, path, float_dtype=dtype)
        saved = time.perf_counter() - start
        tf.keras.utils.set_random_seed(1)
        fresh = xnor_keras.zoo.get_model(name, **kwargs)
        start = time.perf_counter()
        xbw.load_binary_weights(fresh, path)
        loaded = time.perf_counter() - start
        got = fresh.predict(x, batch_size=8, verbose=0)
        summary = xbw.binary_weights_summary(path)
        row[dtype] = {
            "file_bytes": path.stat().st_size,
            "binary_weights": summary.binary_weight_count,
            "save_s": round(saved, 2),
            "load_s": round(loaded, 2),
            "max_abs_output_diff": float(np.max(np.abs(got - expected))),
            "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        }
        path.unlink()
        del fresh
    # For scale: the same comparison after a relative change of 1e-5 (float16 rounds by up to
    # 5e-4) in every weight that is not a binarized kernel.
    originals = [(v, v.numpy()) for v in model.weights if not hasattr(v, "latent_variable")]
    for variable, value in originals:
        variable.assign(value * (1 + 1e-5 * rng.standard_normal(value.shape)).astype(np.float32))
    got = model.predict(x, batch_size=8, verbose=0)
    row["perturbed_1e-5"] = {
        "max_abs_output_diff": float(np.max(np.abs(got - expected))),
        "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
    }
    for variable, value in originals:
        variable.assign(value)
    row["samples"] = samples
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="XNORResNet18 only")
    parser.add_argument("--samples", type=int, default=64, help="random inputs compared (default 64)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    names = ["XNORResNet18"] if args.quick else list(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            samples = args.samples if name == "XNORResNet18" else min(args.samples, 16)
            rows.append(measure(name, CASES[name], samples, Path(folder)))
    for row in rows:
        latent = 4 * row["weights"]
        print(f"{row['model']} ({row['classes']} classes): {row['weights']:,d} weights, "
              f"{row['float32']['binary_weights']:,d} binarized; latent float32 {latent / 1e6:.1f} MB "
              f"(.h5 {row['keras_h5_bytes'] / 1e6:.1f} MB)")
        for dtype in xbw.FLOAT_DTYPES:
            r = row[dtype]
            print(f"  packed, other weights {dtype}: {r['file_bytes']:,d} bytes = {r['file_bytes'] / 1e6:.2f} MB "
                  f"({latent / r['file_bytes']:.1f}x smaller); save {r['save_s']} s, load {r['load_s']} s; "
                  f"reloaded: max |output diff| {r['max_abs_output_diff']:.2g}, top-1 agreement {r['top1_agreement']:.1%}")
        r = row["perturbed_1e-5"]
        print(f"  for scale, float weights x (1 + 1e-5 N(0,1)): max |output diff| {r['max_abs_output_diff']:.2g}, "
              f"top-1 agreement {r['top1_agreement']:.1%} ({row['samples']} random inputs)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
