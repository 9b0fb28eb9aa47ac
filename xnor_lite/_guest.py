"""Runs inside the emulated arm64 target: one flatbuffer on xnor_lite's Interpreter.

Called by `xnor_lite.emulate.Arm64Target.predict` as
`python3 -m xnor_lite._guest REQUEST.json`; the request names the flatbuffer, the inputs
(.npy), the interpreter settings and where the outputs go (.npy). Prints one JSON line with the
library's build info and path, and the machine and Python it ran on.
"""

from __future__ import annotations

import json
import platform
import sys

import numpy as np

from xnor_lite.interpreter import Interpreter
from xnor_lite.library import load_library


def main(request_path: str) -> int:
    with open(request_path) as f:
        request = json.load(f)
    # None: the library the installed wheel carries, found as on a Pi.
    library = load_library(request.get("library"))
    interpreter = Interpreter(
        request["flatbuffer"],
        num_threads=request["num_threads"],
        kernel=request["kernel"],
        use_xnnpack=request["use_xnnpack"],
        library=library,
    )
    outputs = interpreter.predict(np.load(request["inputs"]))
    settings = interpreter.settings
    del interpreter
    np.save(request["outputs"], outputs)
    print(json.dumps({
        "machine": platform.machine(),
        "build_info": library.build_info,
        "library": str(library.path),
        "python": platform.python_version(),
        "settings": {key: value for key, (value, _) in settings.items()},
        "live_backend_contexts": library.live_backend_contexts(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
