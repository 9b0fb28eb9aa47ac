"""xnor_lite on the host: our build of LCE's ops in the stock ai-edge-litert runtime.

The oracle is LCE's own x86-64 wheel (`larq_compute_engine.testing.Interpreter`) running the
same flatbuffer with the same kernel choice: both compile the same LCE 0.16 kernel sources,
so they must agree to float rounding. The library is built once into the cache
(`~/.cache/xnor_lite`, ~35 s on 2 cores the first time).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import larq_compute_engine as lce
import numpy as np
import pytest
import tensorflow as tf

import xnor_keras as xk
import xnor_lite
from xnor_keras import convert
from xnor_keras.testing_utils import REFUSE_TENSORFLOW, calibrate_batchnorm, every_lce_op_model, tflite_op_names
from xnor_lite import build, library

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lib_path():
    return build.build_library("host", log=lambda line: None)


@pytest.fixture(scope="module")
def model_and_flatbuffer():
    model = every_lce_op_model()
    x = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    calibrate_batchnorm(model, x)
    return model, convert.convert(model), x[:8]


def test_the_model_uses_every_lce_op(model_and_flatbuffer):
    ops = set(tflite_op_names(model_and_flatbuffer[1]))
    assert {"LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d"} <= ops


@pytest.mark.parametrize(
    "kernel, lce_options",
    [
        ("default", {}),
        ("indirect_bgemm", {"use_indirect_bgemm": True}),
        ("reference", {"use_reference_bconv": True}),
    ],
)
def test_matches_lces_own_wheel_with_the_same_kernel(lib_path, model_and_flatbuffer, kernel, lce_options):
    model, flatbuffer, x = model_and_flatbuffer
    expected = lce.testing.Interpreter(flatbuffer, num_threads=1, **lce_options).predict(x)
    actual = xnor_lite.Interpreter(flatbuffer, kernel=kernel, library=lib_path).predict(x)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    # And with Keras, the model that was converted (calibrated BatchNorm: no sign ties).
    np.testing.assert_allclose(actual, model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_num_threads_gives_the_same_outputs(lib_path, model_and_flatbuffer):
    _, flatbuffer, x = model_and_flatbuffer
    one = xnor_lite.Interpreter(flatbuffer, num_threads=1, library=lib_path).predict(x)
    two = xnor_lite.Interpreter(flatbuffer, num_threads=2, library=lib_path).predict(x)
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-6)


def test_backend_context_lives_exactly_as_long_as_its_interpreter(lib_path, model_and_flatbuffer):
    _, flatbuffer, x = model_and_flatbuffer
    lib = library.load_library(lib_path)
    gc.collect()
    before = lib.live_backend_contexts()
    first = xnor_lite.Interpreter(flatbuffer, library=lib_path)
    second = xnor_lite.Interpreter(flatbuffer, library=lib_path)
    first.predict(x[:1])
    second.predict(x[:1])
    assert lib.live_backend_contexts() == before + 2
    del first
    gc.collect()
    assert lib.live_backend_contexts() == before + 1
    del second
    gc.collect()
    assert lib.live_backend_contexts() == before


def test_c_api_registrations_cover_the_four_ops_and_nothing_else(lib_path):
    lib = library.load_library(lib_path)
    ops = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
    addresses = {op: lib.registration(op) for op in ops}
    assert all(addresses.values()) and len(set(addresses.values())) == 4
    kernels = {lib.registration("LceBconv2d", k) for k in ("default", "indirect_bgemm", "reference")}
    assert len(kernels) == 3
    assert lib.registration("LceBconv3d") is None
    assert lib.registration("LceBconv2d", "fast") is None


def test_input_and_output_shapes(lib_path, model_and_flatbuffer):
    _, flatbuffer, _ = model_and_flatbuffer
    interpreter = xnor_lite.Interpreter(flatbuffer, library=lib_path)
    assert interpreter.input_shapes == [(1, 16, 16, 3)]
    assert interpreter.output_shapes == [(1, 10)]
    assert interpreter.input_types == [np.dtype(np.float32)]


def test_reads_a_tflite_file(lib_path, model_and_flatbuffer, tmp_path):
    _, flatbuffer, x = model_and_flatbuffer
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer)
    from_file = xnor_lite.Interpreter(path, library=lib_path).predict(x)
    from_bytes = xnor_lite.Interpreter(flatbuffer, library=lib_path).predict(x)
    np.testing.assert_array_equal(from_file, from_bytes)


def test_runs_without_tensorflow_larq_or_lce(lib_path, model_and_flatbuffer, tmp_path):
    """What a Raspberry Pi user has: numpy, ai-edge-litert and the library."""
    _, flatbuffer, x = model_and_flatbuffer
    (tmp_path / "m.tflite").write_bytes(flatbuffer)
    np.save(tmp_path / "x.npy", x)
    code = REFUSE_TENSORFLOW + f"""
import numpy as np, xnor_lite
y = xnor_lite.Interpreter({str(tmp_path / 'm.tflite')!r}, library={str(lib_path)!r}).predict(np.load({str(tmp_path / 'x.npy')!r}))
np.save({str(tmp_path / 'y.npy')!r}, y)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "larq")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    expected = lce.testing.Interpreter(flatbuffer, num_threads=1).predict(x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)


# -- bad input -------------------------------------------------------------------------------


def test_unknown_custom_op_is_named(lib_path, model_and_flatbuffer):
    _, flatbuffer, _ = model_and_flatbuffer
    renamed = flatbuffer.replace(b"LceBMaxPool2d", b"LceBMaxPool3d")
    with pytest.raises(xnor_lite.LibraryError, match="LceBMaxPool3d"):
        xnor_lite.Interpreter(renamed, library=lib_path)


def test_library_for_another_litert_version_is_refused_at_load(lib_path, monkeypatch):
    monkeypatch.setattr(library, "_LOADED", {})
    monkeypatch.setattr(library, "runtime_version", lambda: "1.4.0")
    with pytest.raises(xnor_lite.LibraryError, match=r"built against LiteRT 2\.2\.0.*ai-edge-litert 1\.4\.0 is installed.*pip install \"ai-edge-litert==2\.2\.0\""):
        library.load_library(lib_path)


def test_a_library_that_is_not_ours_is_refused(tmp_path):
    libm = next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
                            "/lib64/libm.so.6") if os.path.exists(p))
    with pytest.raises(xnor_lite.LibraryError, match="not an xnor_lite op library"):
        library.load_library(libm)
    with pytest.raises(xnor_lite.LibraryError, match="missing file"):
        library.load_library(tmp_path / "nope.so")


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": "fast"}, "`kernel`"),
    ({"num_threads": 0}, "`num_threads`"),
])
def test_bad_arguments_are_named(lib_path, model_and_flatbuffer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        xnor_lite.Interpreter(model_and_flatbuffer[1], library=lib_path, **kwargs)


def test_predict_names_the_expected_shape(lib_path, model_and_flatbuffer):
    interpreter = xnor_lite.Interpreter(model_and_flatbuffer[1], library=lib_path)
    with pytest.raises(ValueError, match=r"\(batch, 16, 16, 3\)"):
        interpreter.predict(np.zeros((2, 8, 8, 3), np.float32))


def _run_module(*args, path_dirs=()):
    env = {**os.environ, "PATH": os.pathsep.join(path_dirs), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_build_without_the_cross_compiler_names_the_debian_package(tmp_path):
    result = _run_module("xnor_lite.build", "--arch", "aarch64", "--out-dir", str(tmp_path),
                         path_dirs=[str(tmp_path)])
    assert result.returncode == 2
    assert "apt-get install g++-aarch64-linux-gnu" in result.stderr
    assert not list(tmp_path.glob("*.so"))


def test_build_without_sources_names_the_pinned_upstreams(tmp_path):
    result = _run_module("xnor_lite.build", "--source-dir", str(tmp_path), "--out-dir", str(tmp_path),
                         path_dirs=["/usr/bin", "/bin"])
    assert result.returncode == 2
    assert "lce-0.16.0: github.com/larq/compute-engine at v0.16.0" in result.stderr


def test_emulated_target_without_host_tools_names_the_debian_packages(tmp_path):
    result = _run_module("xnor_lite.emulate", "setup", "--cache-dir", str(tmp_path), path_dirs=[str(tmp_path)])
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    for package in ("qemu-user", "debootstrap", "g++-aarch64-linux-gnu"):
        assert package in line


def test_library_path_carries_the_pinned_versions():
    path = build.library_path("arm64")
    assert "lce0.16.0" in path.name and "litert2.2.0" in path.name and "aarch64" in path.name
    with pytest.raises(build.BuildError, match="`arch`"):
        build.library_path("riscv64")


def test_settings_come_from_arguments_then_the_flatbuffer_then_defaults(lib_path, model_and_flatbuffer):
    from xnor_keras.convert.flatbuffer import with_metadata
    from xnor_lite.interpreter import RUNTIME_METADATA

    _, flatbuffer, x = model_and_flatbuffer
    plain = xnor_lite.Interpreter(flatbuffer, library=lib_path)
    assert plain.settings == {"num_threads": (1, "default"), "kernel": ("default", "default"),
                              "use_xnnpack": (False, "default")}
    tagged = with_metadata(flatbuffer, RUNTIME_METADATA,
                           b'{"device": "pi4", "num_threads": 2, "kernel": "reference", "use_xnnpack": true}')
    interpreter = xnor_lite.Interpreter(tagged, library=lib_path, kernel="default")
    assert interpreter.settings == {"num_threads": (2, "flatbuffer (pi4)"), "kernel": ("default", "argument"),
                                    "use_xnnpack": (True, "flatbuffer (pi4)")}
    np.testing.assert_allclose(interpreter.predict(x), plain.predict(x), rtol=0, atol=1e-6)
    broken = with_metadata(flatbuffer, RUNTIME_METADATA, b"not json")
    assert xnor_lite.Interpreter(broken, library=lib_path).settings == plain.settings
    bad = with_metadata(flatbuffer, RUNTIME_METADATA, b'{"kernel": "fastest"}')
    with pytest.raises(ValueError, match="`kernel`"):
        xnor_lite.Interpreter(bad, library=lib_path)
