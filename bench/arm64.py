"""ARM benchmark: guest instructions per inference on the emulated aarch64 target.

Every zoo model is converted at 224² (1000 classes, BatchNorm statistics calibrated on random
inputs), run by LCE 0.16's aarch64 kernels inside stock ai-edge-litert 2.2.0 under
`qemu-aarch64` (`xnor_lite.emulate`), 1 thread, and counted by our own TCG plugin
(`bench/qemu_plugin/insn_count.c`): load, first invocation and steady invocations apart, with
shares per library and per function. The ARM speed figure is float / binary instructions, the
float twin at its best setting. Instructions are not cycles: they ignore memory stalls, SIMD
width and issue rates, so the ratio is a proxy for a Cortex-A's time ratio, not a measurement.

Which CPU: qemu's default `max` has SVE2 and SME with long vectors, and LiteRT 2.2's XNNPACK runs
float GEMMs there as KleidiAI SME kernels (`kai_kernel_matmul_..._sme_mopa`), a handful of
instructions for a tile no Raspberry Pi (nor most phones) has: the float twins take 5-6x fewer
instructions on `max` than on a Cortex-A76 (AlexNet 79.4 against 428.8 M). For a Pi, read `--cpu cortex-a72` (Pi 4) and
`--cpu cortex-a76` (Pi 5: dot-product, no SVE/SME).

    python bench/arm64.py                 # 224², every model and setting (~15 min on 2 cores)
    python bench/arm64.py --quick         # AlexNet 67², ResNet 32² (minutes)
    python bench/arm64.py --models XNORAlexNet AlexNet

Writes bench/results/arm64.json (arm64-quick.json), bench/results/arm64.png and the section
"ARM (emulated aarch64): guest instructions" of BENCHMARKS.md (not with --quick).
Flatbuffers, the plugin and raw records are cached in bench/results/cache/ (git-ignored).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xnor_lite import build  # noqa: E402  (no TensorFlow)
from xnor_lite.library import KERNELS  # noqa: E402

BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
CACHE = RESULTS / "cache"
PLUGIN_SOURCE = BENCH / "qemu_plugin" / "insn_count.c"
GUEST = BENCH / "_arm64_guest.py"
SECTION = "## ARM (emulated aarch64): guest instructions"

# guest labels (see _arm64_guest.py)
STARTED, MARKER_PAIR, RUNTIME_LOADED, MODEL_LOADED, FIRST_INVOKE, STEADY = 1, 2, 10, 20, 30, 100

FLOAT_TWIN = {"XNORAlexNet": "AlexNet", "BWNAlexNet": "AlexNet",
              "XNORResNet18": "ResNet18", "BWNResNet18": "ResNet18"}
FULL_SIZE = 224
QUICK_SIZE = {"AlexNet": 67, "ResNet18": 32}
# (kernel, use_xnnpack)
BINARY_SETTINGS = [("default", False), ("indirect_bgemm", False), ("reference", False), ("default", True)]
FLOAT_SETTINGS = [("default", False), ("default", True)]
# XNOR flatbuffer variants beyond the paper form (pad_values=0, float first/last layers); the
# Sub-models, each converted and measured alone (a sound per-part cost: the same ops on the same
# shapes, plus one input copy): *stem* = input -> pool1 (the float first conv block); *head* =
# fc6_bn -> output (AlexNet's binary fc6, fc7 and float fc8); *last* = the float classifier
# (AlexNet fc8_bn -> output, ResNet post_bn -> output).
XNOR_VARIANTS = ["paper", "pad1", "int8", "pad1+int8", "stem", "stem+int8"]
# BWN: "paper" is the converter's default (exact int8 weights, float convolutions);
# "bwn_int8_full" adds calibrated int8 activations (bwn_weights="int8_full").
BWN_VARIANTS = ["paper", "bwn_int8_full"]
SUBMODELS = {("AlexNet", "stem"): (None, "pool1"), ("ResNet18", "stem"): (None, "pool1"),
             ("AlexNet", "head"): ("fc6_bn", None), ("AlexNet", "last"): ("fc8_bn", None),
             ("ResNet18", "last"): ("post_bn", None)}


def submodel(variant: str) -> str | None:
    """'stem', 'head' or 'last' for a sub-model variant, else None."""
    part = variant.split("+")[0]
    return part if part in ("stem", "head", "last") else None
# functions listed in a run's shares_steady (--top-functions)
STEADY_TOP = 12
GROUPS = {"lce": "op library (LCE ops)", "litert": "LiteRT wheel (builtin ops, ruy, XNNPACK)",
          "libc": "libc/libm", "other": "other (python, numpy, ld.so)"}


def log(message: str) -> None:
    print(f"[arm64 {time.strftime('%H:%M:%S')}] {message}", flush=True)


def family(model: str) -> str:
    return "AlexNet" if "AlexNet" in model else "ResNet18"


# -- plugin ---------------------------------------------------------------------------------

def build_plugin(source_path: Path = PLUGIN_SOURCE) -> Path:
    """Compiles a plugin (default insn_count.c) with the host gcc, once per source version."""
    source = source_path.read_bytes()
    target = CACHE / f"{source_path.stem}-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp.so")
        cmd = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(source_path)]
        log(" ".join(cmd))
        subprocess.run(cmd, check=True)
        tmp.replace(target)
    return target


def check_plugin(plugin: Path) -> str:
    """Runs selfcheck.c (a loop of exactly 3 instructions per iteration between two markers) for two
    iteration counts; the counts must differ by exactly 3 x the difference. Returns a one-line summary."""
    source = PLUGIN_SOURCE.with_name("selfcheck.c")
    binary = CACHE / f"selfcheck-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    if not binary.exists():
        subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", "-o", str(binary), str(source)], check=True)
    counts = {}
    with tempfile.TemporaryDirectory(prefix="arm64-selfcheck-") as tmp:
        for n in (1000, 4000):
            out = Path(tmp) / f"{n}.txt"
            subprocess.run(["qemu-aarch64", "-plugin", f"{plugin},out={out}", "-d", "plugin", str(binary), str(n)],
                           check=True, capture_output=True)
            marks, _ = parse_records(out.read_text())
            counts[n] = marks[2] - marks[1]
    if counts[4000] - counts[1000] != 3 * 3000:
        raise RuntimeError(f"insn_count miscounts a known loop: {counts}")
    return (f"a loop of 3 instructions per iteration: 1,000 and 4,000 iterations counted {counts[1000]:,} and "
            f"{counts[4000]:,} instructions between markers, exactly 9,000 apart")


# -- flatbuffers ----------------------------------------------------------------------------

def _sources_digest() -> str:
    digest = hashlib.sha256()
    for folder in ("xnor_keras/convert", "xnor_keras/zoo"):
        for path in sorted((ROOT / folder).glob("*.py")):
            digest.update(path.read_bytes())
    for name in ("xnor_keras/layers.py", "xnor_keras/quantizers.py"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:10]


def flatbuffer_path(model: str, size: int, variant: str) -> Path:
    return CACHE / f"{model}-{size}-{variant}-{_sources_digest()}.tflite"


def convert_flatbuffer(model: str, size: int, variant: str) -> Path:
    """Converts `model` at size² in `variant` (cached by model, size, variant and sources)."""
    path = flatbuffer_path(model, size, variant)
    if path.exists():
        return path
    import numpy as np
    import tensorflow as tf

    import xnor_keras  # noqa: F401  (sets up tf-keras)
    from xnor_keras import zoo
    from xnor_keras.convert import convert
    from xnor_keras.testing_utils import calibrate_batchnorm

    started = time.time()
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    options = {"pad_values": 1.0} if "pad1" in variant else {}
    keras_model = zoo.get_model(model, input_shape=(size, size, 3), classes=1000, **options)
    x = np.random.default_rng(0).uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    calibrate_batchnorm(keras_model, x)
    if submodel(variant):
        start, end = SUBMODELS[(family(model), submodel(variant))]
        if start is None:
            keras_model = tf.keras.Model(keras_model.input, keras_model.get_layer(end).output)
        else:  # a plain chain of layers (true of the parts named in SUBMODELS)
            names = [layer.name for layer in keras_model.layers]
            x = tf.keras.Model(keras_model.input, keras_model.get_layer(start).input).predict(x, verbose=0)
            inputs = tf.keras.Input(x.shape[1:])
            y = inputs
            for layer in keras_model.layers[names.index(start):]:
                y = layer(y)
            keras_model = tf.keras.Model(inputs, y)
    bwn_full = variant == "bwn_int8_full"
    int8 = "int8" in variant and not bwn_full
    options = {"bwn_weights": "int8_full"} if bwn_full else {}
    flatbuffer = convert(keras_model, int8_float_layers=int8, calibration_data=x if int8 or bwn_full else None,
                         **options)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(flatbuffer)
    tmp.replace(path)
    log(f"converted {model} {size}² {variant}: {len(flatbuffer) / 1e6:.1f} MB in {time.time() - started:.0f} s")
    return path


# -- symbols --------------------------------------------------------------------------------

_SYMBOLS: dict[str, tuple[list[int], list[tuple[int, str]]]] = {}


def _short(name: str) -> str:
    innermost = re.compile(r"<(?!…>)(?:[^<>]|<…>)*>")  # template arguments, innermost first
    while len(name) > 60 and innermost.search(name):
        name = innermost.sub("<…>", name)
    if "(" in name[1:]:
        name = name[:name.index("(", 1)]  # drop the parameter list
    return name[:120]


def symbols(path: str) -> tuple[list[int], list[tuple[int, str]]]:
    """(sorted start addresses, [(size, name)]) of the text symbols of an aarch64 ELF file."""
    if path not in _SYMBOLS:
        starts, entries = [], []
        for flags in ([], ["-D"]):
            out = subprocess.run(["aarch64-linux-gnu-nm", "-C", "-n", "-S", "--defined-only", *flags, path],
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                parts = line.split(" ", 3)
                if len(parts) == 4 and parts[2] in "tTwWi":
                    starts.append(int(parts[0], 16))
                    entries.append((int(parts[1], 16), _short(parts[3])))
            if starts:
                break
        _SYMBOLS[path] = (starts, entries)
    return _SYMBOLS[path]


class AddressMap:
    """Guest addresses -> (library group, function) from the guest's /proc/self/maps."""

    def __init__(self, maps_text: str, library: str):
        self.ranges = []
        bases: dict[str, int] = {}
        for line in maps_text.splitlines():
            parts = line.split(None, 5)
            start, end = (int(v, 16) for v in parts[0].split("-"))
            path = parts[5] if len(parts) == 6 else ""
            offset = int(parts[2], 16)
            if path.startswith("/") and offset == 0:
                bases.setdefault(path, start)
            self.ranges.append((start, end, path))
        self.ranges.sort()
        self.starts = [r[0] for r in self.ranges]
        self.bases = bases
        self.library = os.path.realpath(library)

    def group(self, path: str) -> str:
        name = os.path.basename(path)
        if path and os.path.basename(self.library).replace("-symbols", "") == name.replace("-symbols", ""):
            return "lce"
        # The runtime's code: one extension in ai-edge-litert 1.2.0, a common library (and the
        # C API's libLiteRt) in 2.2.0.
        if name.startswith(("_pywrap_tensorflow_interpreter_wrapper", "libpywrap_litert_common",
                            "libLiteRt.so")):
            return "litert"
        if re.match(r"lib(c|m)\.so", name):
            return "libc"
        return "other"

    def locate(self, vaddr: int) -> tuple[str, str]:
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.ranges[i][1]:
            return "other", "?"
        path = self.ranges[i][2]
        group = self.group(path)
        if group == "other" or path not in self.bases:
            return group, os.path.basename(path) or "[anon]"
        host_file = path
        if group == "lce":
            host_file = self.library  # the same code with its symbol table
        elif not os.path.exists(host_file):
            return group, "?"
        starts, entries = symbols(host_file)
        offset = vaddr - self.bases[path]
        j = bisect.bisect_right(starts, offset) - 1
        if j >= 0 and (entries[j][0] == 0 or offset < starts[j] + entries[j][0]):
            return group, entries[j][1]
        return group, f"{os.path.basename(path)} (no symbol: stripped local code)"


# -- running --------------------------------------------------------------------------------

def parse_records(text: str) -> tuple[dict[int, int], dict[int, dict[int, int]]]:
    marks: dict[int, int] = {}
    dumps: dict[int, dict[int, int]] = {}
    current = None
    for line in text.splitlines():
        kind, *rest = line.split()
        if kind == "tb" and current is not None:
            current[int(rest[0], 16)] = int(rest[1])
        elif kind == "mark":
            marks[int(rest[0])] = int(rest[1])
        elif kind == "dump":
            current = dumps.setdefault(int(rest[0]), {})
    return marks, dumps


def attribute(counts: dict[int, int], address_map: AddressMap, top: int = 12) -> dict:
    groups = {key: 0 for key in GROUPS}
    functions: dict[tuple[str, str], int] = {}
    for vaddr, insns in counts.items():
        group, function = address_map.locate(vaddr)
        groups[group] += insns
        functions[(group, function)] = functions.get((group, function), 0) + insns
    ranked = sorted(functions.items(), key=lambda kv: -kv[1])[:top]
    return {"libraries": groups,
            "functions": [{"library": g, "function": f, "insns": n} for (g, f), n in ranked]}


def run_one(target, plugin: Path, library: Path, flatbuffer: Path, kernel: str, use_xnnpack: bool,
            steady: int, *, plugin_args: str = "", keep_dir: Path | None = None) -> dict:
    """One guest run under `plugin` (insn_count, or a plugin writing the same records, e.g.
    bench/cycles.py's tb_profile with `plugin_args` such as ",caches=..."); `keep_dir` keeps
    the plugin's records (records.txt) and the guest's maps (maps.txt)."""
    with tempfile.TemporaryDirectory(prefix="arm64-bench-") as tmp:
        tmp = Path(tmp)
        request = {"flatbuffer": str(flatbuffer), "library": str(library), "kernel": kernel,
                   "use_xnnpack": use_xnnpack, "num_threads": 1, "steady": steady,
                   "maps": str(tmp / "maps.txt")}
        (tmp / "request.json").write_text(json.dumps(request))
        records = tmp / "records.txt"
        cmd = target.python_command(str(GUEST), str(tmp / "request.json"),
                                    plugin=f"{plugin},out={records}{plugin_args}")
        env = {**target.python_env(), "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
        started = time.time()
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"guest run failed ({result.returncode}):\n{result.stderr[-3000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for name in ("records.txt", "maps.txt"):
                shutil.move(str(tmp / name), str(keep_dir / name))
            tmp = keep_dir
            records = keep_dir / "records.txt"
        marks, dumps = parse_records(records.read_text())
        address_map = AddressMap((tmp / "maps.txt").read_text(), str(library))
    overhead = marks[MARKER_PAIR] - marks[STARTED]
    steady_counts = [marks[STEADY + i] - marks[STEADY + i - 1 if i else FIRST_INVOKE] for i in range(steady)]
    return {
        "kernel": kernel, "use_xnnpack": use_xnnpack,
        "load": marks[MODEL_LOADED] - marks[RUNTIME_LOADED],
        "first_invoke": marks[FIRST_INVOKE] - marks[MODEL_LOADED],
        "steady": steady_counts,
        "marker_overhead": overhead,
        "process_total": max(marks.values()),
        "shares_steady": attribute(dumps[STEADY + steady - 1], address_map, top=STEADY_TOP),
        "shares_first_invoke": attribute(dumps[FIRST_INVOKE], address_map, top=6),
        "shares_load": attribute(dumps[MODEL_LOADED], address_map, top=6),
        "guest": report,
        "wall_s": round(time.time() - started, 1),
    }


def plan(models: list[str], quick: bool) -> list[tuple[str, int, str, list]]:
    """(model, size, variant, settings) for every flatbuffer to measure."""
    jobs = []
    for model in models:
        size = QUICK_SIZE[family(model)] if quick else FULL_SIZE
        if model.startswith("XNOR"):
            for variant in XNOR_VARIANTS:
                if submodel(variant) and (family(model), submodel(variant)) not in SUBMODELS:
                    continue
                settings = BINARY_SETTINGS if variant == "paper" else FLOAT_SETTINGS
                jobs.append((model, size, variant, settings))
        elif model.startswith("BWN"):
            jobs += [(model, size, variant, FLOAT_SETTINGS) for variant in BWN_VARIANTS]
        else:
            jobs.append((model, size, "paper", FLOAT_SETTINGS))
    return jobs


def setting_name(kernel: str, use_xnnpack: bool) -> str:
    return kernel + (" + XNNPACK" if use_xnnpack else "")


# -- analysis and report --------------------------------------------------------------------

def analyse(runs: list[dict]) -> dict:
    def steady(run):
        return run["steady"][-1]

    best_float = {}
    for run in runs:
        if run["model"] in ("AlexNet", "ResNet18") and run["variant"] == "paper":
            if run["model"] not in best_float or steady(run) < steady(best_float[run["model"]]):
                best_float[run["model"]] = run
    ratios = []
    for run in runs:
        twin = FLOAT_TWIN.get(run["model"])
        if twin in best_float and not submodel(run["variant"]):
            ratios.append({"model": run["model"], "variant": run["variant"],
                           "setting": setting_name(run["kernel"], run["use_xnnpack"]),
                           "float_twin": twin,
                           "float_setting": setting_name(best_float[twin]["kernel"], best_float[twin]["use_xnnpack"]),
                           "ratio": steady(best_float[twin]) / steady(run)})
    stems = []
    for run in runs:
        if submodel(run["variant"]):
            whole_variant = "int8" if "int8" in run["variant"] else "paper"
            for whole in runs:
                if (whole["model"], whole["variant"], whole["kernel"], whole["use_xnnpack"]) == (
                        run["model"], whole_variant, run["kernel"], run["use_xnnpack"]):
                    stems.append({"model": run["model"], "variant": whole_variant, "part": submodel(run["variant"]),
                                  "setting": setting_name(run["kernel"], run["use_xnnpack"]),
                                  "stem": steady(run), "whole": steady(whole),
                                  "share": steady(run) / steady(whole)})
    return {"best_float": {k: {"setting": setting_name(v["kernel"], v["use_xnnpack"]), "steady": steady(v)}
                           for k, v in best_float.items()},
            "ratios": ratios, "stems": stems}


def obstacles(runs: list[dict], analysis: dict) -> list[str]:
    """Plain-language lines: for each XNOR model, how far its best run is from the target and
    where its instructions go (first conv block, LCE's ops, LiteRT's float/int8 ops)."""
    targets = {"XNORAlexNet": 9.0, "XNORResNet18": 8.5}
    lines = []
    for model, target in targets.items():
        twin = FLOAT_TWIN[model]
        if twin not in analysis["best_float"]:
            continue
        float_best = analysis["best_float"][twin]["steady"]
        whole = [r for r in runs if r["model"] == model and not submodel(r["variant"])]
        if not whole:
            continue
        budget = float_best / target
        lines.append(f"**{model}** (target ≥ {target}×: at most {m(budget)} per inference against "
                     f"{twin}'s {m(float_best)}):")
        for variant in ("paper", "int8", "pad1+int8"):
            cands = [r for r in whole if r["variant"] == variant]
            if not cands:
                continue
            best = min(cands, key=lambda r: r["steady"][-1])
            total = best["steady"][-1]
            setting = setting_name(best["kernel"], best["use_xnnpack"])
            libs = best["shares_steady"]["libraries"]
            counted = sum(libs.values()) or 1
            lce = libs["lce"] / counted * total
            rest = total - lce
            parts_of = {x["part"]: x for x in analysis["stems"] if x["model"] == model and x["setting"] == setting
                        and x["variant"] == ("int8" if "int8" in variant else "paper")}
            stem = parts_of.get("stem")
            parts = [f"- {variant}, {setting}: {m(total)} = {float_best / total:.2f}×"
                     f" ({'meets' if total <= budget else f'{m(total - budget)} over'} the budget)."
                     f" LCE's ops (binary convs, bit-packing, binary max-pool) {m(lce)} "
                     f"({100 * lce / total:.0f}%); LiteRT's float/int8 ops and the interpreter {m(rest)}"
                     f" ({100 * rest / total:.0f}%)."]
            if stem:
                parts.append(f" The first conv block alone (stem, same setting) costs {m(stem['stem'])} "
                             f"({100 * stem['stem'] / total:.0f}%); were it free, "
                             f"{float_best / max(total - stem['stem'], 1):.2f}×.")
            if "head" in parts_of and "last" in parts_of:
                fc67 = parts_of["head"]["stem"] - parts_of["last"]["stem"]
                parts.append(f" The binary fc6 + fc7 (batch-1 matrix-vector products on LCE's GEMM kernel) cost "
                             f"{m(fc67)} ({100 * fc67 / total:.0f}%), the classifier fc8 "
                             f"{m(parts_of['last']['stem'])} ({100 * parts_of['last']['stem'] / total:.0f}%).")
            elif "last" in parts_of:
                parts.append(f" The float classifier (post BN, pool, fc) costs {m(parts_of['last']['stem'])} "
                             f"({100 * parts_of['last']['stem'] / total:.0f}%).")
            parts.append(f" Only LCE's ops left (every float/int8 op free): {float_best / max(lce, 1):.1f}×.")
            lines.append("".join(parts))
        lines.append("")
    return lines


def size_text(mb: float) -> str:
    return f"{mb:.1f} MB" if mb >= 1 else f"{mb * 1000:.0f} kB"


def m(n: float) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e6 else f"{n / 1e3:,.0f} k"


def chart(runs: list[dict], analysis: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ratio_of = {(r["model"], r["variant"], r["setting"]): r["ratio"] for r in analysis["ratios"]}

    fams = [fam for fam in ("AlexNet", "ResNet18")
            if any(family(r["model"]) == fam and not submodel(r["variant"]) for r in runs)]
    if not fams:
        return
    fig, axes = plt.subplots(1, len(fams), figsize=(6.5 * len(fams), 6.5), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        rows = [r for r in runs if family(r["model"]) == fam and not submodel(r["variant"])]
        labels = [f"{r['model']} {r['variant']} · {setting_name(r['kernel'], r['use_xnnpack'])}" for r in rows]
        values = [r["steady"][-1] / 1e6 for r in rows]
        colors = ["tab:gray" if not r["model"].startswith("XNOR") else
                  ("tab:green" if "int8" in r["variant"] else "tab:blue") for r in rows]
        ax.barh(range(len(rows)), values, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("guest instructions per steady inference (millions, log)")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        for i, (v, r) in enumerate(zip(values, rows)):
            ratio = ratio_of.get((r["model"], r["variant"], setting_name(r["kernel"], r["use_xnnpack"])))
            ax.text(v, i, f" {v:,.1f}" + (f"  (float best ÷ this = {ratio:.1f}×)" if ratio else ""),
                    va="center", fontsize=7)
        ax.set_xlim(right=max(values) * 8)
        size = rows[0]["size"] if rows else ""
        ax.set_title(f"{fam} family, {size}², 1 thread, emulated aarch64")
    fig.suptitle(f"LCE 0.16 on ai-edge-litert {build.LITERT_VERSION} under qemu-aarch64: instructions, not cycles",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict) -> str:
    runs, analysis = result["runs"], result["analysis"]
    commands = result.get("commands") or [result["command"]]
    lines = [SECTION, "",
             f"Command{'s (in order, each later one with --merge)' if len(commands) > 1 else ''}: "
             + "; ".join(f"`{c}`" for c in commands) + f" (last {result['date']}, on {result['host']}).",
             f"Library: `{result['library']}` ({' '.join(f'{k}={v}' for k, v in result['build_info'].items())}); "
             f"runtime ai-edge-litert {build.LITERT_VERSION}; {result['qemu']}; our TCG plugin "
             "`bench/qemu_plugin/insn_count.c` (inline per-translation-block counts, phase markers by a "
             "failing getpriority syscall).",
             "",
             "**Instructions are not cycles.** These are aarch64 instructions the guest executes; they "
             "ignore memory stalls, cache misses, SIMD width and issue rates, so the float/binary ratio is "
             "a proxy for the speed-up on a Cortex-A, not a measurement of it. The count is exact for what "
             "runs (every translation block adds its length when it starts; self-check: "
             f"{result.get('plugin_check', 'not run')}); what runs is deterministic up "
             "to the guest's Python/malloc state: the two steady invocations of one process differ by "
             "~1.4 k instructions, repeated processes by ~100 (≤ 0.001%). Each phase includes one marker "
             f"call ({m(runs[0]['marker_overhead']) if runs else '?'}). Guest CPU: qemu's default `max` "
             "model (it has the dot-product instructions ruy's int8 kernel uses, and SVE/SME, which "
             "LiteRT 2.2's XNNPACK uses for float GEMMs: no Raspberry Pi has them) unless a section says "
             "otherwise; for a Pi read the `-cpu cortex-a72` (Pi 4) and `-cpu cortex-a76` (Pi 5) sections.",
             "",
             f"Inputs {', '.join(f'{k} {v}²' for k, v in result['sizes'].items())}, 1000 classes, BatchNorm "
             "statistics calibrated on random inputs, 1 thread. *load* = `Interpreter(...)` (read, build, "
             "allocate, xnor_lite's op check; XNNPACK packs its weights here; LiteRT's Python modules are "
             "imported before), *first* = first `invoke` (ruy packs weights, LCE caches its padding "
             "correction), "
             "*steady* = each later `invoke` (set input, run, copy output). Variants: *paper* = pad_values 0, "
             "float first/last layers; *pad1* = pad_values 1; *int8* = `int8_float_layers=True` (first/last "
             "layers int8); sub-models measured alone (same ops, same shapes): *stem* = input → pool1 (the float "
             "first conv block), *head* = AlexNet's fc6_bn → output (binary fc6, fc7 and fc8), *last* = the "
             "classifier alone (AlexNet fc8_bn → output, ResNet post_bn → output).",
             "",
             "| model | variant | setting | flatbuffer | load | first invoke | steady / inference | float best ÷ this |",
             "|---|---|---|---|---|---|---|---|"]
    ratio_of = {(r["model"], r["variant"], r["setting"]): r["ratio"] for r in analysis["ratios"]}
    for run in runs:
        setting = setting_name(run["kernel"], run["use_xnnpack"])
        ratio = ratio_of.get((run["model"], run["variant"], setting))
        lines.append(
            f"| {run['model']} | {run['variant']} | {setting} | {size_text(run['flatbuffer_mb'])} | {m(run['load'])} | "
            f"{m(run['first_invoke'])} | {m(run['steady'][-1])} | {f'{ratio:.2f}×' if ratio else ''} |")
    lines += ["", "Float twin at its best setting: " + ", ".join(
        f"{k} {m(v['steady'])} ({v['setting']})" for k, v in analysis["best_float"].items()) + "."]
    targets = {"XNORAlexNet": 9.0, "XNORResNet18": 8.5}
    lines += ["", "### ARM speed figure: float ÷ binary instructions (targets: XNORAlexNet ≥ 9×, XNORResNet18 ≥ 8.5×)", "",
              "| binary model | variant | best setting | ratio | target |", "|---|---|---|---|---|"]
    for model in ("XNORAlexNet", "XNORResNet18", "BWNAlexNet", "BWNResNet18"):
        for variant in ("paper", "pad1", "int8", "pad1+int8", "bwn_int8_full"):
            cands = [r for r in analysis["ratios"] if r["model"] == model and r["variant"] == variant]
            if cands:
                best = max(cands, key=lambda r: r["ratio"])
                target = targets.get(model)
                verdict = "" if not target else (f"≥ {target}×: met" if best["ratio"] >= target else f"≥ {target}×: not met")
                lines.append(f"| {model} | {variant} | {best['setting']} | {best['ratio']:.2f}× | {verdict} |")
    if analysis["stems"]:
        lines += ["", "### Parts measured alone (sub-models) against the whole net", "",
                  "| model | part | whole net | setting | part | whole | share |", "|---|---|---|---|---|---|---|"]
        for s in analysis["stems"]:
            lines.append(f"| {s['model']} | {s.get('part', 'stem')} | {s['variant']} | {s['setting']} | {m(s['stem'])} | {m(s['whole'])} | "
                         f"{100 * s['share']:.0f}% |")
    lines += ["", "### Shares of a steady inference (default kernel, no XNNPACK)", ""]
    for run in runs:
        if run["kernel"] != "default" or run["use_xnnpack"] or submodel(run["variant"]):
            continue
        shares = run["shares_steady"]
        total = sum(shares["libraries"].values()) or 1
        libs = ", ".join(f"{GROUPS[g]} {100 * n / total:.0f}%" for g, n in shares["libraries"].items() if n)
        funcs = "; ".join(f"`{f['function']}` {100 * f['insns'] / total:.0f}%" for f in shares["functions"][:5])
        lines.append(f"- **{run['model']} {run['variant']}**: {libs}. Top functions: {funcs}.")
    lines += ["", "### What stands between the measured ratios and the targets", "",
              *obstacles(runs, analysis), *result.get("notes", [])]
    for path in sorted(RESULTS.glob("arm64-cpu-*.json")):
        lines += cpu_subsection(json.loads(path.read_text()))
    lines += ["", "![ARM guest instructions](bench/results/arm64.png)", ""]
    return "\n".join(lines)


def cpu_subsection(other: dict) -> list[str]:
    """The runs made on another qemu CPU model, with their float/binary ratios."""
    runs, analysis = other["runs"], analyse(other["runs"])
    ratio_of = {(r["model"], r["variant"], r["setting"]): r["ratio"] for r in analysis["ratios"]}
    lines = ["", f"### On `-cpu {other['cpu']}`", "",
             f"Command: `{other['command']}` ({other['date']}). The same flatbuffers and library; the CPU "
             f"model's feature bits (AT_HWCAP) choose ruy's and XNNPACK's kernels: qemu's default `max` "
             f"has the dot-product instructions and SVE/SME (which LiteRT 2.2's XNNPACK uses through "
             f"KleidiAI); a Cortex-A76 (Raspberry Pi 5) has dot-product but no SVE/SME, a Cortex-A72 "
             f"(Raspberry Pi 4) neither.", "",
             "| model | variant | setting | first invoke | steady / inference | float best ÷ this |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        setting = setting_name(run["kernel"], run["use_xnnpack"])
        ratio = ratio_of.get((run["model"], run["variant"], setting))
        lines.append(f"| {run['model']} | {run['variant']} | {setting} | {m(run['first_invoke'])} | "
                     f"{m(run['steady'][-1])} | {f'{ratio:.2f}×' if ratio else ''} |")
    lines += ["", "Float twin at its best setting: " + ", ".join(
        f"{k} {m(v['steady'])} ({v['setting']})" for k, v in analysis["best_float"].items()) + "."]
    for s in analysis["stems"]:
        if s.get("part", "stem") == "stem":
            lines.append(f"- {s['model']} {s['variant']}, {s['setting']}: the first conv block costs "
                         f"{m(s['stem'])} of {m(s['whole'])} ({100 * s['share']:.0f}%).")
    return lines


def write_section(text: str, path: Path) -> None:
    old = path.read_text() if path.exists() else ""
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text.rstrip("\n") + "\n" + (old[end:] if end >= 0 else "")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    global STEADY_TOP
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="AlexNet 67², ResNet 32² (minutes)")
    parser.add_argument("--models", nargs="+", help="zoo names (default: all six)")
    parser.add_argument("--variants", nargs="+", help=f"XNOR variants (default: {' '.join(XNOR_VARIANTS)})")
    parser.add_argument("--steady", type=int, default=2, help="steady invocations per run (default 2)")
    parser.add_argument("--notes", help="a markdown file whose lines are added to the analysis")
    parser.add_argument("--from-json", help="only redo the report (chart, markdown) from a results json")
    parser.add_argument("--cpu", help="qemu CPU model (default: qemu's `max`, which has dotprod), e.g. "
                        "cortex-a72 (Raspberry Pi 4: no dotprod); results go to arm64-cpu-NAME.json")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of the existing results json that this run does not redo")
    parser.add_argument("--kernels", nargs="+", choices=sorted(KERNELS),
                        help="LceBconv2d kernels to measure on every XNOR flatbuffer, without XNNPACK "
                             "(default: all four settings on `paper`, `default` +/- XNNPACK on the others); "
                             "e.g. `--kernels default lce` compares xnor_lite's GEMV with LCE's BGEMM")
    parser.add_argument("--top-functions", type=int, default=STEADY_TOP,
                        help=f"functions listed in each run's shares of a steady inference (default {STEADY_TOP})")
    parser.add_argument("--json", help="write the results to this json only (no chart, no markdown, "
                                       "bench/results/arm64*.json and BENCHMARKS.md untouched)")
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        result["analysis"] = analyse(result["runs"])
        result.setdefault("plugin_check", check_plugin(build_plugin()))
        if args.notes:
            result["notes"] = Path(args.notes).read_text().splitlines()
        report(result, quick=args.quick)
        return 0
    if args.variants:
        XNOR_VARIANTS[:] = args.variants
    STEADY_TOP = args.top_functions
    from xnor_lite.emulate import Arm64Target

    started = time.time()
    models = args.models or ["XNORAlexNet", "BWNAlexNet", "AlexNet", "XNORResNet18", "BWNResNet18", "ResNet18"]
    plugin = build_plugin()
    plugin_check = check_plugin(plugin)
    log(f"plugin check: {plugin_check}")
    # The guest's CPU model (its AT_HWCAP) decides ruy's and XNNPACK's kernels.
    target = Arm64Target(cpu=args.cpu, log=log).setup()
    library = build.build_library("aarch64", out_dir=target.cache_dir, keep_symbols=True, log=log)
    jobs = plan(models, args.quick)
    if args.kernels:
        jobs = [(model, size, variant, [(kernel, False) for kernel in args.kernels] if model.startswith("XNOR") else settings)
                for model, size, variant, settings in jobs]
    # Convert everything first (TensorFlow on the host), then emulate.
    for i, (model, size, variant, _) in enumerate(jobs):
        log(f"flatbuffer {i + 1}/{len(jobs)}: {model} {size}² {variant}")
        convert_flatbuffer(model, size, variant)
    runs = []
    n_runs = sum(len(s) for *_, s in jobs)
    for model, size, variant, settings in jobs:
        flatbuffer = flatbuffer_path(model, size, variant)
        for kernel, use_xnnpack in settings:
            run = run_one(target, plugin, library, flatbuffer, kernel, use_xnnpack, args.steady)
            run.update(model=model, size=size, variant=variant,
                       flatbuffer_mb=flatbuffer.stat().st_size / 1e6)
            runs.append(run)
            same = "steady runs equal" if len(set(run["steady"])) == 1 else f"steady runs {run['steady']}"
            log(f"run {len(runs)}/{n_runs}: {model} {size}² {variant} {setting_name(kernel, use_xnnpack)}: "
                f"load {m(run['load'])}, first {m(run['first_invoke'])}, steady {m(run['steady'][-1])} "
                f"({same}; {run['wall_s']:.0f} s)")
    merged_commands: list[str] = []
    previous = RESULTS / f"arm64{'-quick' if args.quick else ''}{f'-cpu-{args.cpu}' if args.cpu else ''}.json"
    if args.merge and previous.exists():
        def key(r):
            return (r["model"], r["size"], r["variant"], r["kernel"], r["use_xnnpack"])
        redone = {key(r) for r in runs}
        old = json.loads(previous.read_text())
        runs = [r for r in old["runs"] if key(r) not in redone] + runs
        merged_commands = old.get("commands") or [old["command"]]
        runs.sort(key=lambda r: (family(r["model"]) != "AlexNet", ["XNOR", "BWN", ""].index(
            next(p for p in ("XNOR", "BWN", "") if r["model"].startswith(p))), r["model"]))
    qemu = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result = {
        "command": "python bench/arm64.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commands": merged_commands + ["python bench/arm64.py " + " ".join(argv if argv is not None else sys.argv[1:])],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "elapsed_min": (time.time() - started) / 60,
        "host": f"{os.cpu_count()} host CPUs (shared)",
        "qemu": qemu, "library": library.name, "cpu": args.cpu, "plugin_check": plugin_check,
        "build_info": runs[0]["guest"]["build_info"] if runs else {},
        "sizes": {fam: (QUICK_SIZE[fam] if args.quick else FULL_SIZE) for fam in ("AlexNet", "ResNet18")},
        "runs": runs, "analysis": analyse(runs),
        "notes": Path(args.notes).read_text().splitlines() if args.notes else [],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        log(f"wrote {args.json}; done in {(time.time() - started) / 60:.1f} min")
        return 0
    report(result, quick=args.quick)
    log(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


def report(result: dict, *, quick: bool) -> None:
    """Writes the json, the chart and the markdown (BENCHMARKS.md's section unless quick).

    A run on another CPU model (--cpu) writes its own json, then redoes the main report, whose
    section lists it."""
    suffix = "-quick" if quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if result.get("cpu"):
        (RESULTS / f"arm64{suffix}-cpu-{result['cpu']}.json").write_text(json.dumps(result, indent=1))
        main_json = RESULTS / f"arm64{suffix}.json"
        if not main_json.exists():
            return
        result = json.loads(main_json.read_text())
        result["analysis"] = analyse(result["runs"])
    (RESULTS / f"arm64{suffix}.json").write_text(json.dumps(result, indent=1))
    chart(result["runs"], result["analysis"], RESULTS / f"arm64{suffix}.png")
    text = markdown(result)
    if quick:
        (RESULTS / "arm64-quick.md").write_text(text)
    else:
        write_section(text, ROOT / "BENCHMARKS.md")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
