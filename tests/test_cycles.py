"""bench/cycles.py's parts that can be checked alone: the plugin's cache simulator (compiled from
bench/qemu_plugin/tb_profile.c with -DCACHESIM_ONLY, loaded with ctypes) against a small Python
LRU model on synthetic address traces; llvm-mca's block costs and their parsing on hand-written
blocks; tb_profile's records; and, where qemu and an aarch64 cross compiler exist, the plugin on
a loop of known length.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import cycles  # noqa: E402

PLUGIN = ROOT / "bench" / "qemu_plugin" / "tb_profile.c"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
needs_llvm = pytest.mark.skipif(shutil.which("llvm-mca") is None or shutil.which("llvm-mc") is None,
                                reason="needs llvm-mca and llvm-mc (apt-get install llvm)")


class ReferenceCache:
    """LRU set-associative levels, write-back and write-allocate, 64-byte lines, non-inclusive: a
    miss fetches from the next level (or DRAM) and a dirty victim is written into the next level,
    allocating there without a fetch (or goes to DRAM from the last level)."""

    def __init__(self, spec: str):
        self.levels = []
        for part in spec.split("/"):
            size, ways = (int(v) for v in part.split(":"))
            self.levels.append((size // (ways * 64), ways, [[] for _ in range(size // (ways * 64))]))
        self.accesses = 0
        self.misses = [0] * len(self.levels)
        self.dram_reads = self.dram_writes = 0

    def _lookup(self, k, line, write):
        n_sets, _, sets = self.levels[k]
        entries = sets[line % n_sets]
        for i, entry in enumerate(entries):
            if entry[0] == line:
                entries.insert(0, [line, entry[1] or write])
                del entries[i + 1]
                return True
        return False

    def _insert(self, k, line, dirty):
        n_sets, ways, sets = self.levels[k]
        entries = sets[line % n_sets]
        victim = entries.pop() if len(entries) == ways else None
        entries.insert(0, [line, dirty])
        if victim and victim[1]:
            if k + 1 < len(self.levels):
                if not self._lookup(k + 1, victim[0], True):
                    self._insert(k + 1, victim[0], True)
            else:
                self.dram_writes += 1

    def _access_line(self, k, line, write):
        if self._lookup(k, line, write):
            return
        self.misses[k] += 1
        if k + 1 < len(self.levels):
            self._access_line(k + 1, line, False)
        else:
            self.dram_reads += 1
        self._insert(k, line, write)

    def access(self, addr, size, write):
        self.accesses += 1
        for line in range(addr // 64, (addr + size - 1) // 64 + 1):
            self._access_line(0, line, write)

    def stats(self):
        return [self.accesses, *self.misses, self.dram_reads, self.dram_writes]


@pytest.fixture(scope="module")
def cachesim(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    lib = tmp_path_factory.mktemp("cachesim") / "cachesim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-DCACHESIM_ONLY", "-o", str(lib), str(PLUGIN)], check=True)
    sim = ctypes.CDLL(str(lib))
    sim.cs_init.argtypes = [ctypes.c_char_p]
    sim.cs_access.argtypes = [ctypes.c_uint64, ctypes.c_uint, ctypes.c_int]
    sim.cs_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
    return sim


def run_sim(sim, spec, trace):
    assert sim.cs_init(spec.encode()) == 0
    for addr, size, write in trace:
        sim.cs_access(int(addr), int(size), int(write))
    out = (ctypes.c_uint64 * 8)()
    n = sim.cs_stats(out)
    return list(out[:n])


def synthetic_trace(rng, n=20000):
    """Streams (reads and writes), strided walks, random hits in a hot set and line-crossing
    accesses, interleaved."""
    trace = []
    base_stream, base_hot = 1 << 20, 1 << 26
    for i in range(n):
        kind = rng.integers(4)
        if kind == 0:
            trace.append((base_stream + 16 * i, 16, i % 3 == 0))
        elif kind == 1:
            trace.append((base_hot + 64 * int(rng.integers(96)), 8, bool(rng.integers(2))))
        elif kind == 2:
            trace.append((int(rng.integers(1 << 16)) * 4, 4, False))
        else:
            trace.append((base_hot + 64 * int(rng.integers(4096)) + 60, 8, bool(rng.integers(2))))
    return trace


@pytest.mark.parametrize("spec", ["1024:2/4096:4", "2048:4/8192:8/32768:16", "512:1", "32768:2/1048576:16"])
def test_cache_simulator_matches_reference(cachesim, rng, spec):
    trace = synthetic_trace(rng)
    reference = ReferenceCache(spec)
    for access in trace:
        reference.access(*access)
    assert run_sim(cachesim, spec, trace) == reference.stats()


def test_cache_simulator_lru_and_writeback_by_hand(cachesim):
    # one 2-way set of 64-byte lines (128 bytes), no next level: lines 0, 1, 2 share the set
    trace = [(0, 8, True), (64, 8, False), (0, 8, False), (128, 8, False),  # evicts line 1 (LRU)
             (0, 8, False), (64, 8, False)]                                  # hit; miss evicts 2
    accesses, misses, reads, writes = run_sim(cachesim, "128:2", trace)
    assert (accesses, misses, reads, writes) == (6, 4, 4, 0)
    # line 0 dirty, then two other lines push it out: one write-back
    accesses, misses, reads, writes = run_sim(cachesim, "128:2", [(0, 4, True), (64, 4, False), (128, 4, False)])
    assert (misses, reads, writes) == (3, 3, 1)


def test_cache_simulator_streaming_reads_every_line_once(cachesim):
    n_bytes = 4 << 20  # four times a Pi 4's L2
    trace = [(a, 16, False) for a in range(0, n_bytes, 16)]
    stats = run_sim(cachesim, cycles.CORES["cortex-a72"].caches, trace)
    assert stats[-2:] == [n_bytes // 64, 0]


def test_cache_simulator_rejects_bad_specs(cachesim):
    for spec in (b"", b"1000:3", b"1024", b"1024:2/x"):
        assert cachesim.cs_init(spec) != 0


MCA_OUTPUT = """
[0] Code Region - b0

Iterations:        200
Instructions:      800
Total Cycles:      803
Total uOps:        800

[1] Code Region - b1

Iterations:        200
Instructions:      400
Total Cycles:      150
"""


def test_parse_mca():
    assert cycles.parse_mca(MCA_OUTPUT) == {"b0": 803 / 200, "b1": 150 / 200}


def test_plain_branch():
    assert cycles._plain_branch("bl\t#-2048") == "b\t#-2048"
    assert cycles._plain_branch("blr\tx8") == "br\tx8"
    assert cycles._plain_branch("ret") == "ret"


@needs_llvm
def test_block_costs_of_hand_written_blocks(tmp_path):
    add_x0 = "00040091"          # add x0, x0, #1: a chain of 4 costs 4 cycles per iteration
    add_x1 = "21040091"          # add x1, x1, #1
    chain = {"bytes": add_x0 * 4}
    pair = {"bytes": (add_x0 + add_x1) * 2}  # two chains of 2, interleaved: 2 cycles
    assert cycles.decode([add_x0, "1f2003d5", "ffffffff"], "cortex-a72") == {
        add_x0: "add\tx0, x0, #1", "1f2003d5": "nop", "ffffffff": None}
    costs = cycles.block_costs([chain, pair], "cortex-a72", tmp_path / "cache.json")
    assert costs[chain["bytes"]] == pytest.approx(4.0, abs=0.05)
    assert costs[pair["bytes"]] == pytest.approx(2.0, abs=0.05)
    assert (tmp_path / "cache.json").exists()


RECORDS = """def 0 400000 2 0004009121040091
mark 1 100
mem 1 0 0 0 0 0
def 1 400100 1 1f2003d5
mark 30 1000
mem 30 50 10 5 4 1
dump 30
bx 0 7 3 14
tb 400000 14
mark 100 2000
mem 100 80 12 7 6 2
dump 100
bx 0 5 2 10
bx 1 9 1 0
tb 400000 10
tb 400100 9
"""


def test_parse_profile():
    prof = cycles.parse_profile(RECORDS)
    assert prof["accesses"] == 30 and prof["misses"] == [2, 2]
    assert (prof["dram_read_lines"], prof["dram_write_lines"]) == (2, 1)
    by_id = {b["id"]: b for b in prof["blocks"]}
    assert by_id[0] == {"id": 0, "vaddr": 0x400000, "n_insns": 2, "bytes": "0004009121040091",
                        "execs": 5, "dram_lines": 2, "accesses": 10}
    assert by_id[1]["execs"] == 9


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="needs qemu-user and gcc-aarch64-linux-gnu")
def test_plugin_counts_a_known_loop(tmp_path):
    plugin = tmp_path / "tb_profile.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(plugin), str(PLUGIN)], check=True)
    binary = tmp_path / "selfcheck"
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", "-o", str(binary),
                    str(PLUGIN.with_name("selfcheck.c"))], check=True)
    totals = {}
    for n in (1000, 4000):
        out = tmp_path / f"records-{n}.txt"
        subprocess.run(["qemu-aarch64", "-cpu", "cortex-a72", "-plugin", f"{plugin},out={out},from=1",
                        "-d", "plugin", str(binary), str(n)], check=True, capture_output=True)
        text = out.read_text()
        marks = {int(l.split()[1]): int(l.split()[2]) for l in text.splitlines() if l.startswith("mark")}
        mems = {int(l.split()[1]): [int(v) for v in l.split()[2:]] for l in text.splitlines() if l.startswith("mem")}
        totals[n] = marks[2] - marks[1]
        assert mems[1] == [0, 0, 0, 0, 0]  # the simulation starts at marker 1
        # the loop (subs x9, x9, #1; add x10, x10, #1; b.ne) is one block of its own
        assert "290500f14a050091c1ffff54" in {l.split()[4] for l in text.splitlines() if l.startswith("def")}
    assert totals[4000] - totals[1000] == 3 * 3000


def _entry(model, cpu, core_ms, memory_ms, insns):
    return {"model": model, "variant": "paper", "setting": "default", "size": 224, "cpu": cpu, "clock_ghz": 1.5,
            "instructions": insns, "ipc": 1.5, "core_cycles": core_ms * 1.5e6, "core_ms": core_ms,
            "memory_ms": memory_ms, "estimate_ms": max(core_ms, memory_ms), "additive_ms": core_ms + memory_ms,
            "dram_read_mb": 10.0, "dram_write_mb": 1.0, "dram_mb": 11.0, "bound": "compute",
            "memory_bound_share": 0.1, "misses": {"L1D": 1000, "L2": 100},
            "sensitivity": {"half_bandwidth_ms": 2.0, "double_bandwidth_ms": 1.0},
            "functions": [{"library": "lce", "function": "f", "estimate_ms": 1.0, "core_ms": 1.0, "dram_mb": 0.1,
                           "instructions": 10}]}


def test_ratios_calibration_and_markdown(tmp_path):
    entries = [_entry("XNORAlexNet", "cortex-a72", 20.0, 5.0, 70e6), _entry("AlexNet", "cortex-a72", 200.0, 80.0, 430e6),
               _entry("QuickNet", "cortex-a72", 30.0, 10.0, 80e6)]
    (ratio,) = cycles.ratios(entries)
    assert ratio["by_instructions"] == pytest.approx(430 / 70)
    assert ratio["by_estimate"] == pytest.approx(10.0)
    (calibration,) = cycles.calibrate(entries)
    assert calibration["error"] == pytest.approx(30 / 45 - 1)
    result = {"commands": ["python bench/cycles.py"], "date": "today", "qemu": "qemu", "llvm": "14",
              "mca_models": {cpu: {"mcpu": cpu, "resolves_to": "A57", "note": ""} for cpu in cycles.CORES},
              "ignored": cycles.IGNORED, "entries": entries, "ratios": [ratio], "calibration": [calibration]}
    text = cycles.markdown(result)
    assert text.startswith(cycles.SECTION) and "10.00×" in text and "-33%" in text
    cycles.chart(result, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0
