"""How far an int8 layer can agree with Keras: the trained nets' own sensitivity to tiny input changes.

`--device pi4` files of the published XNORResNet18 (the 32x32 weights published before the 64x64 ones) agree with the float Keras model on 95.4% of
the Fashion-MNIST test images (BENCHMARKS.md, "`--device pi4` files"), against issue 19's target
of 99.5%, with no accuracy lost. This script measures why, on the Keras side alone (no
flatbuffer: `xnor_keras.convert.int8_reference` is the Keras model that computes what the int8
flatbuffer computes, verified against it elsewhere):

* **noise**: the float Keras model on the raw test images plus uniform noise of +-a grey levels
  (a = 0.05 ... 0.5, pixels 0-255, one fixed seed): top-1 agreement with the clean images. An int8
  input rounds each value by up to half a step, so this is the floor for any int8 first layer.
* **int8 parts**: `int8_reference` with int8 on one group of full-precision layers at a time (the
  first conv, the last dense, the 1x1 projection shortcuts, all), calibrated on the first 256
  training images as `--device` is.

    python bench/sensitivity.py [--models XNORResNet18 BWNResNet18] [--images 10000]

Writes bench/results/sensitivity.json and prints a Markdown table. ~2 min a model on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import FASHION_MNIST, read_idx  # noqa: E402
import xnor_keras  # noqa: E402,F401  (binds Keras 2)

from xnor_keras import zoo  # noqa: E402
from xnor_keras.convert import int8 as int8_module  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NOISE = (0.05, 0.1, 0.25, 0.5)
PARTS = ("first", "last", "shortcuts", "all")


@contextlib.contextmanager
def _int8_only(part: str):
    """int8 on one group of the layers `--int8-float-layers` makes int8 (measurement only)."""
    candidates = int8_module._int8_candidates

    def pick(model):
        layers = candidates(model)
        chosen = {"first": layers[:1], "last": layers[-1:], "shortcuts": layers[1:-1], "all": layers}[part]
        return list(chosen)

    int8_module._int8_candidates = pick
    try:
        yield
    finally:
        int8_module._int8_candidates = candidates


def measure(name: str, x: np.ndarray, y: np.ndarray, calibration: np.ndarray) -> list[dict]:
    model = zoo.get_model(name, weights="fashion_mnist")
    clean = model.predict(x, batch_size=500, verbose=0).argmax(-1)
    rows = [{"model": name, "case": "clean", "agreement": 1.0, "accuracy": float(np.mean(clean == y))}]
    rng = np.random.default_rng(0)
    for amplitude in NOISE:
        noisy = np.clip(x + rng.uniform(-amplitude, amplitude, x.shape).astype(np.float32), 0.0, 255.0)
        predicted = model.predict(noisy, batch_size=500, verbose=0).argmax(-1)
        rows.append({"model": name, "case": f"noise +-{amplitude:g} grey levels",
                     "agreement": float(np.mean(predicted == clean)), "accuracy": float(np.mean(predicted == y))})
        print(f"{name}: {rows[-1]['case']}: agreement {rows[-1]['agreement']:.2%}", flush=True)
    names = [layer.name for layer in int8_module._int8_candidates(model)]
    for part in PARTS:
        with _int8_only(part):
            reference = int8_module.int8_reference(model, calibration)
        predicted = reference.predict(x, batch_size=500, verbose=0).argmax(-1)
        chosen = {"first": names[:1], "last": names[-1:], "shortcuts": names[1:-1], "all": names}[part]
        rows.append({"model": name, "case": f"int8 {part}: {', '.join(chosen) or '(none)'}",
                     "agreement": float(np.mean(predicted == clean)), "accuracy": float(np.mean(predicted == y))})
        print(f"{name}: {rows[-1]['case']}: agreement {rows[-1]['agreement']:.2%}", flush=True)
    return rows


def markdown(rows: list[dict], images: int) -> str:
    lines = [f"| model | case ({images:,} test images) | top-1 agreement with clean Keras | accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['case']} | {r['agreement']:.2%} | {r['accuracy']:.2%} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["XNORResNet18", "BWNResNet18"])
    parser.add_argument("--images", type=int, default=10000, help="test images (default all 10,000)")
    parser.add_argument("--json", type=Path, default=RESULTS / "sensitivity.json")
    args = parser.parse_args(argv)
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        print("needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    if not 1 <= args.images <= 10000:
        print(f"--images: expected 1 to 10000, got {args.images}", file=sys.stderr)
        return 2
    x = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[: args.images, ..., None].astype(np.float32)
    y = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")[: args.images]
    calibration = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:256, ..., None].astype(np.float32)
    started = time.time()
    rows = [row for name in args.models for row in measure(name, x, y, calibration)]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python bench/sensitivity.py", *(argv if argv is not None else sys.argv[1:])]),
        "images": args.images,
        "minutes": round((time.time() - started) / 60, 1),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows, args.images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
