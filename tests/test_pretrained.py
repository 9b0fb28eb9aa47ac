"""The pretrained weights shipped in the package: raw Fashion-MNIST images in, the published accuracy out.

The oracle is the dataset itself, parsed from Debian's IDX files with numpy (not through TFDS or
the training pipeline), and the accuracy that `zoo/publish_weights.py` recorded from the
benchmark's run. One model build per model; the whole test split, as the registry promises.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

import xnor_keras  # noqa: F401
from xnor_keras import convert, zoo
from xnor_keras.cli import to_tflite_main
from xnor_keras.testing_utils import run_cli
from xnor_keras.zoo import _weights

from conftest import FASHION_MNIST_DIR, needs_fashion_mnist, read_idx

PUBLISHED = ("XNORResNet18", "BWNResNet18", "XNORAlexNet")

# Packed files: sign bits for the binarized kernels, int8/float16 for the rest. Their float32
# latent weights would be 45 MB (ResNet-18) and 86 MB (AlexNet at 63x63).
PACKED_BYTES_AT_MOST = {"XNORResNet18": 2.5e6, "BWNResNet18": 2.5e6, "XNORAlexNet": 3.2e6}


@pytest.mark.parametrize("model_name", PUBLISHED)
def test_fashion_mnist_weights_ship_inside_the_package(model_name):
    entry = zoo.get_weights(model_name, "fashion_mnist")
    path = Path(unquote(urlparse(entry.url).path))
    assert path.parent == _weights.PACKAGED_DIR and path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert (entry.classes, entry.raw_input_shape, entry.dataset) == (10, (28, 28, 1), "fashion_mnist")
    assert entry.options == ({"pad_values": 1.0} if model_name.startswith("XNOR") else {})
    assert path.stat().st_size < PACKED_BYTES_AT_MOST[model_name]


@pytest.fixture(scope="module")
def fashion_test():
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    images = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[..., None]
    labels = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    return images, labels


@needs_fashion_mnist
@pytest.mark.parametrize("model_name", PUBLISHED)
def test_pretrained_model_takes_raw_images_and_reproduces_its_accuracy(
    model_name, fashion_test, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(_weights.CACHE_ENV, str(tmp_path))  # a fresh cache: the packaged file is used offline
    images, labels = fashion_test
    entry = zoo.get_weights(model_name, "fashion_mnist")
    model = zoo.get_model(model_name, weights="fashion_mnist")
    assert model.input_shape == (None, 28, 28, 1)

    probabilities = model.predict(images, batch_size=500, verbose=0)  # uint8, 0-255, as in the files
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    accuracy = float(np.mean(probabilities.argmax(-1) == labels))
    assert accuracy == pytest.approx(entry.accuracy, abs=0.002)

    # The converter CLI takes the name too; the flatbuffer has the preprocessing inside and runs
    # raw images on LCE.
    out = tmp_path / "model.tflite"
    code, _, err = run_cli(to_tflite_main, [model_name, "--weights", "fashion_mnist", "--no-float-twin",
                                            "--verify-samples", "2", "-o", out], capsys)
    assert code == 0, err
    lite = convert.run_flatbuffer(out.read_bytes(), images[:500].astype(np.float32))
    assert np.mean(lite.argmax(-1) == probabilities[:500].argmax(-1)) >= 0.99


def test_an_unknown_name_for_the_converter_lists_the_registered_ones(tmp_path, capsys):
    code, _, err = run_cli(to_tflite_main, ["XNORResNet18", "--weights", "imagenet", "-o", tmp_path / "m.tflite"], capsys)
    assert code == 2 and "registered names for XNORResNet18: fashion_mnist" in err
    assert not list(tmp_path.iterdir())


@needs_fashion_mnist
def test_verify_accepts_real_images_whose_only_differences_are_sign_ties_and_rejects_a_real_fault(fashion_test):
    """On 300 real test images the published XNORResNet18's flatbuffer differs from Keras on a
    couple of images, each carrying a sign input within float32 rounding of its BatchNorm
    threshold (LCE's fused threshold decides it): verify passes and says so. The flatbuffer of a
    different network (a real conversion fault) still fails as a conversion error."""
    images, _ = fashion_test
    x = images[:300].astype(np.float32)
    model = zoo.get_model("XNORResNet18", weights="fashion_mnist")
    flatbuffer = convert.convert(model)
    result = convert.verify(model, flatbuffer, x)
    assert result.passed, result.explanation
    assert result.top1_agreement == 1.0
    if result.max_rel_diff > result.rtol:
        assert "within float32 rounding of its threshold" in result.explanation

    # The same network with the last two stages' kernels negated: a wrong flatbuffer (one
    # negated block can leave the top-1 of 32 images unchanged, which an int8 file is judged by).
    wrong = zoo.get_model("XNORResNet18", weights="fashion_mnist")
    changed = 0
    for layer in wrong.submodules:
        if getattr(layer, "name", "").startswith(("conv4", "conv5")) and hasattr(layer, "kernel"):
            layer.kernel.assign(-layer.kernel)
            changed += 1
    assert changed
    wrong_flatbuffer = convert.convert(wrong)
    for lossy in (False, True):  # an int8 file is judged by agreement, a wrong one still fails
        broken = convert.verify(model, wrong_flatbuffer, x[:32], lossy=lossy)
        assert not broken.passed
        assert "conversion error" in broken.explanation


@needs_fashion_mnist
def test_int8_conversion_of_the_published_weights_is_verified_on_the_calibration_images(tmp_path, capsys):
    """The case a user met: int8 first/last layers with 256 training images as calibration data.
    The file is verified on those real images (not random noise) and judged by top-1 agreement
    with the int8 reference; its relative difference (int8 steps, ~0.13 here) is reported."""
    calibration = tmp_path / "calib.npy"
    np.save(calibration, read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")[:256, ..., None].astype(np.float32))
    out = tmp_path / "int8.tflite"
    code, stdout, err = run_cli(to_tflite_main, ["XNORResNet18", "--weights", "fashion_mnist", "--no-float-twin",
                                                 "--int8-float-layers", "--calibration-data", calibration, "-o", out], capsys)
    assert code == 0, err
    assert "verifying on the 256 calibration inputs" in err
    assert "int8 rounding: not judged" in stdout
    agreement = float(re.search(r"int8 rounding: not judged\); top-1 agreement ([0-9.]+)%", stdout).group(1))
    assert agreement >= 99.0  # the verification's own bar for int8 files
    assert out.exists()
