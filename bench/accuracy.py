"""Accuracy on real images: zoo models trained on Fashion-MNIST, then run as flatbuffers.

For each model: train with the project's training CLI and recipe (`zoo/train.py`, offline
Fashion-MNIST from Debian's IDX files), evaluate the Keras model on the whole test split,
convert with LCE, verify, and evaluate the flatbuffer on every test image on LCE's x86
interpreter and on the emulated arm64 target (LCE's aarch64 kernels). Writes
`bench/results/accuracy.json`, one training-curve PNG per model and ACCURACY.md at the
repository root (or `--markdown`).

ResNet-18 uses the ImageNet stem at 32×32 (what 2 cores can train within the budget; the CIFAR
stem is 15× the MACs there); AlexNet runs at its smallest input, 63×63. All train with the
`short` recipe and Adam; XNOR models pad binarized inputs with +1 (`--pad-values 1`). Anchors: Zalando's
benchmark ResNet18 94.9% (float); the best binary network found published, 92.86% (CBCNN).
Targets for ResNet-18: float ≥ 93.5%, BWN ≥ 93.0%, XNOR ≥ 92.0%.

Usage:
    python bench/accuracy.py                           # ~45 min a model on 2 cores, plus evaluation
    python bench/accuracy.py --models XNORResNet18 --epochs 15
    python bench/accuracy.py --quick                   # a few steps each: checks the pipeline only

Never part of the test suite. Runs are kept under --runs-dir, and a finished run is not
trained again (delete it, or pass a larger --epochs to train it on).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODELS = ("ResNet18", "BWNResNet18", "XNORResNet18", "XNORAlexNet")
IMAGE_SIZE = {"ResNet18": 32, "AlexNet": 63}
# What fits the issue's ~45 min a model on 2 cores, batch 128: the `short` recipe's 12 epochs for
# ResNet-18 at 32x32 (~130 s an epoch for BWN, and for XNOR since pad_values=1 trains as fast);
# 3 epochs for AlexNet at 63x63, whose step costs ~2 s of CPU (77 M MACs an image, twice
# ResNet-18's), with the recipe's staircase scaled to them (~26 min; what the session that ran it could afford).
EPOCHS = {"ResNet18": 12, "AlexNet": 3}
# The training CLI's recipe for short runs on small images, with Adam for all three kinds (Adam
# 1e-3 with a decaying rate gave float 92.4%, BWN 91.9%, XNOR 89.7% in 5 epochs; SGD at the
# recipes' rates was far behind in 2-epoch runs, see xnor_keras/training.py).
RECIPE = "short"
TARGETS = {"ResNet18": 93.5, "BWNResNet18": 93.0, "XNORResNet18": 92.0}
ANCHORS = ("Zalando's benchmark ResNet18 (float): 94.9%; best published binary network found "
           "(CBCNN): 92.86%")


def log(message: str) -> None:
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {message}", flush=True)


def family(model: str) -> str:
    return "AlexNet" if model.endswith("AlexNet") else "ResNet18"


def train(model: str, run: Path, epochs: int, quick: bool) -> float:
    """Trains (or continues) `model` into `run` with the training CLI; returns seconds spent."""
    from xnor_keras.cli import train_main

    metrics = run / "metrics.json"
    if metrics.exists() and json.loads(metrics.read_text()).get("epochs", 0) >= epochs:
        log(f"{model}: already trained ({run}); not training again")
        return 0.0
    argv = ["--model", model, "--dataset", "fashion_mnist", "--output", str(run),
            "--image-size", str(IMAGE_SIZE[family(model)]), "--recipe", RECIPE, "--optimizer", "adam",
            "--epochs", str(epochs)]
    if model.startswith("XNOR"):
        argv += ["--pad-values", "1"]
    if quick:
        argv += ["--steps-per-epoch", "3", "--validation-steps", "2"]
    if (run / "config.json").exists():
        argv.append("--resume")
    started = time.time()
    log(f"{model}: training {' '.join(argv)}")
    code = train_main(argv)
    if code != 0:
        raise RuntimeError(f"training {model} failed (exit {code}); see {run}")
    return time.time() - started


def test_set(size: int, limit: int | None):
    """All Fashion-MNIST test images, preprocessed as in training, and their labels."""
    import numpy as np

    from xnor_keras import data

    ds = data.load_dataset("fashion_mnist", "test", training=False, image_size=size, batch_size=500)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def evaluate_cached(model_name: str, run: Path, limit: int | None, arm64_images: int) -> dict:
    """`evaluate`, kept in the run as evaluation.json and reused while the model is unchanged."""
    saved = run / "evaluation.json"
    key = {"model_mtime": (run / "model.keras").stat().st_mtime, "limit": limit,
           "arm64_images": arm64_images}
    if saved.exists():
        cached = json.loads(saved.read_text())
        ckey = cached.get("key", {})
        # An evaluation on more arm64 images than asked for serves too.
        if {**ckey, "arm64_images": 0} == {**key, "arm64_images": 0} and ckey.get("arm64_images", 0) >= arm64_images:
            log(f"{model_name}: already evaluated ({saved}); not evaluating again")
            return cached["row"]
    row = evaluate(model_name, run, limit, arm64_images)
    saved.write_text(json.dumps({"key": key, "row": row}, indent=1))
    return row


def evaluate(model_name: str, run: Path, limit: int | None, arm64_images: int) -> dict:
    import numpy as np

    import xnor_keras  # noqa: F401  (binds tf.keras to Keras 2)
    from xnor_keras import convert

    from xnor_keras import training

    model, _ = training.load_trained_model(run)
    x, y = test_set(int(model.input_shape[1]), limit)  # the run's own size (a run may change it)
    keras_probs = model.predict(x, batch_size=500, verbose=0)
    row = {"model": model_name, "test_images": len(x),
           "keras_accuracy": float(np.mean(keras_probs.argmax(-1) == y))}
    started = time.time()
    flatbuffer = convert.convert(model)
    row["conversion_s"] = time.time() - started
    row["flatbuffer_mb"] = len(flatbuffer) / 1e6
    (run / "model.tflite").write_bytes(flatbuffer)
    verification = convert.verify(model, flatbuffer, x[:64])
    row["verification"] = {"passed": verification.passed, "top1_agreement": verification.top1_agreement,
                           "max_rel_diff": verification.max_rel_diff}
    log(f"{model_name}: Keras {row['keras_accuracy']:.2%} on {len(x)} test images; "
        f"{row['flatbuffer_mb']:.2f} MB; verification {'passed' if verification.passed else 'FAILED'}")
    host = convert.run_flatbuffer(flatbuffer, x)
    row["host_accuracy"] = float(np.mean(host.argmax(-1) == y))
    row["host_top1_agreement"] = float(np.mean(host.argmax(-1) == keras_probs.argmax(-1)))
    row["host_latency"] = convert.measure_latency(flatbuffer, x[:1], runs=50)
    log(f"{model_name}: flatbuffer on LCE's x86 interpreter {row['host_accuracy']:.2%}, "
        f"{row['host_latency']['median_ms']:.2f} ms")
    if arm64_images:
        # Under emulation an image costs ~0.05 s (XNOR ResNet-18 at 32x32) to ~0.3 s here; the
        # arm64 pass takes the first `arm64_images` test images (default: all).
        n = min(arm64_images, len(x))
        started = time.time()
        # In chunks: one emulated process per 500 images keeps each well inside its time limit.
        chunks = []
        for start in range(0, n, 500):
            chunks.append(convert.run_flatbuffer(flatbuffer, x[start:min(n, start + 500)], target="arm64"))
            log(f"{model_name}: arm64 {min(n, start + 500)}/{n} images ({time.time() - started:.0f} s)")
        arm = np.concatenate(chunks)
        row["arm64_images"] = n
        row["arm64_accuracy"] = float(np.mean(arm.argmax(-1) == y[:n]))
        row["arm64_top1_agreement"] = float(np.mean(arm.argmax(-1) == keras_probs[:n].argmax(-1)))
        row["arm64_host_agreement"] = float(np.mean(arm.argmax(-1) == host[:n].argmax(-1)))
        row["arm64_seconds"] = time.time() - started
        log(f"{model_name}: flatbuffer on the emulated arm64 target {row['arm64_accuracy']:.2%} on "
            f"{n} images, agreeing with x86 on {row['arm64_host_agreement']:.2%} ({row['arm64_seconds']:.0f} s)")
    return row


def markdown(result: dict) -> str:
    def pct(v):
        return "—" if v is None else f"{100 * v:.2f}%"

    lines = [
        "# Accuracy on Fashion-MNIST", "",
        f"Written by `{result['command']}` on {result['date']} ({result['machine']}). "
        + ("**Quick mode: a few training steps per model; these figures check the pipeline, "
           "they are not accuracies.** " if result["quick"] else "")
        + "Each model is trained with the project's training CLI (`zoo/train.py --recipe "
        f"{result.get('recipe', RECIPE)} --optimizer adam`; XNOR models with `--pad-values 1`, so that "
        "every binary convolution stays binary on LCE where a map is smaller than its kernel), then its "
        "flatbuffer runs on the test images. ResNet-18 uses the ImageNet stem at 32×32 (what 2 CPU "
        "cores can train in about 45 minutes; the CIFAR stem costs 15× the MACs there); AlexNet "
        "runs at its smallest input, 63×63.", "",
        f"Anchors: {ANCHORS}.", "",
        "Keras and the x86 flatbuffer are evaluated on every test image, the emulated arm64 target "
        "on the first N of them (N = all unless a row says otherwise).", "",
        "| model | epochs | training min | Keras test acc. | flatbuffer acc. (LCE x86) | "
        "flatbuffer acc. (arm64 emulated, N) | agreement with Keras (x86 / arm64) | flatbuffer MB | "
        "host latency ms | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        target = TARGETS.get(r["model"])
        verdict = ""
        if target is not None and not result["quick"]:
            verdict = f"≥ {target}%: {'met' if 100 * r['keras_accuracy'] >= target else 'not met'}"
        lines.append(
            f"| {r['model']} | {r['epochs']} | {r['train_s'] / 60:.1f} | {pct(r['keras_accuracy'])} | "
            f"{pct(r['host_accuracy'])} | {pct(r.get('arm64_accuracy'))} ({r.get('arm64_images', 0)}) | "
            f"{pct(r['host_top1_agreement'])} / {pct(r.get('arm64_top1_agreement'))} | "
            f"{r['flatbuffer_mb']:.2f} | {r['host_latency']['median_ms']:.2f} | {verdict} |")
    lines += [""]
    for r in result["rows"]:
        if r.get("curves"):
            lines += [f"![{r['model']} training curves]({r['curves']})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, help="epochs for every model (default: per family, ~45 min each)")
    parser.add_argument("--quick", action="store_true", help="3 steps an epoch, 1 epoch, 512 test images")
    parser.add_argument("--arm64-images", type=int, default=None,
                        help="test images run on the emulated arm64 target (default: all; 64 with --quick; 0: skip)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--markdown", type=Path, help="default: ACCURACY.md (quick: bench/results/ACCURACY-quick.md)")
    parser.add_argument("--evaluate-run", type=Path, metavar="RUN",
                        help="only evaluate this finished run (Keras, the x86 and the arm64 flatbuffer on the test "
                             "images) into --json; ACCURACY.md is left alone")
    parser.add_argument("--json", type=Path, help="with --evaluate-run: where the row goes")
    args = parser.parse_args(argv)
    if args.evaluate_run:
        config = json.loads((args.evaluate_run / "config.json").read_text())
        metrics = json.loads((args.evaluate_run / "metrics.json").read_text())
        arm64_images = 10_000 if args.arm64_images is None else args.arm64_images
        row = evaluate_cached(config["model"], args.evaluate_run, None, arm64_images)
        row.update(epochs=config["epochs"], train_s=metrics.get("train_seconds", 0.0), config=config,
                   validation_split=metrics.get("validation_split"), test_accuracy_run=metrics.get("test_accuracy"))
        out = args.json or ROOT / "bench" / "results" / f"accuracy-run-{config['model']}.json"
        out.write_text(json.dumps(row, indent=1) + "\n")
        log(f"wrote {os.path.relpath(out, ROOT)}")
        return 0
    suffix = "-quick" if args.quick else ""
    results_dir = ROOT / "bench" / "results"
    markdown_path = args.markdown or (results_dir / "ACCURACY-quick.md" if args.quick else ROOT / "ACCURACY.md")
    runs_dir = args.runs_dir / ("quick" if args.quick else "full")
    rows = []
    for model in args.models:
        epochs = args.epochs or (1 if args.quick else EPOCHS[family(model)])
        run = runs_dir / model
        train_s = train(model, run, epochs, args.quick)
        arm64_images = args.arm64_images if args.arm64_images is not None else (64 if args.quick else 10_000)
        row = evaluate_cached(model, run, 512 if args.quick else None, arm64_images)
        row.update(epochs=epochs, train_s=train_s or json.loads((run / "metrics.json").read_text()).get("train_seconds", 0.0))
        if (run / "training_curves.png").exists():
            png = results_dir / f"accuracy-{model}{suffix}.png"
            shutil.copyfile(run / "training_curves.png", png)
            row["curves"] = os.path.relpath(png, markdown_path.parent)
        rows.append(row)
        # Written after every model, so that an interrupted run keeps what it measured.
        write_results(rows, args, argv, results_dir / f"accuracy{suffix}.json", markdown_path)
    return 0


BEGIN = "<!-- BEGIN GENERATED by bench/accuracy.py: edits between these markers are overwritten -->"
END = "<!-- END GENERATED -->"


def merge_generated(generated: str, path: Path) -> str:
    """`path`'s text with its generated block replaced by `generated` (hand-written text kept)."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}\n"
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            return head + block + rest.split(END, 1)[1].lstrip("\n")
    return block


def write_results(rows: list, args: argparse.Namespace, argv, json_path: Path, markdown_path: Path) -> None:
    import platform

    result = {
        "command": " ".join(["python bench/accuracy.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "quick": args.quick, "recipe": RECIPE,
        "rows": rows,
    }
    json_path.write_text(json.dumps(result, indent=1))
    markdown_path.write_text(merge_generated(markdown(result), markdown_path))
    log(f"wrote {os.path.relpath(markdown_path, ROOT)} and {os.path.relpath(json_path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
