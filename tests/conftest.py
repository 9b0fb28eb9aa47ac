"""Shared fixtures: a clean Keras session and fixed seeds for every test; local IDX datasets."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import numpy as np
import pytest

import xnor_keras  # noqa: F401  (binds tf.keras to Keras 2 before TensorFlow is used)
import tensorflow as tf


@pytest.fixture(autouse=True)
def clean_session():
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield
    tf.keras.mixed_precision.set_global_policy("float32")
    tf.keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---- MNIST-format IDX files: the real Fashion-MNIST where Debian's package is installed ----------

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION_MNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()
needs_fashion_mnist = pytest.mark.skipif(
    not HAVE_FASHION_MNIST, reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
)


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (gzipped or not) with numpy: magic 0x0000 08 NDIM, big-endian dims, bytes."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def write_idx_subset(folder: Path, train: int, test: int) -> Path:
    """The first `train` / `test` examples of Fashion-MNIST (random images if it is not installed)
    as the four IDX files in `folder`, train gzipped and test not, as both forms occur."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count, suffix in (("train", train, ".gz"), ("t10k", test, "")):
        stem = {"images": f"{split}-images-idx3-ubyte", "labels": f"{split}-labels-idx1-ubyte"}
        if HAVE_FASHION_MNIST:
            images = read_idx(FASHION_MNIST_DIR / f"{stem['images']}.gz")[:count]
            labels = read_idx(FASHION_MNIST_DIR / f"{stem['labels']}.gz")[:count]
        else:
            images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, count, dtype=np.uint8)
        write_idx(folder / (stem["images"] + suffix), images)
        write_idx(folder / (stem["labels"] + suffix), labels)
    return folder


@pytest.fixture(scope="session")
def fashion_subset(tmp_path_factory) -> Path:
    """2,000 train / 500 test Fashion-MNIST images as IDX files."""
    return write_idx_subset(tmp_path_factory.mktemp("fashion_idx"), 2000, 500)


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory, fashion_subset) -> Path:
    """A TFDS data dir with `fashion_mnist` prepared from `fashion_subset` (shared by tests)."""
    from xnor_keras import data

    data_dir = tmp_path_factory.mktemp("tfds")
    data.prepare_from_idx("fashion_mnist", fashion_subset, data_dir=data_dir)
    return data_dir


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to resolve a host or open a connection fails, and fails the test (even where
    the code under test would swallow the error)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError(f"network access attempted in an offline test: {attempts[-1]}")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="session")
def host_library():
    """xnor_lite's library built for this machine (the native-kernel tests' host half)."""
    import xnor_lite
    from xnor_lite import build

    return xnor_lite.load_library(build.build_library("host", log=lambda line: None))


def run_at_batch(interpreter, x: np.ndarray) -> np.ndarray:
    """Every sample at batch 1, or the whole batch in one invocation for a fixed batch > 1 (as
    the guest script below does)."""
    if interpreter.input_shapes[0][0] == 1:
        return interpreter.predict(x)
    return interpreter.invoke([x])[0]


# Runs in the emulated target's venv: every case under each (kernel, threads) setting, outputs to
# .npy files, and how far the library counter named in the request moved for each.
_NATIVE_CASES_GUEST = """
import json, sys
import numpy as np
import xnor_lite
request = json.load(open(sys.argv[1]))
library = xnor_lite.load_library()
counter = getattr(library, request["counter"])
counts = {}
for case in request["cases"]:
    x = np.load(case["inputs"])
    for kernel, threads in request["settings"]:
        before = counter()
        interpreter = xnor_lite.Interpreter(case["flatbuffer"], kernel=kernel, num_threads=threads,
                                            library=library)
        out = (interpreter.predict(x) if interpreter.input_shapes[0][0] == 1
               else interpreter.invoke([x])[0])
        np.save(f"{case['prefix']}-{kernel}-{threads}.npy", out)
        counts[f"{case['name']}/{kernel}/{threads}"] = counter() - before
print(json.dumps(counts))
"""


def run_native_cases_on_arm64(target, cases: dict, settings: list, counter: str, folder: Path):
    """Run `cases` (name -> (flatbuffer, inputs, ...)) on the emulated `target` under every
    (kernel, threads) of `settings`, in one guest process: each sample at batch 1 (or the whole
    batch at once for a fixed batch > 1). Returns (outputs[(name, kernel, threads)],
    counts["name/kernel/threads"]), the counts being how far `library.<counter>()` moved."""
    import json

    request = {"settings": settings, "counter": counter, "cases": []}
    for i, (name, (flatbuffer, x, *_)) in enumerate(cases.items()):
        (folder / f"{i}.tflite").write_bytes(flatbuffer)
        np.save(folder / f"{i}-x.npy", x)
        request["cases"].append({"name": name, "flatbuffer": str(folder / f"{i}.tflite"),
                                 "inputs": str(folder / f"{i}-x.npy"), "prefix": str(folder / str(i))})
    (folder / "request.json").write_text(json.dumps(request))
    (folder / "guest.py").write_text(_NATIVE_CASES_GUEST)
    result = target.run_python(str(folder / "guest.py"), str(folder / "request.json"), timeout=1800)
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    outputs = {(name, kernel, threads): np.load(folder / f"{i}-{kernel}-{threads}.npy")
               for i, name in enumerate(cases) for kernel, threads in settings}
    return outputs, counts
