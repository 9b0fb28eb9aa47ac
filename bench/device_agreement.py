"""Accuracy check of `--device` files: the published Fashion-MNIST nets, all 10,000 test images.

For XNORResNet18 and BWNResNet18 (`weights="fashion_mnist"`, raw 28x28 images in), converts with
`--device` (int8 first/last layers; BWN int8_full), calibrated on the first 256 training images,
and compares the flatbuffer with the float Keras model on every test image: top-1 agreement and
accuracy, on LCE's x86 interpreter (host) and on the emulated arm64 target (xnor_lite's wheel in
the trixie root, with the settings the file records). Target: >= 99.5% top-1 agreement.

    python bench/device_agreement.py [--device pi4] [--arm64-images N]

Writes bench/results/device_agreement-DEVICE.json and prints a Markdown table. The arm64 pass
takes ~0.05 s an image under qemu (~9 min a model for all 10,000).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import FASHION_MNIST, read_idx  # noqa: E402
import xnor_keras  # noqa: E402,F401  (binds Keras 2)

from xnor_keras import convert, zoo  # noqa: E402
from xnor_keras.convert import devices  # noqa: E402
from xnor_keras.convert.flatbuffer import with_metadata  # noqa: E402
from xnor_lite.interpreter import RUNTIME_METADATA  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="pi4", choices=sorted(devices.DEVICES))
    parser.add_argument("--arm64-images", type=int, default=10000, help="test images on arm64 (default all)")
    parser.add_argument("--models", nargs="+", default=["XNORResNet18", "BWNResNet18"])
    args = parser.parse_args(argv)
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        print("needs Debian's dataset-fashion-mnist: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    x = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[..., None].astype(np.float32)
    y = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    calibration = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:256, ..., None].astype(np.float32)
    from xnor_keras.convert.runtime import arm64_target

    rows = []
    for name in args.models:
        started = time.time()
        model = zoo.get_model(name, weights="fashion_mnist")
        plan = devices.plan(model, args.device)
        flatbuffer = convert.convert(model, calibration_data=calibration, **plan.convert_options)
        flatbuffer = with_metadata(flatbuffer, RUNTIME_METADATA, plan.metadata())
        keras = model.predict(x, batch_size=500, verbose=0).argmax(-1)
        host = convert.run_flatbuffer(flatbuffer, x).argmax(-1)
        n = min(args.arm64_images, len(x))
        target = arm64_target()
        arm = np.concatenate([target.predict(flatbuffer, x[i:i + 500][: n - i]) for i in range(0, n, 500)]).argmax(-1)
        row = {
            "model": name, "device": args.device, "options": plan.convert_options, "runtime": plan.runtime,
            "flatbuffer_mb": len(flatbuffer) / 1e6, "keras_accuracy": float(np.mean(keras == y)),
            "host_accuracy": float(np.mean(host == y)), "host_agreement": float(np.mean(host == keras)),
            "arm64_images": n, "arm64_accuracy": float(np.mean(arm == y[:n])),
            "arm64_agreement": float(np.mean(arm == keras[:n])),
            "arm64_settings": target.last_report.get("settings"), "seconds": time.time() - started,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"device_agreement-{args.device}.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "command": "python bench/device_agreement.py " + " ".join(argv or sys.argv[1:]), "rows": rows}, indent=1) + "\n")
    print(f"\n| model | --device {args.device} options | flatbuffer | Keras acc. | host acc. / agreement | "
          "arm64 acc. / agreement (images) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {', '.join(f'{k}={v}' for k, v in r['options'].items())} | {r['flatbuffer_mb']:.2f} MB | "
              f"{r['keras_accuracy']:.2%} | {r['host_accuracy']:.2%} / {r['host_agreement']:.2%} | "
              f"{r['arm64_accuracy']:.2%} / {r['arm64_agreement']:.2%} ({r['arm64_images']:,}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
