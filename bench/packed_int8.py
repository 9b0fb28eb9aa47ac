"""Packed weights with int8 kernels: size and accuracy of the published Fashion-MNIST weights.

For XNORResNet18 and BWNResNet18 (`weights="fashion_mnist"`), packs the weights as published
(float32 rest), with the 1x1 shortcut convolutions as int8, with float16 for the rest too, and with
every full-precision kernel as int8; reloads each into a fresh model and measures its accuracy on
all 10,000 Fashion-MNIST test images (Debian's dataset-fashion-mnist, read with numpy) and its top-1
agreement with the published model. Keras on the host; ~1 min a model on 2 cores.

    python bench/packed_int8.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import FASHION_MNIST, read_idx  # noqa: E402
import xnor_keras  # noqa: E402,F401  (binds Keras 2)
import tensorflow as tf  # noqa: E402

from xnor_keras import binary_weights as xbw  # noqa: E402
from xnor_keras import zoo  # noqa: E402



def main() -> int:
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        print("needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    images = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[..., None]
    labels = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    print("| model | packed file | bytes | test accuracy | top-1 agreement with the published |")
    print("|---|---|---|---|---|")
    for name in ("XNORResNet18", "BWNResNet18"):
        model = zoo.get_model(name, weights="fashion_mnist")
        shortcuts = [n for n, layer in xbw._layers(model)
                     if type(layer) is tf.keras.layers.Conv2D and layer.kernel_size == (1, 1)]
        published = model.predict(images, batch_size=500, verbose=0).argmax(-1)
        for label, options in (
            ("float32 rest (published)", {}),
            (f"int8 shortcuts ({', '.join(shortcuts)})", {"int8_kernels": shortcuts}),
            ("int8 shortcuts, float16 rest", {"int8_kernels": shortcuts, "float_dtype": "float16"}),
            ("int8 for every full-precision kernel, float16 rest", {"int8_kernels": "all", "float_dtype": "float16"}),
        ):
            data = xbw.pack_binary_weights(model, **options)
            fresh = zoo.get_model(name, weights="fashion_mnist")
            xbw.load_binary_weights(fresh, data)
            predicted = fresh.predict(images, batch_size=500, verbose=0).argmax(-1)
            print(f"| {name} | {label} | {len(data):,} | {np.mean(predicted == labels):.2%} | "
                  f"{np.mean(predicted == published):.2%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
