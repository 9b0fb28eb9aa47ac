"""The emulated arm64 target, today's Raspberry Pi OS base: converted flatbuffers on LCE's
aarch64 kernels, against Keras.

The target is Debian trixie arm64 with its Python 3.13, where xnor_lite's aarch64 wheel and
ai-edge-litert 2.2.0 were installed by the root's own pip under qemu (the commands a Pi user
runs). Every registered zoo model is converted at a small input size with calibrated BatchNorm
and verified there (`verify(..., target="arm64")`); one model also on bookworm (Python 3.11). A
second, independent oracle is LCE's own x86-64 wheel on the same flatbuffer.

Setting a target up takes ~1.5 minutes the first time on 2 cores (debootstrap, cross-build,
pip under qemu), then it is cached (`~/.cache/xnor_lite`). `.ci/run` (via `make test`)
installs the Debian packages it needs.
"""

from __future__ import annotations

import os

import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf

import xnor_lite
from xnor_keras import convert, zoo
from xnor_lite.emulate import Arm64Target
from xnor_keras.convert.runtime import arm64_target
from xnor_keras.testing_utils import calibrate_batchnorm, every_lce_op_model

from conftest import FASHION_MNIST_DIR, needs_fashion_mnist, read_idx

SMALL_SIZE = {"AlexNet": 67, "ResNet18": 32}
CLASSES = 4


def _family(name: str) -> str:
    return name.removeprefix("XNOR").removeprefix("BWN")


@pytest.fixture(scope="module")
def target():
    return arm64_target()


_WHO_AM_I = """
import importlib.util, json, platform, sys, xnor_lite
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "xnor_lite": xnor_lite.__file__, "library": str(xnor_lite.find_library()),
                  "prefix": sys.prefix, "tensorflow": importlib.util.find_spec("tensorflow") is not None}))
"""


def _who_am_i(target) -> dict:
    import json

    return json.loads(target.run_python("-c", _WHO_AM_I).stdout.strip().splitlines()[-1])


def test_target_is_trixie_python313_with_the_pip_installed_wheel(target):
    """`import xnor_lite` on Python 3.13 with TensorFlow absent, from the wheel pip installed in
    the venv, which finds its own bundled library."""
    assert target.release == "trixie"
    who = _who_am_i(target)
    assert who["machine"] == "aarch64"
    assert who["python"].startswith("3.13.")
    assert who["tensorflow"] is False
    site = str(target.venv / "lib" / "python3.13" / "site-packages")
    assert who["prefix"] == str(target.venv)
    assert who["xnor_lite"].startswith(site)
    assert who["library"] == str(target.library) and who["library"].startswith(site)
    assert target.library.name == xnor_lite.build.library_path("aarch64").name
    assert target.wheel.name.endswith("_aarch64.whl")


@pytest.fixture(scope="module")
def zoo_cases():
    """name -> (flatbuffer, inputs, Keras outputs): each zoo model built and converted once."""
    return {}


def _zoo_case(cases: dict, name: str):
    """(model or None when built by an earlier test, flatbuffer, x, Keras outputs on x)."""
    if name in cases:
        return (None, *cases[name])
    size = SMALL_SIZE[_family(name)]
    model = zoo.get_model(name, input_shape=(size, size, 3), classes=CLASSES)
    rng = np.random.default_rng(0)
    calibrate_batchnorm(model, rng.standard_normal((16, size, size, 3)).astype(np.float32))
    x = rng.standard_normal((4, size, size, 3)).astype(np.float32)
    cases[name] = (convert.convert(model), x, model.predict(x, verbose=0))
    return (model, *cases[name])


@pytest.mark.parametrize("name", zoo.list_models())
def test_zoo_model_verifies_on_arm64_kernels(target, zoo_cases, name):
    zoo_cases.pop(name, None)  # this test needs the model itself
    model, flatbuffer, x, _ = _zoo_case(zoo_cases, name)

    result = convert.verify(model, flatbuffer, x, target="arm64")
    assert result.target == "arm64"
    assert result.passed, result.explanation
    assert result.top1_agreement == 1.0
    assert target.last_report["machine"] == "aarch64"
    assert target.last_report["build_info"]["arch"] == "aarch64"
    assert target.last_report["live_backend_contexts"] == 0  # freed with the interpreter
    assert target.last_report["library"] == str(target.library)

    # Independent oracle: LCE's own x86-64 wheel on the same flatbuffer.
    arm = target.predict(flatbuffer, x)
    host = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-5 * max(1.0, float(np.abs(host).max())))


@pytest.fixture(scope="module")
def every_op():
    tf.keras.utils.set_random_seed(1)
    model = every_lce_op_model()
    rng = np.random.default_rng(1)
    calibrate_batchnorm(model, rng.uniform(0, 1, (32, 16, 16, 3)).astype(np.float32))
    x = rng.uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)
    return model, convert.convert(model), x


@pytest.mark.parametrize("kernel", ["default", "indirect_bgemm", "reference"])
def test_every_kernel_choice_agrees_with_keras_on_arm64(target, every_op, kernel):
    model, flatbuffer, x = every_op
    arm = target.predict(flatbuffer, x, kernel=kernel)
    np.testing.assert_allclose(arm, model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_two_threads_agree_with_one_on_arm64(target, every_op):
    _, flatbuffer, x = every_op
    one = target.predict(flatbuffer, x, num_threads=1)
    two = target.predict(flatbuffer, x, num_threads=2)
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cpu", [None, "cortex-a72"])
def test_int8_first_and_last_layers_match_the_int8_reference_on_each_cpu(target, every_op, cpu):
    """ruy and LiteRT pick int8 kernels by the CPU's features: QEMU's default CPU has the
    dot-product instructions, a Raspberry Pi 4's Cortex-A72 does not."""
    model, _, x = every_op
    calibration = x
    flatbuffer = convert.convert(model, int8_float_layers=True, calibration_data=calibration)
    reference = convert.int8_reference(model, calibration).predict(x, verbose=0)
    arm = Arm64Target(target.cache_dir, cpu=cpu).setup().predict(flatbuffer, x)
    host = lce.testing.Interpreter(flatbuffer, num_threads=1).predict(x)
    # int8 arithmetic is exact: the aarch64 kernels (with or without dot-product instructions)
    # compute what LCE's x86 kernels compute.
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-5)
    # Against the Keras model with the same int8 rounding: close, though a rounded value can land
    # on the other side of a later binary layer's sign threshold (verify's int8 tolerances).
    assert np.abs(arm - reference).max() <= 0.1 * np.abs(reference).max()


def test_bookworm_target_runs_a_zoo_model_on_python311(target, zoo_cases):
    """Raspberry Pi OS bookworm (Python 3.11), still widespread: the same wheel, installed by
    bookworm's pip, on one zoo model against Keras."""
    bookworm = Arm64Target(target.cache_dir, release="bookworm").setup()
    who = _who_am_i(bookworm)
    assert who["python"].startswith("3.11.") and who["machine"] == "aarch64"
    assert bookworm.wheel == target.wheel
    _, flatbuffer, x, keras = _zoo_case(zoo_cases, "XNORResNet18")  # as the trixie test converted it
    arm = bookworm.predict(flatbuffer, x)
    assert bookworm.last_report["python"].startswith("3.11.")
    np.testing.assert_allclose(arm, keras, rtol=0, atol=1e-5)
    host = lce.testing.Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True).predict(x)
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-5)


def test_unknown_debian_release_is_named(target):
    from xnor_lite.emulate import EmulationError

    with pytest.raises(EmulationError, match=r"`release`.*'buster'"):
        Arm64Target(target.cache_dir, release="buster")


def _to_tflite(*args) -> None:
    """`convert/to_tflite.py` as a user runs it (a separate process)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(repo / "convert" / "to_tflite.py"), *map(str, args)],
                            capture_output=True, text=True, cwd=repo)
    assert result.returncode == 0, result.stderr[-3000:]


@needs_fashion_mnist
def test_cli_flatbuffer_of_the_published_xnor_resnet18_keeps_keras_top1_on_trixie(target, tmp_path):
    """The published XNORResNet18 (raw 28x28 Fashion-MNIST images in), converted by
    `convert/to_tflite.py`, on the trixie target's pip-installed wheel: the same top-1 as Keras
    on 300 real test images."""
    out = tmp_path / "xnor_resnet18.tflite"
    _to_tflite("XNORResNet18", "--weights", "fashion_mnist", "--no-float-twin", "--verify-samples", "2", "-o", out)
    images = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:300, ..., None].astype(np.float32)
    model = zoo.get_model("XNORResNet18", weights="fashion_mnist")
    result = convert.verify(model, out.read_bytes(), images, target="arm64")
    assert target.last_report["python"].startswith("3.13.")
    # A real image can put a binary dot product exactly on a BatchNorm threshold, which float32
    # Keras decides by rounding: verify checks those against the exact reference.
    assert result.passed, result.explanation
    assert result.top1_agreement == 1.0


def test_cli_flatbuffer_of_xnor_alexnet_keeps_keras_top1_on_trixie(target, tmp_path):
    model = zoo.get_model("XNORAlexNet", input_shape=(67, 67, 3), classes=10)
    rng = np.random.default_rng(3)
    calibrate_batchnorm(model, rng.standard_normal((16, 67, 67, 3)).astype(np.float32))
    weights = tmp_path / "xnor_alexnet.weights.h5"
    model.save_weights(weights)
    out = tmp_path / "xnor_alexnet.tflite"
    _to_tflite("XNORAlexNet", "--weights", weights, "--input-shape", "67,67,3", "--classes", "10",
               "--no-float-twin", "--verify-samples", "2", "-o", out)
    x = rng.standard_normal((8, 67, 67, 3)).astype(np.float32)
    result = convert.verify(model, out.read_bytes(), x, target="arm64")
    assert target.last_report["python"].startswith("3.13.")
    assert result.passed, result.explanation
    assert result.top1_agreement == 1.0

def test_a_library_for_another_litert_release_is_refused_on_the_pi(target):
    """A library built for ai-edge-litert 1.2.0, loaded where pip installed 2.2.0 (Python 3.13
    has no 1.2.0 wheel): one error that names the release to install."""
    old = xnor_lite.build.build_library("aarch64", release="1.2.0", out_dir=target.cache_dir,
                                        log=lambda line: None)
    code = ("import xnor_lite\ntry:\n    xnor_lite.load_library(%r)\n"
            "except xnor_lite.LibraryError as error:\n    print('LibraryError:', error)\n" % str(old))
    out = target.run_python("-c", code).stdout
    assert out.startswith("LibraryError:"), out
    assert "built against LiteRT 1.2.0" in out and "ai-edge-litert 2.2.0 is installed" in out
    assert 'pip install "ai-edge-litert==1.2.0"' in out

@pytest.mark.skipif(not os.environ.get("XNOR_LITE_TEST_BUILD_ON_TARGET"),
                    reason="emulates every compile (~6 min on 2 cores): set XNOR_LITE_TEST_BUILD_ON_TARGET=1")
def test_library_built_by_trixies_own_gxx_under_qemu_matches_the_cross_built_one(target, every_op):
    """Building on the device, checked: Debian trixie's aarch64 g++ 14, each stage under qemu,
    from the pinned sources, gives a library that computes what the cross-built one (the host's
    aarch64-linux-gnu-g++ 12) computes, on every LCE op."""
    from xnor_lite.emulate import build_on_target

    built = build_on_target(target.cache_dir, release="trixie", log=lambda line: None)
    assert built != target.library and built.name == target.library.name
    model, flatbuffer, x = every_op
    native = target.predict(flatbuffer, x, library=built)
    assert target.last_report["library"] == str(built)
    cross = target.predict(flatbuffer, x)
    np.testing.assert_allclose(native, cross, rtol=0, atol=1e-6)
    np.testing.assert_allclose(native, model.predict(x, verbose=0), rtol=0, atol=1e-5)
