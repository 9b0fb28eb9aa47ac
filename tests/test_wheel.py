"""The xnor_lite wheel: honest platform tags, valid wheel files, and the host wheel at work.

Oracles: binutils' `objdump -p` for the symbol versions read off the ELF; the wheel spec's RECORD
rule (urlsafe base64 sha256 of each file) for the archive; LCE's own x86-64 wheel for the outputs
of the x86-64 wheel, installed by pip and run in a process that refuses TensorFlow. The aarch64
wheel is installed and run on the emulated Pi (tests/test_arm64.py).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import larq_compute_engine as lce
import numpy as np
import pytest

import xnor_lite
from xnor_keras import convert
from xnor_keras.testing_utils import REFUSE_TENSORFLOW, calibrate_batchnorm, every_lce_op_model
from xnor_lite import build, library, wheel

REPO = Path(__file__).resolve().parents[1]
OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return {arch: build.build_wheel(arch, out_dir=out, log=lambda line: None)
            for arch in ("x86_64", "aarch64")}


def _objdump_versions(path: Path, arch: str) -> dict[str, list[str]]:
    text = subprocess.run([OBJDUMP[arch], "-p", str(path)], capture_output=True, text=True,
                          check=True).stdout
    needed: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"\s+NEEDED\s+(\S+)", line):
            needed.setdefault(m.group(1), set())
        elif m := re.match(r"\s+required from (\S+):", line):
            current = needed.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"\s+0x[0-9a-f]+ 0x\d+ \d+ (\S+)", line)):
            current.add(m.group(1))
    return {lib: sorted(v) for lib, v in needed.items()}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_symbol_versions_match_objdump_and_need_glibc_only(wheels, arch, tmp_path):
    with zipfile.ZipFile(wheels[arch]) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".so")]
        so = tmp_path / Path(name).name
        so.write_bytes(archive.read(name))
    ours = wheel.required_symbol_versions(so)
    assert {lib: sorted(v) for lib, v in ours.items()} == _objdump_versions(so, arch)
    # libstdc++ and libgcc are linked in: the library asks the device for glibc alone.
    assert set(ours) <= {"libc.so.6", "libm.so.6", f"ld-linux-{'x86-64' if arch == 'x86_64' else 'aarch64'}.so.{2 if arch == 'x86_64' else 1}"}
    newest = max(int(v.split(".")[1]) for vs in ours.values() for v in vs if v.startswith("GLIBC_2."))
    assert wheel.platform_tag(so) == f"manylinux_2_{newest}_{arch}"
    assert wheels[arch].name == f"xnor_lite-{xnor_lite.__version__}-py3-none-manylinux_2_{newest}_{arch}.whl"


def test_a_library_that_needs_libstdcxx_gets_no_manylinux_tag(tmp_path):
    source = tmp_path / "uses_cxx.cc"
    source.write_text('#include <string>\nextern "C" int f(const char* s) { return std::string(s).size(); }\n')
    so = tmp_path / "libuses_cxx.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", str(source), "-o", str(so)], check=True)
    with pytest.raises(wheel.WheelError, match=r"(GLIBCXX|CXXABI)_.*libstdc\+\+"):
        wheel.platform_tag(so)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_wheel_is_a_valid_wheel_with_its_library_and_two_dependencies(wheels, arch):
    with zipfile.ZipFile(wheels[arch]) as archive:
        names = archive.namelist()
        dist_info = f"xnor_lite-{xnor_lite.__version__}.dist-info"
        record = list(csv.reader(io.StringIO(archive.read(f"{dist_info}/RECORD").decode())))
        assert sorted(row[0] for row in record) == sorted(names)
        for path, digest, size in record:
            if path.endswith("RECORD"):
                continue
            payload = archive.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
            assert (digest, int(size)) == (f"sha256={expected}", len(payload)), path
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        tag_line = archive.read(f"{dist_info}/WHEEL").decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    assert requires == ["numpy>=1.23.2", f"ai-edge-litert=={build.LITERT_VERSION}"]
    assert "Requires-Python: >=3.10" in metadata
    assert f"Tag: py3-none-{wheels[arch].stem.split('-py3-none-')[1]}" in tag_line
    assert "Root-Is-Purelib: false" in tag_line
    libs = [n for n in names if n.startswith("xnor_lite/lib/")]
    assert len(libs) == 1 and f"-litert{build.LITERT_VERSION}-{arch}-" in libs[0]
    assert {"xnor_lite/__init__.py", "xnor_lite/interpreter.py", "xnor_lite/native/lce_ops.cc"} <= set(names)
    assert not any("__pycache__" in n or n.startswith(("tests/", "xnor_keras/")) for n in names)


def test_host_wheel_is_portable_across_x86_64_cpus(wheels):
    """The wheel's x86-64 library is built for x86-64-v2, not this CPU's -march (a cached
    build for this machine is a different file)."""
    portable = build.library_path("x86_64", portable=True).name
    assert f"xnor_lite/lib/{portable}" in zipfile.ZipFile(wheels["x86_64"]).namelist()
    assert portable != build.library_path("x86_64").name


def test_installed_x86_64_wheel_finds_its_library_and_runs_without_tensorflow(wheels, tmp_path):
    """pip installs the host wheel into a folder of its own; a process that refuses TensorFlow,
    larq and LCE, with neither this checkout nor the build cache in reach, runs a converted model
    with the wheel's bundled library, in the ai-edge-litert 2.2.0 of this environment."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--target", str(target), str(wheels["x86_64"])], check=True)
    model = every_lce_op_model()
    x = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    calibrate_batchnorm(model, x)
    flatbuffer = convert.convert(model)
    (tmp_path / "m.tflite").write_bytes(flatbuffer)
    np.save(tmp_path / "x.npy", x[:4])
    code = REFUSE_TENSORFLOW + f"""
import numpy as np, xnor_lite
print(xnor_lite.__file__)
print(xnor_lite.find_library())
y = xnor_lite.Interpreter({str(tmp_path / 'm.tflite')!r}).predict(np.load({str(tmp_path / 'x.npy')!r}))
np.save({str(tmp_path / 'y.npy')!r}, y)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("XNOR_LITE_LIBRARY", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), XNOR_LITE_CACHE=str(tmp_path / "empty-cache"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    module_file, library_file = result.stdout.strip().splitlines()[-2:]
    assert module_file.startswith(str(target))
    assert library_file.startswith(str(target / "xnor_lite" / "lib"))
    expected = lce.testing.Interpreter(flatbuffer, num_threads=1).predict(x[:4])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)


def test_wheel_command_line_writes_the_named_wheel_and_no_partial_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xnor_lite.build", "--wheel", "--arch", "aarch64",
                             "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == 1 and re.fullmatch(
        rf"xnor_lite-{re.escape(xnor_lite.__version__)}-py3-none-manylinux_2_\d+_aarch64\.whl", written[0])
    assert result.stdout.strip().endswith(written[0])


def test_library_of_another_litert_release_is_refused_naming_the_release_to_install():
    """A real LiteRT 1.2.0 build (the second supported release) loaded where ai-edge-litert 2.2.0
    is installed."""
    old = build.build_library("host", release="1.2.0", log=lambda line: None)
    assert "litert1.2.0" in old.name
    with pytest.raises(xnor_lite.LibraryError) as error:
        library.OpLibrary(old).check_runtime()
    message = str(error.value)
    assert "built against LiteRT 1.2.0" in message
    assert 'pip install "ai-edge-litert==1.2.0"' in message
    assert "python -m xnor_lite.build --release 2.2.0" in message


def test_unknown_release_is_named():
    with pytest.raises(build.BuildError, match=r"`release`.*'1\.4\.0'"):
        build.library_path("host", release="1.4.0")
