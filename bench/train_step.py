"""Training step time of binary models vs their float twin, interleaved, with paired ratios.

The same measurement as ``bench/benchmark.py``'s training step (``_worker.task_train_family``:
``model.fit`` on synthetic data, Adam, one warm-up call, then the models stepped in rounds), at
any size and batch, with builder options, ``jit_compile`` and diagnostic transforms per entry.
Each entry is ``KEY=MODEL[+jit][+ojit][+keras_adam][+bf16|+fp16][+opt=value...][+transform...]`` (``bf16`` /
``fp16``: built under Keras' mixed_bfloat16 / mixed_float16 policy; ``jit``: the whole step
XLA-compiled; ``ojit``: the optimizer's per-variable update XLA-compiled, which Keras only does
with a GPU; ``keras_adam``: Keras' Adam with its separate constraint pass instead of
``xnor_keras.optimizers.Adam``, which clips inside the update); ratios are taken round by
round against the last entry (or ``--baseline``) and their median is reported, so a change of
machine speed during the run hits both sides of a ratio alike. Wall time and process CPU time
are both reported: on a machine shared with other work the CPU time (the work done) is the
stable one.

Examples:
    # XNOR vs float ResNet-18 at 32x32, batch 128 (issue 11 item 4):
    python bench/train_step.py --size 32 --batch 128 --steps 20 \\
        xnor_keras_adam=XNORResNet18+keras_adam xnor=XNORResNet18 float=ResNet18
    # where the time goes: without the clip, the weight or the input binarization
    python bench/train_step.py --size 32 --batch 128 xnor=XNORResNet18 \\
        noclip=XNORResNet18+no_clip nowbin=XNORResNet18+no_weight_binarization float=ResNet18
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # this checkout's xnor_keras, then _worker

import _worker  # noqa: E402


def _entry(text: str) -> dict:
    key, _, spec = text.partition("=")
    if not spec:
        raise argparse.ArgumentTypeError(f"expected KEY=MODEL[+...], got {text!r}")
    model, *parts = spec.split("+")
    entry = {"key": key, "model": model, "options": {}, "transforms": []}
    for part in parts:
        if part == "jit":
            entry["jit_compile"] = True
        elif part == "ojit":
            entry["optimizer_jit"] = True
        elif part == "keras_adam":
            entry["optimizer"] = "keras"
        elif part in ("bf16", "fp16"):
            entry["policy"] = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[part]
        elif "=" in part:
            name, _, value = part.partition("=")
            entry["options"][name] = json.loads(value) if value[:1] in "0123456789-[{\"" else value
        elif part in _worker.TRAIN_TRANSFORMS:
            entry["transforms"].append(part)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown part {part!r}: expected jit, ojit, keras_adam, bf16, fp16, OPTION=VALUE or one of {sorted(_worker.TRAIN_TRANSFORMS)}"
            )
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="+", type=_entry, metavar="KEY=MODEL[+...]")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed rounds (default 12)")
    parser.add_argument("--baseline", help="key the ratios are taken against (default: the last entry)")
    parser.add_argument("--json", type=Path, help="write the raw result here")
    args = parser.parse_args(argv)
    result = _worker.task_train_family(
        {"entries": args.entries, "size": args.size, "batch": args.batch, "steps": args.steps}
    )
    training = result["training"]
    baseline = args.baseline or args.entries[-1]["key"]
    print(f"size {args.size}, batch {args.batch}, {args.steps} interleaved rounds; ratios paired per round vs {baseline}")
    for field, label in (("times_ms", "wall"), ("cpu_times_ms", "process CPU")):
        base = np.asarray(training[baseline][field])
        print(f"{label + ' ms per step':24} {'median':>8} {'min':>8} {'max':>8}   paired ratio: median (min-max)")
        for key, row in training.items():
            times = np.asarray(row[field])
            ratios = times / base
            print(f"  {key:22} {np.median(times):8.1f} {times.min():8.1f} {times.max():8.1f}   "
                  f"{np.median(ratios):.3f} ({ratios.min():.2f}-{ratios.max():.2f})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json), "entries": args.entries},
                                         "result": result}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
