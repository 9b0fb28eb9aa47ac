"""Running a flatbuffer: on the host (LCE's interpreter) or on the emulated arm64 target.

The one place that builds an interpreter; verification and the benchmarks run flatbuffers
through :func:`run_flatbuffer` and :func:`measure_latency`.

Targets:
- ``"host"``: LCE's own x86-64 wheel, with its fastest x86 kernel (indirect BGEMM).
- ``"arm64"``: LCE's aarch64 kernels, built from source by ``xnor_lite`` into its aarch64
  wheel and run, with ``ai-edge-litert`` 2.2.0, in an emulated Raspberry Pi OS trixie base
  (Debian trixie arm64, Python 3.13) under ``qemu-aarch64`` (``xnor_lite.emulate``), with
  LCE's default kernel, the fastest on ARM. Set up once (about 2 minutes), then cached.
"""

from __future__ import annotations

import time

import larq_compute_engine as lce
import numpy as np

__all__ = ["TARGETS", "measure_latency", "run_flatbuffer"]

TARGETS = ("host", "arm64")
_ARM64 = None  # the emulated target, set up on first use


def _interpreter(flatbuffer: bytes, num_threads: int = 1, use_xnnpack: bool = False):
    # Indirect BGEMM is LCE's fastest binary-conv kernel on x86 (3-4x its default there).
    return lce.testing.Interpreter(
        flatbuffer, num_threads=num_threads, use_indirect_bgemm=True, use_xnnpack=use_xnnpack
    )


def measure_latency(
    flatbuffer: bytes,
    x: np.ndarray,
    *,
    runs: int = 20,
    warmup: int = 3,
    num_threads: int = 1,
    use_xnnpack: bool = True,
) -> dict:
    """Host latency of one batch `x` on LCE's interpreter: median, min and max in ms.

    Runs LCE's fastest setting on x86: indirect BGEMM for binary convolutions and, with
    `use_xnnpack` (default), XNNPACK for the float and int8 ops (the first and last layers).
    """
    interpreter = _interpreter(flatbuffer, num_threads, use_xnnpack)
    x = np.asarray(x, np.float32)
    for _ in range(warmup):
        interpreter.predict(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.predict(x)
        times.append(1000 * (time.perf_counter() - start))
    return {
        "median_ms": float(np.median(times)),
        "min_ms": float(min(times)),
        "max_ms": float(max(times)),
        "runs": runs,
        "threads": num_threads,
        "xnnpack": use_xnnpack,
    }


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"Expected `target` to be one of {', '.join(TARGETS)}, got {target!r}.")
    return target


def arm64_target():
    """The emulated arm64 target (``xnor_lite.emulate.Arm64Target``), set up once per process."""
    global _ARM64
    if _ARM64 is None:
        from xnor_lite.emulate import Arm64Target

        _ARM64 = Arm64Target().setup()
    return _ARM64


def run_flatbuffer(
    flatbuffer: bytes, x: np.ndarray, *, num_threads: int = 1, target: str = "host"
) -> np.ndarray:
    """Run a converted (float-I/O) model on `target`'s runtime: "host" or "arm64"."""
    x = np.asarray(x, np.float32)
    if check_target(target) == "arm64":
        return np.asarray(arm64_target().predict(flatbuffer, x, num_threads=num_threads))
    return np.asarray(_interpreter(flatbuffer, num_threads).predict(x))
