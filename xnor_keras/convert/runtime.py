"""Running a flatbuffer on the host: LCE's interpreter, outputs and latency.

The one place that builds an interpreter; verification and the benchmarks run flatbuffers
through :func:`run_flatbuffer` and :func:`measure_latency`.
"""

from __future__ import annotations

import time

import larq_compute_engine as lce
import numpy as np

__all__ = ["measure_latency", "run_flatbuffer"]


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


def run_flatbuffer(flatbuffer: bytes, x: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Run a converted (float-I/O) model on LCE's interpreter."""
    return np.asarray(_interpreter(flatbuffer, num_threads).predict(np.asarray(x, np.float32)))
