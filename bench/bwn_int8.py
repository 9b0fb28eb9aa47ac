"""BWN models in every `bwn_weights` form: flatbuffer sizes and interleaved host latency.

    python bench/bwn_int8.py [--models BWNAlexNet BWNResNet18] [--size 224] [--runs 30]

Converts each model once per form (and the int8 forms again with ``int8_float_layers``), its
float twin with TFLiteConverter, then times every flatbuffer of a family interleaved, batch 1,
1 thread, in one worker process (``bench/_worker.py latency_family``: rounds with the order
rotated, so a change of machine speed hits every configuration alike). Binary models run on
LCE's interpreter with XNNPACK on, the twin on tf.lite.Interpreter (XNNPACK), as in
``bench/benchmark.py``. Untrained weights and random calibration inputs: size and latency do
not depend on them. Prints a table and writes ``bench/results/bwn_int8.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Workers import this checkout's xnor_keras, and keep TensorFlow quiet.
ENV = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
TWINS = {"BWNAlexNet": "AlexNet", "BWNResNet18": "ResNet18"}
# (label, convert options); "int8_fl" = int8_float_layers (first/last layers, shortcuts).
FORMS = [
    ("float", {"bwn_weights": "float"}),
    ("int8", {"bwn_weights": "int8"}),
    ("int8_dynamic", {"bwn_weights": "int8_dynamic"}),
    ("int8_full", {"bwn_weights": "int8_full"}),
    ("int8 + int8_fl", {"bwn_weights": "int8", "int8_float_layers": True}),
    ("int8_dynamic + int8_fl", {"bwn_weights": "int8_dynamic", "int8_float_layers": True}),
    ("int8_full + int8_fl", {"bwn_weights": "int8_full", "int8_float_layers": True}),
]


def build(name: str, size: int, out: Path) -> dict:
    """Convert `name` in every form and its twin; write the flatbuffers; return sizes."""
    import tensorflow as tf

    import xnor_keras  # noqa: F401  (binds tf.keras to Keras 2 first)
    from xnor_keras import convert, zoo

    shape = (size, size, 3)
    calibration = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    model = zoo.get_model(name, input_shape=shape)
    sizes = {}
    for label, options in FORMS:
        start = time.perf_counter()
        flatbuffer = convert.convert(model, calibration_data=calibration, **options)
        sizes[label] = {"bytes": len(flatbuffer), "convert_s": time.perf_counter() - start}
        (out / f"{name}-{label}.tflite").write_bytes(flatbuffer)
        print(f"  {name} {label}: {len(flatbuffer) / 1e6:.2f} MB", flush=True)
    twin = tf.lite.TFLiteConverter.from_keras_model(zoo.get_model(TWINS[name], input_shape=shape)).convert()
    (out / f"{name}-twin.tflite").write_bytes(twin)
    sizes["float twin"] = {"bytes": len(twin)}
    return sizes


def latency(name: str, out: Path, runs: int, rounds: int) -> dict:
    configs = [{"key": "float twin", "flatbuffer": str(out / f"{name}-twin.tflite"), "runtime": "tflite"}]
    configs += [
        {"key": label, "flatbuffer": str(out / f"{name}-{label}.tflite"), "runtime": "lce", "xnnpack": True}
        for label, _ in FORMS
    ]
    args = {"configs": configs, "runs": runs, "rounds": rounds, "warmup": 2, "threads": [1]}
    result = out / f"{name}-latency.json"
    subprocess.run([sys.executable, str(HERE / "_worker.py"), "latency_family", json.dumps(args), str(result)],
                   check=True, env=ENV)
    return json.loads(result.read_text())["latency"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TWINS), choices=list(TWINS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--build", nargs=2, metavar=("MODEL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:  # the conversion step, run in a process of its own (below)
        print("SIZES" + json.dumps(build(args.build[0], args.size, Path(args.build[1]))))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="bwn_int8_") as tmp:
        out = Path(tmp)
        for name in args.models:
            # Conversion in a process of its own: the timing worker then starts with a cold heap.
            done = subprocess.run(
                [sys.executable, __file__, "--build", name, tmp, "--size", str(args.size)],
                check=True, stdout=subprocess.PIPE, text=True, env=ENV,
            )
            sizes = json.loads(done.stdout.split("SIZES", 1)[1])
            times = latency(name, out, args.runs, args.rounds)
            twin_rounds = np.array(times["float twin"]["1"]["round_medians"])
            print(f"\n{name} ({args.size}x{args.size}, batch 1, 1 thread)")
            print(f"{'form':24} {'MB':>8} {'median ms':>10} {'twin / this':>12}")
            for key, size in sizes.items():
                t = times[key]["1"]
                # Ratio of round medians, round by round (same machine speed), then the median.
                ratio = float(np.median(twin_rounds / np.array(t["round_medians"])))
                size["median_ms"], size["speedup_vs_twin"] = t["median_ms"], ratio
                print(f"{key:24} {size['bytes'] / 1e6:8.2f} {t['median_ms']:10.2f} {ratio:11.2f}x")
            results[name] = sizes
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bwn_int8.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
