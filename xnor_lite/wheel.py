"""The `xnor_lite` wheel: the device runtime with its prebuilt op library, for `pip install`.

`python -m xnor_lite.build --wheel --arch aarch64 --out-dir DIR` builds the op library (cached)
and writes `DIR/xnor_lite-<version>-py3-none-<platform>.whl`. The wheel holds this package's
Python modules, its native sources (for building on the device instead) and the library under
`xnor_lite/lib/`, where `xnor_lite.find_library()` finds it without a cache folder or an
environment variable. It depends on numpy and `ai-edge-litert` only.

The platform tag is read off the built library, not assumed: `manylinux_2_<N>_<arch>`, where
2.N is the newest glibc symbol version the library needs (`required_symbol_versions`). The
library links libstdc++ and libgcc statically, so glibc is all it asks of the device; a library
that still needs libstdc++ (GLIBCXX_*) is refused, since no manylinux tag would be honest for it.

Stdlib only, like `xnor_lite.build`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import struct
import zipfile
from pathlib import Path

__all__ = [
    "WheelError",
    "platform_tag",
    "required_symbol_versions",
    "write_wheel",
]

DISTRIBUTION = "xnor_lite"
SUMMARY = ("Run xnor_keras binary networks (XNOR-Net, BWN) on stock LiteRT with Larq Compute "
           "Engine's ops: numpy + ai-edge-litert, no TensorFlow")
_PACKAGE_DIR = Path(__file__).resolve().parent
# A fixed timestamp keeps a wheel's bytes a function of its contents.
_ZIP_DATE = (2026, 1, 1, 0, 0, 0)

_SHT_DYNAMIC, _SHT_GNU_VERNEED = 6, 0x6FFFFFFE
_DT_NEEDED = 1
_ELF_MACHINES = {62: "x86_64", 183: "aarch64"}


class WheelError(RuntimeError):
    """The library cannot be packed honestly (unknown machine, needs more than glibc)."""


def _elf_sections(data: bytes):
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise WheelError("Expected a 64-bit little-endian ELF shared library.")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 58)
    sections = []
    for i in range(e_shnum):
        name, kind, _, _, offset, size, link, info, _, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
        sections.append({"type": kind, "offset": offset, "size": size, "link": link,
                         "info": info, "entsize": entsize})
    return e_machine, sections


def _cstring(data: bytes, offset: int) -> str:
    return data[offset:data.index(b"\0", offset)].decode()


def elf_machine(path: str | os.PathLike) -> str:
    """'x86_64' or 'aarch64' for an ELF file built for that machine."""
    machine, _ = _elf_sections(Path(path).read_bytes())
    if machine not in _ELF_MACHINES:
        raise WheelError(f"{path}: ELF machine {machine} is neither x86-64 nor aarch64.")
    return _ELF_MACHINES[machine]


def required_symbol_versions(path: str | os.PathLike) -> dict[str, list[str]]:
    """The shared libraries `path` needs (DT_NEEDED) -> the symbol versions it needs of each.

    Read from the ELF `.gnu.version_r` and `.dynamic` sections, as `objdump -p` prints them.
    """
    data = Path(path).read_bytes()
    _, sections = _elf_sections(data)
    needed: dict[str, list[str]] = {}
    for section in sections:
        if section["type"] == _SHT_DYNAMIC:
            strtab = sections[section["link"]]["offset"]
            for pos in range(section["offset"], section["offset"] + section["size"], 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == _DT_NEEDED:
                    needed.setdefault(_cstring(data, strtab + value), [])
    for section in sections:
        if section["type"] != _SHT_GNU_VERNEED:
            continue
        strtab = sections[section["link"]]["offset"]
        pos = section["offset"]
        for _ in range(section["info"]):
            _, count, file_name, aux, next_entry = struct.unpack_from("<HHIII", data, pos)
            versions = needed.setdefault(_cstring(data, strtab + file_name), [])
            aux_pos = pos + aux
            for _ in range(count):
                _, _, _, name, aux_next = struct.unpack_from("<IHHII", data, aux_pos)
                versions.append(_cstring(data, strtab + name))
                aux_pos += aux_next
            pos += next_entry
    return {library: sorted(set(versions), key=_version_key) for library, versions in needed.items()}


def _version_key(version: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"[._]", version)]


def platform_tag(path: str | os.PathLike) -> str:
    """The honest manylinux tag of the library at `path`, e.g. 'manylinux_2_17_aarch64'."""
    arch = elf_machine(path)
    needed = required_symbol_versions(path)
    glibc_minor = 17  # manylinux2014, the oldest tag pip still knows for aarch64
    for library, versions in needed.items():
        for version in versions:
            match = re.fullmatch(r"GLIBC_2\.(\d+)", version)
            if match:
                glibc_minor = max(glibc_minor, int(match.group(1)))
            elif not version.startswith("GLIBC_"):
                raise WheelError(
                    f"{Path(path).name} needs {version} of {library}: only glibc may be required "
                    f"by a manylinux wheel (link libstdc++ and libgcc statically)."
                )
    return f"manylinux_2_{glibc_minor}_{arch}"


def _record_line(name: str, payload: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(payload)}"


def _package_files() -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        relative = path.relative_to(_PACKAGE_DIR)
        if path.is_dir() or "__pycache__" in relative.parts or relative.parts[0] == "lib":
            continue
        if path.suffix in (".py", ".cc", ".h"):
            files.append((f"xnor_lite/{relative.as_posix()}", path.read_bytes()))
    return files


def write_wheel(library: str | os.PathLike, out_dir: str | os.PathLike, *, version: str,
                litert_release: str) -> Path:
    """Packs this package and the op `library` into a platform wheel in `out_dir`; returns it.

    Written to a temporary name and renamed, so `out_dir` never holds a partial wheel.
    """
    library = Path(library)
    tag = platform_tag(library)
    dist_info = f"{DISTRIBUTION}-{version}.dist-info"
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        f"Name: {DISTRIBUTION.replace('_', '-')}",
        f"Version: {version}",
        f"Summary: {SUMMARY}",
        "License: Apache-2.0",
        "Requires-Python: >=3.10",
        "Requires-Dist: numpy>=1.23.2",
        f"Requires-Dist: ai-edge-litert=={litert_release}",
        "",
        "The device half of xnor_keras. Its op library was built from Larq Compute Engine "
        f"0.16.0's kernels against LiteRT v{litert_release}, for {elf_machine(library)} "
        f"({tag}: needs glibc only).",
        "",
    ])
    wheel_file = "\n".join([
        "Wheel-Version: 1.0",
        "Generator: xnor_lite.wheel",
        "Root-Is-Purelib: false",
        f"Tag: py3-none-{tag}",
        "",
    ])
    entries = _package_files() + [
        (f"xnor_lite/lib/{library.name}", library.read_bytes()),
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel_file.encode()),
        (f"{dist_info}/top_level.txt", b"xnor_lite\n"),
    ]
    record = "\n".join([_record_line(name, payload) for name, payload in entries]
                       + [f"{dist_info}/RECORD,,", ""])
    entries.append((f"{dist_info}/RECORD", record.encode()))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{DISTRIBUTION}-{version}-py3-none-{tag}.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".so") else 0o644) << 16
            archive.writestr(info, payload)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)
    return target
