"""The "default" kernel's int8 GEMV (xnor_lite/native/int8_gemv.cc) against LiteRT's own kernels.

Under kernel "default", xnor_lite wraps LiteRT's FULLY_CONNECTED and CONV_2D registrations: an
int8 node that is one matrix-vector product LiteRT would run through its CustomGemv (batch 1,
int8 input, weights and output, per-tensor weights for FULLY_CONNECTED, per-tensor or
per-channel for CONV_2D whose filter covers its whole input map, >= 4 outputs, >= 8 inputs) runs
our GEMV, and every other node runs LiteRT's kernel unchanged. Our GEMV requantizes exactly as
LiteRT does, so the outputs must equal those of kernel "lce" (LiteRT's kernels alone) bit for
bit: depths off every multiple of 16, with and without bias, fused ReLU/ReLU6, AlexNet's fc8
shape (4096 -> 1000, as the 1x1 CONV_2D the converter writes), 1 and 2 threads, on CPUs with
and without the dot-product instructions. The library's
invocation counter checks which path ran: the GEMV where it applies, LiteRT for batch > 1,
per-channel FULLY_CONNECTED, float and hybrid layers, too few rows or columns, a weight of
-128, a 2x2 output map. The host build runs the portable C++ path, the emulated aarch64 target
(see test_arm64.py) the NEON one.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf

import xnor_lite

from conftest import run_at_batch, run_native_cases_on_arm64

SAMPLES = 6
# name -> (input shape, layer, units, options, GEMV nodes per invocation). layer: "dense" or
# "conv" (a filter covering the whole input map, "valid"); options: "relu", "relu6", "nobias",
# "per_channel" (default per-tensor weights), "float" (no quantization), "hybrid" (int8 weights,
# float activations), "batch3", "w-128" (one weight set to -128), "conv2x2" (a 2x2 filter on a
# 3x3 map: a 2x2 output map), "ties" (the output scale set for a requantization multiplier of
# ~0.3, inputs within 3 steps of their zero point).
CASES = {
    "dense100x37": ((100,), "dense", 37, (), 1),
    "dense37x100-relu": ((37,), "dense", 100, ("relu",), 1),
    "dense71x12-relu6": ((71,), "dense", 12, ("relu6",), 1),
    "dense100x37-nobias": ((100,), "dense", 37, ("nobias",), 1),
    "dense8x5": ((8,), "dense", 5, (), 1),
    "dense4096x1000": ((4096,), "dense", 1000, (), 1),
    # fc8 as the converter writes it: a 1x1 CONV_2D on a 1x1 map, per-channel weights.
    "conv1x1on1x1-c4096x1000": ((1, 1, 4096), "conv", 1000, ("per_channel",), 1),
    "conv1x1on1x1-c100x37": ((1, 1, 100), "conv", 37, ("per_channel",), 1),
    "conv1x1on1x1-c100x37-per-tensor-relu": ((1, 1, 100), "conv", 37, ("relu",), 1),
    "conv3x3on3x3-c20x11-relu": ((3, 3, 20), "conv", 11, ("per_channel", "relu"), 1),
    # Requantization by ~0.3 (exponent -1 or -2) on inputs near the zero point: rounding ties
    # of the last shift are frequent, and one rounding step instead of LiteRT's two would differ.
    "dense16x8-ties": ((16,), "dense", 8, ("ties",), 1),
    "conv1x1on1x1-c24x8-ties": ((1, 1, 24), "conv", 8, ("per_channel", "ties"), 1),
    # LiteRT's kernel: not a GEMV it runs through CustomGemv, or not int8 with per-tensor FC weights.
    "dense100x37-batch3": ((100,), "dense", 37, ("batch3",), 0),
    "dense100x37-per-channel": ((100,), "dense", 37, ("per_channel",), 0),
    "dense100x3": ((100,), "dense", 3, (), 0),
    "dense7x37": ((7,), "dense", 37, (), 0),
    "dense100x37-w-128": ((100,), "dense", 37, ("w-128",), 0),
    "dense100x37-float": ((100,), "dense", 37, ("float",), 0),
    "dense100x37-hybrid": ((100,), "dense", 37, ("hybrid",), 0),
    "conv2x2on3x3": ((3, 3, 20), "conv", 11, ("per_channel", "conv2x2"), 0),
}


def _model(input_shape, layer: str, units: int, options) -> tf.keras.Model:
    batch = 3 if "batch3" in options else 1
    inputs = tf.keras.Input(input_shape, batch_size=batch)
    activation = "relu" if "relu" in options else tf.nn.relu6 if "relu6" in options else None
    common = dict(activation=activation, use_bias="nobias" not in options,
                  bias_initializer="random_normal", kernel_initializer="glorot_normal")
    if layer == "dense":
        outputs = tf.keras.layers.Dense(units, **common)(inputs)
    else:
        size = 2 if "conv2x2" in options else input_shape[:2]
        outputs = tf.keras.layers.Conv2D(units, size, padding="valid", **common)(inputs)
    return tf.keras.Model(inputs, outputs)


def _convert(model: tf.keras.Model, options, rng) -> bytes:
    """TFLite's converter, full int8 with per-tensor weights unless told otherwise (LCE's
    converter writes int8 layers in the same form)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if "float" in options:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if "hybrid" in options:
        return converter.convert()
    shape = tuple(model.inputs[0].shape)

    def calibration():
        for _ in range(16):
            yield [rng.standard_normal(shape).astype(np.float32)]

    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = "per_channel" not in options
    return converter.convert()


def _op_details(flatbuffer: bytes):
    """(op name, its weights' dtype, their scales) of the model's one FC / conv."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    names = {schema.BuiltinOperator.FULLY_CONNECTED: "FULLY_CONNECTED", schema.BuiltinOperator.CONV_2D: "CONV_2D"}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin in names:
            weights = graph.tensors[op.inputs[1]]
            quantization = weights.quantization
            scales = 0 if quantization is None or quantization.scale is None else len(quantization.scale)
            return names[builtin], weights.type, scales
    raise AssertionError("no FULLY_CONNECTED or CONV_2D in the flatbuffer")


def _with_weight(flatbuffer: bytes, value: int) -> bytes:
    """The flatbuffer with the first int8 weight of its FULLY_CONNECTED set to `value`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED:
            buffer = model.buffers[graph.tensors[op.inputs[1]].buffer]
            data = np.asarray(buffer.data, np.uint8).copy()
            data[0] = np.uint8(value & 0xFF)
            buffer.data = data
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with_output_multiplier(flatbuffer: bytes, multiplier: float) -> bytes:
    """The flatbuffer with its FC / conv output scale set so that input scale x (largest) weight
    scale / output scale = `multiplier`."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) in (
                schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.CONV_2D):
            input_scale = float(graph.tensors[op.inputs[0]].quantization.scale[0])
            weight_scale = float(np.max(graph.tensors[op.inputs[1]].quantization.scale))
            graph.tensors[op.outputs[0]].quantization.scale = np.array(
                [input_scale * weight_scale / multiplier], np.float32)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _input_zero_point(flatbuffer: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    return int(graph.tensors[graph.inputs[0]].quantization.zeroPoint[0])


@pytest.fixture(scope="module")
def cases():
    """name -> (flatbuffer, inputs, GEMV invocations expected per run), converted once."""
    built = {}
    for name, (input_shape, layer, units, options, gemv_nodes) in CASES.items():
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(len(built))
        rng = np.random.default_rng(len(built))
        flatbuffer = _convert(_model(input_shape, layer, units, options), options, rng)
        if "w-128" in options:
            flatbuffer = _with_weight(flatbuffer, -128)
        if "ties" in options:
            flatbuffer = _with_output_multiplier(flatbuffer, 0.3)
        if "batch3" in options:
            samples, invocations = 3, 1
        else:
            samples, invocations = SAMPLES, SAMPLES
        if "float" in options or "hybrid" in options:
            x = rng.standard_normal((samples, *input_shape)).astype(np.float32)
        elif "ties" in options:
            samples = invocations = 64
            zero_point = _input_zero_point(flatbuffer)
            x = np.clip(zero_point + rng.integers(-3, 4, (samples, *input_shape)), -128, 127).astype(np.int8)
        else:
            x = rng.integers(-128, 128, (samples, *input_shape)).astype(np.int8)
        built[name] = (flatbuffer, x, gemv_nodes * invocations)
    return built


def test_cases_are_the_ops_they_name(cases):
    for name, (flatbuffer, _, _) in cases.items():
        op, weights_type, scales = _op_details(flatbuffer)
        assert op == ("FULLY_CONNECTED" if name.startswith("dense") else "CONV_2D"), name
        options = CASES[name][3]
        if "float" in options:
            assert scales == 0, name
            continue
        if "hybrid" in options:  # TFLite picks the hybrid weights' scales
            assert weights_type == 9, name
            continue
        assert weights_type == 9, name  # INT8
        per_channel = "per_channel" in options
        assert scales == (CASES[name][2] if per_channel else 1), name


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("num_threads", [1, 2])
def test_int8_gemv_equals_litert_on_the_host(cases, host_library, name, num_threads):
    flatbuffer, x, expected_gemv = cases[name]
    before = host_library.int8_gemv_invocations()
    reference = run_at_batch(xnor_lite.Interpreter(flatbuffer, kernel="lce", num_threads=num_threads,
                                           library=host_library), x)
    assert host_library.int8_gemv_invocations() == before  # "lce" never takes it
    actual = run_at_batch(xnor_lite.Interpreter(flatbuffer, kernel="default", num_threads=num_threads,
                                        library=host_library), x)
    assert host_library.int8_gemv_invocations() - before == expected_gemv
    assert actual.dtype == reference.dtype
    np.testing.assert_array_equal(actual, reference)


# ---- on the emulated aarch64 target: the NEON path ---------------------------------------------

_ARM64_SETTINGS = [("default", 1), ("default", 2), ("lce", 1), ("lce", 2)]


# QEMU CPU model -> what it tells the kernel: "max" has the dot-product instructions (the sdot
# path), a Raspberry Pi 4's Cortex-A72 does not (the smull/sadalp path).
_CPUS = {"max": None, "cortex-a72": "cortex-a72"}


@pytest.fixture(scope="module", params=list(_CPUS))
def arm64_runs(request, cases, tmp_path_factory):
    """(outputs, counts) on one emulated CPU: outputs[(case, kernel, threads)],
    counts["case/kernel/threads"]."""
    from xnor_keras.convert.runtime import arm64_target
    from xnor_lite.emulate import Arm64Target

    cpu = _CPUS[request.param]
    target = arm64_target() if cpu is None else Arm64Target(cpu=cpu, log=lambda line: None).setup()
    tmp = tmp_path_factory.mktemp(f"int8-gemv-arm64-{request.param}")
    return run_native_cases_on_arm64(target, cases, _ARM64_SETTINGS, "int8_gemv_invocations", tmp)


@pytest.mark.parametrize("name", list(CASES))
def test_int8_gemv_equals_litert_on_arm64(cases, arm64_runs, name):
    outputs, counts = arm64_runs
    expected_gemv = cases[name][2]
    for threads in (1, 2):
        assert counts[f"{name}/default/{threads}"] == expected_gemv
        assert counts[f"{name}/lce/{threads}"] == 0
        reference = outputs[(name, "lce", threads)]
        actual = outputs[(name, "default", threads)]
        assert actual.dtype == reference.dtype
        np.testing.assert_array_equal(actual, reference)
