"""Cycle estimate for the emulated arm64 target: instructions are not time.

For one flatbuffer on one qemu CPU model (`cortex-a72` = Raspberry Pi 4, `cortex-a76` = Pi 5),
a steady inference (1 thread) is run under our TCG plugin `bench/qemu_plugin/tb_profile.c`, which
records every translation block's bytes and its executions in the steady phase, and runs every
load and store through an LRU set-associative cache hierarchy of the named core. Then:

- core cycles = sum over blocks of (steady-state cycles per execution, from `llvm-mca` on the
  block's instructions decoded by `llvm-mc`) x executions;
- memory cycles = DRAM lines x 64 bytes / sustained DRAM bandwidth x core clock;
- estimate = sum over blocks of max(core cycles, memory cycles) of that block (a per-block
  roofline: a block streaming weights from DRAM overlaps its arithmetic with the transfer, but
  a compute-bound layer and a memory-bound one do not overlap each other). Both parts are
  reported, so a reader sees which bound a model sits on, and by how much.

    python bench/cycles.py                     # the four zoo nets + QuickNet, both cores
    python bench/cycles.py --quick             # XNORAlexNet vs AlexNet at 67², cortex-a72 (minutes)
    python bench/cycles.py --models XNORAlexNet AlexNet --cpus cortex-a72
    python bench/cycles.py --from-json bench/results/cycles.json   # only the notes and chart

Writes bench/results/cycles.json (cycles-quick.json), bench/results/cycles.png and
bench/cycles_notes.md (a section to paste into BENCHMARKS.md). What the model ignores is listed
in the notes (and in `IGNORED` below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import arm64  # noqa: E402  (bench/arm64.py: flatbuffers, target, run_one)

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = RESULTS / "cache"
PLUGIN_SOURCE = BENCH / "qemu_plugin" / "tb_profile.c"
NOTES = BENCH / "cycles_notes.md"
SECTION = "## ARM (emulated aarch64): estimated cycles"
LINE = 64


# -- the cores ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Core:
    """A Raspberry Pi core: its caches (the plugin's `caches=` argument), the llvm-mca model
    that stands in for it, its clock and its sustained DRAM bandwidth (one core streaming)."""

    cpu: str            # qemu -cpu
    board: str
    mca_cpu: str        # llvm-mca -mcpu (LLVM 14's scheduling model; see MCA_MODELS)
    caches: str         # size:ways[/size:ways...], 64-byte lines, innermost first
    clock_ghz: float
    dram_gbs: float
    sources: str
    # a second llvm-mca model, to bracket a core that LLVM 14 has no model of its own for
    mca_alt: str | None = None
    mca_alt_note: str = ""


CORES = {
    "cortex-a72": Core(
        "cortex-a72", "Raspberry Pi 4 (BCM2711, 4x Cortex-A72)", "cortex-a72",
        "32768:2/1048576:16", 1.5, 4.0,
        "Caches: Arm's Cortex-A72 TRM (L1D 32 KB 2-way, 64-byte lines; L2 16-way) and Raspberry Pi's "
        "BCM2711 documentation (1 MB L2 shared by the four cores). Clock 1.5 GHz, the clock of LCE's "
        "published figures (boards from 2020 on run at 1.8 GHz: see the sensitivity lines). DRAM: "
        "LPDDR4-3200 on a 32-bit bus (12.8 GB/s peak); sbc-bench's published Pi 4 B runs at 1.5 GHz "
        "(github.com/ThomasKaiser/sbc-bench, results/Sorted-Results.md) measure tinymembench memcpy at "
        "2.46-2.55 GB/s (each byte read and written: ~5 GB/s of traffic) and memset at 3.2-3.4 GB/s "
        "(writes only); 4.0 GB/s of reads + write-backs is assumed."),
    "cortex-a76": Core(
        "cortex-a76", "Raspberry Pi 5 (BCM2712, 4x Cortex-A76)", "cortex-a76",
        "65536:4/524288:8/2097152:16", 2.4, 10.0,
        "Caches: Arm's Cortex-A76 TRM (L1D 64 KB 4-way, 64-byte lines; private L2 8-way) and Raspberry "
        "Pi's Pi 5 product brief (512 KB L2 per core, 2 MB shared L3; 16-way, as in Arm's DynamIQ shared "
        "unit). Clock 2.4 GHz. DRAM: LPDDR4X-4267 on a 32-bit bus (17 GB/s peak); no single-core "
        "measurement was checked here, so 10 GB/s is an assumption (the sensitivity lines show half "
        "and double).",
        "tsv110",
        "The second model is TSV110 (HiSilicon TaiShan v110, an A76-class 4-wide Armv8.2 core with dot "
        "product): two 128-bit FMLA and two loads per cycle like the A76, but one ASIMD integer op "
        "(EOR, CNT) per cycle where the A76 has two. The A57 model is the reverse (one 128-bit FMLA and "
        "one load per cycle, two ASIMD integer ops). So the A57 model overprices float GEMMs on an A76 "
        "and TSV110 overprices binary ones: the A76's float ÷ binary ratio should lie between the two columns."),
}

# Which LLVM 14 scheduling model each -mcpu resolves to (AArch64.td in LLVM 14: cortex-a57,
# -a72, -a73, -a75, -a76, -a77, -a78, neoverse-n1 all use CortexA57Model; neither an A72 nor an
# A76/N1 model of its own exists before LLVM 16/17). Checked at run time by `mca_model_check`.
MCA_MODELS = {"cortex-a72": "CortexA57Model (A72 is an A57 successor: same 3-wide decode, similar pipes)",
              "cortex-a76": "CortexA57Model (no A76/Neoverse-N1 model in LLVM 14: a 3-wide A57 stands in "
                            "for a 4-wide A76, so its core cycles are pessimistic)"}

IGNORED = [
    "branch prediction (every block is costed as if its branches were predicted) and the "
    "front end (instruction cache, fetch); block boundaries (llvm-mca costs each block as a loop of "
    "itself, so dependencies across different blocks are not seen)",
    "load latency beyond an L1 hit in the core cycles (llvm-mca assumes L1 hits); L1 and L2 "
    "misses that hit in the next level cost nothing: only DRAM traffic costs time",
    "TLBs and page walks (the cache is indexed by guest virtual addresses), hardware prefetchers "
    "(which hide latency, not bandwidth: the model assumes bandwidth, not latency, bounds DRAM)",
    "the out-of-order overlap of memory and compute beyond a block (per-block max), DRAM "
    "bank/page effects, writes and reads sharing the bus alike",
    "frequency scaling and thermal throttling, the OS (interrupts, page faults), other cores "
    "and the other processes on the board",
]


def log(message: str) -> None:
    print(f"[cycles {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- calibration model: QuickNet (larq-zoo v1.0), rebuilt from its published definition --------

QUICKNET = {"QuickNetSmall": ((4, 4, 4, 4), (32, 64, 256, 512)),
            "QuickNet": ((4, 4, 4, 4), (64, 128, 256, 512)),
            "QuickNetLarge": ((6, 8, 12, 6), (64, 128, 256, 512))}
# Published single-thread latencies (ms) of larq-zoo's v1.0 QuickNets (random weights), from LCE's
# README, "Performance" table: "Raspberry Pi 4 Model B 1.5GHz (BCM2711), 1 thread" (github.com/
# larq/compute-engine; QuickNet's also in REFERENCE.md). The same table's Pixel 1 figures (16.8 /
# 25.5 ms) are for a Kryo core, which neither qemu nor llvm-mca models; no Pi 5 / A76 figure exists.
PUBLISHED_MS = {("QuickNetSmall", "cortex-a72"): 27.7, ("QuickNet", "cortex-a72"): 45.0}
PUBLISHED_SOURCE = ("LCE README, Performance table: Raspberry Pi 4 Model B 1.5 GHz (BCM2711), 1 thread, "
                    "lce_benchmark_model (github.com/larq/compute-engine)")


def quicknet(name: str = "QuickNet", size: int = 224):
    """QuickNet as larq-zoo v1.0 defines it (random weights; latency does not depend on them).

    Stem: float 3x3/2 conv (filters/4) + BN + ReLU, float depthwise 3x3/2 + BN, float 1x1 conv
    + BN. Sections of residual blocks (binary 3x3 conv with pad value 1, ReLU, BN, + input); a
    section whose width changes starts with a transition (ReLU, 2x2/1 max-pool, fixed 3x3/2
    depthwise blur, float 1x1 conv, BN). Head: ReLU, global average pool, float dense, softmax.
    """
    import larq as lq
    import tensorflow as tf

    blocks, widths = QUICKNET[name]
    sign = dict(input_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                kernel_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                kernel_constraint=lq.constraints.WeightClip(clip_value=1.25))
    layers = tf.keras.layers
    inputs = tf.keras.Input((size, size, 3))
    x = layers.Conv2D(widths[0] // 4, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(scale=False, center=False)(x)
    x = layers.BatchNormalization()(layers.Conv2D(widths[0], 1, use_bias=False)(x))
    for n_blocks, width in zip(blocks, widths):
        for _ in range(n_blocks):
            if x.shape[-1] != width:
                x = layers.MaxPool2D(2, strides=1)(layers.ReLU()(x))
                x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                           trainable=False)(x)
                x = layers.BatchNormalization()(layers.Conv2D(width, 1, use_bias=False)(x))
            y = lq.layers.QuantConv2D(int(x.shape[-1]), 3, padding="same", pad_values=1.0,
                                      use_bias=False, activation="relu", **sign)(x)
            x = layers.Add()([layers.BatchNormalization()(y), x])
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(x))
    x = layers.Activation("softmax")(layers.Dense(1000)(x))
    return tf.keras.Model(inputs, x, name=name)


def calibration_flatbuffer(name: str = "QuickNet", size: int = 224) -> Path:
    """QuickNet converted by our converter (LCE's MLIR passes), cached like arm64's flatbuffers."""
    import inspect

    digest = hashlib.sha256((arm64._sources_digest() + inspect.getsource(quicknet)).encode()).hexdigest()[:10]
    path = CACHE / f"{name}-{size}-calibration-{digest}.tflite"
    if path.exists():
        return path
    import numpy as np
    import tensorflow as tf

    import xnor_keras  # noqa: F401  (sets up tf-keras)
    from xnor_keras.convert import convert
    from xnor_keras.testing_utils import calibrate_batchnorm

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model = quicknet(name, size)
    x = np.random.default_rng(0).uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    calibrate_batchnorm(model, x)
    flatbuffer = convert(model)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(flatbuffer)
    tmp.replace(path)
    log(f"converted {name} {size}²: {len(flatbuffer) / 1e6:.1f} MB")
    return path


# -- the plugin and the guest run ---------------------------------------------------------

def build_plugin() -> Path:
    """Compiles tb_profile.c with the host gcc, once per source version (arm64.py's builder)."""
    return arm64.build_plugin(PLUGIN_SOURCE)


def profile(target, plugin: Path, library: Path, flatbuffer: Path, core: Core, kernel: str,
            use_xnnpack: bool) -> tuple[dict, Path]:
    """One guest run (one steady invocation after the first) under tb_profile, cached by the
    flatbuffer, the setting, the core and the plugin. Returns (arm64's run dict, records folder)."""
    key = hashlib.sha256(f"{flatbuffer.name}|{kernel}|{use_xnnpack}|{core.cpu}|{core.caches}|{plugin.name}|"
                         f"{library.name}".encode()).hexdigest()[:12]
    keep = CACHE / "cycles" / f"{flatbuffer.stem}-{core.cpu}-{key}"
    if (keep / "run.json").exists():
        return json.loads((keep / "run.json").read_text()), keep
    log(f"emulating {flatbuffer.name} on {core.cpu} ({arm64.setting_name(kernel, use_xnnpack)}) with caches "
        f"{core.caches}")
    run = arm64.run_one(target, plugin, library, flatbuffer, kernel, use_xnnpack, 1,
                        plugin_args=f",caches={core.caches},from={arm64.MODEL_LOADED}", keep_dir=keep)
    (keep / "run.json").write_text(json.dumps(run))
    log(f"  {run['steady'][-1] / 1e6:.1f} M instructions per steady inference ({run['wall_s']:.0f} s)")
    return run, keep


def parse_profile(text: str, phase: int = arm64.STEADY) -> dict:
    """tb_profile's records -> the blocks executed in `phase` (the dump with that label) and the
    cache counters between the previous marker and it."""
    defs: dict[int, tuple[int, int, str]] = {}
    mems: dict[int, list[int]] = {}
    execs: dict[int, tuple[int, int, int]] = {}
    order: list[int] = []
    current = None
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "def":
            bid, vaddr, n, data = rest.split()
            defs[int(bid)] = (int(vaddr, 16), int(n), data)
        elif kind == "mem":
            values = [int(v) for v in rest.split()]
            mems[values[0]] = values[1:]
            order.append(values[0])
        elif kind == "dump":
            current = int(rest)
        elif kind == "bx" and current == phase:
            bid, n, lines, acc = (int(v) for v in rest.split())
            execs[bid] = (n, lines, acc)
    previous = order[order.index(phase) - 1]
    after, before = mems[phase], mems[previous]
    delta = [a - b for a, b in zip(after, before)]
    blocks = [{"id": bid, "vaddr": defs[bid][0], "n_insns": defs[bid][1], "bytes": defs[bid][2],
               "execs": n, "dram_lines": lines, "accesses": acc} for bid, (n, lines, acc) in execs.items()]
    return {"blocks": blocks, "accesses": delta[0], "misses": delta[1:-2],
            "dram_read_lines": delta[-2], "dram_write_lines": delta[-1]}


# -- block costs: llvm-mc decodes, llvm-mca schedules ----------------------------------------

MCA_ITERATIONS = 200
_REGION = re.compile(r"^\[\d+\] Code Region - (\S+)\s*$")


def decode(words: list[str], mcpu: str) -> dict[str, str | None]:
    """32-bit instruction words (8 hex digits, little-endian byte order as in memory) -> their
    assembly text by `llvm-mc --disassemble` (None: not a valid encoding for `mcpu`)."""
    unique = sorted(set(words))
    lines = [" ".join(f"0x{w[i:i + 2]}" for i in range(0, 8, 2)) for w in unique]
    result = subprocess.run(["llvm-mc", "--disassemble", "-triple=aarch64", f"-mcpu={mcpu}"],
                            input="\n".join(lines) + "\n", capture_output=True, text=True)
    invalid = {int(m.group(1)) - 1 for m in re.finditer(r"<stdin>:(\d+):\d+: warning: invalid instruction encoding",
                                                        result.stderr)}
    texts = [t.strip() for t in result.stdout.splitlines() if t.strip() and t.strip() != ".text"]
    valid = [w for i, w in enumerate(unique) if i not in invalid]
    if len(texts) != len(valid):
        raise RuntimeError(f"llvm-mc decoded {len(texts)} of {len(valid)} valid words; cannot align them")
    return {**{w: None for w in unique}, **dict(zip(valid, texts))}


def parse_mca(text: str) -> dict[str, float]:
    """llvm-mca's summary view per code region -> {region name: cycles per iteration}."""
    costs: dict[str, float] = {}
    name, iterations = None, None
    for line in text.splitlines():
        match = _REGION.match(line)
        if match:
            name, iterations = match.group(1), None
        elif line.startswith("Iterations:"):
            iterations = int(line.split()[1])
        elif line.startswith("Total Cycles:") and name is not None and iterations:
            costs[name] = int(line.split()[2]) / iterations
            name = None
    return costs


def _plain_branch(insn: str) -> str:
    """llvm-mca gives calls a 100-cycle latency (it does not follow them): cost `bl`/`blr` as
    the plain branches `b`/`br` they are to the core (the callee's blocks are costed apart)."""
    mnemonic, _, rest = insn.partition("\t")
    return {"bl": "b", "blr": "br"}.get(mnemonic, mnemonic) + (f"\t{rest}" if rest else "")


def mca(regions: dict[str, list[str]], mcpu: str, iterations: int = MCA_ITERATIONS,
        mattr: str | None = None) -> dict[str, float]:
    """Cycles per iteration of each region (a block run back to back `iterations` times), by one
    llvm-mca run. An instruction llvm-mca cannot schedule is replaced by a `nop` (its name is
    logged) and the batch rerun."""
    replaced: set[str] = set()
    while True:
        source = []
        for name, insns in regions.items():
            source.append(f"# LLVM-MCA-BEGIN {name}")
            source += [("nop" if insn in replaced else _plain_branch(insn)) for insn in insns]
            source.append("# LLVM-MCA-END")
        result = subprocess.run(["llvm-mca", "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={iterations}",
                                 *([f"-mattr={mattr}"] if mattr else []),
                                 "-instruction-info=false", "-resource-pressure=false", "-"],
                                input="\n".join(source) + "\n", capture_output=True, text=True)
        if result.returncode == 0:
            return parse_mca(result.stdout)
        bad = re.search(r"<stdin>:(\d+):\d+: error", result.stderr)
        unsupported = re.search(r"note: instruction:\s*(.+)", result.stderr)
        if bad:
            insn = source[int(bad.group(1)) - 1].strip()
        elif unsupported:
            insn = unsupported.group(1).strip()
        else:
            raise RuntimeError(f"llvm-mca failed:\n{result.stderr[-2000:]}")
        if insn in replaced or insn == "nop":
            raise RuntimeError(f"llvm-mca failed again on {insn!r}:\n{result.stderr[-2000:]}")
        log(f"llvm-mca ({mcpu}) cannot schedule {insn!r}: costed as a nop")
        replaced.add(insn)


def block_costs(blocks: list[dict], mcpu: str, cache_file: Path | None = None, batch: int = 400, *,
                decode_cpu: str | None = None, mattr: str | None = None) -> dict[str, float]:
    """{block bytes: cycles per execution} for every distinct block, cached in `cache_file`.
    The bytes are decoded for `decode_cpu` (default `mcpu`) and costed by `mcpu`'s model."""
    cache = json.loads(cache_file.read_text()) if cache_file and cache_file.exists() else {}
    todo = sorted({b["bytes"] for b in blocks} - set(cache))
    if todo:
        words = {data: [data[i:i + 8] for i in range(0, len(data), 8)] for data in todo}
        texts = decode([w for ws in words.values() for w in ws], decode_cpu or mcpu)
        undecodable = 0
        regions = {}
        for i, data in enumerate(todo):
            insns = []
            for w in words[data]:
                if texts[w] is None:
                    undecodable += 1
                    insns.append("nop")  # what qemu runs is valid: this is llvm-mc's gap, costed 1 slot
                else:
                    insns.append(texts[w])
            regions[f"b{i}"] = insns
        if undecodable:
            log(f"{undecodable} instruction words llvm-mc cannot decode for {mcpu}: costed as nops")
        names = list(regions)
        started = time.time()
        for start in range(0, len(names), batch):
            part = {n: regions[n] for n in names[start:start + batch]}
            costs = mca(part, mcpu, mattr=mattr)
            for n in part:
                cache[todo[int(n[1:])]] = costs[n]
        log(f"llvm-mca ({mcpu}): {len(todo)} blocks in {time.time() - started:.0f} s")
        if cache_file:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache))
    return cache


# -- the estimate ---------------------------------------------------------------------------

def estimate(run: dict, records: Path, core: Core, library: Path, *, top: int = 8) -> dict:
    """The cycle estimate of one steady inference from tb_profile's records."""
    prof = parse_profile((records / "records.txt").read_text())
    costs = block_costs(prof["blocks"], core.mca_cpu, CACHE / f"mca-{core.mca_cpu}-llvm14.json")
    line_cycles = LINE / (core.dram_gbs * 1e9) * core.clock_ghz * 1e9  # one 64-byte line at full bandwidth
    address_map = arm64.AddressMap((records / "maps.txt").read_text(), str(library))
    core_cycles = memory_cycles = roofline = insns = 0.0
    by_function: dict[tuple[str, str], list[float]] = {}
    for b in prof["blocks"]:
        c = costs[b["bytes"]] * b["execs"]
        mem = b["dram_lines"] * line_cycles
        core_cycles += c
        memory_cycles += mem
        roofline += max(c, mem)
        insns += b["n_insns"] * b["execs"]
        entry = by_function.setdefault(address_map.locate(b["vaddr"]), [0.0, 0.0, 0.0, 0.0])
        entry[0] += max(c, mem)
        entry[1] += c
        entry[2] += b["dram_lines"] * LINE
        entry[3] += b["n_insns"] * b["execs"]
    def roofline_ms(bandwidth_factor: float, clock_ghz: float) -> float:
        # core cycles do not change with the clock; a DRAM line costs more cycles at a higher clock
        per_line = LINE / (core.dram_gbs * bandwidth_factor * 1e9) * clock_ghz * 1e9
        return sum(max(costs[b["bytes"]] * b["execs"], b["dram_lines"] * per_line)
                   for b in prof["blocks"]) / (clock_ghz * 1e6)

    sensitivity = {"half_bandwidth_ms": roofline_ms(0.5, core.clock_ghz),
                   "double_bandwidth_ms": roofline_ms(2.0, core.clock_ghz)}
    if core.cpu == "cortex-a72":
        sensitivity["at_1.8_ghz_ms"] = roofline_ms(1.0, 1.8)
    dram_lines = prof["dram_read_lines"] + prof["dram_write_lines"]
    attributed = sum(b["dram_lines"] for b in prof["blocks"])
    if attributed != dram_lines:
        log(f"warning: {attributed} DRAM lines attributed to blocks, {dram_lines} counted")
    clock = core.clock_ghz * 1e6  # cycles per ms
    alt = {}
    if core.mca_alt:
        alt_costs = block_costs(prof["blocks"], core.mca_alt, CACHE / f"mca-{core.mca_alt}-for-{core.cpu}-llvm14.json",
                                decode_cpu=core.mca_cpu, mattr="+dotprod")
        alt_core = sum(alt_costs[b["bytes"]] * b["execs"] for b in prof["blocks"])
        alt_roofline = sum(max(alt_costs[b["bytes"]] * b["execs"], b["dram_lines"] * line_cycles)
                           for b in prof["blocks"])
        # the core has at least the resources of each model (width, pipes): per block, the cheaper one
        both = [min(costs[b["bytes"]], alt_costs[b["bytes"]]) * b["execs"] for b in prof["blocks"]]
        both_roofline = sum(max(c, b["dram_lines"] * line_cycles) for c, b in zip(both, prof["blocks"]))
        alt = {"mca_cpu": core.mca_alt, "core_ms": alt_core / clock, "estimate_ms": alt_roofline / clock,
               "additive_ms": (alt_core + memory_cycles) / clock,
               "min_core_ms": sum(both) / clock, "min_estimate_ms": both_roofline / clock}
    ranked = sorted(by_function.items(), key=lambda kv: -kv[1][0])[:top]
    hot = sorted(prof["blocks"], key=lambda b: -max(costs[b["bytes"]] * b["execs"], b["dram_lines"] * line_cycles))[:5]
    words = [[b["bytes"][i:i + 8] for i in range(0, len(b["bytes"]), 8)] for b in hot]
    texts = decode([w for ws in words for w in ws], core.mca_cpu) if hot else {}
    hot_blocks = [{"vaddr": hex(b["vaddr"]), "function": address_map.locate(b["vaddr"])[1],
                   "n_insns": b["n_insns"], "executions": b["execs"], "cycles_per_execution": costs[b["bytes"]],
                   "dram_lines": b["dram_lines"], "share_of_estimate":
                   max(costs[b["bytes"]] * b["execs"], b["dram_lines"] * line_cycles) / roofline,
                   "disassembly": [texts[w] or f".inst 0x{w[6:8]}{w[4:6]}{w[2:4]}{w[0:2]}" for w in ws]}
                  for b, ws in zip(hot, words)]
    return {
        "instructions": run["steady"][-1],
        "instructions_in_blocks": int(insns),
        "distinct_blocks": len(prof["blocks"]),
        "core_cycles": core_cycles,
        "ipc": insns / core_cycles if core_cycles else 0.0,
        "accesses": prof["accesses"],
        "misses": dict(zip(["L1D", "L2", "L3"][:len(prof["misses"])], prof["misses"])),
        "dram_read_mb": prof["dram_read_lines"] * LINE / 1e6,
        "dram_write_mb": prof["dram_write_lines"] * LINE / 1e6,
        "dram_mb": dram_lines * LINE / 1e6,
        "memory_cycles": memory_cycles,
        "estimate_cycles": roofline,
        "additive_cycles": core_cycles + memory_cycles,
        "core_ms": core_cycles / clock,
        "memory_ms": memory_cycles / clock,
        "estimate_ms": roofline / clock,
        "additive_ms": (core_cycles + memory_cycles) / clock,
        "bound": "memory" if memory_cycles > core_cycles else "compute",
        # share of the estimate spent in blocks whose DRAM time exceeds their core time
        "memory_bound_share": sum(max(costs[b["bytes"]] * b["execs"], b["dram_lines"] * line_cycles)
                                  for b in prof["blocks"]
                                  if b["dram_lines"] * line_cycles > costs[b["bytes"]] * b["execs"]) / roofline,
        "sensitivity": sensitivity,
        "alt_model": alt,
        "hot_blocks": hot_blocks,
        "functions": [{"library": g, "function": f, "estimate_ms": v[0] / clock, "core_ms": v[1] / clock,
                       "dram_mb": v[2] / 1e6, "instructions": int(v[3])} for (g, f), v in ranked],
    }


@dataclass(frozen=True)
class Job:
    model: str
    variant: str
    kernel: str
    use_xnnpack: bool
    size: int

    @property
    def setting(self) -> str:
        return arm64.setting_name(self.kernel, self.use_xnnpack)

    def flatbuffer(self) -> Path:
        if self.model in QUICKNET:
            return calibration_flatbuffer(self.model, self.size)
        return arm64.convert_flatbuffer(self.model, self.size, self.variant)


# The binary nets in their best form on a Pi (pad1+int8, LCE's default kernel: arm64.py's
# headline ratios), the float twins at their best (XNNPACK), QuickNet as LCE benchmarks it.
FULL_JOBS = [Job("XNORAlexNet", "pad1+int8", "default", False, 224), Job("AlexNet", "paper", "default", True, 224),
             Job("XNORResNet18", "pad1+int8", "default", False, 224), Job("ResNet18", "paper", "default", True, 224)]
CALIBRATION_JOBS = [Job("QuickNet", "calibration", "default", False, 224),
                    Job("QuickNet", "calibration", "default", True, 224),
                    Job("QuickNetSmall", "calibration", "default", False, 224)]
QUICK_JOBS = [Job("XNORAlexNet", "pad1+int8", "default", False, 67), Job("AlexNet", "paper", "default", True, 67)]


def mca_model_check() -> dict[str, str]:
    """{-mcpu: the scheduling model llvm-mca resolves it to}, by its resource names."""
    found = {}
    for mcpu in sorted({c.mca_cpu for c in CORES.values()} | {"cortex-a57"}):
        out = subprocess.run(["llvm-mca", "-mtriple=aarch64", f"-mcpu={mcpu}", "-iterations=1", "-"],
                             input="add x0, x0, #1\n", capture_output=True, text=True).stdout
        units = re.findall(r"-\s+(\w+?)Unit", out)
        found[mcpu] = units[0] if units else "?"
    return found


def ratios(entries: list[dict]) -> list[dict]:
    """float twin ÷ binary net, by instructions and by estimated time, per core."""
    out = []
    for e in entries:
        twin = arm64.FLOAT_TWIN.get(e["model"])
        for f in entries:
            if f["model"] == twin and f["cpu"] == e["cpu"] and f["size"] == e["size"]:
                out.append({"binary": e["model"], "float": twin, "cpu": e["cpu"], "size": e["size"],
                            "by_instructions": f["instructions"] / e["instructions"],
                            "by_core_cycles": f["core_cycles"] / e["core_cycles"],
                            "by_estimate": f["estimate_ms"] / e["estimate_ms"],
                            "by_additive": f["additive_ms"] / e["additive_ms"],
                            **({"by_estimate_alt": f["alt_model"]["estimate_ms"] / e["alt_model"]["estimate_ms"],
                                "by_estimate_min": f["alt_model"]["min_estimate_ms"] / e["alt_model"]["min_estimate_ms"],
                                "alt_mca_cpu": e["alt_model"]["mca_cpu"]} if e.get("alt_model") else {})})
    return out


def arm64_counts(entries: list[dict]) -> list[dict]:
    """The same flatbuffer and setting counted by bench/arm64.py (insn_count), where it was run."""
    out = []
    for e in entries:
        path = RESULTS / f"arm64-cpu-{e['cpu']}.json"
        if not path.exists():
            continue
        for run in json.loads(path.read_text())["runs"]:
            if (run["model"], run["size"], run["variant"], arm64.setting_name(run["kernel"], run["use_xnnpack"])) == (
                    e["model"], e["size"], e["variant"], e["setting"]):
                out.append({"model": e["model"], "cpu": e["cpu"], "setting": e["setting"],
                            "arm64": run["steady"][-1], "here": e["instructions"]})
    return out


def calibrate(entries: list[dict]) -> list[dict]:
    out = []
    for e in entries:
        published = PUBLISHED_MS.get((e["model"], e["cpu"]))
        if published:
            out.append({"model": e["model"], "cpu": e["cpu"], "board": CORES[e["cpu"]].board,
                        "clock_ghz": e["clock_ghz"],
                        "published_ms": published, "estimate_ms": e["estimate_ms"], "core_ms": e["core_ms"],
                        "additive_ms": e["additive_ms"],
                        "error": e["estimate_ms"] / published - 1,
                        # what each L1D miss would have to cost (an L2 hit's stall, which the estimate
                        # leaves out) to close the gap: a consistency check across the calibration models
                        "implied_cycles_per_l1d_miss": (published - e["estimate_ms"]) * e["clock_ghz"] * 1e6
                        / e["misses"]["L1D"],
                        "error_additive": e["additive_ms"] / published - 1,
                        "setting": e["setting"], "source": PUBLISHED_SOURCE})
    return out


def measure(jobs: list[Job], cpus: list[str], previous: list[dict] | None = None) -> list[dict]:
    """Runs (or reuses from the cache) every job on every core; returns one entry per pair."""
    from xnor_lite import build
    from xnor_lite.emulate import Arm64Target

    plugin = build_plugin()
    flatbuffers = {job: job.flatbuffer() for job in jobs}  # TensorFlow first, then emulation
    entries = list(previous or [])
    for cpu in cpus:
        core = CORES[cpu]
        target = Arm64Target(cpu=cpu, log=log).setup()
        library = build.build_library("aarch64", out_dir=target.cache_dir, keep_symbols=True, log=log)
        for job in jobs:
            run, records = profile(target, plugin, library, flatbuffers[job], core, job.kernel, job.use_xnnpack)
            entry = {"model": job.model, "variant": job.variant, "setting": job.setting, "size": job.size,
                     "cpu": cpu, "board": core.board, "mca_cpu": core.mca_cpu, "clock_ghz": core.clock_ghz,
                     "dram_gbs": core.dram_gbs, "caches": core.caches,
                     "flatbuffer_mb": flatbuffers[job].stat().st_size / 1e6, "emulation_s": run["wall_s"],
                     **estimate(run, records, core, library)}
            entries = [e for e in entries if (e["model"], e["variant"], e["setting"], e["size"], e["cpu"]) !=
                       (job.model, job.variant, job.setting, job.size, cpu)] + [entry]
            log(f"{job.model} {job.size}² {job.setting} on {cpu}: {entry['instructions'] / 1e6:.1f} M insns, "
                f"core {entry['core_ms']:.1f} ms (IPC {entry['ipc']:.2f}), DRAM {entry['dram_mb']:.1f} MB = "
                f"{entry['memory_ms']:.1f} ms, estimate {entry['estimate_ms']:.1f} ms ({entry['bound']}-bound)")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="XNORAlexNet vs AlexNet at 67² on cortex-a72")
    parser.add_argument("--models", nargs="+", help="among XNORAlexNet AlexNet XNORResNet18 ResNet18 QuickNet")
    parser.add_argument("--cpus", nargs="+", default=None, choices=sorted(CORES))
    parser.add_argument("--from-json", help="only redo the notes and the chart from a results json")
    parser.add_argument("--merge", action="store_true", help="keep the entries of the existing json")
    args = parser.parse_args(argv)
    out = RESULTS / f"cycles{'-quick' if args.quick else ''}.json"
    if args.from_json:  # redo what derives from the entries, then the notes and the chart
        result = json.loads(Path(args.from_json).read_text())
        result.update(ratios=ratios(result["entries"]), calibration=calibrate(result["entries"]),
                      arm64_counts=arm64_counts(result["entries"]))
        Path(args.from_json).write_text(json.dumps(result, indent=1))
        report(result, quick=args.quick)
        return 0
    started = time.time()
    jobs = QUICK_JOBS if args.quick else FULL_JOBS + CALIBRATION_JOBS
    if args.models:
        jobs = [j for j in jobs if j.model in args.models]
    cpus = args.cpus or (["cortex-a72"] if args.quick else ["cortex-a72", "cortex-a76"])
    previous = json.loads(out.read_text()) if args.merge and out.exists() else {}
    entries = measure(jobs, cpus, previous.get("entries"))
    command = " ".join(["python bench/cycles.py", *(argv if argv is not None else sys.argv[1:])])
    qemu = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    mca_version = re.search(r"LLVM version ([\d.]+)", subprocess.run(["llvm-mca", "--version"], capture_output=True,
                                                                     text=True).stdout)
    result = {
        "commands": previous.get("commands", []) + [command],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "elapsed_min": (time.time() - started) / 60,
        "qemu": qemu, "llvm": mca_version.group(1) if mca_version else "?",
        "mca_models": {cpu: {"mcpu": CORES[cpu].mca_cpu, "resolves_to": mca_model_check()[CORES[cpu].mca_cpu],
                             "note": MCA_MODELS[cpu]} for cpu in CORES},
        "cores": {cpu: {k: v for k, v in vars(core).items()} for cpu, core in CORES.items()},
        "combine": "estimate = sum over translation blocks of max(core cycles, DRAM cycles); "
                   "additive = core + DRAM cycles (no overlap) is reported beside it",
        "ignored": IGNORED,
        "entries": entries,
    }
    result["ratios"] = ratios(entries)
    result["calibration"] = calibrate(entries)
    result["arm64_counts"] = arm64_counts(entries)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    report(result, quick=args.quick)
    log(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


def report(result: dict, *, quick: bool) -> None:
    chart(result, RESULTS / f"cycles{'-quick' if quick else ''}.png")
    text = markdown(result, quick=quick)
    (NOTES if not quick else RESULTS / "cycles-quick.md").write_text(text)
    print(text)


def chart(result: dict, path: Path) -> None:
    """Float twin ÷ binary net by instructions, core cycles and estimated time, per core; and
    each model's core and DRAM time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cpus = [c for c in CORES if any(r["cpu"] == c for r in result["ratios"])]
    if not cpus:
        return
    fig, axes = plt.subplots(2, len(cpus), figsize=(6.2 * len(cpus), 8.5), squeeze=False)
    kinds = [("by_instructions", "instructions", "tab:gray"), ("by_core_cycles", "core cycles (llvm-mca)", "tab:blue"),
             ("by_estimate", "estimate (per-block max of core, DRAM)", "tab:green"),
             ("by_additive", "core + DRAM (no overlap)", "tab:olive")]
    for ax, cpu in zip(axes[0], cpus):
        rows = [r for r in result["ratios"] if r["cpu"] == cpu]
        shown = kinds + ([("by_estimate_alt", f"estimate, llvm-mca {rows[0]['alt_mca_cpu']} model", "tab:purple"),
                          ("by_estimate_min", "estimate, cheaper of the two models per block", "tab:cyan")]
                         if "by_estimate_alt" in rows[0] else [])
        width = 0.8 / len(shown)
        for k, (key, label, color) in enumerate(shown):
            xs = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(rows))]
            values = [r[key] for r in rows]
            ax.bar(xs, values, width, label=label, color=color)
            for x, v in zip(xs, values):
                ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{r['float']} ÷ {r['binary']}" for r in rows], fontsize=8)
        ax.set_ylabel("float twin ÷ binary net")
        ax.set_title(f"{cpu} ({CORES[cpu].board.split(' (')[0]}), {rows[0]['size']}², 1 thread", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, max(r[k] for r in rows for k, *_ in shown) * 1.35)
    for ax, cpu in zip(axes[1], cpus):
        entries = [e for e in result["entries"] if e["cpu"] == cpu]
        ys = range(len(entries))
        ax.barh([y - 0.2 for y in ys], [e["core_ms"] for e in entries], 0.4, label="core (llvm-mca)", color="tab:blue")
        ax.barh([y + 0.2 for y in ys], [e["memory_ms"] for e in entries], 0.4, label="DRAM at full bandwidth",
                color="tab:red")
        for y, e in zip(ys, entries):
            ax.text(max(e["core_ms"], e["memory_ms"]), y, f"  estimate {e['estimate_ms']:.1f} ms", va="center",
                    fontsize=7)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([f"{e['model']} · {e['setting']}" for e in entries], fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel(f"ms per inference at {CORES[cpu].clock_ghz} GHz, {CORES[cpu].dram_gbs:g} GB/s (log)")
        ax.set_xlim(right=max(e["core_ms"] for e in entries) * 8)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Emulated aarch64: instructions vs estimated time (llvm-mca per block + simulated caches)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _findings(result: dict) -> list[str]:
    """A plain-language summary, from the numbers."""
    out = []
    by = {(e["model"], e["cpu"]): e for e in result["entries"]}
    for r in result["ratios"]:
        f, b = by[(r["float"], r["cpu"])], by[(r["binary"], r["cpu"])]
        text = (f"- **{r['float']} ÷ {r['binary']} on {r['cpu']}**: {r['by_instructions']:.1f}× by instructions, "
                f"**{r['by_estimate']:.1f}×** by estimated time ({_ms(f['estimate_ms'])} against "
                f"{_ms(b['estimate_ms'])}). IPC {f['ipc']:.2f} for the float twin against {b['ipc']:.2f}; "
                f"DRAM {f['dram_mb']:.0f} against {b['dram_mb']:.0f} MB, {100 * f['memory_bound_share']:.0f}% "
                f"against {100 * b['memory_bound_share']:.0f}% of the time in DRAM-bound blocks.")
        if "by_estimate_alt" in r:
            text += (f" The A57 model overprices an A76's float kernels, so read a range: with the second llvm-mca "
                     f"model {r['by_estimate_alt']:.1f}×, with the cheaper model per block {r['by_estimate_min']:.1f}×.")
        out.append(text)
    for c in result["calibration"]:
        out.append(f"- **Calibration**: {c['model']} ({c['setting']}) on a {c['board'].split(' (')[0]}: estimate "
                   f"{_ms(c['estimate_ms'])}, core + DRAM {_ms(c['additive_ms'])}, published "
                   f"{_ms(c['published_ms'])} ({100 * c['error']:+.0f}% / {100 * c['error_additive']:+.0f}%).")
    return (["**Findings.**", "", *out, ""]) if out else []


def _count_check(result: dict) -> list[str]:
    checks = result.get("arm64_counts") or []
    if not checks:
        return []
    worst = max(abs(c["here"] / c["arm64"] - 1) for c in checks)
    return [f"Instruction counts agree with bench/arm64.py's (insn_count.c) for the same flatbuffers and "
            f"settings ({len(checks)} pairs, largest difference {100 * worst:.3f}%).", ""]


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value >= 1 else f"{value * 1000:,.0f} µs"


def markdown(result: dict, *, quick: bool = False) -> str:
    """The section for BENCHMARKS.md."""
    entries = result["entries"]
    lines = [SECTION, "",
             "Commands: " + "; ".join(f"`{c}`" for c in result["commands"]) + f" (last {result['date']}). "
             f"{result['qemu']}; LLVM {result['llvm']} (`llvm-mc`, `llvm-mca`, Debian bookworm's `llvm`); our "
             "TCG plugin `bench/qemu_plugin/tb_profile.c`.",
             "",
             "**Method.** One steady inference (1 thread, after a first one that warms the caches) runs under "
             "qemu-aarch64 with the `-cpu` of the board's core. The plugin records every translation block "
             "(its instruction bytes and how often it runs) and feeds every guest load and store to an LRU "
             "set-associative cache hierarchy of that core (write-back, write-allocate, 64-byte lines, levels "
             "non-inclusive; exact, not sampled). *Core cycles*: each distinct block, decoded by "
             f"`llvm-mc --disassemble`, is run by `llvm-mca` as a loop of {MCA_ITERATIONS} iterations; its "
             "cycles per iteration × its executions, summed. *DRAM*: last-level misses and dirty write-backs × "
             "64 bytes, at the board's sustained bandwidth (*memory time*). *Estimate* = Σ over blocks of "
             "max(core, DRAM) of that block: a block that streams weights overlaps its arithmetic with the "
             "transfer, but separate layers do not overlap each other. *Core + DRAM* adds the two (no overlap "
             "at all) and is shown beside it; the truth on a real core should lie near the two.",
             "",
             *_findings(result),
             "| core | board | llvm-mca model | caches (L1D / L2 / L3) | clock | DRAM, one core |",
             "|---|---|---|---|---|---|"]
    for cpu, core in CORES.items():
        model = result["mca_models"][cpu]
        caches = " / ".join(f"{int(size) // 1024} KB {ways}-way" for size, ways in
                            (level.split(":") for level in core.caches.split("/")))
        lines.append(f"| `{cpu}` | {core.board} | `-mcpu={model['mcpu']}` → LLVM's {model['resolves_to']} model | "
                     f"{caches} | {core.clock_ghz} GHz | {core.dram_gbs:g} GB/s |")
    lines += ["", "LLVM 14 has no scheduling model of its own for the Cortex-A72, the A76 or the Neoverse N1: "
              "`-mcpu=cortex-a72` and `-mcpu=cortex-a76` both resolve to the Cortex-A57 model (checked by its "
              "resource names). The A57 is the A72's direct predecessor (3-wide decode, two 64-bit-wide FP/ASIMD "
              "pipes, which the A72 keeps), a fair stand-in: the model issues one 128-bit FMLA per cycle "
              "(XNNPACK's hottest AlexNet loop, 64 FMLAs among 86 instructions, is priced at 64 cycles), which "
              "we take to be the A72's rate too (not checked against Arm's A72 optimization guide here). "
              "The 4-wide A76 issues two "
              "128-bit FMLAs and two loads per cycle, so the A57 model overprices its float kernels, not its "
              "binary ones; a second model brackets it (below). On the A76 run XNNPACK reads the root's Pi 4 "
              "`/proc/cpuinfo` (see xnor_lite/emulate.py), so it may pick A72-tuned micro-kernels; the ISA "
              "features come from the emulated CPU. Calls (`bl`, `blr`, which "
              "llvm-mca gives a 100-cycle latency) are costed as plain branches; the few LSE atomics the A57 "
              "model cannot schedule (on the A76 run only) as `nop`s.",
              "", "Sources: " + " ".join(f"*{cpu}*: {core.sources}" for cpu, core in CORES.items()), "",
              *_count_check(result),
             "| model | setting | core | instructions | IPC (llvm-mca) | core time | DRAM read + write | DRAM time "
              "| **estimate** | core + DRAM | bound | time in DRAM-bound blocks |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['model']} {e['size']}² | {e['variant']}, {e['setting']} | {e['cpu']} | "
                     f"{e['instructions'] / 1e6:,.1f} M | {e['ipc']:.2f} | {_ms(e['core_ms'])} | "
                     f"{e['dram_read_mb']:,.1f} + {e['dram_write_mb']:,.1f} MB | {_ms(e['memory_ms'])} | "
                     f"**{_ms(e['estimate_ms'])}** | {_ms(e['additive_ms'])} | {e['bound']} "
                     f"({max(e['core_ms'], e['memory_ms']) / max(min(e['core_ms'], e['memory_ms']), 1e-9):.1f}×) | "
                     f"{100 * e['memory_bound_share']:.0f}% |")
    if result["ratios"]:
        lines += ["", "### Float twin ÷ binary net: instructions against estimated time", "",
                  "| pair | core | by instructions | by core cycles | **by estimate** | by core + DRAM | "
                  "by estimate, second llvm-mca model | by estimate, cheaper model per block |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["ratios"]:
            alt = (f"{r['by_estimate_alt']:.2f}× (`{r['alt_mca_cpu']}`) | {r['by_estimate_min']:.2f}×"
                   if "by_estimate_alt" in r else " |")
            lines.append(f"| {r['float']} ÷ {r['binary']} ({r['size']}²) | {r['cpu']} | {r['by_instructions']:.2f}× | "
                         f"{r['by_core_cycles']:.2f}× | **{r['by_estimate']:.2f}×** | {r['by_additive']:.2f}× | {alt} |")
    bracketed = [e for e in entries if e.get("alt_model")]
    if bracketed:
        note = next(CORES[e["cpu"]].mca_alt_note for e in bracketed)
        lines += ["", "### Bracketing the Cortex-A76 with a second llvm-mca model", "", note, "",
                  "| model | setting | core | core time: A57 model | core time: second model | core time: cheaper "
                  "per block | estimate: A57 | estimate: second | estimate: cheaper per block |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in bracketed:
            a = e["alt_model"]
            lines.append(f"| {e['model']} | {e['setting']} | {e['cpu']} | {_ms(e['core_ms'])} | {_ms(a['core_ms'])} "
                         f"(`{a['mca_cpu']}`) | {_ms(a['min_core_ms'])} | {_ms(e['estimate_ms'])} | "
                         f"{_ms(a['estimate_ms'])} | {_ms(a['min_estimate_ms'])} |")
        lines += ["", "*Cheaper per block*: an A76 has at least the issue width and pipes of either model, so each "
                  "block is costed at the lower of its two prices: the best single A76 figure here, still "
                  "uncalibrated (A76 latencies, e.g. a 4-cycle FMLA, are shorter than both models')."]
    if result["calibration"]:
        lines += ["", "### Calibration against published latencies", "",
                  "QuickNet (larq-zoo v1.0) rebuilt from its published definition (`cycles.quicknet`, random "
                  "weights; latency does not depend on them), converted by our converter (LCE's passes), run "
                  "like the nets above.", "",
                  "| model | setting | board | published | estimate | error | core + DRAM | error | core alone |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in result["calibration"]:
            lines.append(f"| {c['model']} | {c['setting']} | {c['board'].split(' (')[0]} at {c['clock_ghz']} GHz | "
                         f"{_ms(c['published_ms'])} | {_ms(c['estimate_ms'])} | {100 * c['error']:+.0f}% | "
                         f"{_ms(c['additive_ms'])} | {100 * c['error_additive']:+.0f}% | {_ms(c['core_ms'])} |")
        implied = ", ".join(f"{c['model']} ({c['setting']}) {c['implied_cycles_per_l1d_miss']:.1f}"
                            for c in result["calibration"])
        lines += ["", f"Published figures: {PUBLISHED_SOURCE}. No published Pi 5 (Cortex-A76) latency of a model "
                  "we can rebuild was found, so the A76 estimates are uncalibrated. The estimate leaves out the "
                  "stall of an L1D miss that hits in L2; the stall per L1D miss that would close each gap is "
                  f"{implied} cycles: a few cycles each, less than an L2 hit's full latency, so the gaps are "
                  "of the size that omission (partly hidden by out-of-order execution) would leave. Two models "
                  "of one family on one board are a check, not a fit: no correction is applied."]
    lines += ["", "### Sensitivity of the estimate", ""]
    for e in entries:
        sens = e.get("sensitivity", {})
        parts = [f"half the DRAM bandwidth {_ms(sens['half_bandwidth_ms'])}",
                 f"double {_ms(sens['double_bandwidth_ms'])}"] if sens else []
        if "at_1.8_ghz_ms" in sens:
            parts.append(f"a 1.8 GHz Pi 4 {_ms(sens['at_1.8_ghz_ms'])}")
        if parts:
            lines.append(f"- {e['model']} ({e['setting']}, {e['cpu']}): {_ms(e['estimate_ms'])}; "
                         + ", ".join(parts) + ".")
    lines += ["", "### Where the estimated time goes (top functions)", ""]
    for e in entries:
        total = e["estimate_ms"] or 1
        funcs = "; ".join(f"`{f['function']}` {_ms(f['estimate_ms'])} ({100 * f['estimate_ms'] / total:.0f}%, "
                          f"{f['dram_mb']:.1f} MB DRAM)" for f in e["functions"][:4])
        lines.append(f"- **{e['model']}** ({e['setting']}, {e['cpu']}): {funcs}.")
    lines += ["", "### What the estimate ignores", ""] + [f"- {item}" for item in result["ignored"]]
    lines += ["", f"![instructions vs estimated time](bench/results/cycles{'-quick' if quick else ''}.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
