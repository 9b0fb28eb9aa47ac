"""Runs inside the emulated arm64 target under bench/qemu_plugin/insn_count: one flatbuffer,
with phase markers around loading, the first invocation and N steady invocations.

`python3 bench/_arm64_guest.py REQUEST.json` (started by bench/arm64.py). A marker is a
getpriority syscall with a magic `who` that fails with ESRCH and changes nothing; the plugin
records its running instruction count at each one (see insn_count.c). Prints one JSON line.
"""

from __future__ import annotations

import ctypes
import json
import platform
import sys

_LIBC = ctypes.CDLL(None, use_errno=True)
_SYS_GETPRIORITY = 141  # aarch64
_MAGIC = 0x58E0000
OP_MARK, OP_DUMP = 0, 1
# labels (the host reads them back from the plugin's records)
STARTED, MARKER_PAIR, RUNTIME_LOADED, MODEL_LOADED, FIRST_INVOKE, STEADY = 1, 2, 10, 20, 30, 100


def marker(op: int, label: int) -> None:
    _LIBC.syscall(ctypes.c_long(_SYS_GETPRIORITY), ctypes.c_long(0), ctypes.c_long(_MAGIC + op),
                  ctypes.c_long(label))


def main(request_path: str) -> int:
    marker(OP_MARK, STARTED)
    marker(OP_MARK, MARKER_PAIR)  # the cost of one marker
    with open(request_path) as f:
        request = json.load(f)
    import importlib.util
    import os

    import numpy as np

    # Load the runtime's extension by path first, so that its mapping exists (and is in
    # /proc/self/maps) before the import runs its code.
    spec = importlib.util.find_spec("ai_edge_litert")
    for name in ("libpywrap_litert_common.so", "_pywrap_tensorflow_interpreter_wrapper.so"):  # 2.2.0, 1.2.0
        wheel_so = os.path.join(spec.submodule_search_locations[0], name)
        if os.path.exists(wheel_so):
            ctypes.CDLL(wheel_so)
            break
    # Imported here so that "load" is the model's load, not the first import of LiteRT's Python
    # modules (which xnor_lite's Interpreter imports lazily).
    from ai_edge_litert import interpreter as _litert  # noqa: F401
    from ai_edge_litert import schema_py_generated as _schema  # noqa: F401
    from xnor_lite.interpreter import Interpreter
    from xnor_lite.library import load_library

    library = load_library(request["library"])
    rng = np.random.default_rng(0)
    marker(OP_DUMP, RUNTIME_LOADED)

    interpreter = Interpreter(request["flatbuffer"], num_threads=request["num_threads"],
                              kernel=request["kernel"], use_xnnpack=request["use_xnnpack"],
                              library=library)
    marker(OP_DUMP, MODEL_LOADED)

    x = rng.uniform(-1.0, 1.0, size=interpreter.input_shapes[0]).astype(interpreter.input_types[0])
    first = interpreter.invoke([x])[0]
    marker(OP_DUMP, FIRST_INVOKE)
    outputs = []
    for i in range(request["steady"]):
        outputs.append(interpreter.invoke([x])[0])
        marker(OP_DUMP, STEADY + i)
    with open("/proc/self/maps") as f:
        maps = f.read()
    with open(request["maps"], "w") as f:
        f.write(maps)
    same = all(np.array_equal(first, out) for out in outputs)
    print(json.dumps({
        "machine": platform.machine(),
        "build_info": library.build_info,
        "output_shape": list(first.shape),
        "output_sum": float(np.sum(first, dtype=np.float64)),
        "steady_outputs_equal_first": bool(same),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
