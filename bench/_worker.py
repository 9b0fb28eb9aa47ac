"""One measurement per process, so that peak memory (VmHWM) and timings of one task never mix
with another's. Run by ``bench/benchmark.py``; not meant to be called by hand:

    python bench/_worker.py TASK ARGS_JSON RESULT_JSON

Each task writes a JSON object to RESULT_JSON. Every result carries ``rss``: the process's
resident set size right after its imports (``baseline_mb``) and its peak (``peak_mb``, VmHWM),
both in MiB; memory attributable to the task is roughly the difference.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

import xnor_keras  # noqa: F401  (first: binds tf.keras to Keras 2 before larq or LCE load)


def _status_mb(field: str) -> float:
    """A VmXXX line of /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _summary(times_ms: list[float]) -> dict:
    return {
        "median_ms": float(np.median(times_ms)),
        "min_ms": float(min(times_ms)),
        "max_ms": float(max(times_ms)),
        "runs": len(times_ms),
    }


def _time_calls(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times


# --------------------------------------------------------------------------------------------
# Interpreters


def _runner(flatbuffer: bytes, runtime: str, threads: int, xnnpack: bool = False):
    """A zero-argument function that runs one batch-1 inference on random input.

    runtime "lce": LCE's interpreter with indirect BGEMM (its fastest binary kernel on x86),
    optionally with the XNNPACK delegate for float ops. runtime "tflite": TensorFlow's
    tf.lite.Interpreter (XNNPACK delegate on by default).
    """
    rng = np.random.default_rng(0)
    if runtime == "lce":
        import larq_compute_engine as lce

        interpreter = lce.testing.Interpreter(
            flatbuffer, num_threads=threads, use_indirect_bgemm=True, use_xnnpack=xnnpack
        )
        inputs = [_random(shape, dtype, rng) for shape, dtype in zip(interpreter.input_shapes, interpreter.input_types)]
        raw = interpreter.interpreter  # the C++ wrapper: skips the Python batching loop of .predict

        def run():
            return raw.predict(inputs)

        return run
    if runtime == "tflite":
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
        interpreter.allocate_tensors()
        inputs = [(d["index"], _random(d["shape"], d["dtype"], rng)) for d in interpreter.get_input_details()]
        outputs = [d["index"] for d in interpreter.get_output_details()]

        def run():
            for index, value in inputs:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            return [interpreter.get_tensor(i) for i in outputs]

        return run
    raise ValueError(f"unknown runtime {runtime!r}")


def _random(shape, dtype, rng) -> np.ndarray:
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _import_runtime(runtime: str) -> None:
    if runtime == "lce":
        import larq_compute_engine  # noqa: F401  (imports TensorFlow too)
    else:
        import tensorflow  # noqa: F401


def task_latency(args: dict) -> dict:
    """Batch-1 latency of one flatbuffer on one runtime, for each thread count."""
    _import_runtime(args["runtime"])
    baseline = _status_mb("VmRSS")
    flatbuffer = Path(args["flatbuffer"]).read_bytes()
    results = {}
    peak_first = None
    for threads in args["threads"]:
        run = _runner(flatbuffer, args["runtime"], threads, args.get("xnnpack", False))
        results[str(threads)] = _summary(_time_calls(run, args["runs"], args["warmup"]))
        if peak_first is None:
            peak_first = _status_mb("VmHWM")  # before a second interpreter exists
        del run
    return {"latency": results, "rss": {"baseline_mb": baseline, "peak_mb": peak_first}}


def task_latency_family(args: dict) -> dict:
    """Batch-1 latency of several flatbuffers, interleaved in one process.

    The timed runs are taken in `rounds` rounds; each round runs every configuration (in an
    order rotated per round): create its interpreter, `warmup` untimed runs, runs/rounds timed
    runs, delete it. A change of machine speed during the measurement (other tenants of the
    host, frequency) then affects every configuration alike, so the ratios between them stay
    meaningful. Only one interpreter exists at a time: an idle multi-threaded interpreter's
    workers spin for a while after each inference and would steal the cores of the next one.
    Memory is measured separately, one flatbuffer per process (task "latency").
    """
    import gc

    import larq_compute_engine  # noqa: F401  (both runtimes load TensorFlow anyway)

    configs = args["configs"]
    runs, rounds = args["runs"], args["rounds"]
    per_round = -(-runs // rounds)
    blobs = {c["flatbuffer"]: Path(c["flatbuffer"]).read_bytes() for c in configs}
    results: dict = {c["key"]: {} for c in configs}
    for threads in args["threads"]:
        times: dict = {c["key"]: [] for c in configs}
        for r in range(rounds):
            for c in configs[r % len(configs):] + configs[: r % len(configs)]:
                run = _runner(blobs[c["flatbuffer"]], c["runtime"], threads, c.get("xnnpack", False))
                times[c["key"]].append(_time_calls(run, per_round, args["warmup"]))
                del run
                gc.collect()
        for key, per_round_times in times.items():
            results[key][str(threads)] = {
                **_summary([t for chunk in per_round_times for t in chunk]),
                # Round r of every configuration ran within seconds of the others: ratios taken
                # round by round compare runs that saw the same machine speed.
                "round_medians": [float(np.median(chunk)) for chunk in per_round_times],
            }
    return {"latency": results}


# --------------------------------------------------------------------------------------------
# Per-op profile: every operator of the flatbuffer cut out into a one-op flatbuffer and timed
# on the same runtime (TFLite's Python interpreters expose no op profiler).


def _one_op_flatbuffers(flatbuffer: bytes):
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    graph = model.subgraphs[0]

    def has_data(buffer_index: int) -> bool:
        data = model.buffers[buffer_index].data if buffer_index < len(model.buffers) else None
        return data is not None and len(data) > 0

    for op in graph.operators:
        used = []
        for t in [*op.inputs, *op.outputs, *(op.intermediates if op.intermediates is not None else [])]:
            if t >= 0 and t not in used:
                used.append(t)
        remap = {t: k for k, t in enumerate(used)}
        buffers = [schema.BufferT()]  # buffer 0: the empty sentinel every non-constant tensor uses
        tensors = []
        for t in used:
            tensor = copy.copy(graph.tensors[t])
            if has_data(tensor.buffer):
                buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(buffers) - 1
            else:
                tensor.buffer = 0
            tensors.append(tensor)
        new_op = copy.copy(op)
        new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
        new_op.outputs = [remap[t] for t in op.outputs]
        if op.intermediates is not None:
            new_op.intermediates = [remap[t] for t in op.intermediates]
        sub = schema.SubGraphT()
        sub.tensors = tensors
        sub.operators = [new_op]
        sub.inputs = [remap[t] for t in dict.fromkeys(op.inputs) if t >= 0 and tensors[remap[t]].buffer == 0]
        sub.outputs = [remap[t] for t in op.outputs]
        sub.name = graph.name
        one = schema.ModelT()
        one.version = model.version
        one.operatorCodes = model.operatorCodes
        one.subgraphs = [sub]
        one.buffers = buffers
        one.description = model.description
        builder = flatbuffers.Builder(1024)
        builder.Finish(one.Pack(builder), file_identifier=b"TFL3")
        output = graph.tensors[op.outputs[0]]
        first_input = graph.tensors[op.inputs[0]] if op.inputs[0] >= 0 else None
        yield {
            "input": first_input.name.decode() if first_input is not None and first_input.name else "",
            "output": output.name.decode() if output.name else "",
            "output_shape": [int(d) for d in output.shape] if output.shape is not None else [],
        }, bytes(builder.Output())


def task_op_profile(args: dict) -> dict:
    """Median time of each operator alone, and of the whole model, for several configurations.

    Every configuration's ops are cut out into one-op flatbuffers; then, in `rounds` rounds
    (configuration order rotated per round), each op and the whole model get an interpreter,
    `warmup` untimed runs and runs/rounds timed runs. As in task "latency_family", a slow spell
    of the machine then hits every configuration alike.
    """
    import gc

    import larq_compute_engine  # noqa: F401

    from xnor_keras.convert import op_names

    configs = args["configs"]
    runs, rounds = args["runs"], args["rounds"]
    per_round = -(-runs // rounds)
    prepared = {}
    for c in configs:
        flatbuffer = Path(c["flatbuffer"]).read_bytes()
        ops = [(name, info, one) for name, (info, one) in zip(op_names(flatbuffer), _one_op_flatbuffers(flatbuffer))]
        prepared[c["key"]] = (flatbuffer, ops)
    times = {c["key"]: {"ops": [[] for _ in prepared[c["key"]][1]], "whole": []} for c in configs}
    for r in range(rounds):
        for c in configs[r % len(configs):] + configs[: r % len(configs)]:
            flatbuffer, ops = prepared[c["key"]]
            record = times[c["key"]]
            for i, (_, _, one) in enumerate(ops):
                run = _runner(one, c["runtime"], args["threads"], c.get("xnnpack", False))
                record["ops"][i] += _time_calls(run, per_round, args["warmup"])
                del run
            run = _runner(flatbuffer, c["runtime"], args["threads"], c.get("xnnpack", False))
            record["whole"] += _time_calls(run, per_round, args["warmup"])
            del run
            gc.collect()
    results = {}
    for c in configs:
        _, ops = prepared[c["key"]]
        record = times[c["key"]]
        results[c["key"]] = {
            "ops": [{"op": name, **info, "median_ms": float(np.median(t)), "min_ms": float(min(t))}
                    for (name, info, _), t in zip(ops, record["ops"])],
            "whole": _summary(record["whole"]),
        }
    return {"profiles": results}


# --------------------------------------------------------------------------------------------
# Conversion


def _build(name: str, size: int, options: dict | None = None):
    from xnor_keras import zoo

    return zoo.get_model(name, input_shape=(size, size, 3), **(options or {}))


def task_convert(args: dict) -> dict:
    """Build a zoo model and convert it (LCE via xnor_keras.convert.timed_convert, or TFLite's
    converter); write the flatbuffer to args["output"]."""
    import tensorflow as tf

    from xnor_keras import convert as xc

    baseline = _status_mb("VmRSS")
    start = time.perf_counter()
    model = _build(args["model"], args["size"], args.get("options"))
    build_s = time.perf_counter() - start
    after_build = _status_mb("VmRSS")
    if args["converter"] == "lce":
        options = dict(args.get("convert_options") or {})
        if options.get("int8_float_layers") or options.get("bwn_weights") == "int8_full":
            # Ranges from 16 standard-normal images: size and latency do not depend on them.
            shape = (16, *model.inputs[0].shape[1:])
            options["calibration_data"] = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        flatbuffer, seconds = xc.timed_convert(model, **options)
    else:
        start = time.perf_counter()
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    xc.save_tflite(flatbuffer, args["output"])
    result = {
        "seconds": seconds,
        "build_seconds": build_s,
        "flatbuffer_bytes": len(flatbuffer),
        "keras_float32_bytes": 4 * sum(int(np.prod(w.shape)) for w in model.weights),
        "params": int(model.count_params()),
        "op_histogram": xc.op_histogram(flatbuffer),
        "rss": {"baseline_mb": baseline, "after_build_mb": after_build, "peak_mb": peak},
    }
    import larq as lq

    result["layer_macs"] = {
        p.name: int(p.op_count("mac") or 0)
        for p in lq.models.ModelProfile(model).layer_profiles
        if p.op_count("mac")
    }
    if args["converter"] == "lce":
        report = xc.conversion_report(model, flatbuffer)
        result["binarized_layers"] = len(report.layers)
        result["binary_op_layers"] = sum(layer.binary for layer in report.layers)
        result["macs"] = int(report.total_macs)
    return result


def task_convert_breakdown(args: dict) -> dict:
    """Where conversion time goes: xnor_keras's inference copy, the SavedModel export (the
    serving signature only, as xnor_keras.convert._lce_convert writes it), and LCE's MLIR
    conversion of that SavedModel (the steps of convert(), timed apart)."""
    import tempfile

    from tf_keras.src.saving.legacy import saving_utils

    from larq_compute_engine.mlir.python.converter import convert_saved_model
    from xnor_keras import convert as xc

    model = _build(args["model"], args["size"], args.get("options"))
    steps = []
    for _ in range(args.get("repeats", 1)):
        step = {}
        start = time.perf_counter()
        inference = xc.inference_copy(model)
        xc._center_sign_thresholds(inference)  # what convert() does before LCE; milliseconds
        step["inference_copy_s"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            inference.save(tmp, save_format="tf", include_optimizer=False, save_traces=False,
                           signatures=saving_utils.trace_model_call(inference))
            step["savedmodel_export_s"] = time.perf_counter() - start
            start = time.perf_counter()
            flatbuffer = convert_saved_model(tmp)
            step["lce_mlir_s"] = time.perf_counter() - start
        step["flatbuffer_bytes"] = len(flatbuffer)
        steps.append(step)
        del inference
    return {"steps": steps}


# --------------------------------------------------------------------------------------------
# Training


def _no_clip(model) -> None:
    """Diagnostic: drop the WeightClip constraint of every binarized layer."""
    for layer in model.layers:
        if getattr(layer, "kernel_quantizer", None) is not None:
            layer.kernel_constraint = None
            layer.kernel.latent_variable._constraint = None


def _no_weight_binarization(model) -> None:
    """Diagnostic: binarized layers convolve with their latent weights (alpha = 1)."""
    import tensorflow as tf

    for layer in model.layers:
        if getattr(layer, "kernel_quantizer", None) is not None:
            layer._unit_kernel_and_alpha = lambda kernel, compiled=True: (
                tf.convert_to_tensor(kernel.latent_variable), tf.ones([kernel.shape[-1]])
            )


def _no_input_binarization(model) -> None:
    """Diagnostic: XNOR layers take their real-valued inputs as they are."""
    for layer in model.layers:
        if getattr(layer, "input_quantizer", None) is not None:
            layer.input_quantizer = None


def _alpha_gradient(model) -> None:
    """Diagnostic: let the tape compute alpha's (discarded) gradient, as before it was cut."""
    from xnor_keras import quantizers as xq

    for layer in model.layers:
        quantizer = getattr(layer, "kernel_quantizer", None)
        if quantizer is not None:
            layer._unit_kernel_and_alpha = lambda kernel, compiled=True, q=quantizer: xq.unit_sign_and_scale(
                kernel.latent_variable, q.gradient, q.clip_value
            )


def _no_xla_binarization(model) -> None:
    """Diagnostic: binarize the kernels with plain TensorFlow ops (``compiled=False``)."""
    for layer in model.layers:
        if getattr(layer, "kernel_quantizer", None) is not None:
            method = layer._unit_kernel_and_alpha
            layer._unit_kernel_and_alpha = lambda kernel, compiled=True, f=method: f(kernel, compiled=False)


TRAIN_TRANSFORMS = {
    "no_xla_binarization": _no_xla_binarization,
    "alpha_gradient": _alpha_gradient,
    "no_clip": _no_clip,
    "no_weight_binarization": _no_weight_binarization,
    "no_input_binarization": _no_input_binarization,
}
"""Diagnostic changes to a built model (``transforms`` of a train_family entry)."""


def task_train_family(args: dict) -> dict:
    """Training step time of several models, interleaved in one process.

    Every model is built (builder ``options`` and diagnostic ``transforms`` per entry) and
    compiled (``xnor_keras.optimizers.Adam`` as the training recipes use, or Keras' own Adam
    with ``optimizer="keras"``; sparse categorical cross-entropy; ``jit_compile`` per entry), gets one
    warm-up ``model.fit`` call on one batch (tracing), then the timed steps are taken in rounds:
    each round calls ``model.fit`` on the next batch for every model in turn, timing the step
    itself (train-batch begin to end) with a callback. A change of machine speed then hits all
    models alike; ``times_ms`` keeps every step in round order for paired ratios.
    """
    import tensorflow as tf

    baseline = _status_mb("VmRSS")
    size, batch, steps = args["size"], args["batch"], args["steps"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * steps, size, size, 3)).astype(np.float32)
    models, warmup = {}, {}
    times: dict = {}
    cpu_times: dict = {}  # process CPU time per step: the work done, less sensitive to other load

    class StepTimer(tf.keras.callbacks.Callback):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()
            self._cpu_start = time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # make sure the step has finished
            times[self.key].append(1000 * (time.perf_counter() - self._start))
            cpu_times[self.key].append(1000 * (time.process_time() - self._cpu_start))

    for entry in args["entries"]:
        key = entry["key"]
        if entry.get("policy"):  # e.g. mixed_bfloat16: the model keeps the policy it is built under
            tf.keras.mixed_precision.set_global_policy(entry["policy"])
        try:
            model = _build(entry["model"], size, entry.get("options"))
        finally:
            tf.keras.mixed_precision.set_global_policy("float32")
        for transform in entry.get("transforms", ()):
            TRAIN_TRANSFORMS[transform](model)
        # What xnor_keras.training uses (WeightClip inside the update); "keras" for Keras' own.
        from xnor_keras.optimizers import Adam as optimizer_class

        if entry.get("optimizer") == "keras":
            optimizer_class = tf.keras.optimizers.Adam
        model.compile(
            optimizer=optimizer_class(learning_rate=1e-3),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            jit_compile=entry.get("jit_compile", False),
        )
        if entry.get("optimizer_jit"):  # Keras turns it off without a GPU; force it for a diagnosis
            model.optimizer.jit_compile = True
        classes = int(model.outputs[0].shape[-1])
        y = rng.integers(0, classes, batch * steps)
        start = time.perf_counter()
        model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0, shuffle=False)
        warmup[key] = time.perf_counter() - start
        models[key] = (model, y)
        times[key] = []
        cpu_times[key] = []
    keys = list(models)
    for step in range(steps):
        batch_slice = slice(step * batch, (step + 1) * batch)
        for key in keys[step % len(keys):] + keys[: step % len(keys)]:
            model, y = models[key]
            model.fit(x[batch_slice], y[batch_slice], batch_size=batch, epochs=1, verbose=0, shuffle=False,
                      callbacks=[StepTimer(key)])
    return {
        "training": {
            key: {"step": _summary(times[key]), "warmup_s": warmup[key], "times_ms": times[key],
                  "cpu_times_ms": cpu_times[key]}
            for key in keys
        },
        "rss": {"baseline_mb": baseline, "peak_mb": _status_mb("VmHWM")},
    }


def task_quantizer_cost(args: dict) -> dict:
    """Time of the binarization work alone, at the shapes one training step applies it to.

    * weights: for every binarized kernel, what the layer does to it in a training step:
      sign(W) and alpha in one step (xnor_keras.quantizers.unit_sign_and_scale, "paper"
      gradient) forward and backward, and larq's WeightClip constraint after the update;
    * unfused: the same with alpha * sign(W) (scaled_weight_sign) split into sign(W) and alpha
      afterwards (the layers' path before the fused step);
    * activations: binary_activation forward and backward on every binarized layer input, at
      batch args["batch"].
    """
    import larq as lq
    import tensorflow as tf

    from xnor_keras import quantizers as xq

    def one_bit(quantizer) -> bool:
        return getattr(quantizer, "precision", None) == 1

    model = _build(args["model"], args["size"])
    batch = args["batch"]
    layers, kernels, activations = [], [], []
    for layer in model.layers:
        if one_bit(getattr(layer, "kernel_quantizer", None)):
            layers.append(layer)
            kernels.append(tf.Variable(tf.random.uniform(layer.kernel.shape, -1, 1)))
        if one_bit(getattr(layer, "input_quantizer", None)):
            activations.append(tf.random.normal((batch, *layer.input_shape[1:])))
    clip = lq.constraints.WeightClip(1.0)

    def kernel_step(binarize):
        """Forward + backward of `binarize(layer, kernel) -> (sign(W), alpha)` over every kernel,
        then the update with WeightClip, as one training step applies them."""

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                parts = []
                for layer, kernel in zip(layers, kernels):
                    unit, alpha = binarize(layer, kernel)
                    parts.append(tf.reduce_sum(unit) + tf.reduce_sum(alpha))
                total = tf.add_n(parts)
            grads = tape.gradient(total, kernels)
            for kernel, grad in zip(kernels, grads):
                kernel.assign(clip(kernel - 1e-9 * grad))
            return total

        return step

    # The layers' path ("paper", the zoo default gradient), and the path before the fused step:
    # alpha * sign(W), then split into sign(W) and alpha.
    weights_step = kernel_step(lambda layer, kernel: xq.unit_sign_and_scale(kernel, "paper"))
    unfused_step = kernel_step(
        lambda layer, kernel: layer._unit_kernel_and_alpha(xq.scaled_weight_sign(kernel, "paper"))
    )

    @tf.function
    def clip_only_step():  # larq's WeightClip alone: the part every latent-weight model pays
        for kernel in kernels:
            kernel.assign(clip(kernel))
        return 0

    @tf.function
    def activations_step():
        with tf.GradientTape() as tape:
            tape.watch(activations)
            total = tf.add_n([tf.reduce_sum(xq.binary_activation(a)) for a in activations])
        return tape.gradient(total, activations)

    result = {
        "kernels": len(kernels),
        "kernel_weights": int(sum(np.prod(k.shape) for k in kernels)),
        "activations": len(activations),
        "activation_values": int(sum(np.prod(a.shape) for a in activations)),
    }
    if kernels:
        result["weights_step"] = _summary(_time_calls(weights_step, args["runs"], 2))
        result["unfused_step"] = _summary(_time_calls(unfused_step, args["runs"], 2))
        result["clip_only_step"] = _summary(_time_calls(clip_only_step, args["runs"], 2))
    if activations:
        result["activations_step"] = _summary(_time_calls(activations_step, args["runs"], 2))
    return result


TASKS = {
    "latency": task_latency,
    "latency_family": task_latency_family,
    "train_family": task_train_family,
    "op_profile": task_op_profile,
    "convert": task_convert,
    "convert_breakdown": task_convert_breakdown,
    "quantizer_cost": task_quantizer_cost,
}


def main(argv: list[str]) -> int:
    task, args, out = argv[1], json.loads(argv[2]), Path(argv[3])
    start = time.perf_counter()
    result = TASKS[task](args)
    result["process_seconds"] = time.perf_counter() - start
    result.setdefault("rss", {})
    result["rss"].setdefault("peak_mb", _status_mb("VmHWM"))
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
