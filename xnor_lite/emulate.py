"""An emulated arm64 target on an x86-64 Debian/Ubuntu host: LCE's aarch64 kernels, run for real.

`Arm64Target().setup()` makes, once, a cached arm64 machine image without a VM:
- a minimal Debian bookworm arm64 root with python3 and numpy (`debootstrap --foreign`, whose
  packages are unpacked here with `dpkg-deb`, so no binfmt or chroot is needed);
- the aarch64 `ai-edge-litert` wheel (and `flatbuffers`) unpacked into it;
- the op library cross-compiled for aarch64 (`xnor_lite.build`).
Programs then run as `qemu-aarch64 -L ROOT ROOT/usr/bin/python3 ...`: every instruction of
LiteRT, ruy and LCE's kernels is aarch64 code, translated by QEMU's user-mode emulator.

Command line:

    python -m xnor_lite.emulate setup            # first time ~2 min, then instant
    python -m xnor_lite.emulate run model.tflite inputs.npy -o outputs.npy [--kernel ...]

Missing host tools give one line naming the Debian packages and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from xnor_lite import build

__all__ = ["Arm64Target", "EmulationError", "missing_host_tools"]

DEBIAN_RELEASE = "bookworm"  # python3.11: the cp311 wheel of ai-edge-litert 1.2.0 fits it
ROOT_PACKAGES = ("python3", "python3-numpy")
WHEELS = (f"ai-edge-litert=={build.LITERT_VERSION}", "flatbuffers==25.12.19")
WHEEL_PLATFORM = "manylinux_2_17_aarch64"

# host tool -> Debian package
HOST_TOOLS = {
    "qemu-aarch64": "qemu-user",
    "debootstrap": "debootstrap",
    "dpkg-deb": "dpkg",
    "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
}


class EmulationError(RuntimeError):
    """The emulated target cannot be set up or a program on it failed."""


def missing_host_tools() -> list[str]:
    """Debian packages to install before the target can be set up (empty when none)."""
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None]
    if not Path("/usr/include/gemmlowp/public/gemmlowp.h").exists():
        missing.append("libgemmlowp-dev")
    return sorted(set(missing))


def _debian_mirror() -> str:
    """The Debian mirror this host's apt already uses (or `$XNOR_LITE_DEBIAN_MIRROR`)."""
    if os.environ.get("XNOR_LITE_DEBIAN_MIRROR"):
        return os.environ["XNOR_LITE_DEBIAN_MIRROR"]
    candidates: list[str] = []
    sources_dir = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.split()
            suites = fields.get("suites", [])
            if "deb" in fields.get("types", []) and any(
                s in (DEBIAN_RELEASE, "trixie", "sid", "stable", "testing") for s in suites
            ):
                candidates += [u for u in fields.get("uris", []) if "security" not in u]
    for path in [Path("/etc/apt/sources.list"), *sorted(sources_dir.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                    candidates.append(parts[2] if parts[1].startswith("[") else parts[1])
    debian = [u for u in candidates if "debian" in u]
    if not debian:
        raise EmulationError(
            "Found no Debian mirror in /etc/apt/sources.list*; set XNOR_LITE_DEBIAN_MIRROR."
        )
    return debian[0].rstrip("/")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


class Arm64Target:
    """A cached, emulated Debian arm64 machine with xnor_lite's runtime installed.

    Args:
      cache_dir: where the root, wheels and library live (default: `xnor_lite.build`'s cache).
      source_dir: the pinned upstream sources for the library (default: `build`'s default).
      cpu: QEMU's CPU model (`qemu-aarch64 -cpu help`), e.g. "cortex-a72" for a Raspberry Pi 4,
        which lacks the dot-product instructions; default QEMU's "max", which has them. The CPU's
        features decide which ruy and XNNPACK kernels run.
      log: called with one line per setup step.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, *,
                 source_dir: str | os.PathLike | None = None, cpu: str | None = None, log=print):
        self.cache_dir = Path(cache_dir or build.default_cache_dir())
        self.root = self.cache_dir / f"arm64-{DEBIAN_RELEASE}-litert{build.LITERT_VERSION}"
        self.site = self.root / "opt" / "xnor_lite" / "site"
        self.source_dir = source_dir
        self.cpu = cpu
        self.log = log
        self.library: Path | None = None
        self.last_report: dict | None = None  # what the last `predict` reported from the target

    # -- setup -------------------------------------------------------------------------------

    def _stamp(self) -> Path:
        return self.root / ".xnor_lite-ready.json"

    def _wanted(self) -> dict:
        return {"release": DEBIAN_RELEASE, "packages": list(ROOT_PACKAGES), "wheels": list(WHEELS)}

    @contextlib.contextmanager
    def _lock(self):
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".arm64-setup.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def setup(self) -> "Arm64Target":
        """Makes the root, installs the wheels and builds the library, each only if missing."""
        missing = missing_host_tools()
        if missing:
            raise EmulationError(
                f"The arm64 target needs Debian packages: apt-get install {' '.join(missing)}"
            )
        with self._lock():
            stamp = self._stamp()
            ready = stamp.exists() and json.loads(stamp.read_text()) == self._wanted()
            if not ready:
                started = time.time()
                self._make_root()
                self._install_wheels()
                stamp.write_text(json.dumps(self._wanted()))
                self.log(f"[xnor_lite.emulate] arm64 root ready in {time.time() - started:.0f} s: {self.root}")
            self.library = build.build_library(
                "aarch64", source_dir=self.source_dir, out_dir=self.cache_dir, log=self.log
            )
        return self

    def _make_root(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        staging = Path(tempfile.mkdtemp(prefix="arm64-root-", dir=self.cache_dir))
        try:
            mirror = _debian_mirror()
            self.log(f"[xnor_lite.emulate] debootstrap arm64 {DEBIAN_RELEASE} from {mirror} ...")
            cmd = ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
                   f"--include={','.join(ROOT_PACKAGES)}", DEBIAN_RELEASE, str(staging), mirror]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise EmulationError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            # --foreign unpacks only the essential packages and leaves the second stage (maintainer
            # scripts, run inside the root) undone; unpacking every downloaded package is all a
            # Python runtime needs.
            debs = sorted((staging / "var" / "cache" / "apt" / "archives").glob("*.deb"))
            self.log(f"[xnor_lite.emulate] unpacking {len(debs)} packages ...")
            for deb in debs:
                subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
                deb.unlink()
            # What update-alternatives would do for numpy's BLAS/LAPACK.
            libdir = staging / "usr" / "lib" / "aarch64-linux-gnu"
            for name, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
                if (libdir / sub / name).exists() and not (libdir / name).exists():
                    (libdir / name).symlink_to(Path(sub) / name)
            staging.rename(self.root)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _install_wheels(self) -> None:
        wheel_dir = Path(tempfile.mkdtemp(prefix="wheels-", dir=self.cache_dir))
        try:
            self.log(f"[xnor_lite.emulate] downloading {', '.join(WHEELS)} for {WHEEL_PLATFORM} ...")
            base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", "3.11",
                    "--implementation", "cp", "-d", str(wheel_dir), *WHEELS]
            result = subprocess.run(base, capture_output=True, text=True)
            if result.returncode != 0:
                # A pip configured with local extra indexes can fail to resolve foreign platforms;
                # the package index alone resolves them.
                result = subprocess.run(base[:4] + ["--isolated"] + base[4:], capture_output=True, text=True)
            if result.returncode != 0:
                raise EmulationError(f"pip download failed:\n{result.stderr[-2000:]}")
            if self.site.exists():
                shutil.rmtree(self.site)
            self.site.mkdir(parents=True)
            for wheel in sorted(wheel_dir.glob("*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(self.site)
            for so in self.site.rglob("*.so"):
                so.chmod(0o755)
        finally:
            shutil.rmtree(wheel_dir, ignore_errors=True)

    # -- running -----------------------------------------------------------------------------

    def python_command(self, *args: str, plugin: str | None = None) -> list[str]:
        """The host command line that runs the target's python3 with `args`."""
        cmd = ["qemu-aarch64", "-L", str(self.root)]
        if self.cpu:
            cmd += ["-cpu", self.cpu]
        if plugin:
            cmd += ["-plugin", plugin, "-d", "plugin"]
        return cmd + [str(self.root / "usr" / "bin" / "python3"), *args]

    def python_env(self) -> dict[str, str]:
        package_parent = str(Path(__file__).resolve().parent.parent)
        return _clean_env(PYTHONPATH=f"{self.site}{os.pathsep}{package_parent}", PYTHONNOUSERSITE="1")

    def run_python(self, *args: str, timeout: float | None = 600, plugin: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess:
        """Runs the target's python3 with `args` (a script path or `-m module ...`)."""
        if self.library is None:
            self.setup()
        result = subprocess.run(self.python_command(*args, plugin=plugin), env=self.python_env(),
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise EmulationError(
                f"arm64 python3 {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def predict(self, flatbuffer, x: np.ndarray, *, num_threads: int = 1, kernel: str = "default",
                use_xnnpack: bool = False) -> np.ndarray:
        """Outputs of `flatbuffer` (bytes or path) on `x`, computed by LCE's aarch64 kernels."""
        if self.library is None:
            self.setup()
        with tempfile.TemporaryDirectory(prefix="xnor-arm64-") as tmp:
            tmp = Path(tmp)
            if isinstance(flatbuffer, (bytes, bytearray, memoryview)):
                (tmp / "model.tflite").write_bytes(bytes(flatbuffer))
                model_path = tmp / "model.tflite"
            else:
                model_path = Path(flatbuffer).resolve()
            np.save(tmp / "inputs.npy", np.asarray(x, dtype=np.float32))
            request = {
                "flatbuffer": str(model_path), "inputs": str(tmp / "inputs.npy"),
                "outputs": str(tmp / "outputs.npy"), "library": str(self.library),
                "num_threads": num_threads, "kernel": kernel, "use_xnnpack": use_xnnpack,
            }
            (tmp / "request.json").write_text(json.dumps(request))
            result = self.run_python("-m", "xnor_lite._guest", str(tmp / "request.json"))
            report = json.loads(result.stdout.strip().splitlines()[-1])
            self.last_report = report
            if report["machine"] != "aarch64":
                raise EmulationError(f"the target reported machine {report['machine']!r}, not aarch64")
            return np.load(tmp / "outputs.npy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xnor_lite.emulate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="make the cached arm64 root, wheels and library")
    run = sub.add_parser("run", help="run a flatbuffer on the arm64 target")
    run.add_argument("flatbuffer")
    run.add_argument("inputs", help=".npy of float32 inputs, batch first")
    run.add_argument("-o", "--output", required=True, help=".npy for the outputs")
    run.add_argument("--kernel", default="default", choices=["default", "indirect_bgemm", "reference"])
    run.add_argument("--num-threads", type=int, default=1)
    run.add_argument("--use-xnnpack", action="store_true")
    run.add_argument("--cpu", help="QEMU CPU model, e.g. cortex-a72 (Raspberry Pi 4); default QEMU's max")
    for p in (setup, run):
        p.add_argument("--cache-dir", help=f"default: {build.default_cache_dir()}")
    args = parser.parse_args(argv)
    try:
        target = Arm64Target(args.cache_dir, cpu=getattr(args, "cpu", None)).setup()
        if args.command == "setup":
            print(f"arm64 target ready: root {target.root}, library {target.library}")
            return 0
        if not Path(args.flatbuffer).is_file() or not Path(args.inputs).is_file():
            print(f"error: no such file: {args.flatbuffer if not Path(args.flatbuffer).is_file() else args.inputs}",
                  file=sys.stderr)
            return 2
        outputs = target.predict(args.flatbuffer, np.load(args.inputs), num_threads=args.num_threads,
                                 kernel=args.kernel, use_xnnpack=args.use_xnnpack)
        tmp = Path(args.output).with_suffix(".tmp.npy")
        np.save(tmp, outputs)
        tmp.replace(args.output)
        print(f"wrote {args.output} {outputs.shape}")
        return 0
    except (EmulationError, build.BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
