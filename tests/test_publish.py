"""zoo/publish_weights.py on a real (tiny) training run: what it packs is the best validation
epoch's weights, and the published model reproduces them. Runs the script in a subprocess (it
registers weights in its own process) on the local Fashion-MNIST subset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import binary_weights as xbw
from xnor_keras import zoo
from xnor_keras.cli import train_main

from conftest import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]


@needs_fashion_mnist
def test_publish_packs_the_best_validation_epoch_and_the_published_model_reproduces_it(
        fashion_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    code = train_main(["--model", "XNORResNet18", "--pad-values", "1", "--dataset", "fashion_mnist",
                       "--data-dir", str(fashion_data_dir), "--no-download", "--image-size", "32",
                       "--batch-size", "32", "--epochs", "3", "--steps-per-epoch", "20", "--holdout", "200",
                       "--output", str(run)])
    assert code == 0, capsys.readouterr().err
    history = (run / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    validation = [float(row.split(",")[header.index("val_accuracy")]) for row in history[1:]]
    folder, summary = tmp_path / "weights", tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "zoo" / "publish_weights.py"), str(run), "--name", "tiny", "--folder",
         str(folder), "--summary", str(summary), "--float16", "--int8-kernels", "all"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (published,) = json.loads(summary.read_text())
    assert published["weights"] == "best epoch on train[-200:]"
    assert published["packing"] == {"float_dtype": "float16", "int8_kernels": "all"}
    # The default description says what trained the weights, from the run's own config.
    description = published["record"]["description"]
    assert description.startswith("3 epochs at 32x32, recipe small-images (adam lr 0.001, cosine schedule, "
                                  "no random crops), batch 32; weights: best epoch on train[-200:];"), description
    packed = folder / "XNORResNet18-tiny.xbw"
    assert xbw.read_binary_weights(packed).header["version"] == 3
    (entry,) = json.loads((folder / "index.json").read_text())
    assert entry["sha256"] == published["record"]["sha256"]
    # The packed file holds the best checkpoint's weights (as the packing stores them), which
    # differ from the last epoch's unless the last epoch was the best.
    best = tf.keras.models.load_model(run / "model.keras")
    best.load_weights(run / "checkpoints" / "best.weights.h5")
    expected = tmp_path / "expected.xbw"
    xbw.save_binary_weights(best, expected, float_dtype="float16", int8_kernels="all")
    assert xbw.read_binary_weights(expected).payload == xbw.read_binary_weights(packed).payload
    if int(np.argmax(validation)) != len(validation) - 1:
        last = zoo.get_model("XNORResNet18", input_shape=(32, 32, 1), classes=10, pad_values=1.0)
        last.set_weights(tf.keras.models.load_model(run / "model.keras").get_weights())
        other = tmp_path / "last.xbw"
        xbw.save_binary_weights(last, other, float_dtype="float16", int8_kernels="all")
        assert xbw.read_binary_weights(other).payload != xbw.read_binary_weights(packed).payload
