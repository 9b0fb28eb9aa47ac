"""The README's offline demo runs end to end (short training on real images) and checks itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xnor_keras import data, demo

from conftest import read_idx

ROOT = Path(__file__).resolve().parents[1]


def test_fashion_mnist_arrays_are_the_idx_images_normalised(fashion_subset, fashion_data_dir):
    (x_train, y_train), (x_test, y_test) = demo.load_fashion_mnist(300, 100, data_dir=fashion_data_dir)
    assert x_train.shape == (300, 28, 28, 1) and x_test.shape == (100, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    # Every held-out image is one of the test split's IDX images, with its label, normalised.
    mean, std = data.NORMALIZATION["fashion_mnist"]
    raw = np.rint((x_test[..., 0] * std[0] + mean[0]) * 255).astype(np.uint8)
    idx = {img.tobytes(): label for img, label in zip(read_idx(fashion_subset / "t10k-images-idx3-ubyte"),
                                                      read_idx(fashion_subset / "t10k-labels-idx1-ubyte"))}
    assert [idx[img.tobytes()] for img in raw] == list(y_test)


def test_demo_quick_run_converts_verifies_and_prints_only_its_own_output(tmp_path, fashion_subset):
    # As `make demo` runs it, in a fresh process: what the user sees is the demo's own output, no
    # oneDNN / CUDA / absl / TFLite log lines and no warnings, whatever TensorFlow logs meanwhile.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "xnor_keras.demo", "--quick", "--output-dir", str(tmp_path),
         "--data-dir", str(tmp_path), "--source-dir", str(fashion_subset)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    out = result.stdout
    assert (tmp_path / "fashion_mnist_xnor.tflite").stat().st_size > 0
    assert "preparing TFDS fashion_mnist" in out and "512 train / 256 held-out" in out
    assert "top-1 agreement with Keras" in out and "PASSED" in out
    assert "LceBconv2d x3" in out


def test_demo_without_the_images_says_how_to_get_them(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert demo.main(["--quick", "--data-dir", str(tmp_path), "--source-dir", str(tmp_path / "empty")]) == 2
    assert "lacks train-images-idx3-ubyte" in capsys.readouterr().err


def test_demo_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit) as excinfo:
        demo.main(["--epochs", "0"])
    assert excinfo.value.code == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_demo_net_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind='ternary'"):
        demo.demo_net("ternary")
