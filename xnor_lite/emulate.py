"""An emulated arm64 target on an x86-64 Debian/Ubuntu host: a Raspberry Pi OS base, run for real.

`Arm64Target().setup()` makes, once, a cached arm64 machine image without a VM:
- a minimal Debian arm64 root, **trixie** (Raspberry Pi OS's base since October 2025, Python
  3.13) by default or **bookworm** (Python 3.11), with python3, pip, venv and numpy
  (`debootstrap --foreign`, whose packages are unpacked here with `dpkg-deb`, so no binfmt
  handler or chroot is needed);
- a virtual environment in it, where xnor_lite's aarch64 wheel (`xnor_lite.build --wheel`) and
  the `ai-edge-litert` release it depends on are installed **by the root's own pip, run under
  qemu**: the commands docs/DEPLOYING.md gives a Pi user.
Programs then run as `qemu-aarch64 -L ROOT ROOT/opt/xnor-env/bin/python3 ...`: every instruction
of Python, LiteRT, ruy and LCE's kernels is aarch64 code, translated by QEMU's user-mode emulator.

QEMU 7.2 (Debian bookworm's) shows the guest the host's /proc/cpuinfo, on which the aarch64
LiteRT 2.2 runtime's CPU detection crashes. With `-L ROOT`, QEMU looks for every path the guest
opens under ROOT first, so the root carries a Raspberry Pi 4's (Cortex-A72) `proc/cpuinfo`, which
the guest reads instead; no mount namespace or privilege is needed. The CPU features that select
kernels come from the emulated CPU (`-cpu`, its AT_HWCAP), not from that file.

Command line:

    python -m xnor_lite.emulate setup [--release trixie|bookworm]   # first time ~2-4 min, then seconds
    python -m xnor_lite.emulate run model.tflite inputs.npy -o outputs.npy [--kernel ...]

Missing host tools give one line naming the Debian packages and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xnor_lite import build

__all__ = ["Arm64Target", "DEBIAN_RELEASES", "DEFAULT_RELEASE", "EmulationError", "missing_host_tools"]

# Debian release -> its python3. trixie is Raspberry Pi OS's base today; bookworm its previous one.
DEBIAN_RELEASES = {"trixie": "3.13", "bookworm": "3.11"}
DEFAULT_RELEASE = "trixie"
ROOT_PACKAGES = ("python3", "python3-pip", "python3-venv", "python3-numpy")
VENV = Path("opt") / "xnor-env"
# What a Raspberry Pi 4 (4x Cortex-A72) shows in /proc/cpuinfo; see the module docstring.
_CPUINFO_CORE = """processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
CPUINFO = "\n".join(_CPUINFO_CORE.format(i=i) for i in range(4)) + (
    "\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")

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
                s in (*DEBIAN_RELEASES, "sid", "stable", "testing") for s in suites
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


def ensure_root(root: Path, release: str, packages, *, cache_dir: Path, log=print) -> None:
    """A Debian `release` arm64 root with `packages` at `root`, made unless its stamp says it is
    already that root (the stamp also covers the Pi cpuinfo it carries)."""
    stamp = root / ".xnor_lite-root.json"
    wanted = {"release": release, "packages": list(packages),
              "cpuinfo": hashlib.sha256(CPUINFO.encode()).hexdigest()[:12]}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return
    started = time.time()
    make_root(root, release, packages, cache_dir=cache_dir, log=log)
    stamp.write_text(json.dumps(wanted))
    log(f"[xnor_lite.emulate] arm64 {release} root ready in {time.time() - started:.0f} s: {root}")


def make_root(root: Path, release: str, packages, *, cache_dir: Path, log=print) -> None:
    """A Debian `release` arm64 root with `packages` at `root`, made in a staging folder and
    renamed into place (so an interrupted setup leaves no half root)."""
    if root.exists():
        shutil.rmtree(root)
    staging = Path(tempfile.mkdtemp(prefix="arm64-root-", dir=cache_dir))
    try:
        mirror = _debian_mirror()
        log(f"[xnor_lite.emulate] debootstrap arm64 {release} ({', '.join(packages)}) from {mirror} ...")
        cmd = ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
               f"--include={','.join(packages)}", release, str(staging), mirror]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise EmulationError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        # --foreign unpacks only the essential packages and leaves the second stage (maintainer
        # scripts, run inside the root) undone; unpacking every downloaded package is all a
        # Python runtime (or a compiler) needs.
        debs = sorted((staging / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        log(f"[xnor_lite.emulate] unpacking {len(debs)} packages ...")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            deb.unlink()
        # What update-alternatives would do for numpy's BLAS/LAPACK.
        libdir = staging / "usr" / "lib" / "aarch64-linux-gnu"
        for name, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
            if (libdir / sub / name).exists() and not (libdir / name).exists():
                (libdir / name).symlink_to(Path(sub) / name)
        (staging / "proc").mkdir(exist_ok=True)
        (staging / "proc" / "cpuinfo").write_text(CPUINFO)
        staging.rename(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def run_gxx(root: Path, args: list[str]) -> int:
    """Runs the root's own aarch64 g++ with `args`, every stage under qemu-aarch64.

    g++ starts its stages (cc1plus, as, collect2 -> ld) as child processes, which an x86-64 host
    can't exec without a binfmt handler (kernel-wide state, which we don't touch). So the driver
    only prints its plan (`g++ -###`) and each stage runs here under `qemu-aarch64 -L root`;
    collect2's command line goes to the root's `ld` directly (without the LTO plugin, unused).
    """
    root = Path(root).resolve()
    qemu = ["qemu-aarch64", "-L", str(root)]
    plan = subprocess.run([*qemu, str(root / "usr" / "bin" / "g++"), "-###", *args],
                          capture_output=True, text=True)
    if plan.returncode != 0:
        sys.stderr.write(plan.stderr)
        return plan.returncode
    stages = [shlex.split(line) for line in plan.stderr.splitlines() if line.startswith(" ")]
    temporaries = []
    try:
        for stage in stages:
            program, rest = stage[0], stage[1:]
            if Path(program).name == "collect2":
                program = str(root / "usr" / "bin" / "ld")
                kept, skip = [], False
                for arg in rest:
                    if skip:
                        skip = False
                    elif arg == "-plugin":
                        skip = True
                    elif not arg.startswith("-plugin-opt"):
                        kept.append(arg)
                rest = kept
            elif not Path(program).is_absolute():
                program = str(root / "usr" / "bin" / program)
            temporaries += [a for a in rest if a.startswith("/tmp/cc") and a.endswith((".s", ".res"))]
            result = subprocess.run([*qemu, program, *rest], capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(f"{Path(program).name} failed ({result.returncode}):\n{result.stderr}")
                return result.returncode
    finally:
        for path in temporaries:
            Path(path).unlink(missing_ok=True)
    return 0


def build_on_target(cache_dir: str | os.PathLike | None = None, *, release: str = DEFAULT_RELEASE,
                    source_dir: str | os.PathLike | None = None, jobs: int | None = None,
                    log=print) -> Path:
    """Builds the aarch64 op library with the Debian `release` root's own g++ (Debian's
    aarch64 compiler, run under qemu, stage by stage: `run_gxx`) from the pinned sources, as a
    user building on the device would; returns its path (a folder of its own, so it can be
    compared with the cross-built library). Slow: every compile is emulated."""
    cache_dir = Path(cache_dir or build.default_cache_dir())
    root = cache_dir / f"arm64-{release}-gxx"
    ensure_root(root, release, ("g++", "libgemmlowp-dev"), cache_dir=cache_dir, log=log)
    compiler = [sys.executable, "-m", "xnor_lite.emulate", "gxx", "--root", str(root), "--"]
    return build.build_library("aarch64", compiler=compiler, source_dir=source_dir, jobs=jobs,
                               out_dir=cache_dir / f"built-on-{release}", log=log)


class Arm64Target:
    """A cached, emulated Debian arm64 machine with xnor_lite's wheel installed by pip.

    Args:
      cache_dir: where the roots, wheels and libraries live (default: `xnor_lite.build`'s cache).
      release: the Debian release of the root: "trixie" (default; Python 3.13, today's
        Raspberry Pi OS) or "bookworm" (Python 3.11).
      litert: the LiteRT release the wheel's library is built for, and so the `ai-edge-litert`
        that pip installs (default `xnor_lite.build.LITERT_VERSION`).
      source_dir: the pinned upstream sources for the library (default: `build`'s default).
      cpu: QEMU's CPU model (`qemu-aarch64 -cpu help`), e.g. "cortex-a72" for a Raspberry Pi 4,
        which lacks the dot-product instructions; default QEMU's "max", which has them. The CPU's
        features decide which ruy and XNNPACK kernels run.
      log: called with one line per setup step.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, release: str = DEFAULT_RELEASE,
                 litert: str | None = None, source_dir: str | os.PathLike | None = None,
                 cpu: str | None = None, log=print):
        if release not in DEBIAN_RELEASES:
            raise EmulationError(
                f"Expected `release` to be one of {sorted(DEBIAN_RELEASES)}, got {release!r}."
            )
        self.cache_dir = Path(cache_dir or build.default_cache_dir())
        self.release = release
        self.litert = build.normalize_release(litert)
        self.root = self.cache_dir / f"arm64-{release}"
        self.venv = self.root / VENV.parent / f"{VENV.name}-litert{self.litert}"
        self.source_dir = source_dir
        self.cpu = cpu
        self.log = log
        self.wheel: Path | None = None
        self.library: Path | None = None  # the library pip installed with the wheel
        self.last_report: dict | None = None  # what the last `predict` reported from the target

    # -- setup -------------------------------------------------------------------------------

    def _wheel_stamp(self) -> Path:
        return self.venv / ".xnor_lite-wheel.json"

    @contextlib.contextmanager
    def _lock(self):
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".arm64-setup.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def setup(self) -> "Arm64Target":
        """Makes the root and the venv, builds the wheel and installs it with the root's pip,
        each only if missing or out of date (the wheel is reinstalled when its bytes change)."""
        missing = missing_host_tools()
        if missing:
            raise EmulationError(
                f"The arm64 target needs Debian packages: apt-get install {' '.join(missing)}"
            )
        with self._lock():
            ensure_root(self.root, self.release, ROOT_PACKAGES, cache_dir=self.cache_dir, log=self.log)
            if not (self.venv / "pyvenv.cfg").exists():
                self._make_venv()
            self.wheel = build.build_wheel("aarch64", out_dir=self.cache_dir / "wheels",
                                           release=self.litert, source_dir=self.source_dir,
                                           cache_dir=self.cache_dir, log=self.log)
            self._install_wheel(self.wheel)
            self.library = self._installed_library()
        return self

    def _guest(self, python: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        """Runs `python` (the root's or the venv's) during setup, before `library` is known."""
        result = subprocess.run(self.python_command(*args, python=python), env=self.python_env(),
                                capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise EmulationError(
                f"arm64 {python.name} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-1500:]}{result.stderr[-2500:]}"
            )
        return result

    def _make_venv(self) -> None:
        # A Pi user runs `python3 -m venv --system-site-packages DIR` (Debian's numpy comes
        # through). Here venv's ensurepip would exec the aarch64 python directly, which the host
        # can't without a binfmt handler: the venv is made without pip, and the root's own pip
        # (python3-pip, visible through the system site-packages) installs into it.
        self.log(f"[xnor_lite.emulate] python3 -m venv --system-site-packages {self.venv} (under qemu)")
        if self.venv.exists():
            shutil.rmtree(self.venv)
        self._guest(self.root / "usr" / "bin" / "python3", "-m", "venv", "--system-site-packages",
                    "--without-pip", str(self.venv))

    def _install_wheel(self, wheel: Path) -> None:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        wanted = {"wheel": wheel.name, "sha256": digest}
        stamp = self._wheel_stamp()
        previous = json.loads(stamp.read_text()) if stamp.exists() else None
        if previous == wanted:
            return
        # The first install brings ai-edge-litert and its dependencies from the package index;
        # later ones only replace xnor_lite (its sources or library changed).
        options = ["--no-deps", "--force-reinstall"] if previous else []
        self.log(f"[xnor_lite.emulate] pip install {' '.join(options)} {wheel.name} "
                 f"(the root's pip, under qemu) ...")
        started = time.time()
        stamp.unlink(missing_ok=True)
        self._guest(self.python_path(), "-m", "pip", "install", "--no-compile",
                    "--disable-pip-version-check", "--no-input", *options, str(wheel))
        stamp.write_text(json.dumps(wanted))
        self.log(f"[xnor_lite.emulate] installed in {time.time() - started:.0f} s")

    def _installed_library(self) -> Path:
        found = sorted(self.venv.glob("lib/python3*/site-packages/xnor_lite/lib/libxnor_lite-*.so"))
        if len(found) != 1:
            raise EmulationError(f"Expected one op library installed by the wheel in {self.venv}, "
                                 f"found {[str(p) for p in found]}.")
        return found[0]

    # -- running -----------------------------------------------------------------------------

    def python_path(self) -> Path:
        """The venv's python3 (a link to the root's aarch64 python3)."""
        return self.venv / "bin" / "python3"

    def python_command(self, *args: str, plugin: str | None = None, python: Path | None = None) -> list[str]:
        """The host command line that runs the target venv's python3 (or `python`) with `args`."""
        cmd = ["qemu-aarch64", "-L", str(self.root)]
        if self.cpu:
            cmd += ["-cpu", self.cpu]
        if plugin:
            cmd += ["-plugin", plugin, "-d", "plugin"]
        return cmd + [str(python or self.python_path()), *args]

    def python_env(self) -> dict[str, str]:
        """The host's environment without its Python settings: the guest imports only what the
        root and its venv hold (xnor_lite as pip installed it, not this checkout)."""
        return _clean_env(PYTHONNOUSERSITE="1")

    def run_python(self, *args: str, timeout: float | None = 600, plugin: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess:
        """Runs the target's python3 with `args` (a script path or `-m module ...`), in the
        venv's folder: `-m` and `-c` put the working folder first on sys.path, and a checkout of
        this repository there would shadow the installed xnor_lite."""
        if self.library is None:
            self.setup()
        result = subprocess.run(self.python_command(*args, plugin=plugin), env=self.python_env(),
                                capture_output=True, text=True, timeout=timeout, cwd=self.venv)
        if check and result.returncode != 0:
            raise EmulationError(
                f"arm64 python3 {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result

    def predict(self, flatbuffer, x: np.ndarray, *, num_threads: int | None = 1, kernel: str | None = None,
                use_xnnpack: bool | None = None, library: str | os.PathLike | None = None) -> np.ndarray:
        """Outputs of `flatbuffer` (bytes or path) on `x`, computed by LCE's aarch64 kernels in
        the installed wheel (its library found by `xnor_lite.find_library()` on the target), or
        in another aarch64 op `library` (e.g. one from `build_on_target`). Settings left at
        None are `xnor_lite.Interpreter`'s: the flatbuffer's recorded ones, else its defaults
        (`last_report["settings"]` says which)."""
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
                "outputs": str(tmp / "outputs.npy"),
                "library": str(Path(library).resolve()) if library else None,
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
    native = sub.add_parser("build-on-target",
                            help="build the aarch64 op library with the root's own g++ under qemu "
                                 "(slow), as on a device")
    native.add_argument("--jobs", type=int, help="parallel compiles (default: all CPUs)")
    gxx = sub.add_parser("gxx", help="(used by build-on-target) the root's g++, each stage under qemu")
    gxx.add_argument("--root", required=True)
    gxx.add_argument("args", nargs=argparse.REMAINDER)
    run.add_argument("flatbuffer")
    run.add_argument("inputs", help=".npy of float32 inputs, batch first")
    run.add_argument("-o", "--output", required=True, help=".npy for the outputs")
    run.add_argument("--kernel", choices=["default", "indirect_bgemm", "reference"],
                     help="LceBconv2d kernel (default: the flatbuffer's recorded setting, else default)")
    run.add_argument("--num-threads", type=int, default=1)
    run.add_argument("--use-xnnpack", action="store_true", default=None,
                     help="default: the flatbuffer's recorded setting, else off")
    run.add_argument("--cpu", help="QEMU CPU model, e.g. cortex-a72 (Raspberry Pi 4); default QEMU's max")
    for p in (setup, run, native):
        p.add_argument("--release", default=DEFAULT_RELEASE, choices=sorted(DEBIAN_RELEASES),
                       help=f"Debian release of the root (default {DEFAULT_RELEASE}: Raspberry Pi OS's "
                            "base, Python 3.13; bookworm: Python 3.11)")
        p.add_argument("--litert", default=build.LITERT_VERSION, choices=sorted(build.RELEASES),
                       help=f"LiteRT release of the wheel's library and of the ai-edge-litert "
                            f"installed (default {build.LITERT_VERSION})")
        p.add_argument("--cache-dir", help=f"default: {build.default_cache_dir()}")
    args = parser.parse_args(argv)
    if args.command == "gxx":
        return run_gxx(Path(args.root), args.args[1:] if args.args[:1] == ["--"] else args.args)
    if args.command == "build-on-target":
        started = time.time()
        try:
            path = build_on_target(args.cache_dir, release=args.release, jobs=args.jobs)
        except (EmulationError, build.BuildError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"built with {args.release}'s g++ under qemu in {time.time() - started:.0f} s: {path}")
        return 0
    try:
        target = Arm64Target(args.cache_dir, release=args.release, litert=args.litert,
                             cpu=getattr(args, "cpu", None)).setup()
        if args.command == "setup":
            print(f"arm64 target ready: {args.release} root {target.root}, venv {target.venv}, "
                  f"wheel {target.wheel.name}")
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
