"""Build the native library that gives stock LiteRT Larq Compute Engine's ops.

The library is compiled from pinned upstream sources (LCE 0.16.0's kernels, ruy and the headers
of a LiteRT release: v2.2.0 by default, v1.2.0 on request) plus this package's own registration
code (`xnor_lite/native/`). It runs inside the `ai-edge-litert` wheel of the same LiteRT
release, for x86-64 (the host) or aarch64 (a Raspberry Pi 4 or 5, an Android phone;
cross-compiled here, or built on the device itself).

Command line (prints each step; exit 2 on a missing tool or source, naming what to install):

    python -m xnor_lite.build                      # for this machine, into the cache
    python -m xnor_lite.build --arch aarch64       # cross-compile on x86-64 (g++-aarch64-linux-gnu)
    python -m xnor_lite.build --wheel --arch aarch64 --out-dir dist   # a wheel for a Pi
    python -m xnor_lite.build --release 1.2.0      # for ai-edge-litert 1.2.0
    python -m xnor_lite.build --source-dir DIR --out-dir DIR

`--source-dir` holds the pinned trees under the folder names of `SOURCES` below (what
`../shared/third_party/` beside this repository holds). Elsewhere, get them with git, e.g. for
the default release:

    git clone https://github.com/larq/compute-engine lce && git -C lce checkout v0.16.0
    git clone https://github.com/google/ruy ruy && git -C ruy checkout 3286a34cc8de6149ac6844107dfdffac91531e72
    git clone https://github.com/google-ai-edge/LiteRT litert && git -C litert checkout v2.2.0
    git clone https://github.com/google/flatbuffers fb && git -C fb checkout v25.9.23
    git clone https://github.com/abseil/abseil-cpp absl && git -C absl checkout 20260526.0

then point each folder name below at its checkout (a symlink is enough): `lce-0.16.0` → lce,
`ruy-3286a34` → ruy, `litert-2.2.0` → litert, `flatbuffers-1872409` → fb,
`abseil-cpp-5650e9c` → absl (headers only). Debian's `libgemmlowp-dev` supplies
`public/gemmlowp.h`. `RELEASES` names the folders each release needs.

This module imports nothing outside the standard library, so it runs on a bare device.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "BuildError",
    "SOURCES",
    "LITERT_VERSION",
    "LCE_VERSION",
    "RELEASES",
    "build_library",
    "build_wheel",
    "default_cache_dir",
    "default_source_dir",
    "library_path",
    "normalize_arch",
    "normalize_release",
]

LCE_VERSION = "0.16.0"
# The LiteRT release built for by default: its `ai-edge-litert` wheels cover Python 3.10-3.13 on
# x86-64 and aarch64 (1.2.0 stops at 3.12, so not on Raspberry Pi OS trixie).
LITERT_VERSION = "2.2.0"
# Bumped whenever xnor_lite/native/ changes its C interface.
ABI_VERSION = 4

# Folder name -> (repository, ref, commit). The folder names carry the pins.
SOURCES = {
    "lce-0.16.0": ("github.com/larq/compute-engine", "v0.16.0",
                   "8da5a1974c33c9fc5ff1fda63df7a361f016de22"),
    "ruy-3286a34": ("github.com/google/ruy", "(the pin of LiteRT v1.2.0 and v2.2.0)",
                    "3286a34cc8de6149ac6844107dfdffac91531e72"),
    "litert-2.2.0": ("github.com/google-ai-edge/LiteRT", "v2.2.0",
                     "145c7523ff08d5e57ab5c582141775eea47da9c7"),
    "flatbuffers-1872409": ("github.com/google/flatbuffers", "v25.9.23 (LiteRT v2.2.0's pin)",
                            "187240970746d00bbd26b0f5873ed54d2477f9f3"),
    "abseil-cpp-5650e9c": ("github.com/abseil/abseil-cpp", "20260526.0 (LiteRT v2.2.0's pin; headers only)",
                           "5650e9cf76d3be4318d5fa3af38ee483ddfd5e4a"),
    "litert-1.2.0": ("github.com/google-ai-edge/LiteRT", "v1.2.0",
                     "f005cb1938eb166db5ac75102bb546e59ccb6499"),
    "litert-91b3dc4": ("github.com/google-ai-edge/LiteRT", "main (tflite/converter/ headers for v1.2.0)",
                       "91b3dc4d697fec85c82fe5055a1292e8f44377b1"),
    "flatbuffers-e646392": ("github.com/google/flatbuffers", "v24.3.25+4 (LiteRT v1.2.0's pin)",
                            "e6463926479bd6b330cbcf673f7e917803fd5831"),
}


class _Release:
    """How to build against one LiteRT release: its source folders and include mapping."""

    def __init__(self, litert: str, flatbuffers: str, *, converter: str | None = None,
                 abseil: str | None = None):
        self.litert, self.flatbuffers, self.converter, self.abseil = litert, flatbuffers, converter, abseil

    def folders(self) -> list[str]:
        return ["lce-0.16.0", "ruy-3286a34", self.litert, self.flatbuffers,
                *([self.converter] if self.converter else []), *([self.abseil] if self.abseil else [])]


# LiteRT release -> its build. Both compile the same files; v2.2.0 has `tflite/converter/` in its
# own tree and needs abseil's span header, v1.2.0 takes the converter headers from a later commit.
RELEASES = {
    "2.2.0": _Release("litert-2.2.0", "flatbuffers-1872409", abseil="abseil-cpp-5650e9c"),
    "1.2.0": _Release("litert-1.2.0", "flatbuffers-e646392", converter="litert-91b3dc4"),
}

_LCE_FILES = [
    "larq_compute_engine/tflite/kernels/bconv2d.cc",
    "larq_compute_engine/tflite/kernels/bmaxpool.cc",
    "larq_compute_engine/tflite/kernels/quantization.cc",
]
_LITERT_FILES = [
    "tflite/array.cc",
    "tflite/core/c/common.cc",
    "tflite/core/api/op_resolver.cc",
    "tflite/kernels/kernel_util.cc",
    "tflite/kernels/internal/quantization_util.cc",
    "tflite/kernels/internal/tensor_ctypes.cc",
    "tflite/kernels/internal/runtime_shape.cc",
    "tflite/minimal_logging.cc",
    "tflite/minimal_logging_default.cc",
    "tflite/mutable_op_resolver.cc",
    "tflite/util.cc",
]
_RUY_FILES = [
    f"ruy/{name}.cc"
    for name in (
        "allocator apply_multiplier block_map blocking_counter context context_get_ctx cpuinfo "
        "ctx denormal frontend pmu prepacked_cache prepare_packed_matrices "
        "system_aligned_alloc thread_pool trmul tune wait have_built_path_for_avx "
        "have_built_path_for_avx2_fma have_built_path_for_avx512 kernel_arm32 kernel_arm64 "
        "pack_arm kernel_avx kernel_avx2_fma kernel_avx512 pack_avx pack_avx2_fma pack_avx512"
    ).split()
]
_OWN_FILES = ["lce_ops.cc", "backend_context.cc", "bgemv.cc", "int8_gemv.cc", "int8_conv.cc"]

_NATIVE_DIR = Path(__file__).resolve().parent / "native"
_GEMMLOWP_DIR = Path("/usr/include/gemmlowp")

# arch -> (compiler when cross-compiling from x86-64, Debian package that has it)
_CROSS = {"aarch64": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")}
_ARCH_FLAGS = {
    # -march: this CPU's, resolved by name (see _host_march), so the cached library's name
    # changes with the CPU. TF_LITE_DISABLE_X86_NEON keeps LiteRT's NEON-to-SSE shim (another
    # Debian package) out.
    "x86_64": ["-DTF_LITE_DISABLE_X86_NEON"],
    # The Raspberry Pi 4's Cortex-A72 is ARMv8.0-A; LCE's kernels need nothing newer.
    "aarch64": ["-march=armv8-a"],
}
_COMMON_FLAGS = [
    "-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
    "-DNDEBUG",
    # Without it LCE's Register_BCONV_2D() silently returns the reference kernel.
    "-DTFLITE_WITH_RUY",
    # flatbuffers is used header-only; see SOURCES.md beside the sources.
    "-DFLATBUFFERS_LOCALE_INDEPENDENT=0",
    "-w",
]


# libstdc++ and libgcc are linked in (and hidden by the version script), so the library needs only
# glibc: it loads on any distribution whose glibc is new enough, whatever its compiler (the
# wheel's platform tag is read off the built file, `xnor_lite.wheel`).
_LINK_FLAGS = ["-Wl,--no-undefined", "-Wl,--gc-sections", "-static-libstdc++", "-static-libgcc"]


class BuildError(RuntimeError):
    """A tool, package or source the build needs is missing, or a compile failed."""


def normalize_arch(arch: str | None) -> str:
    """'host'/None -> this machine's; 'arm64' -> 'aarch64'; 'amd64' -> 'x86_64'."""
    if arch in (None, "", "host"):
        arch = platform.machine()
    arch = {"arm64": "aarch64", "amd64": "x86_64", "x86-64": "x86_64"}.get(arch.lower(), arch.lower())
    if arch not in _ARCH_FLAGS:
        raise BuildError(
            f"Expected `arch` to be one of 'host', 'x86_64', 'aarch64', got {arch!r}."
        )
    return arch


def default_source_dir() -> Path:
    """`$XNOR_LITE_SOURCES`, else `shared/third_party` beside this repository's checkout."""
    if os.environ.get("XNOR_LITE_SOURCES"):
        return Path(os.environ["XNOR_LITE_SOURCES"])
    return Path(__file__).resolve().parents[2] / "shared" / "third_party"


def default_cache_dir() -> Path:
    """`$XNOR_LITE_CACHE`, else `~/.cache/xnor_lite`."""
    if os.environ.get("XNOR_LITE_CACHE"):
        return Path(os.environ["XNOR_LITE_CACHE"])
    return Path.home() / ".cache" / "xnor_lite"


def _host_march() -> str:
    """The -march that `-march=native` means on this x86-64 CPU (e.g. "cooperlake")."""
    try:
        out = subprocess.run(["g++", "-march=native", "-Q", "--help=target"],
                             capture_output=True, text=True).stdout
    except OSError:
        return "x86-64-v2"
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "-march=":
            return parts[1]
    return "x86-64-v2"


def _arch_flags(arch: str, portable: bool = False) -> list[str]:
    if arch == "x86_64":
        # LCE's x86 binary kernels are plain C++: the compiler's vectorisation for this CPU is
        # what makes them as fast as LCE's own wheel (x86-64-v2 measured ~0.8x of it). A library
        # for other machines (a wheel) takes x86-64-v2: SSE4.2 and POPCNT, every x86-64 CPU
        # since 2009.
        local = normalize_arch("host") == "x86_64" and not portable
        march = _host_march() if local else "x86-64-v2"
        return [f"-march={march}", *_ARCH_FLAGS[arch]]
    return list(_ARCH_FLAGS[arch])


def _own_sources_digest(arch: str, portable: bool = False) -> str:
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_NATIVE_DIR)):
        digest.update(name.encode())
        digest.update((_NATIVE_DIR / name).read_bytes())
    digest.update(" ".join(_COMMON_FLAGS + _arch_flags(arch, portable) + _LINK_FLAGS).encode())
    return digest.hexdigest()[:12]


def normalize_release(release: str | None) -> str:
    """None -> the default LiteRT release (`LITERT_VERSION`); else one of `RELEASES`."""
    release = LITERT_VERSION if release in (None, "") else str(release).removeprefix("v")
    if release not in RELEASES:
        raise BuildError(
            f"Expected `release` to be a LiteRT release of {sorted(RELEASES)}, got {release!r}."
        )
    return release


def library_path(arch: str | None = None, out_dir: str | os.PathLike | None = None, *,
                 keep_symbols: bool = False, release: str | None = None,
                 portable: bool = False) -> Path:
    """Where `build_library` puts (and looks for) the library for `arch` and LiteRT `release`.

    The file name carries the LCE and LiteRT versions and a digest of this package's native
    sources and flags (the CPU's -march on x86-64), so a library from other sources or for
    another CPU is never taken for this one.
    """
    arch = normalize_arch(arch)
    release = normalize_release(release)
    suffix = "-symbols" if keep_symbols else ""
    name = (f"libxnor_lite-lce{LCE_VERSION}-litert{release}-{arch}-"
            f"{_own_sources_digest(arch, portable)}{suffix}.so")
    return Path(out_dir or default_cache_dir()) / name


def _compiler(arch: str) -> tuple[str, str]:
    """(compiler command, Debian package that provides it) for building `arch` here."""
    host = normalize_arch("host")
    if os.environ.get("CXX") and arch == host:
        return os.environ["CXX"], "g++"
    if arch == host:
        return "g++", "g++"
    if host == "x86_64" and arch in _CROSS:
        return _CROSS[arch]
    raise BuildError(f"Cannot build for {arch} on {host}: build on the device itself.")


def _check_sources(source_dir: Path, release: str) -> None:
    wanted = RELEASES[release].folders()
    missing = [name for name in wanted if not (source_dir / name).is_dir()]
    if missing:
        lines = [f"  {name}: {SOURCES[name][0]} at {SOURCES[name][1]} ({SOURCES[name][2]})"
                 for name in missing]
        raise BuildError(
            f"Expected `source_dir` ({source_dir}) to hold the pinned upstream sources for LiteRT "
            f"{release}; missing:\n" + "\n".join(lines)
            + "\nSee `python -m xnor_lite.build --help` for how to get them."
        )


def _include_flags(source_dir: Path, work_dir: Path, release: str) -> list[str]:
    # LCE includes `tensorflow/lite/...`; v1.2.0's wrapper headers also include
    # `tensorflow/compiler/mlir/lite/...`: map those prefixes onto the LiteRT trees.
    spec = RELEASES[release]
    inc = work_dir / "inc"
    (inc / "tensorflow" / "compiler" / "mlir").mkdir(parents=True, exist_ok=True)
    links = [(inc / "tensorflow" / "lite", source_dir / spec.litert / "tflite")]
    if spec.converter:
        links.append((inc / "tensorflow" / "compiler" / "mlir" / "lite",
                      source_dir / spec.converter / "tflite" / "converter"))
    for link, target in links:
        if link.is_symlink() and Path(os.readlink(link)) != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target)
    return [
        f"-I{_NATIVE_DIR}",
        f"-I{source_dir / 'lce-0.16.0'}",
        f"-I{inc}",
        f"-I{source_dir / spec.litert}",
        *([f"-I{source_dir / spec.converter}"] if spec.converter else []),
        f"-I{source_dir / 'ruy-3286a34'}",
        f"-I{source_dir / spec.flatbuffers / 'include'}",
        *([f"-I{source_dir / spec.abseil}"] if spec.abseil else []),
        f"-isystem{_GEMMLOWP_DIR}",
    ]


def build_library(
    arch: str | None = None,
    *,
    release: str | None = None,
    source_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    force: bool = False,
    keep_symbols: bool = False,
    portable: bool = False,
    compiler: list[str] | None = None,
    log=print,
) -> Path:
    """Builds (or finds, already built) the LCE op library for `arch`; returns its path.

    Args:
      arch: "host" (default), "x86_64" or "aarch64" ("arm64" is accepted).
      release: the LiteRT release whose `ai-edge-litert` wheel will load the library:
        "2.2.0" (default) or "1.2.0".
      source_dir: the pinned upstream sources (default: `default_source_dir()`).
      out_dir: where the library goes (default: `default_cache_dir()`). Object files are kept
        in a subfolder there, so a rebuild after a change of our own sources takes seconds.
      jobs: parallel compiles (default: the number of CPUs).
      force: rebuild even if the library exists.
      keep_symbols: keep the symbol table (for profilers; same code, a separate file name).
      portable: for any CPU of `arch`, not just this one (x86-64: x86-64-v2 instead of this
        CPU's -march; aarch64 libraries are always ARMv8.0-A). Wheels are built portable.
      compiler: the g++ command to use (a list: a program and its leading arguments), instead
        of this machine's g++ or cross compiler; e.g. the emulated target's own g++
        (`xnor_lite.emulate`'s `gxx` command).
      log: called with one line per step.

    Raises:
      BuildError: a missing compiler, header or source (naming the Debian package or the
        upstream repository to get), or a failed compile.
    """
    arch = normalize_arch(arch)
    release = normalize_release(release)
    spec = RELEASES[release]
    target = library_path(arch, out_dir, keep_symbols=keep_symbols, release=release,
                          portable=portable)
    if target.exists() and not force:
        log(f"[xnor_lite.build] up to date: {target}")
        return target
    source_dir = Path(source_dir or default_source_dir()).resolve()
    _check_sources(source_dir, release)
    if compiler is None:
        cxx, package = _compiler(arch)
        if shutil.which(cxx) is None:
            raise BuildError(f"Compiler {cxx!r} not found: apt-get install {package}")
        compiler = [cxx]
    compiler = [str(part) for part in compiler]
    cxx = " ".join(compiler)
    if not (_GEMMLOWP_DIR / "public" / "gemmlowp.h").exists():
        raise BuildError(f"{_GEMMLOWP_DIR}/public/gemmlowp.h not found: apt-get install libgemmlowp-dev")

    target.parent.mkdir(parents=True, exist_ok=True)
    build_info = (f"xnor_lite={ABI_VERSION} lce={LCE_VERSION} litert={release} "
                  f"ruy=3286a34 arch={arch}")
    flags = _COMMON_FLAGS + _arch_flags(arch, portable) + [f'-DXNOR_LITE_BUILD_INFO="{build_info}"']
    flags_key = hashlib.sha256(" ".join([cxx, *flags, str(source_dir)]).encode()).hexdigest()[:12]
    obj_dir = target.parent / f"obj-{arch}-lce{LCE_VERSION}-litert{release}-{flags_key}"
    obj_dir.mkdir(parents=True, exist_ok=True)
    includes = _include_flags(source_dir, obj_dir, release)

    units = (
        [(source_dir / "lce-0.16.0" / f, f) for f in _LCE_FILES]
        + [(source_dir / spec.litert / f, f) for f in _LITERT_FILES]
        + [(source_dir / "ruy-3286a34" / f, f) for f in _RUY_FILES]
        + [(_NATIVE_DIR / f, f"native/{f}@{_own_sources_digest(arch, portable)}") for f in _OWN_FILES]
    )
    log(f"[xnor_lite.build] {arch}, LiteRT {release}, with {cxx}: {len(units)} files from {source_dir}")

    def compile_one(unit: tuple[Path, str]) -> Path:
        src, key = unit
        obj = obj_dir / (key.replace("/", "_").replace("@", "_") + ".o")
        if obj.exists():
            return obj
        tmp = obj.with_suffix(".o.tmp")
        cmd = [*compiler, *flags, *includes, "-c", str(src), "-o", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"compiling {src} failed:\n{result.stderr[-4000:]}")
        tmp.replace(obj)
        log(f"[xnor_lite.build]   compiled {key.split('@')[0]}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, units))

    version_script = obj_dir / "exports.map"
    version_script.write_text("{ global: xnor_lite_*; local: *; };\n")
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so.tmp", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        cmd = [*compiler, "-shared", "-o", str(tmp_path), *map(str, objects),
               f"-Wl,--version-script={version_script}", *_LINK_FLAGS,
               *([] if keep_symbols else ["-s"]), "-lpthread"]
        log(f"[xnor_lite.build] linking {target.name}")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"linking failed:\n{result.stderr[-4000:]}")
        tmp_path.chmod(0o755)
        tmp_path.replace(target)
    finally:
        tmp_path.unlink(missing_ok=True)
    log(f"[xnor_lite.build] built {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return target


def build_wheel(
    arch: str | None = None,
    *,
    out_dir: str | os.PathLike = "dist",
    release: str | None = None,
    source_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    log=print,
) -> Path:
    """Builds the portable op library for `arch` (cached) and packs `xnor_lite` with it into a
    platform wheel in `out_dir` (see `xnor_lite.wheel`); returns the wheel's path."""
    from xnor_lite import __version__, wheel

    release = normalize_release(release)
    library = build_library(arch, release=release, source_dir=source_dir, out_dir=cache_dir,
                            jobs=jobs, portable=True, log=log)
    try:
        path = wheel.write_wheel(library, out_dir, version=__version__, litert_release=release)
    except wheel.WheelError as error:
        raise BuildError(str(error)) from error
    log(f"[xnor_lite.build] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnor_lite.build",
        description=__doc__.split("\n\n")[0],
        epilog="Pinned sources: " + "; ".join(
            f"{name} = {repo} {ref} ({commit[:12]})" for name, (repo, ref, commit) in SOURCES.items()
        ),
    )
    parser.add_argument("--arch", default="host", help="host (default), x86_64 or aarch64")
    parser.add_argument("--release", default=LITERT_VERSION, choices=sorted(RELEASES),
                        help=f"LiteRT release of the ai-edge-litert wheel that loads the library "
                             f"(default {LITERT_VERSION})")
    parser.add_argument("--wheel", action="store_true",
                        help="write an installable xnor_lite wheel with the library to --out-dir "
                             "(default ./dist)")
    parser.add_argument("--source-dir", help=f"pinned upstream sources (default: {default_source_dir()})")
    parser.add_argument("--out-dir", help=f"output folder (default: {default_cache_dir()}; "
                                          "with --wheel: ./dist)")
    parser.add_argument("--jobs", type=int, help="parallel compiles (default: all CPUs)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        if args.wheel:
            path = build_wheel(args.arch, out_dir=args.out_dir or "dist", release=args.release,
                               source_dir=args.source_dir, jobs=args.jobs)
        else:
            path = build_library(args.arch, release=args.release, source_dir=args.source_dir,
                                 out_dir=args.out_dir, jobs=args.jobs, force=args.force)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
