"""xnor_lite: run xnor_keras flatbuffers on stock LiteRT, with Larq Compute Engine's ops.

The device-side half of xnor_keras. It needs numpy, `ai-edge-litert` and a native op library
that this package builds from LCE 0.16.0's kernel sources (`python -m xnor_lite.build`), and
never imports TensorFlow, larq or the LCE wheel, so it installs on a Raspberry Pi 4 (64-bit OS)
or any aarch64 Linux.

    >>> import xnor_lite
    >>> interpreter = xnor_lite.Interpreter("model.tflite", num_threads=4)
    >>> probabilities = interpreter.predict(images)
"""

from xnor_lite.build import BuildError, build_library
from xnor_lite.interpreter import Interpreter, missing_ops
from xnor_lite.library import LibraryError, find_library, load_library

__all__ = [
    "BuildError",
    "Interpreter",
    "LibraryError",
    "build_library",
    "find_library",
    "load_library",
    "missing_ops",
]
