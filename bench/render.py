"""The benchmark's rendering half: benchmark.json -> BENCHMARKS.md tables, a PNG chart, a summary.

Pure functions of the JSON that `benchmark.py` writes (no measuring here), so a run can be
re-rendered with `python bench/benchmark.py --render bench/results/benchmark.json`.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from _common import BEGIN, END, FAMILIES, FLOAT_MODELS, MODELS, TARGETS, THREADS, family_of, kind_of

def find_memory(data: dict, model: str, converter: str, runtime: str) -> dict | None:
    for row in data["memory"]:
        if (row["model"], row["converter"], row["runtime"]) == (model, converter, runtime):
            return row
    return None


def conversion_seconds(data: dict, model: str) -> list[float]:
    """timed_convert seconds of every LCE conversion of `model` (the first, then any repeats)."""
    md = data["models"][model]
    if not md.get("conversion_lce"):
        return []
    return [md["conversion_lce"]["seconds"], *md.get("conversion_lce_repeats", [])]


def find_latency(data: dict, model: str, converter: str, runtime: str, xnnpack: bool = False) -> dict | None:
    for row in data["latency"]:
        if (row["model"], row["converter"], row["runtime"], row["xnnpack"]) == (model, converter, runtime, xnnpack):
            return row
    return None


def primary_latency(data: dict, model: str) -> dict | None:
    """Binary models: LCE on LCE's interpreter; float twins: TFLiteConverter on tf.lite."""
    if kind_of(model) == "float":
        return find_latency(data, model, "tflite", "tflite")
    # Fastest setting of LCE's interpreter here: indirect BGEMM for the binary convolutions and
    # XNNPACK for the float ones (older result files have only the run without XNNPACK).
    return find_latency(data, model, "lce", "lce", xnnpack=True) or find_latency(data, model, "lce", "lce")


def pairs(data: dict) -> list[dict]:
    out = []
    for flt, binaries in FAMILIES.items():
        for binary in binaries:
            b, f = data["models"][binary], data["models"][flt]
            pair = {"binary": binary, "float": flt, "latency_ratio": {}, "size_ratio": None, "training_ratio": None}
            lb, lf = primary_latency(data, binary), primary_latency(data, flt)
            pair["paired_ratio"] = {}
            if lb and lf:
                for t in map(str, THREADS):
                    rb, rf = lb["latency"].get(t, {}).get("round_medians"), lf["latency"].get(t, {}).get("round_medians")
                    if rb and rf and len(rb) == len(rf):
                        pair["paired_ratio"][t] = statistics.median(f / b for f, b in zip(rf, rb))
                    pair["latency_ratio"][t] = lf["latency"][t]["median_ms"] / lb["latency"][t]["median_ms"]
            cb, cf = b.get("conversion_lce"), f.get("conversion_tflite")
            if cb and cf:
                pair["size_ratio"] = cf["flatbuffer_bytes"] / cb["flatbuffer_bytes"]
            tb, tf_ = b.get("training"), f.get("training")
            if tb and tf_:
                pair["training_ratio"] = tb["step"]["median_ms"] / tf_["step"]["median_ms"]
            out.append(pair)
    return out


def evaluate_targets(data: dict, pair_rows: list[dict]) -> list[dict]:
    by_binary = {p["binary"]: p for p in pair_rows}
    rows = []

    def speed(key, binary, goal):
        # Paired: the median over rounds of (float / binary) within each round, robust to slow
        # spells of the host; older result files have only the ratio of the medians.
        ratios = by_binary[binary].get("paired_ratio") or by_binary[binary]["latency_ratio"]
        if not ratios:
            return None, "not measured"
        met = all(r >= goal for r in ratios.values())
        paired = "paired, " if by_binary[binary].get("paired_ratio") else ""
        return met, ", ".join(f"{r:.2f}x ({paired}{t} thr)" for t, r in ratios.items())

    for key, what, goal in TARGETS:
        met, measured = None, "not measured"
        if key == "xnor_alexnet_speedup":
            met, measured = speed(key, "XNORAlexNet", 3.0)
        elif key == "xnor_resnet18_speedup":
            met, measured = speed(key, "XNORResNet18", 2.0)
        elif key == "xnor_alexnet_flatbuffer":
            conv = data["models"]["XNORAlexNet"].get("conversion_lce")
            if conv:
                n = conv["flatbuffer_bytes"]
                met, measured = n <= 24e6, f"{n / 1e6:.2f} MB ({n / 2**20:.2f} MiB)"
        elif key == "xnor_alexnet_flatbuffer_int8":
            rows_int8 = [v for v in data["variants"]
                         if v["model"] == "XNORAlexNet" and v["variant"] == "int8" and v["task"] == "convert"]
            if rows_int8:
                n = rows_int8[0]["flatbuffer_bytes"]
                met, measured = n <= 12e6, f"{n / 1e6:.2f} MB ({n / 2**20:.2f} MiB)"
        elif key == "training_step_ratio":
            ratios = {p["binary"]: p["training_ratio"] for p in pair_rows
                      if kind_of(p["binary"]) == "xnor" and p["training_ratio"] is not None}
            if ratios:
                met = all(r <= 1.10 for r in ratios.values())
                measured = ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items())
        elif key == "xnor_alexnet_conversion":
            seconds = conversion_seconds(data, "XNORAlexNet")
            if seconds:
                median = statistics.median(seconds)
                met = median <= 10.0
                measured = f"{median:.2f} s" + (
                    f" (median of {len(seconds)} fresh processes: {', '.join(f'{x:.2f}' for x in seconds)})"
                    if len(seconds) > 1 else "")
        rows.append({"key": key, "what": what, "goal": goal, "measured": measured, "met": met})
    return rows


def _ms(summary: dict | None) -> str:
    if not summary:
        return "—"
    return f"{summary['median_ms']:.2f} ({summary['min_ms']:.2f}–{summary['max_ms']:.2f})"


def _mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}"


def _status(met) -> str:
    return "n/a" if met is None else ("**met**" if met else "**not met**")


def _layers_of(tensor_name: str) -> list[str]:
    """Keras layer names found in an LCE/TFLite tensor name ('m/conv2/mul;m/conv2/XNOR...')."""
    names = []
    for part in tensor_name.split(";"):
        bits = part.split("/")
        if len(bits) > 1 and bits[1] not in names:
            names.append(bits[1])
    return names


def _conv_layer(op: dict) -> str:
    """The Keras layer of a convolution op. A binary conv's output is often named after the
    BatchNorm or sign fused into it (the next layer's); its input, the binarized activation, is
    named inside the conv layer's own scope (as xnor_keras.convert's report does it)."""
    import re

    layers = _layers_of(op["input"] if op["op"] == "LceBconv2d" else op["output"])
    for name in layers:
        if re.fullmatch(r"conv\d(_block\d_\d_conv)?|fc\d?", name):
            return name
    return layers[0] if layers else "?"


# Per-op profiles report the minimum of the runs: one-op models take a few milliseconds each, and
# the host's speed drifts over seconds (other tenants, invisible from inside the VM); the minimum
# over 3 interleaved rounds is what the kernel can do, and stable from run to run.
_STAT = "min_ms"


CONV_OPS = ("CONV_2D", "LceBconv2d", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")


def op_tables(data: dict) -> list[str]:
    lines = []
    profiles = {(p["model"], p["runtime"], p["xnnpack"]): p for p in data["op_profiles"]}
    for binary, flt in (("XNORAlexNet", "AlexNet"), ("XNORResNet18", "ResNet18")):
        pb = profiles.get((binary, "lce", False))
        px = profiles.get((binary, "lce", True))
        pf = profiles.get((flt, "tflite", False))
        if not (pb and pf):
            continue
        disturbed = [f"{p['model']} ({'LCE' if p['runtime'] == 'lce' else 'tf.lite'}"
                     f"{' + XNNPACK' if p['xnnpack'] else ''})" for p in (pb, px, pf) if p and _dagger(p)]
        lines += [f"#### {binary} vs {flt}: time per op, 1 thread", ""]
        if disturbed:
            lines += [f"† other processes used more than 10% of a core while profiling {', '.join(disturbed)}.", ""]
        lines += [
                  "Each op cut out of the converted flatbuffer into a one-op flatbuffer and timed alone on "
                  f"the same runtime: the minimum of {pb['whole']['runs']} runs taken in 3 rounds interleaved with "
                  "the other two columns' configurations (minimum, not median: each one-op model runs for "
                  "milliseconds, and the host's speed drifts over seconds; the medians are in the JSON). "
                  "Convolutions paired by Keras layer; MMACs from larq's "
                  "ModelProfile (binary MACs in binary layers):", "",
                  f"| layer | MMACs | {binary} op | ms (LCE) | ms (LCE + XNNPACK) | GMAC/s (LCE) | {flt} op | "
                  "ms (tf.lite) | GMAC/s (tf.lite) | float / binary |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        macs = (data["models"][binary].get("conversion_lce") or {}).get("layer_macs", {})
        fconv = {}
        for op in pf["ops"]:
            if op["op"] in CONV_OPS:
                fconv.setdefault(_conv_layer(op), op)
        xconv = {}
        if px:
            for op in px["ops"]:
                if op["op"] in CONV_OPS:
                    xconv.setdefault(_conv_layer(op), op)
        seen = set()
        for op in pb["ops"]:
            if op["op"] not in CONV_OPS:
                continue
            layer = _conv_layer(op)
            seen.add(layer)
            f = fconv.get(layer)
            x = xconv.get(layer)
            ratio = f"{f[_STAT] / op[_STAT]:.2f}x" if f and op[_STAT] > 0 else "—"
            x_ms = f"{x[_STAT]:.3f}" if x else "—"
            n = macs.get(layer)
            mm = f"{n / 1e6:.0f}" if n else "—"

            def rate(ms):
                return f"{n / ms / 1e6:.0f}" if n and ms > 0 else "—"

            f_part = f"{f['op']} | {f[_STAT]:.3f} | {rate(f[_STAT])} | {ratio}" if f else "— | — | — | —"
            lines.append(f"| {layer} | {mm} | {op['op']} | {op[_STAT]:.3f} | {x_ms} | {rate(op[_STAT])} | "
                         f"{f_part} |")
        for layer, f in fconv.items():
            if layer not in seen:
                lines.append(f"| {layer} | — | — | — | — | — | {f['op']} | {f[_STAT]:.3f} | — | — |")
        lines += ["", "By op type (sum of the ops alone vs the whole model on the same runtime):", "",
                  "| op type | " + f"{binary} count | ms | % | " + f"{flt} count | ms | % |", "|---|---|---|---|---|---|---|"]
        agg_b, agg_f = _aggregate(pb["ops"]), _aggregate(pf["ops"])
        tb, tf_ = sum(v[1] for v in agg_b.values()), sum(v[1] for v in agg_f.values())
        for name in sorted(set(agg_b) | set(agg_f), key=lambda n: -(agg_b.get(n, (0, 0))[1] + agg_f.get(n, (0, 0))[1])):
            cb, mb = agg_b.get(name, (0, 0.0))
            cf, mf = agg_f.get(name, (0, 0.0))
            lines.append(f"| {name} | {cb or '—'} | {mb:.3f} | {100 * mb / tb:.1f} | {cf or '—'} | {mf:.3f} | "
                         f"{100 * mf / tf_:.1f} |")
        lines.append(f"| **sum of ops** | | **{tb:.2f}** | | | **{tf_:.2f}** | |")
        lines.append(f"| whole model | | {pb['whole'][_STAT]:.2f} | | | {pf['whole'][_STAT]:.2f} | |")
        if px:
            tx = sum(op[_STAT] for op in px["ops"])
            lines.append(f"| (LCE + XNNPACK: sum / whole) | | {tx:.2f} / {px['whole'][_STAT]:.2f} | | | | |")
        lines.append("")
    return lines


def _aggregate(ops: list[dict]) -> dict:
    agg: dict = {}
    for op in ops:
        count, ms = agg.get(op["op"], (0, 0.0))
        agg[op["op"]] = (count + 1, ms + op[_STAT])
    return agg


def _interference_line(i: dict | None) -> str:
    if not i:
        return ""
    return (f"**Interference:** while measurements ran, other processes used {i['other_cpu_s']:.1f} CPU-seconds "
            f"({i['other_pct']:.1f}% of one core on average; hypervisor steal {i['steal_s']:.1f} s); "
            f"{i['disturbed_tasks']} measurement(s) saw more than 10% of a core used by others "
            f"({i['retried_tasks']} timing measurement(s) were repeated for that reason and the least disturbed "
            "attempt kept; results still disturbed are marked †). Before each timing measurement the run waited "
            f"while others used more than 25% of a core ({i.get('waited_for_quiet_s', 0):.0f} s in all). Slowdowns "
            "from outside this virtual machine are not visible here; the interleaving above is what protects the "
            "ratios from them.")


def _dagger(result: dict) -> str:
    i = result.get("interference")
    return " †" if i and i["other_pct"] > 10 else ""


def markdown(data: dict) -> str:
    meta = data["meta"]
    m = meta["machine"]
    v = meta["versions"]
    lines = [
        BEGIN, "",
        f"Measured {meta['date']} by `{meta['command']}` ({meta['mode']} mode; the whole run took "
        f"{meta['wall_seconds'] / 60:.1f} min).", "",
        f"**Machine:** {m.get('Model name', '?')}, {m['nproc']} CPUs available ({m.get('CPU(s)', '?')} in lscpu, "
        f"{m.get('Thread(s) per core', '?')} thread(s) per core, hypervisor {m.get('Hypervisor vendor', 'none')}), "
        f"SIMD {m.get('simd', '?')}, L2 {m.get('L2 cache', '?')}, L3 {m.get('L3 cache', '?')}, "
        f"{m.get('memory_gib', '?')} GiB RAM; {m['platform']}. "
        f"Load average (1 min) {meta['load_start'][0]:.2f} at the start, {meta['load_end'][0]:.2f} at the end "
        "(the benchmark itself keeps one core busy).", "",
        _interference_line(meta.get("interference")), "",
        f"**Versions:** Python {m['python']}, TensorFlow {v['tensorflow']}, tf-keras {v['tf-keras']}, "
        f"larq {v['larq']}, larq-compute-engine {v['larq-compute-engine']}, numpy {v['numpy']}, "
        f"xnor-keras {v['xnor-keras']} (commit {v['git_commit']}).", "",
        f"**Setup:** input {meta['sizes']['AlexNet']}x{meta['sizes']['AlexNet']} (AlexNet family), "
        f"{meta['sizes']['ResNet18']}x{meta['sizes']['ResNet18']} (ResNet-18 family), 1000 classes, batch 1, "
        "untrained weights (latency does not depend on them). Binary models: `xnor_keras.convert.timed_convert` "
        "(LCE 0.16) on LCE's interpreter with `use_indirect_bgemm=True` and `use_xnnpack=True` (its fastest "
        "setting here: binary convolutions on indirect BGEMM, float ones on XNNPACK). Float twins: "
        "`tf.lite.TFLiteConverter.from_keras_model` on `tf.lite.Interpreter` (XNNPACK). Latency: median "
        f"(min–max) of {meta['runs']} runs. All latency configurations of a family (AlexNet or ResNet-18) run "
        f"interleaved in one process, in {meta.get('rounds', 10)} rounds with the order rotated (each round: create "
        f"the interpreter, {meta['warmup']} untimed runs, {-(-meta['runs'] // meta.get('rounds', 10))} timed runs, "
        "delete it), so a change of machine "
        "speed during the run affects binary and float alike; peak memory is measured separately, one "
        "flatbuffer per process. "
        f"Training: `model.fit`, `xnor_keras.optimizers.Adam(1e-3)` (as `xnor_keras.training`: WeightClip inside the update), batch {meta['batch']}, synthetic data, one warm-up call (tracing) then "
        f"{meta['train_steps']} timed steps (median); the models of a family are interleaved step by step in one "
        "process, for the same reason.", "",
    ]
    fp = meta.get("library_fingerprint")
    if fp and fp["start"] != fp["end"]:
        lines += [f"**Warning:** xnor_keras's source changed while this run was in progress (fingerprint "
                  f"{fp['start']} → {fp['end']}, commit {v['git_commit']} → {meta.get('git_commit_end')}): "
                  "measurements taken before and after the change are mixed below.", ""]
    if meta["mode"] != "full":
        lines += ["**Quick mode:** small inputs; the targets below are stated for 224x224 and are only "
                  "indicative here.", ""]
    lines += ["### Targets", "", "| target | goal | measured | status |", "|---|---|---|---|"]
    for t in data["targets"]:
        lines.append(f"| {t['what']} | {t['goal']} | {t['measured']} | {_status(t['met'])} |")

    lines += ["", "### Host inference latency (ms, batch 1)", "",
              "| model | converter → runtime | 1 thread | 2 threads | speed-up vs float twin (1 / 2 threads) |",
              "|---|---|---|---|---|"]
    pair_by = {p["binary"]: p for p in data["pairs"]}
    for model in MODELS:
        for row in data["latency"]:
            if row["model"] != model:
                continue
            conv = "LCE" if row["converter"] == "lce" else "TFLiteConverter"
            rt = ("LCE interpreter (indirect BGEMM" + (" + XNNPACK)" if row["xnnpack"] else ")")
                  if row["runtime"] == "lce" else "tf.lite (XNNPACK)")
            primary = row is primary_latency(data, model)
            speed = ""
            flt = primary_latency(data, family_of(model))
            if kind_of(model) != "float" and flt:
                speed = " / ".join(f"{flt['latency'][t]['median_ms'] / row['latency'][t]['median_ms']:.2f}x"
                                   for t in row["latency"])
            elif primary:
                speed = "(baseline)"
            name = f"**{model}**" if primary else model
            name += _dagger(row)
            lines.append(f"| {name} | {conv} → {rt} | {_ms(row['latency'].get('1'))} | "
                         f"{_ms(row['latency'].get('2'))} | {speed} |")
    lines += ["", "Bold rows are the ones compared: binary on LCE's interpreter, float twin converted by "
              "TFLiteConverter on tf.lite. Speed-up = float latency / binary latency (ratio of the medians)."]
    paired = [p for p in pairs(data) if p.get("paired_ratio")]
    if paired:
        lines += ["Paired speed-up, used for the targets: in each of the rounds, float median / binary median "
                  "(measured seconds apart, so at the same machine speed), then the median over rounds: "
                  + "; ".join(f"{p['binary']} " + " / ".join(f"{r:.2f}x" for r in p["paired_ratio"].values())
                              for p in paired) + " (1 / 2 threads)."]
    lines.append("")

    lines += ["### Size", "",
              "| model | flatbuffer MB | vs float twin's flatbuffer | Keras float32 weights MB | params | ops in flatbuffer |",
              "|---|---|---|---|---|---|"]
    for model in MODELS:
        md = data["models"][model]
        conv = md.get("conversion_tflite") if kind_of(model) == "float" else md.get("conversion_lce")
        if not conv:
            continue
        ratio = ""
        if model in pair_by and pair_by[model]["size_ratio"]:
            ratio = f"{pair_by[model]['size_ratio']:.1f}x smaller"
        ops = ", ".join(f"{k} {n}" for k, n in sorted(conv["op_histogram"].items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"| {model} | {_mb(conv['flatbuffer_bytes'])} | {ratio} | {_mb(conv['keras_float32_bytes'])} | "
                     f"{conv['params']:,} | {ops} |")
    lines += ["", "MB = 10^6 bytes. Float twins: TFLiteConverter's flatbuffer. Keras float32 weights: 4 bytes "
              "× every weight of the Keras model (including BatchNorm statistics).", ""]

    lines += ["### Training step (model.fit, ms per step)", "",
              "| model | step median (min–max) | vs float twin | warm-up call (s) |", "|---|---|---|---|"]
    for model in MODELS:
        tr = data["models"][model].get("training")
        if not tr:
            continue
        ratio = f"{pair_by[model]['training_ratio']:.2f}x" if model in pair_by and pair_by[model]["training_ratio"] else "(baseline)"
        lines.append(f"| {model}{_dagger(tr)} | {_ms(tr['step'])} | {ratio} | {tr['warmup_s']:.1f} |")

    lines += ["", "### Conversion time and peak memory", "",
              "Every conversion and every inference measurement ran in its own process; peak RSS is that "
              "process's VmHWM, including Python + TensorFlow (`after imports` is the RSS before any model "
              "was built or loaded).", "",
              "| model | converter | conversion s | conversion peak RSS MiB (after imports / after build) | "
              "inference peak RSS MiB, 1 thread (after imports) | runtime |",
              "|---|---|---|---|---|---|"]
    for model in MODELS:
        md = data["models"][model]
        for converter in ("lce", "tflite"):
            conv = md.get(f"conversion_{converter}")
            if not conv:
                continue
            runtime = "lce" if (converter == "lce" and kind_of(model) != "float") else "tflite"
            mem = find_memory(data, model, converter, runtime)
            inf = f"{mem['rss']['peak_mb']:.0f} ({mem['rss']['baseline_mb']:.0f})" if mem else "—"
            r = conv["rss"]
            secs = f"{conv['seconds']:.2f}{_dagger(conv)}"
            if converter == "lce" and md.get("conversion_lce_repeats"):
                secs += f" (repeats: {', '.join(f'{x:.2f}' for x in md['conversion_lce_repeats'])})"
            lines.append(f"| {model} | {'LCE (timed_convert)' if converter == 'lce' else 'TFLiteConverter'} | "
                         f"{secs} | {r['peak_mb']:.0f} ({r['baseline_mb']:.0f} / {r['after_build_mb']:.0f}) | "
                         f"{inf} | {'LCE interpreter' if runtime == 'lce' else 'tf.lite'} |")

    lines += ["", "### Float twins: TFLiteConverter vs LCE's converter", "",
              "| model | TFLiteConverter → tf.lite (1 / 2 threads) | LCE converter → tf.lite (1 / 2 threads) | sizes MB |",
              "|---|---|---|---|"]
    for model in FLOAT_MODELS:
        a, b = find_latency(data, model, "tflite", "tflite"), find_latency(data, model, "lce", "tflite")
        ca, cb = data["models"][model].get("conversion_tflite"), data["models"][model].get("conversion_lce")
        if not (a and b and ca and cb):
            continue
        lines.append(f"| {model} | {a['latency']['1']['median_ms']:.2f} / {a['latency']['2']['median_ms']:.2f} | "
                     f"{b['latency']['1']['median_ms']:.2f} / {b['latency']['2']['median_ms']:.2f} | "
                     f"{_mb(ca['flatbuffer_bytes'])} / {_mb(cb['flatbuffer_bytes'])} |")

    if (data.get("op_profiles") or any(row["task"] != "convert" for row in data.get("variants", []))
            or data.get("conversion_breakdown") or data.get("quantizer_cost")):
        lines += ["", "### Diagnostics", ""]
    if any(row["task"] == "latency" for row in data.get("variants", [])):
        lines += ["#### Variants of the binary models", "",
                  "| model | variant | flatbuffer MB | 1 thread ms | 2 threads ms | speed-up vs float (1 / 2) |",
                  "|---|---|---|---|---|---|"]
        size_of = {}
        for row in data["variants"]:
            if row["task"] == "convert":
                size_of[(row["model"], row["variant"])] = row["flatbuffer_bytes"]
        for row in data["variants"]:
            if row["task"] != "latency":
                continue
            flt = primary_latency(data, family_of(row["model"]))
            size = size_of.get((row["model"], row["variant"].split("+")[0]),
                               (data["models"][row["model"]].get("conversion_lce") or {}).get("flatbuffer_bytes"))
            speed = ""
            if flt:
                speed = " / ".join(f"{flt['latency'][t]['median_ms'] / row['latency'][t]['median_ms']:.2f}x"
                                   for t in row["latency"])
            desc = {"xnnpack": "LCE interpreter with use_xnnpack=True (float ops on XNNPACK)",
                    "no-xnnpack": "LCE interpreter without XNNPACK (use_xnnpack=False: float ops on its own kernels)",
                    "pad_values=1": "pad_values=1.0 (binary padding), LCE interpreter + XNNPACK",
                    "int8": "int8_float_layers=True (int8 first/last layers), LCE interpreter + XNNPACK",
                    "int8+xnnpack": "int8_float_layers=True, LCE interpreter with use_xnnpack=True",
                    "bwn_int8_full": "bwn_weights='int8_full' (BWN layers with int8 activations too), "
                                     "LCE interpreter + XNNPACK"}[row["variant"]]
            lines.append(f"| {row['model']}{_dagger(row)} | {desc} | {_mb(size)} | {_ms(row['latency'].get('1'))} | "
                         f"{_ms(row['latency'].get('2'))} | {speed} |")
        lines.append("")
        jit = {row["model"]: row for row in data["variants"] if row["task"] == "train"}
        if jit:
            lines += ["#### Training step with XLA (`model.compile(..., jit_compile=True)`)", "",
                      "| model | step ms, jit_compile=True | step ms, default (above) | XNOR (XLA) vs float (XLA) | "
                      "XNOR (XLA) vs float (default) |", "|---|---|---|---|---|"]
            for model, row in jit.items():
                default = data["models"][model].get("training")
                r1 = r2 = ""
                if kind_of(model) == "xnor":
                    flt_jit = jit.get(family_of(model))
                    flt = data["models"][family_of(model)].get("training")
                    if flt_jit:
                        r1 = f"{row['step']['median_ms'] / flt_jit['step']['median_ms']:.2f}x"
                    if flt:
                        r2 = f"{row['step']['median_ms'] / flt['step']['median_ms']:.2f}x"
                lines.append(f"| {model} | {_ms(row['step'])} | {_ms(default['step']) if default else '—'} | {r1} | {r2} |")
            lines.append("")
    lines += op_tables(data)
    cb = data.get("conversion_breakdown")
    if cb:
        lines += ["#### Where XNORAlexNet's conversion time goes", "",
                  "The steps of `convert()` timed apart in one process (the first repeat includes one-time "
                  "tracing/graph set-up; `timed_convert` in a fresh process is the number in the targets):", "",
                  "| repeat | inference copy (clone + binarize kernels) s | SavedModel export s | LCE MLIR conversion s | total s |",
                  "|---|---|---|---|---|"]
        for i, step in enumerate(cb["steps"], 1):
            total = step["inference_copy_s"] + step["savedmodel_export_s"] + step["lce_mlir_s"]
            lines.append(f"| {i} | {step['inference_copy_s']:.2f} | {step['savedmodel_export_s']:.2f} | "
                         f"{step['lce_mlir_s']:.2f} | {total:.2f} |")
        lines.append("")
    qc = data.get("quantizer_cost")
    if qc:
        lines += ["#### Binarization work in one training step (forward + backward, alone)", "",
                  "Timed in isolation (tf.function, median of 3) at the shapes one training step applies them to. "
                  "Weights (a): what an XNOR/BWN layer does to its kernel each step: sign(W) and alpha in one "
                  "XLA-compiled step (`unit_sign_and_scale`, paper gradient) forward and backward, and larq's "
                  "`WeightClip` after the update; (b) the layers' earlier path: alpha·sign(W) "
                  "(`scaled_weight_sign`) split into sign(W) and alpha afterwards, plus `WeightClip`; "
                  "(c) `WeightClip` alone. Activations: `binary_activation` (sign + STE) forward and backward.", "",
                  "| model | binarized kernels (weights) | weights (a) ms | (b) unfused ms | (c) clip only ms | "
                  "binarized inputs (values at batch 16) | activations ms | training step XNOR − float, ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for model, r in qc.items():
            flt = data["models"][family_of(model)].get("training")
            mine = data["models"][model].get("training")
            diff = f"{mine['step']['median_ms'] - flt['step']['median_ms']:.0f}" if flt and mine else "—"
            def ms(key):
                return f"{r[key]['median_ms']:.0f}" if key in r else "—"

            lines.append(f"| {model} | {r['kernels']} ({r['kernel_weights']:,}) | "
                         f"{ms('weights_step')} | {ms('unfused_step')} | {ms('clip_only_step')} | "
                         f"{r['activations']} ({r['activation_values']:,}) | "
                         f"{r.get('activations_step', {}).get('median_ms', float('nan')):.1f} | {diff} |")
        lines.append("")
    if data["meta"].get("failures"):
        lines += ["### Failed measurements", ""] + [f"- {f}" for f in data["meta"]["failures"]] + [""]
    lines += [f"Raw numbers: `{meta['json']}`; chart: `{meta['png']}`.", "", END]
    return "\n".join(lines)


def write_markdown(path: Path, block: str) -> None:
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + block + tail)
            return
    path.write_text("# Benchmarks\n\n" + block + "\n")


def chart(data: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no chart"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    names, lat = [], {t: [] for t in map(str, THREADS)}
    for model in MODELS:
        row = primary_latency(data, model)
        if row:
            names.append(model)
            for t in lat:
                lat[t].append(row["latency"][t]["median_ms"])
    width = 0.38
    xs = range(len(names))
    for i, (t, values) in enumerate(lat.items()):
        bars = ax1.bar([x + (i - 0.5) * width for x in xs], values, width, label=f"{t} thread{'s' if t != '1' else ''}")
        ax1.bar_label(bars, fmt="%.1f", fontsize=7)
    ax1.set_xticks(list(xs), names, rotation=30, ha="right")
    ax1.set_ylabel("latency, ms (median, batch 1)")
    ax1.set_title("Host latency: binary on LCE, float on tf.lite (XNNPACK)")
    ax1.legend()
    sizes = []
    for model in names:
        md = data["models"][model]
        conv = md.get("conversion_tflite") if kind_of(model) == "float" else md.get("conversion_lce")
        sizes.append(conv["flatbuffer_bytes"] / 1e6 if conv else 0)
    colors = ["tab:gray" if kind_of(n) == "float" else "tab:green" if kind_of(n) == "xnor" else "tab:olive" for n in names]
    bars = ax2.bar(list(xs), sizes, color=colors)
    ax2.bar_label(bars, fmt="%.1f", fontsize=7)
    ax2.set_yscale("log")
    ax2.set_ylim(bottom=1)
    from matplotlib.patches import Patch

    ax2.legend(handles=[Patch(color="tab:green", label="XNOR (LCE)"), Patch(color="tab:olive", label="BWN (LCE)"),
                        Patch(color="tab:gray", label="float (TFLiteConverter)")])
    ax2.set_xticks(list(xs), names, rotation=30, ha="right")
    ax2.set_ylabel("flatbuffer size, MB (log scale)")
    ax2.set_title("Flatbuffer size")
    meta = data["meta"]
    fig.suptitle(f"xnor_keras benchmark ({meta['mode']}: AlexNet {meta['sizes']['AlexNet']}², "
                 f"ResNet-18 {meta['sizes']['ResNet18']}²), {meta['machine'].get('Model name', '')}, {meta['date']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def console_summary(data: dict) -> str:
    lines = ["", "=" * 100, "SUMMARY", "=" * 100]
    lines.append(f"{'model':<14}{'runtime':<34}{'1 thr ms':>12}{'2 thr ms':>12}{'speed-up 1/2 thr':>22}")
    pair_by = {p["binary"]: p for p in data["pairs"]}
    for model in MODELS:
        row = primary_latency(data, model)
        if not row:
            continue
        rt = ("LCE interp. (indirect BGEMM" + (" + XNNPACK)" if row["xnnpack"] else ")")
              if row["runtime"] == "lce" else "tf.lite (XNNPACK)")
        sp = ""
        if model in pair_by and pair_by[model]["latency_ratio"]:
            sp = " / ".join(f"{r:.2f}x" for r in pair_by[model]["latency_ratio"].values())
        lines.append(f"{model:<14}{rt:<34}{row['latency']['1']['median_ms']:>12.2f}"
                     f"{row['latency']['2']['median_ms']:>12.2f}{sp:>22}")
    lines.append("")
    lines.append(f"{'model':<14}{'flatbuffer MB':>14}{'keras f32 MB':>14}{'convert s':>11}{'train ms/step':>15}{'train ratio':>13}")
    for model in MODELS:
        md = data["models"][model]
        conv = md.get("conversion_tflite") if kind_of(model) == "float" else md.get("conversion_lce")
        tr = md.get("training")
        ratio = pair_by[model]["training_ratio"] if model in pair_by else None
        lines.append(f"{model:<14}{_mb(conv['flatbuffer_bytes']) if conv else '—':>14}"
                     f"{_mb(conv['keras_float32_bytes']) if conv else '—':>14}"
                     f"{conv['seconds'] if conv else float('nan'):>11.2f}"
                     f"{tr['step']['median_ms'] if tr else float('nan'):>15.0f}"
                     f"{(f'{ratio:.2f}x' if ratio else ''):>13}")
    lines.append("")
    lines.append(f"{'target':<42}{'goal':<14}{'measured':<44}status")
    for t in data["targets"]:
        status = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        lines.append(f"{t['what']:<42}{t['goal']:<14}{t['measured']:<44}{status}")
    return "\n".join(lines)

