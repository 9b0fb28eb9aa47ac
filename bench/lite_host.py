"""Host benchmark: xnor_lite on stock ai-edge-litert against LCE's own wheel, same flatbuffer.

Both run LCE 0.16's binary kernels compiled from the same sources; what differs is the runtime
around them (the ai-edge-litert release's builtin kernels and XNNPACK against those built into
LCE's wheel) and the compiler flags. Both take LCE's indirect BGEMM for LceBconv2d (its fastest
x86 kernel; LCE's default BGEMM is 3-4x slower there). Each round times one invocation on each interpreter in turn,
order alternating, and the figure is the median of the per-round ratios (xnor_lite ÷ LCE, so
below 1 means xnor_lite is slower), with each side's median latency. x86-64 host, 1 thread.

    python bench/lite_host.py                  # XNORResNet18 and XNORAlexNet at 224², 25 rounds
    python bench/lite_host.py --quick          # ResNet at 32², AlexNet at 67², 10 rounds

Writes bench/results/lite_host[-quick].json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import xnor_keras  # noqa: E402,F401  (binds Keras 2)
import larq_compute_engine as lce  # noqa: E402

import xnor_lite  # noqa: E402
from xnor_keras import convert, zoo  # noqa: E402
from xnor_keras.testing_utils import calibrate_batchnorm  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _time(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return 1000 * (time.perf_counter() - start)


def measure(name: str, size: int, rounds: int, log=print) -> list[dict]:
    model = zoo.get_model(name, input_shape=(size, size, 3), classes=1000)
    rng = np.random.default_rng(0)
    calibrate_batchnorm(model, rng.standard_normal((8, size, size, 3)).astype(np.float32))
    flatbuffer = convert.convert(model)
    x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
    rows = []
    for use_xnnpack in (True, False):
        # The same binary kernel on both sides: LCE's indirect BGEMM, its fastest on x86.
        ours = xnor_lite.Interpreter(flatbuffer, num_threads=1, use_xnnpack=use_xnnpack,
                                     kernel="indirect_bgemm")
        theirs = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True,
                                         use_xnnpack=use_xnnpack)
        a, b = ours.predict(x), theirs.predict(x)
        agree = float(np.abs(a - b).max())
        for _ in range(3):
            ours.predict(x), theirs.predict(x)
        ratios, t_ours, t_theirs = [], [], []
        for i in range(rounds):
            pair = [(ours.predict, t_ours), (theirs.predict, t_theirs)]
            for fn, sink in (pair if i % 2 == 0 else pair[::-1]):
                sink.append(_time(fn, x))
            ratios.append(t_theirs[-1] / t_ours[-1])
        row = {"model": name, "size": size, "xnnpack": use_xnnpack, "rounds": rounds,
               "xnor_lite_ms": float(np.median(t_ours)), "lce_ms": float(np.median(t_theirs)),
               "speed_ratio": float(np.median(ratios)), "max_abs_diff": agree}
        log(f"{name} {size}² xnnpack={use_xnnpack}: xnor_lite {row['xnor_lite_ms']:.2f} ms, "
            f"LCE {row['lce_ms']:.2f} ms, speed xnor_lite/LCE {row['speed_ratio']:.2f}x "
            f"(max |diff| {agree:.1e})")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args(argv)
    sizes = {"XNORResNet18": 32, "XNORAlexNet": 67} if args.quick else {"XNORResNet18": 224, "XNORAlexNet": 224}
    rounds = args.rounds or (10 if args.quick else 25)
    rows = []
    for name, size in sizes.items():
        rows += measure(name, size, rounds)
    library = xnor_lite.load_library()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/lite_host.py" + (" --quick" if args.quick else ""),
        "runtime": f"ai-edge-litert {metadata.version('ai-edge-litert')}",
        "lce": f"larq-compute-engine {metadata.version('larq-compute-engine')}",
        "library": library.path.name, "build_info": library.build_info,
        "machine": platform.machine(), "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"lite_host{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{result['runtime']} (xnor_lite, {library.path.name}) vs {result['lce']}, "
          f"{result['machine']}, 1 thread, median of {rounds} paired rounds ({result['date']}):\n")
    print("| model | XNNPACK | xnor_lite ms | LCE wheel ms | speed, xnor_lite ÷ LCE |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} {r['size']}² | {'on' if r['xnnpack'] else 'off'} | {r['xnor_lite_ms']:.2f} | "
              f"{r['lce_ms']:.2f} | {r['speed_ratio']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
