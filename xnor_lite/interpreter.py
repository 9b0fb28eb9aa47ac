"""Run converted xnor_keras flatbuffers on the stock `ai-edge-litert` runtime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from xnor_lite.library import KERNELS, LibraryError, OpLibrary, load_library

__all__ = ["DEFAULT_SETTINGS", "RUNTIME_METADATA", "Interpreter", "missing_ops", "read_metadata",
           "runtime_metadata"]

_LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
# The flatbuffer metadata entry where the converter (`to_tflite.py --device`) records the
# runtime settings measured best for a device: JSON {"device", "num_threads", "kernel",
# "use_xnnpack"}; num_threads "cores" means all of this machine's cores.
RUNTIME_METADATA = "xnor_lite.runtime"
DEFAULT_SETTINGS = {"num_threads": 1, "kernel": "default", "use_xnnpack": False}


def _read_flatbuffer(flatbuffer) -> bytes:
    if isinstance(flatbuffer, (bytes, bytearray, memoryview)):
        return bytes(flatbuffer)
    if isinstance(flatbuffer, (str, os.PathLike)):
        path = Path(flatbuffer)
        if not path.is_file():
            raise ValueError(f"Expected `flatbuffer` to be a .tflite file or bytes, got a missing path: {path}")
        return path.read_bytes()
    raise TypeError(
        f"Expected `flatbuffer` to be bytes or a path to a .tflite file, got {type(flatbuffer).__name__}."
    )


def missing_ops(flatbuffer: bytes) -> list[str]:
    """Custom ops in `flatbuffer` that xnor_lite's library does not provide, by name."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(code.CustomCode().decode())
    return sorted(names - set(_LCE_OPS))


def read_metadata(flatbuffer: bytes, name: str) -> bytes | None:
    """The bytes of the flatbuffer's metadata entry `name`, or None without one."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def runtime_metadata(flatbuffer: bytes) -> dict:
    """The runtime settings recorded in `flatbuffer` by `--device` ({} when none, or unreadable)."""
    import json

    data = read_metadata(flatbuffer, RUNTIME_METADATA)
    try:
        settings = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


class Interpreter:
    """A LiteRT interpreter with Larq Compute Engine's ops, for converted flatbuffers.

    Needs only numpy, `ai-edge-litert` and the op library built by `python -m xnor_lite.build`
    (no TensorFlow, larq or LCE wheel), so it runs on a Raspberry Pi 4 or any aarch64 Linux.

    Settings left at None come from the flatbuffer when the converter recorded the ones measured
    best for a device (`to_tflite.py --device pi4|pi5|arm64`), else from `DEFAULT_SETTINGS`;
    `settings` says what was used and where from.

    Args:
      flatbuffer: the model, as bytes or a path to a `.tflite` file.
      num_threads: CPU threads for the interpreter and LCE's kernels (default 1).
      kernel: LCE's binary-convolution kernel: "default" (LCE's optimized BGEMM, fastest on
        aarch64, except that a layer computing one matrix-vector product (a binary fully
        connected layer at batch 1, e.g. AlexNet's fc6 and fc7) runs xnor_lite's binary GEMV,
        ~3x fewer instructions there, with the outputs of LCE's reference kernel; and an int8
        layer computing one matrix-vector product (an int8 last layer at batch 1, e.g. AlexNet's
        fc8) runs xnor_lite's int8 GEMV, with the outputs of LiteRT's own kernel), "lce" (LCE's
        optimized BGEMM for every layer, as LCE's own runtime runs it, and LiteRT's own int8
        kernels), "indirect_bgemm"
        (fastest on x86-64 in LCE's own wheel), or "reference".
      use_xnnpack: apply LiteRT's default XNNPACK delegate to the float/int8 ops (default off).
      library: path of the op library (default: `xnor_lite.find_library()`).

    Example:
      >>> interpreter = Interpreter("xnor_resnet18.tflite", num_threads=4)
      >>> probabilities = interpreter.predict(images)   # float32 NHWC batch
    """

    def __init__(
        self,
        flatbuffer,
        *,
        num_threads: int | None = None,
        kernel: str | None = None,
        use_xnnpack: bool | None = None,
        library: str | os.PathLike | OpLibrary | None = None,
    ):
        from ai_edge_litert import interpreter as litert

        self.flatbuffer = _read_flatbuffer(flatbuffer)
        recorded = runtime_metadata(self.flatbuffer)
        self.settings = {}
        given = {"num_threads": num_threads, "kernel": kernel, "use_xnnpack": use_xnnpack}
        for key, value in given.items():
            if value is not None:
                self.settings[key] = (value, "argument")
            elif key in recorded:
                value = recorded[key]
                if key == "num_threads" and value == "cores":
                    value = os.cpu_count() or 1
                self.settings[key] = (value, f"flatbuffer ({recorded.get('device', 'device')})")
            else:
                self.settings[key] = (DEFAULT_SETTINGS[key], "default")
        num_threads, kernel, use_xnnpack = (self.settings[k][0] for k in ("num_threads", "kernel", "use_xnnpack"))
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"Expected `num_threads` to be an integer ≥ 1, got {num_threads!r}.")
        if kernel not in KERNELS:
            raise ValueError(f"Expected `kernel` to be one of {sorted(KERNELS)}, got {kernel!r}.")
        use_xnnpack = bool(use_xnnpack)
        unknown = missing_ops(self.flatbuffer)
        if unknown:
            raise LibraryError(
                f"The flatbuffer uses custom ops that xnor_lite does not provide: "
                f"{', '.join(unknown)} (it provides {', '.join(_LCE_OPS)})."
            )
        self.library = library if isinstance(library, OpLibrary) else load_library(library)
        self.num_threads = num_threads
        self.kernel = kernel
        self.use_xnnpack = use_xnnpack
        resolver = (litert.OpResolverType.AUTO if use_xnnpack
                    else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._interpreter = litert.InterpreterWithCustomOps(
            custom_op_registerers=[self.library.registerer(kernel)],
            model_content=self.flatbuffer,
            num_threads=num_threads,
            experimental_op_resolver_type=resolver,
        )
        self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in detail["shape"]) for detail in self._inputs]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(d) for d in detail["shape"]) for detail in self._outputs]

    @property
    def input_types(self) -> list[np.dtype]:
        return [np.dtype(detail["dtype"]) for detail in self._inputs]

    @property
    def output_types(self) -> list[np.dtype]:
        return [np.dtype(detail["dtype"]) for detail in self._outputs]

    def invoke(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One invocation on inputs shaped exactly like `input_shapes`; returns copies of the outputs."""
        for detail, value in zip(self._inputs, inputs):
            self._interpreter.set_tensor(detail["index"], value)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(detail["index"]).copy() for detail in self._outputs]

    def predict(self, x):
        """Runs every sample of `x` (one array, or a list for several inputs) and stacks the outputs.

        Returns one array for a single-output model, else a list, each with the batch of `x`.
        """
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self._inputs):
            raise ValueError(f"Expected {len(self._inputs)} input arrays, got {len(xs)}.")
        xs = [np.asarray(value, dtype=dtype) for value, dtype in zip(xs, self.input_types)]
        for value, shape in zip(xs, self.input_shapes):
            if value.ndim != len(shape) or tuple(value.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"Expected `x` of shape (batch, {', '.join(map(str, shape[1:]))}), got {value.shape}."
                )
        batch = xs[0].shape[0]
        outputs = [self.invoke([value[i:i + 1] for value in xs]) for i in range(batch)]
        stacked = [np.concatenate([out[k] for out in outputs]) for k in range(len(self._outputs))]
        return stacked[0] if len(stacked) == 1 else stacked
