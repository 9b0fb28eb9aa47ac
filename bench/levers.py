"""Issue 20's accuracy levers, one at a time, against the same baseline at equal epochs.

Each lever is one run of the training CLI (`zoo/train.py`) on Fashion-MNIST (offline, Debian's
IDX files): XNORResNet18 at 32x32 with the ImageNet stem and `--pad-values 1`, batch 128, the
held-out validation split (the last 5,000 training images) for model selection and the test
split evaluated once, with the best validation epoch's weights. Only the named options change.

Runs are kept under --runs-dir and resumed where they stopped (`--stop-after-minutes` chunks
survive), so the script can be started again after an interruption; a finished run is not
trained again. Results go to `bench/results/levers.json`.

Resolution: the ImageNet stem's smallest input is 32x32 (its last stage is then 1x1), so 28x28
is not a lever here; 64x64 (lever cosine-no-crop-64) costs 4x the MACs and the CIFAR stem 15x
(see ACCURACY.md). A later option overrides COMMON's (argparse keeps the last).

Usage:
    python bench/levers.py                      # every lever, 4 epochs each (~5 min a run on 2 cores)
    python bench/levers.py --only baseline no-crop --epochs 4
    python bench/levers.py --list

Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--dataset", "fashion_mnist", "--image-size", "32", "--batch-size", "128", "--seed", "0"]
XNOR = ["--model", "XNORResNet18", "--pad-values", "1"]

# name -> (what it changes, CLI options); the baseline is the recipe ACCURACY.md's runs used.
LEVERS = {
    "paper-default": ("the CLI's default before issue 20: recipe resnet18-paper, Adam 1e-2, no decay in a short run, crops",
                      [*XNOR, "--recipe", "resnet18-paper", "--optimizer", "adam"]),
    "baseline": ("recipe short: Adam 1e-3, staircase scaled to the run, random crops",
                 [*XNOR, "--recipe", "short", "--optimizer", "adam"]),
    "no-crop": ("baseline without random crops",
                [*XNOR, "--recipe", "short", "--optimizer", "adam", "--augment", "none"]),
    "cosine": ("baseline with a per-step cosine from 1e-3 to 0",
               [*XNOR, "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine"]),
    "cosine-no-crop": ("cosine, without random crops",
                       [*XNOR, "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine", "--augment", "none"]),
    "cosine-no-crop-3e-3": ("cosine from 3e-3, without random crops",
                            [*XNOR, "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine",
                             "--augment", "none", "--learning-rate", "3e-3"]),
    "cosine-no-crop-64": ("cosine, without random crops, at 64x64 (28x28 resized; the ImageNet stem leaves 16x16 maps, "
                          "the last stage 2x2; 4x the MACs)",
                          [*XNOR, "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine",
                           "--augment", "none", "--image-size", "64"]),
    "sgd-cosine": ("SGD momentum 0.9 from 0.1 (the paper's ResNet rate), cosine, no crops",
                   [*XNOR, "--recipe", "short", "--optimizer", "sgd", "--schedule", "cosine", "--augment", "none",
                    "--learning-rate", "0.1"]),
    "distill": ("cosine, no crops, distilled from a float ResNet18 (--teacher-run: 6 epochs of recipe short with crops, 91.5% validation, 89.9% test)",
                [*XNOR, "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine", "--augment", "none"]),
    "bwn-baseline": ("BWNResNet18, recipe short with Adam and crops (how the published BWN weights were trained)",
                     ["--model", "BWNResNet18", "--recipe", "short", "--optimizer", "adam"]),
    "bwn-cosine-no-crop": ("BWNResNet18, cosine, no crops",
                           ["--model", "BWNResNet18", "--recipe", "short", "--optimizer", "adam", "--schedule", "cosine",
                            "--augment", "none"]),
}


def log(message: str) -> None:
    print(f"[levers {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_lever(name: str, epochs: int, runs: Path, teacher: Path | None) -> dict:
    description, options = LEVERS[name]
    output = runs / name
    args = [*COMMON, *options, "--epochs", str(epochs), "--output", str(output)]
    if name == "distill":
        if teacher is None:
            raise SystemExit("lever 'distill' needs --teacher-run (a trained float ResNet18 run)")
        args += ["--teacher", str(teacher)]
    if (output / "config.json").exists():
        args.append("--resume")
    metrics_path = output / "metrics.json"
    if not metrics_path.exists():
        log(f"{name}: {description}")
        started = time.perf_counter()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        with open(runs / f"{name}.log", "a") as out:
            code = subprocess.call([sys.executable, str(ROOT / "zoo" / "train.py"), *args],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        if code != 0 or not metrics_path.exists():
            raise SystemExit(f"{name}: training failed (exit {code}); see {runs / (name + '.log')}")
        log(f"{name}: {(time.perf_counter() - started) / 60:.1f} min")
    metrics = json.loads(metrics_path.read_text())
    history = (output / "history.csv").read_text().strip().splitlines()
    header = history[0].split(",")
    val = [float(row.split(",")[header.index("val_accuracy")]) for row in history[1:]]
    return {
        "lever": name,
        "changes": description,
        "command": "python zoo/train.py " + " ".join(a for a in args if a != "--resume"),
        "epochs": epochs,
        "best_val_accuracy": max(val),
        "last_val_accuracy": val[-1],
        "test_accuracy": metrics.get("test_accuracy"),
        "train_minutes": metrics["train_seconds"] / 60,
    }


def markdown(results: dict, baseline: str = "baseline") -> str:
    """The lever table: each lever's best validation and test accuracy, and the difference from
    the baseline at the same epochs."""
    lines = ["| lever | what changes | epochs | best validation | test (best validation epoch) | "
             "test − baseline | minutes (2 shared cores) |", "|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        reference = f"{'bwn-' if r['lever'].startswith('bwn-') else ''}{baseline}@{r['epochs']}"
        base = results.get(reference)
        delta = "" if base is None or key == reference else \
            f"{100 * (r['test_accuracy'] - base['test_accuracy']):+.2f}"
        lines.append(f"| {r['lever']} | {r['changes']} | {r['epochs']} | {r['best_val_accuracy']:.2%} | "
                     f"{r['test_accuracy']:.2%} | {delta} | {r['train_minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(LEVERS), help="these levers only (default: all)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "levers")
    parser.add_argument("--teacher-run", type=Path, help="a trained float ResNet18 run (for 'distill')")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "levers.json")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the table of the results so far and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.output.read_text())), end="")
        return 0
    if args.list:
        for name, (description, _) in LEVERS.items():
            print(f"{name:22s} {description}")
        return 0
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    for name in args.only or list(LEVERS):
        results[f"{name}@{args.epochs}"] = run_lever(name, args.epochs, args.runs_dir, args.teacher_run)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        r = results[f"{name}@{args.epochs}"]
        log(f"{name}: best val {r['best_val_accuracy']:.4f}, test {r['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
