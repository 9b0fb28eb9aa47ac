"""xnor_lite: run xnor_keras flatbuffers on stock LiteRT, with Larq Compute Engine's ops.

The device-side half of xnor_keras. It needs numpy, `ai-edge-litert` and a native op library
built from LCE 0.16.0's kernel sources: bundled in the platform wheel
(`python -m xnor_lite.build --wheel --arch aarch64`), or built here (`python -m xnor_lite.build`).
It never imports TensorFlow, larq or the LCE wheel, so it installs on a Raspberry Pi 4 or 5
(64-bit Raspberry Pi OS trixie or bookworm) or any aarch64 Linux with Python 3.10-3.13.

    >>> import xnor_lite
    >>> interpreter = xnor_lite.Interpreter("model.tflite", num_threads=4)
    >>> probabilities = interpreter.predict(images)
"""

__version__ = "0.2.0"

from xnor_lite.build import BuildError, build_library
from xnor_lite.interpreter import Interpreter, missing_ops
from xnor_lite.library import LibraryError, find_library, load_library

__all__ = [
    "__version__",
    "BuildError",
    "Interpreter",
    "LibraryError",
    "build_library",
    "find_library",
    "load_library",
    "missing_ops",
]
