"""Loading the LCE op library and checking that it fits the installed LiteRT runtime."""

from __future__ import annotations

import ctypes
import os
import platform
from importlib import metadata
from pathlib import Path

from xnor_lite import build

__all__ = ["LibraryError", "OpLibrary", "bundled_libraries", "find_library", "load_library"]

# The pip distribution that provides the runtime the library plugs into.
RUNTIME_DISTRIBUTION = "ai-edge-litert"
# LceBconv2d kernel name -> the library's kernel index (lce_ops.cc). "default" is LCE's optimized
# BGEMM plus xnor_lite's binary GEMV for layers that are one matrix-vector product (batch-1 fully
# connected layers; bgemv.cc), same outputs as LCE's reference kernel, and xnor_lite's int8 GEMV
# for LiteRT's int8 FULLY_CONNECTED / CONV_2D nodes that are one matrix-vector product (batch-1
# int8 last layers; int8_gemv.cc) and, on CPUs without the dot-product instruction, its int8
# convolution for LiteRT's other int8 CONV_2D nodes (int8_conv.cc), same outputs as LiteRT's own
# kernel; "lce" is LCE's optimized BGEMM alone, as LCE's own runtime registers it, with LiteRT's
# builtin kernels untouched (kept to compare against).
KERNELS = {"default": 0, "indirect_bgemm": 1, "reference": 2, "lce": 3}


class LibraryError(RuntimeError):
    """The op library is missing, unloadable, or built for another runtime."""


def runtime_version() -> str:
    """Version of the installed `ai-edge-litert` distribution."""
    try:
        return metadata.version(RUNTIME_DISTRIBUTION)
    except metadata.PackageNotFoundError as error:
        raise LibraryError(
            f"`{RUNTIME_DISTRIBUTION}` is not installed: "
            f"pip install {RUNTIME_DISTRIBUTION}=={build.LITERT_VERSION}"
        ) from error


class OpLibrary:
    """A loaded op library: its build info and its registerer."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
        except OSError as error:
            raise LibraryError(f"Cannot load the op library {self.path}: {error}") from error
        try:
            info = self._lib.xnor_lite_build_info
            self._register = self._lib.xnor_lite_register_ops
            self._live = self._lib.xnor_lite_live_backend_contexts
            self._registration = self._lib.xnor_lite_registration
        except AttributeError as error:
            raise LibraryError(
                f"{self.path} is not an xnor_lite op library (no xnor_lite_* functions)."
            ) from error
        info.restype = ctypes.c_char_p
        self._register.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self._register.restype = ctypes.c_int
        self._live.restype = ctypes.c_int
        self._registration.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._registration.restype = ctypes.c_void_p
        self.build_info = dict(item.split("=", 1) for item in info().decode().split())

    def check_runtime(self) -> None:
        """Raises LibraryError unless the library fits this process's runtime and machine."""
        built_for = self.build_info.get("litert")
        installed = runtime_version()
        if built_for != installed:
            rebuild = (f"rebuild for {installed} (python -m xnor_lite.build --release {installed})"
                       if installed in build.RELEASES else
                       f"use a LiteRT release xnor_lite builds for ({', '.join(sorted(build.RELEASES))})")
            raise LibraryError(
                f"{self.path.name} was built against LiteRT {built_for}, but "
                f"{RUNTIME_DISTRIBUTION} {installed} is installed: its op resolver's layout may "
                f"differ. Install {RUNTIME_DISTRIBUTION}=={built_for} "
                f"(pip install \"{RUNTIME_DISTRIBUTION}=={built_for}\"), or {rebuild}."
            )
        if str(self.build_info.get("xnor_lite")) != str(build.ABI_VERSION):
            raise LibraryError(
                f"{self.path.name} has interface version {self.build_info.get('xnor_lite')}, "
                f"this xnor_lite needs {build.ABI_VERSION}: rebuild it (python -m xnor_lite.build)."
            )

    def registerer(self, kernel: str):
        """A `custom_op_registerers` entry that adds LCE's ops with the `kernel` choice."""
        if kernel not in KERNELS:
            raise ValueError(
                f"Expected `kernel` to be one of {sorted(KERNELS)}, got {kernel!r}."
            )
        code = KERNELS[kernel]

        def register(resolver_address: int) -> None:
            if self._register(resolver_address, code) != 0:
                raise LibraryError(f"the op library refused kernel {kernel!r}")

        return register

    def registration(self, op_name: str, kernel: str = "default") -> int | None:
        """Address of the `TfLiteRegistration` of LCE op `op_name`, for LiteRT's C API
        (`TfLiteInterpreterOptionsAddCustomOp`); None for an op the library lacks."""
        return self._registration(op_name.encode(), KERNELS.get(kernel, -1))

    def live_backend_contexts(self) -> int:
        """How many per-interpreter CPU backend contexts exist now."""
        return self._live()

    def binary_gemv_invocations(self) -> int:
        """How many LceBconv2d invocations in this process ran the "default" kernel's binary
        GEMV (batch-1 fully connected layers) rather than LCE's BGEMM."""
        counter = self._lib.xnor_lite_binary_gemv_invocations
        counter.restype = ctypes.c_longlong
        return int(counter())

    def int8_gemv_invocations(self) -> int:
        """How many int8 FULLY_CONNECTED / CONV_2D invocations in this process ran the "default"
        kernel's int8 GEMV (batch-1 int8 layers that are one matrix-vector product) rather than
        LiteRT's own kernel."""
        counter = self._lib.xnor_lite_int8_gemv_invocations
        counter.restype = ctypes.c_longlong
        return int(counter())

    def int8_conv_invocations(self) -> int:
        """How many int8 CONV_2D invocations in this process ran the "default" kernel's int8
        convolution (CPUs without the dot-product instruction) rather than LiteRT's own kernel."""
        counter = self._lib.xnor_lite_int8_conv_invocations
        counter.restype = ctypes.c_longlong
        return int(counter())


_LOADED: dict[Path, OpLibrary] = {}


_BUNDLED_DIR = Path(__file__).resolve().parent / "lib"


def bundled_libraries() -> list[Path]:
    """Op libraries installed with this package (a platform wheel's `xnor_lite/lib/`) for
    this machine, those for the installed runtime's release first."""
    arch = build.normalize_arch("host")
    found = sorted(_BUNDLED_DIR.glob(f"libxnor_lite-*-{arch}-*.so")) if _BUNDLED_DIR.is_dir() else []
    try:
        release = runtime_version()
    except LibraryError:
        return found
    return sorted(found, key=lambda path: f"-litert{release}-" not in path.name)


def find_library() -> Path | None:
    """The op library to use: `$XNOR_LITE_LIBRARY`, else the one the wheel installed, else the
    one built into the cache (`python -m xnor_lite.build`) for the installed runtime, else None."""
    if os.environ.get("XNOR_LITE_LIBRARY"):
        return Path(os.environ["XNOR_LITE_LIBRARY"])
    bundled = bundled_libraries()
    if bundled:
        return bundled[0]
    try:
        release = runtime_version()
    except LibraryError:
        release = build.LITERT_VERSION
    if release not in build.RELEASES:
        release = build.LITERT_VERSION
    path = build.library_path(platform.machine(), release=release)
    return path if path.exists() else None


def load_library(path: str | os.PathLike | None = None) -> OpLibrary:
    """Loads (once per process) and checks the op library at `path` (default: `find_library()`)."""
    if path is None:
        path = find_library()
        if path is None:
            raise LibraryError(
                "No xnor_lite op library found for this machine: install the xnor_lite wheel "
                f"for {platform.machine()} (it carries one), or build it once with "
                f"`python -m xnor_lite.build` (into {build.library_path(platform.machine())}), "
                "or set XNOR_LITE_LIBRARY to a built library."
            )
    path = Path(path).resolve()
    if not path.exists():
        raise LibraryError(f"Expected `library` to be a built op library, got a missing file: {path}")
    if path not in _LOADED:
        library = OpLibrary(path)
        library.check_runtime()
        _LOADED[path] = library
    return _LOADED[path]
