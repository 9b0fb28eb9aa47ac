"""Binary vs float, measured in one run: latency, size, training step, conversion and memory.

For each zoo pair (XNORAlexNet / BWNAlexNet vs AlexNet, XNORResNet18 / BWNResNet18 vs ResNet18),
batch 1, on this machine:

* host inference latency: the LCE-converted binary model on LCE's interpreter (indirect BGEMM,
  its fastest binary kernel on x86, and XNNPACK for its float ops) vs the float twin converted
  by TFLite's converter on
  tf.lite.Interpreter (XNNPACK), 1 and 2 threads, median (min-max) of --runs runs after warm-up;
  the float twin's LCE conversion is timed too, to show whether the converter matters;
* flatbuffer sizes and the Keras float32 weight size;
* training step time (model.fit on synthetic data, batch 16, xnor_keras.optimizers.Adam) binary vs float twin;
* conversion time (xnor_keras.convert.timed_convert) and peak RSS of every conversion and
  inference, each in its own process (bench/_worker.py) so that peaks do not mix;
* diagnostics (default in full mode): per-op time of the converted models (each op cut out into
  its own flatbuffer and timed on the same runtime), LCE's interpreter without XNNPACK,
  pad_values=1 and int8-first/last-layer variants, where conversion time goes, and the cost of
  the binarization functions in a training step.

Writes a JSON file and a PNG chart under --output-dir and the tables into a Markdown file
(BENCHMARKS.md at the repository root in full mode; text outside its generated block is kept).
This file plans and measures (each measurement in a bench/_worker.py process); render.py turns
the JSON into tables, targets and the chart.

Usage:
    python bench/benchmark.py                 # full: 224x224, ~10-15 min on 2 cores
    python bench/benchmark.py --quick         # 64x64 AlexNet / 32x32 ResNet, ~2-3 min
    python bench/benchmark.py --wait-idle 600 # first wait (<= 600 s) for load average < 0.5
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from _common import FAMILIES, MODELS, ROOT, SIZES, THREADS, family_of, kind_of, log
from render import chart, console_summary, evaluate_targets, markdown, pairs, write_markdown

WORKER = Path(__file__).resolve().parent / "_worker.py"


# --------------------------------------------------------------------------------------------
# Running workers


def cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, steal seconds, CPU seconds of this process and
    its waited-for children) so far."""
    import resource

    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    tick = os.sysconf("SC_CLK_TCK")
    mine = sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    return (user + nice + system + irq + softirq) / tick, steal / tick, mine


class Runner:
    """Runs bench/_worker.py tasks one at a time, each in a fresh process, and logs progress.

    Around every task it measures how much CPU *other* processes used (machine-wide busy time
    from /proc/stat minus this process and its children); a latency measurement that others
    disturbed by more than `max_other_pct` percent of one core is repeated (up to `retries`
    times) and the least disturbed attempt kept.
    """

    def __init__(self, log_dir: Path, total: int, timeout: float, retries: int = 2, max_other_pct: float = 10.0):
        self.log_dir = log_dir
        self.total = total
        self.timeout = timeout
        self.retries = retries
        self.max_other_pct = max_other_pct
        self.done = 0
        self.waited = 0.0
        self.wait_budget = 180.0
        self.failures: list[str] = []
        self.start = time.perf_counter()

    def run(self, label: str, task: str, args: dict) -> dict | None:
        self.done += 1
        print(f"[{self.done:>2}/{self.total}] {label} ...", end="", flush=True)
        retries = {"latency": self.retries, "latency_family": self.retries, "op_profile": self.retries,
                   "train_family": 1}.get(task, 0)
        retry = retries > 0
        best = None
        for attempt in range(1 + retries):
            if retry:
                self._wait_quiet()
            result = self._attempt(label, task, args, attempt)
            if result is None:
                return None
            if best is None or result["interference"]["other_pct"] < best["interference"]["other_pct"]:
                best = result
            if not retry or result["interference"]["other_pct"] <= self.max_other_pct:
                break
            print(f" [other processes used {result['interference']['other_pct']:.0f}% of a core: again]",
                  end="", flush=True)
        best["interference"]["attempts"] = attempt + 1
        elapsed = time.perf_counter() - self.start
        other = best["interference"]["other_pct"]
        note = f"; others {other:.0f}% of a core" if other > self.max_other_pct else ""
        print(f" {best['interference']['wall_s']:.1f} s{_brief(task, best)}{note}  (elapsed {elapsed:.0f} s)", flush=True)
        return best

    def _wait_quiet(self, window: float = 1.0, max_wait: float = 60.0) -> None:
        """Before a timing measurement: wait (up to `max_wait` s, and `self.wait_budget` s over
        the run) while other processes use more than 25% of a core."""
        waited = 0.0
        while True:
            busy0, _, mine0 = cpu_seconds()
            time.sleep(window)
            busy1, _, mine1 = cpu_seconds()
            other_pct = 100 * max(0.0, (busy1 - busy0) - (mine1 - mine0)) / window
            if other_pct <= 25 or waited >= max_wait or self.wait_budget <= 0:
                break
            if waited == 0:
                print(f" [others use {other_pct:.0f}% of a core: waiting]", end="", flush=True)
            time.sleep(4.0)
            waited += window + 4.0
            self.wait_budget -= window + 4.0
        self.waited += waited

    def _attempt(self, label: str, task: str, args: dict, attempt: int) -> dict | None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONWARNINGS="ignore")
        slug = "".join(c if c.isalnum() else "_" for c in label)[:80]
        log_path = self.log_dir / f"{self.done:02d}_{slug}{f'_retry{attempt}' if attempt else ''}.log"
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        busy0, steal0, mine0 = cpu_seconds()
        start = time.perf_counter()
        try:
            with open(log_path, "w") as log_file:
                proc = subprocess.run(
                    [sys.executable, str(WORKER), task, json.dumps(args), str(out)],
                    stdout=log_file, stderr=subprocess.STDOUT, env=env, timeout=self.timeout, cwd=ROOT,
                )
            wall = time.perf_counter() - start
            busy1, steal1, mine1 = cpu_seconds()
            if proc.returncode != 0 or out.stat().st_size == 0:
                tail = log_path.read_text().strip().splitlines()[-3:]
                raise RuntimeError(f"exit code {proc.returncode}: {' | '.join(tail)}")
            result = json.loads(out.read_text())
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as error:
            message = f"{label}: {error}"
            self.failures.append(message)
            print(f" FAILED ({message}); log: {log_path}", flush=True)
            return None
        finally:
            out.unlink(missing_ok=True)
        other = max(0.0, (busy1 - busy0) - (mine1 - mine0))
        result["interference"] = {
            "wall_s": wall,
            "task_cpu_s": mine1 - mine0,
            "other_cpu_s": other,
            "other_pct": 100 * other / wall,
            "steal_s": steal1 - steal0,
        }
        return result


def _brief(task: str, result: dict) -> str:
    if task == "convert":
        return f": {result['flatbuffer_bytes'] / 1e6:.2f} MB in {result['seconds']:.2f} s"
    if task == "latency":
        return ": " + ", ".join(f"{t} thr {v['median_ms']:.2f} ms" for t, v in result["latency"].items())
    if task == "latency_family":
        return "".join(f"\n        {key.split('|')[0]:<13} {' '.join(key.split('|')[1:3])}"
                       f"{' xnnpack' if key.split('|')[3] == '1' else ''} {key.split('|')[4]}: "
                       + ", ".join(f"{t} thr {v['median_ms']:.2f} ms" for t, v in per.items())
                       for key, per in result["latency"].items())
    if task == "train_family":
        return ": " + ", ".join(f"{key} {v['step']['median_ms']:.0f}" for key, v in result["training"].items()) + " ms/step"
    if task == "op_profile":
        return "".join(f"\n        {key}: {len(p['ops'])} ops, sum {sum(op['median_ms'] for op in p['ops']):.2f} ms, "
                       f"whole {p['whole']['median_ms']:.2f} ms" for key, p in result["profiles"].items())
    return ""


# --------------------------------------------------------------------------------------------
# The plan


def plan(args) -> list[tuple[str, str, str, dict]]:
    """(section, label, task, worker args) for every measurement, in run order."""
    sizes = SIZES[args.mode]
    fb_dir = args.flatbuffer_dir
    steps = []

    def fb(model: str, converter: str, variant: str = "") -> str:
        return str(fb_dir / f"{model}{variant}.{converter}.tflite")

    # The cross-checks (float twins through LCE's converter, BWN flatbuffers on tf.lite) are
    # left out of quick mode to keep it short.
    checks = args.mode == "full"
    diagnostics = args.diagnostics

    # 1. Conversions, each in a fresh process (time and peak memory). One untimed conversion
    # first: the first process to run TensorFlow and LCE's converter after a while reads their
    # shared libraries from disk, which would otherwise land in one model's time.
    if args.mode == "full":
        steps.append(("warmup", "warm-up: convert XNORResNet18 32x32 (untimed, warms the page cache)", "convert",
                      {"model": "XNORResNet18", "size": 32, "converter": "lce", "output": fb("warmup", "lce")}))
    for model in MODELS:
        size = sizes[family_of(model)]
        if kind_of(model) != "float" or checks:
            steps.append(("convert", f"convert {model} {size}x{size} (LCE)", "convert",
                          {"model": model, "size": size, "converter": "lce", "output": fb(model, "lce")}))
        if kind_of(model) == "float":  # TFLiteConverter: the float baseline
            steps.append(("convert", f"convert {model} {size}x{size} (TFLiteConverter)", "convert",
                          {"model": model, "size": size, "converter": "tflite", "output": fb(model, "tflite")}))
    # The conversion target is XNORAlexNet's: convert it again in fresh processes, report the median.
    size = sizes["AlexNet"]
    for i in range(1, args.convert_repeats):
        steps.append(("convert_repeat", f"convert XNORAlexNet {size}x{size} (LCE), repeat {i + 1}", "convert",
                      {"model": "XNORAlexNet", "size": size, "converter": "lce",
                       "output": fb("XNORAlexNet", "lce", ".repeat")}))
    for binary in ("XNORAlexNet", "XNORResNet18"):
        size = sizes[family_of(binary)]
        steps.append(("variant", f"convert {binary} {size}x{size} int8_float_layers=True (LCE)", "convert",
                      {"model": binary, "variant": "int8", "size": size, "converter": "lce",
                       "convert_options": {"int8_float_layers": True}, "output": fb(binary, "lce", ".int8")}))
    for binary in ("BWNAlexNet", "BWNResNet18"):  # BWN layers with int8 activations too
        size = sizes[family_of(binary)]
        steps.append(("variant", f"convert {binary} {size}x{size} bwn_weights='int8_full' (LCE)", "convert",
                      {"model": binary, "variant": "bwn_int8_full", "size": size, "converter": "lce",
                       "convert_options": {"bwn_weights": "int8_full"},
                       "output": fb(binary, "lce", ".bwn_int8_full")}))
    if diagnostics:
        for binary in ("XNORAlexNet", "XNORResNet18"):
            size = sizes[family_of(binary)]
            steps.append(("variant", f"convert {binary} {size}x{size} pad_values=1 (LCE)", "convert",
                          {"model": binary, "variant": "pad_values=1", "size": size, "converter": "lce",
                           "options": {"pad_values": 1.0}, "output": fb(binary, "lce", ".pad1")}))

    # 2. Latency: every configuration of a family interleaved in one process.
    memory = []
    for flt, binaries in FAMILIES.items():
        configs = []

        def add(model, converter, runtime, xnnpack=False, variant=None, path=None):
            key = f"{model}|{converter}|{runtime}|{int(xnnpack)}|{variant or ''}"
            configs.append({"key": key, "model": model, "converter": converter, "runtime": runtime,
                            "xnnpack": xnnpack, "variant": variant, "flatbuffer": path or fb(model, converter)})
            if variant is None:
                memory.append(configs[-1])

        for binary in binaries:
            add(binary, "lce", "lce", xnnpack=True)
            if kind_of(binary) == "bwn" and checks:  # no LCE ops in a BWN flatbuffer: tf.lite runs it too
                add(binary, "lce", "tflite")
        add(flt, "tflite", "tflite")
        if checks:
            add(flt, "lce", "tflite")
        if diagnostics:
            binary = binaries[0]
            add(binary, "lce", "lce", variant="no-xnnpack")
            add(binary, "lce", "lce", xnnpack=True, variant="pad_values=1", path=fb(binary, "lce", ".pad1"))
            add(binary, "lce", "lce", xnnpack=True, variant="int8", path=fb(binary, "lce", ".int8"))
            bwn = binaries[1]
            add(bwn, "lce", "lce", xnnpack=True, variant="bwn_int8_full", path=fb(bwn, "lce", ".bwn_int8_full"))
        steps.append(("latency", f"latency, {flt} family: {len(configs)} configurations interleaved, "
                      f"{args.runs} runs each per thread count", "latency_family",
                      {"configs": configs, "threads": list(THREADS), "runs": args.runs, "warmup": args.warmup,
                       "rounds": args.rounds}))

    # 3. Peak memory of inference, one flatbuffer per process.
    for c in memory:
        rt = "LCE interpreter" if c["runtime"] == "lce" else "tf.lite"
        steps.append(("memory", f"inference memory {c['model']} ({c['converter']} -> {rt})", "latency",
                      {**{k: c[k] for k in ("model", "converter", "runtime", "xnnpack", "flatbuffer")},
                       "threads": [1], "runs": 5, "warmup": 1}))

    # 4. Training step: the models of a family interleaved in one process.
    if not args.skip_training:
        for flt, binaries in FAMILIES.items():
            size = sizes[flt]
            entries = [{"key": m, "model": m} for m in (*binaries, flt)]
            if diagnostics:
                entries += [{"key": f"{m}|jit", "model": m, "jit_compile": True} for m in (binaries[0], flt)]
            steps.append(("train", f"training step, {flt} family {size}x{size} batch {args.batch}: "
                          f"{len(entries)} models interleaved", "train_family",
                          {"entries": entries, "size": size, "batch": args.batch, "steps": args.train_steps}))

    # 5. Diagnostics.
    if diagnostics:
        for binary, flt in (("XNORAlexNet", "AlexNet"), ("XNORResNet18", "ResNet18")):
            configs = [
                {"key": f"{binary}|lce|0", "model": binary, "flatbuffer": fb(binary, "lce"), "runtime": "lce", "xnnpack": False},
                {"key": f"{binary}|lce|1", "model": binary, "flatbuffer": fb(binary, "lce"), "runtime": "lce", "xnnpack": True},
                {"key": f"{flt}|tflite|0", "model": flt, "flatbuffer": fb(flt, "tflite"), "runtime": "tflite", "xnnpack": False},
            ]
            steps.append(("op_profile", f"per-op profile, 1 thread: {binary} (LCE, LCE + XNNPACK) and {flt} (tf.lite), "
                          "interleaved", "op_profile",
                          {"configs": configs, "threads": 1, "runs": 15, "warmup": 2, "rounds": 3}))
        steps.append(("convert_breakdown", "conversion breakdown XNORAlexNet", "convert_breakdown",
                      {"model": "XNORAlexNet", "size": sizes["AlexNet"], "repeats": 2}))
        for binary in ("XNORAlexNet", "XNORResNet18"):
            steps.append(("quantizer_cost", f"binarization cost in a training step {binary}", "quantizer_cost",
                          {"model": binary, "size": sizes[family_of(binary)], "batch": args.batch, "runs": 3}))
    return steps


# --------------------------------------------------------------------------------------------
# Machine and environment


def machine() -> dict:
    info = {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        for key in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "L2 cache",
                    "L3 cache", "Hypervisor vendor"):
            if key in fields:
                info[key] = fields[key]
        flags = fields.get("Flags", "").split()
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_vpopcntdq", "amx_tile")
                                if f in flags)
    except (OSError, subprocess.CalledProcessError):
        pass
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    return info


def versions() -> dict:
    out = {}
    for dist in ("tensorflow", "tf-keras", "larq", "larq-compute-engine", "numpy", "xnor-keras", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = None
    return out


def library_fingerprint() -> str:
    """A hash of xnor_keras's source files: the run records it at its start and end, so a change
    of the library while the benchmark ran does not go unnoticed."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "xnor_keras").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def wait_for_idle(max_wait: float, max_load: float) -> None:
    deadline = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            log(f"load average {load:.2f} < {max_load}: starting")
            return
        left = deadline - time.monotonic()
        if left <= 0:
            log(f"load average still {load:.2f} after waiting; starting anyway (recorded in the results)")
            return
        log(f"load average {load:.2f} >= {max_load}: waiting ({left:.0f} s left)")
        time.sleep(min(60.0, left))


# --------------------------------------------------------------------------------------------
# Analysis


def collect(steps, results) -> dict:
    """Arrange raw worker results by model."""
    data: dict = {"models": {m: {"kind": kind_of(m), "family": family_of(m)} for m in MODELS},
                  "latency": [], "memory": [], "variants": [], "op_profiles": [], "quantizer_cost": {}}
    for (section, label, task, args), result in zip(steps, results):
        if result is None:
            continue
        model = args.get("model")
        interference = result.get("interference")
        if section == "convert":
            data["models"][model][f"conversion_{args['converter']}"] = {"size": args["size"], **result}
        elif section == "convert_repeat":
            data["models"][model].setdefault("conversion_lce_repeats", []).append(result["seconds"])
        elif section == "latency":
            for c in args["configs"]:
                row = {k: c[k] for k in ("model", "converter", "runtime", "xnnpack")}
                row.update(latency=result["latency"][c["key"]], interference=interference)
                if c["variant"]:
                    data["variants"].append({**row, "variant": c["variant"], "task": "latency"})
                else:
                    data["latency"].append(row)
        elif section == "memory":
            data["memory"].append({k: args[k] for k in ("model", "converter", "runtime", "xnnpack")}
                                  | {"rss": result["rss"], "latency": result["latency"], "interference": interference})
        elif section == "train":
            for entry in args["entries"]:
                row = {"size": args["size"], "batch": args["batch"], **result["training"][entry["key"]],
                       "interference": interference}
                if entry.get("jit_compile"):
                    data["variants"].append({"model": entry["model"], "variant": "jit_compile", "task": "train", **row})
                else:
                    data["models"][entry["model"]]["training"] = row
        elif section == "variant":  # the pad_values=1 conversions
            data["variants"].append({"model": model, "variant": args["variant"], "task": task, **result})
        elif section == "op_profile":
            for c in args["configs"]:
                data["op_profiles"].append({"model": c["model"], "runtime": c["runtime"], "xnnpack": c["xnnpack"],
                                            **result["profiles"][c["key"]], "interference": interference})
        elif section == "convert_breakdown":
            data["conversion_breakdown"] = {"model": model, **result}
        elif section == "quantizer_cost":
            data["quantizer_cost"][model] = result
    return data


def run_interference(results) -> dict:
    """CPU time other processes used while the measurements ran, over the whole run."""
    rows = [r["interference"] for r in results if r and "interference" in r]
    wall = sum(r["wall_s"] for r in rows)
    other = sum(r["other_cpu_s"] for r in rows)
    return {"wall_s": wall, "other_cpu_s": other, "other_pct": 100 * other / wall if wall else 0.0,
            "steal_s": sum(r["steal_s"] for r in rows),
            "disturbed_tasks": sum(r["other_pct"] > 10 for r in rows),
            "retried_tasks": sum(r.get("attempts", 1) > 1 for r in rows)}


# --------------------------------------------------------------------------------------------
# Formatting


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small inputs (AlexNet 64x64, ResNet-18 32x32), ~2-3 min")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "bench" / "results",
                        help="where the JSON, PNG and per-task logs go (default bench/results)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="Markdown file to write the tables into (default: BENCHMARKS.md at the repository "
                             "root in full mode, OUTPUT_DIR/BENCHMARKS-quick.md with --quick)")
    parser.add_argument("--runs", type=int, default=None, help="timed inference runs (default 30; 20 with --quick)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed inference runs before each round of timed runs (default 3)")
    parser.add_argument("--batch", type=int, default=16, help="training batch size (default 16)")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 3; 2 with --quick)")
    parser.add_argument("--convert-repeats", type=int, default=None,
                        help="fresh-process conversions of XNORAlexNet for the conversion target (default 3; 1 with --quick)")
    parser.add_argument("--skip-training", action="store_true", help="no training-step measurements")
    diag = parser.add_mutually_exclusive_group()
    diag.add_argument("--diagnostics", dest="diagnostics", action="store_true", default=None,
                      help="per-op profiles, variants, conversion breakdown (default in full mode)")
    diag.add_argument("--no-diagnostics", dest="diagnostics", action="store_false")
    parser.add_argument("--keep-flatbuffers", action="store_true", help="keep the .tflite files in OUTPUT_DIR/flatbuffers")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the 1-minute load average to drop below --max-load")
    parser.add_argument("--max-load", type=float, default=0.5)
    parser.add_argument("--task-timeout", type=float, default=900, help="seconds per measurement process")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="measure nothing: rewrite the Markdown and PNG from a JSON file this script wrote")
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "full"
    args.runs = args.runs or (20 if args.quick else 30)
    args.train_steps = args.train_steps or (2 if args.quick else 3)
    args.convert_repeats = args.convert_repeats or (1 if args.quick else 3)
    args.rounds = 5 if args.quick else 10  # interleaved latency rounds per family
    if args.diagnostics is None:
        args.diagnostics = not args.quick
    if args.markdown is None:
        args.markdown = args.output_dir / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md"
    if args.runs < 20:
        parser.error("--runs: at least 20 timed runs")
    return args


def render(args) -> int:
    data = json.loads(args.render.read_text())
    png_path = ROOT / data["meta"]["png"]
    markdown_path = args.markdown if "--markdown" in sys.argv else (
        ROOT / "BENCHMARKS.md" if data["meta"]["mode"] == "full" else png_path.parent / "BENCHMARKS-quick.md")
    problem = chart(data, png_path)
    if problem:
        log(problem)
    write_markdown(markdown_path, markdown(data))
    log(console_summary(data))
    log(f"rewrote {os.path.relpath(markdown_path, ROOT)} and {os.path.relpath(png_path, ROOT)} from {args.render}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args)
    command = " ".join(shlex.quote(a) for a in ["python", "bench/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    if args.wait_idle:
        wait_for_idle(args.wait_idle, args.max_load)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    log_dir = args.output_dir / ("logs-quick" if args.quick else "logs")
    log_dir.mkdir(exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    suffix = "-quick" if args.quick else ""
    json_path = args.output_dir / f"benchmark{suffix}.json"
    png_path = args.output_dir / f"benchmark{suffix}.png"

    tmp = None
    if args.keep_flatbuffers:
        args.flatbuffer_dir = args.output_dir / "flatbuffers"
        args.flatbuffer_dir.mkdir(exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="xnor_bench_")
        args.flatbuffer_dir = Path(tmp.name)

    started = time.perf_counter()
    load_start = os.getloadavg()
    fingerprint_start, versions_start = library_fingerprint(), versions()
    log(f"xnor_keras benchmark, {args.mode} mode; load average {load_start[0]:.2f}; "
        f"{len(os.sched_getaffinity(0))} CPUs; {command}")
    steps = plan(args)
    runner = Runner(log_dir, len(steps), args.task_timeout)
    results = [runner.run(label, task, task_args) for _, label, task, task_args in steps]
    if tmp is not None:
        tmp.cleanup()

    data = collect(steps, results)
    data["pairs"] = pairs(data)
    data["targets"] = evaluate_targets(data, data["pairs"])
    data["meta"] = {
        "command": command, "mode": args.mode, "sizes": SIZES[args.mode],
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "versions": versions_start, "load_start": load_start, "load_end": os.getloadavg(),
        "library_fingerprint": {"start": fingerprint_start, "end": library_fingerprint()},
        "git_commit_end": versions()["git_commit"],
        "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds, "batch": args.batch, "train_steps": args.train_steps,
        "threads": list(THREADS), "wall_seconds": time.perf_counter() - started, "failures": runner.failures,
        "interference": {**run_interference(results), "waited_for_quiet_s": runner.waited},
        "json": os.path.relpath(json_path, ROOT), "png": os.path.relpath(png_path, ROOT),
    }
    json_path.write_text(json.dumps(data, indent=1, sort_keys=True))
    problem = chart(data, png_path)
    if problem:
        log(problem)
    write_markdown(args.markdown, markdown(data))
    log(console_summary(data))
    fp = data["meta"]["library_fingerprint"]
    if fp["start"] != fp["end"]:
        log(f"WARNING: xnor_keras's source changed during the run ({fp['start']} -> {fp['end']})")
    log(f"\nwrote {os.path.relpath(json_path, ROOT)}, {os.path.relpath(png_path, ROOT)}, "
        f"{os.path.relpath(args.markdown, ROOT)}; total {data['meta']['wall_seconds'] / 60:.1f} min; "
        f"load average {load_start[0]:.2f} -> {data['meta']['load_end'][0]:.2f}")
    if runner.failures:
        log(f"{len(runner.failures)} measurement(s) failed: see {os.path.relpath(log_dir, ROOT)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
