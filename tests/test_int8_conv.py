"""The "default" kernel's int8 convolution (xnor_lite/native/int8_conv.cc) against LiteRT's own.

On a CPU without the dot-product instruction (a Raspberry Pi 4's Cortex-A72), xnor_lite's wrapped
CONV_2D runs every int8 convolution with more than one output pixel that its int8 GEMV does not
take (int8 input, weights and output, per-tensor or per-channel weights, one group, no
dilation) through its own kernel. It requantizes as LiteRT's ruy kernel does, so the outputs
must equal those of kernel "lce" (LiteRT's kernels alone) bit for bit: XNORResNet18's stem and
1x1 stride-2 shortcut shapes scaled down, XNORAlexNet's 11x11 stride-4 conv1, 3x3 SAME, channels
off every multiple of 4 and 16, depths below 8, of 8 to 16 and of whole 16-byte steps, odd sizes
and strides, nonzero input and output zero points, fused ReLU/ReLU6, batch 2, requantization
multipliers below 0.5, in [0.5, 1) and above 1 with rounding ties, 1 and 2 threads. The library's
invocation counter checks which path ran: the convolution on `cortex-a72`, never on qemu's `max`
CPU (which has the dot-product instruction: ruy's sdot kernel stays), nor for a dilated or
grouped convolution, a float one, a weight of -128, or a single output pixel (the GEMV's or
LiteRT's). On the x86-64 host it never runs (ruy's x86 kernels stay).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import xnor_lite

from conftest import run_at_batch, run_native_cases_on_arm64

SAMPLES = 2
# name -> (input shape, filters, kernel size, strides, padding, options, convolution nodes per
# invocation on a CPU without dot product). options: "relu", "relu6", "per_tensor" (default
# per-channel weights), "batch2", "shifted" (calibrated on inputs in [0, 4): input zero point
# -128), "dilated", "groups2", "float", "w-128" (one weight set to -128), "mN" (the output
# scale set for a requantization multiplier of N, inputs within 3 steps of their zero point).
CASES = {
    # XNORResNet18's stem (7x7 stride 2, 3 -> 64) on a 48x48 input, 8 filters; as `pad1`
    # converts it (padding 3 written out, then VALID) and as SAME.
    "stem7x7s2-same": ((48, 48, 3), 8, 7, 2, "same", ("relu",), 1),
    "stem7x7s2-valid": ((54, 54, 3), 12, 7, 2, "valid", ("shifted",), 1),
    # Its 1x1 stride-2 shortcuts: depths of whole 16-byte steps, read in place.
    "1x1s2-c32x48": ((14, 14, 32), 48, 1, 2, "valid", (), 1),
    "1x1s2-c64x20-per-tensor": ((9, 9, 64), 20, 1, 2, "same", ("per_tensor",), 1),
    # XNORAlexNet's conv1 (11x11 stride 4, 3 -> 96) on a 39x39 input.
    "alexnet11x11s4": ((39, 39, 3), 16, 11, 4, "valid", ("relu",), 1),
    "3x3same-c13x21-relu6": ((9, 11, 13), 21, 3, 1, "same", ("relu6",), 1),
    "3x3s2same-c24x37": ((15, 13, 24), 37, 3, 2, "same", ("shifted", "relu"), 1),
    "5x3s2x1valid-c5x7": ((10, 7, 5), 7, (5, 3), (2, 1), "valid", (), 1),
    "1x1-c3x5": ((6, 5, 3), 5, 1, 1, "valid", (), 1),          # depth 3: one 8-deep step
    "3x3same-c1x6": ((7, 7, 1), 6, 3, 1, "same", (), 1),        # depth 9: one padded 16-deep step
    "1x1-c16x4-per-tensor": ((5, 3, 16), 4, 1, 1, "valid", ("per_tensor",), 1),
    "3x3same-c8x12-batch2": ((7, 5, 8), 12, 3, 1, "same", ("batch2",), 1),  # tiles across images
    "2x2on2x3-c20x3": ((2, 3, 20), 3, 2, 1, "valid", (), 1),     # 2 output pixels, 3 rows
    # Requantization multipliers: exponent -2 (0.2), 0 (0.7: ruy shifts left by 1, then right
    # by 1) and 2 (3.0), with ties.
    "3x3same-c6x8-m0.2": ((6, 6, 6), 8, 3, 1, "same", ("m0.2",), 1),
    "3x3same-c6x8-m0.7": ((6, 6, 6), 8, 3, 1, "same", ("m0.7",), 1),
    "3x3same-c6x8-m3": ((6, 6, 6), 8, 3, 1, "same", ("m3",), 1),
    # LiteRT's kernel (or the GEMV) in any case.
    "3x3same-c8x8-dilated": ((9, 9, 8), 8, 3, 1, "same", ("dilated",), 0),
    "3x3same-c8x8-groups2": ((6, 6, 8), 8, 3, 1, "same", ("groups2",), 0),
    "3x3same-c8x8-float": ((6, 6, 8), 8, 3, 1, "same", ("float",), 0),
    "3x3same-c8x8-w-128": ((6, 6, 8), 8, 3, 1, "same", ("w-128",), 0),
    "3x3s2valid-one-pixel": ((3, 4, 8), 8, 3, 2, "valid", (), 0),
}


def _multiplier(options) -> float | None:
    for option in options:
        if option.startswith("m"):
            return float(option[1:])
    return None


def _model(input_shape, filters, kernel_size, strides, padding, options) -> tf.keras.Model:
    batch = 2 if "batch2" in options else 1
    inputs = tf.keras.Input(input_shape, batch_size=batch)
    activation = "relu" if "relu" in options else tf.nn.relu6 if "relu6" in options else None
    outputs = tf.keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, activation=activation,
        dilation_rate=2 if "dilated" in options else 1, groups=2 if "groups2" in options else 1,
        bias_initializer="random_normal", kernel_initializer="glorot_normal")(inputs)
    return tf.keras.Model(inputs, outputs)


def _convert(model: tf.keras.Model, options, rng) -> bytes:
    """TFLite's converter, full int8 with per-channel weights unless told otherwise."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if "float" in options:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    shape = tuple(model.inputs[0].shape)

    def calibration():
        for _ in range(8):
            if "shifted" in options:
                yield [rng.uniform(0, 4, shape).astype(np.float32)]
            else:
                yield [rng.standard_normal(shape).astype(np.float32)]

    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = "per_tensor" in options
    return converter.convert()


def _edit_conv(flatbuffer: bytes, edit) -> bytes:
    """The flatbuffer after `edit(graph, model, op)` on its CONV_2D."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CONV_2D:
            edit(graph, model, op)
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with_weight(flatbuffer: bytes, value: int) -> bytes:
    def edit(graph, model, op):
        buffer = model.buffers[graph.tensors[op.inputs[1]].buffer]
        data = np.asarray(buffer.data, np.uint8).copy()
        data[0] = np.uint8(value & 0xFF)
        buffer.data = data

    return _edit_conv(flatbuffer, edit)


def _with_output_multiplier(flatbuffer: bytes, multiplier: float) -> bytes:
    """The output scale set so that input scale x (largest) weight scale / output scale =
    `multiplier`."""
    def edit(graph, model, op):
        input_scale = float(graph.tensors[op.inputs[0]].quantization.scale[0])
        weight_scale = float(np.max(graph.tensors[op.inputs[1]].quantization.scale))
        graph.tensors[op.outputs[0]].quantization.scale = np.array(
            [input_scale * weight_scale / multiplier], np.float32)

    return _edit_conv(flatbuffer, edit)


def _zero_points(flatbuffer: bytes) -> tuple[int, int]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]
    return tuple(int(graph.tensors[i].quantization.zeroPoint[0])
                 for i in (graph.inputs[0], graph.outputs[0]))


@pytest.fixture(scope="module")
def cases():
    """name -> (flatbuffer, inputs, convolution invocations expected per run without dot product)."""
    built = {}
    for name, (input_shape, filters, kernel_size, strides, padding, options, nodes) in CASES.items():
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(len(built))
        rng = np.random.default_rng(len(built))
        model = _model(input_shape, filters, kernel_size, strides, padding, options)
        flatbuffer = _convert(model, options, rng)
        if "w-128" in options:
            flatbuffer = _with_weight(flatbuffer, -128)
        multiplier = _multiplier(options)
        if multiplier is not None:
            flatbuffer = _with_output_multiplier(flatbuffer, multiplier)
        batch = 2 if "batch2" in options else 1
        samples, invocations = (batch, 1) if batch > 1 else (SAMPLES, SAMPLES)
        if "float" in options:
            x = rng.standard_normal((samples, *input_shape)).astype(np.float32)
        elif multiplier is not None:
            zero_point = _zero_points(flatbuffer)[0]
            x = np.clip(zero_point + rng.integers(-3, 4, (samples, *input_shape)), -128, 127).astype(np.int8)
        else:
            x = rng.integers(-128, 128, (samples, *input_shape)).astype(np.int8)
        built[name] = (flatbuffer, x, nodes * invocations)
    return built


def test_cases_are_what_they_say(cases):
    """One CONV_2D each; the zero points the cases claim are nonzero are."""
    from ai_edge_litert import schema_py_generated as schema

    for name, (flatbuffer, _, _) in cases.items():
        model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
        ops = [max(model.operatorCodes[op.opcodeIndex].builtinCode,
                   model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
               for op in model.subgraphs[0].operators]
        assert ops.count(schema.BuiltinOperator.CONV_2D) == 1, name
        if "shifted" in CASES[name][5]:
            assert _zero_points(flatbuffer)[0] == -128, name
        if "relu" in CASES[name][5]:
            assert _zero_points(flatbuffer)[1] == -128, name


@pytest.mark.parametrize("num_threads", [1, 2])
def test_int8_conv_stays_off_on_the_host(cases, host_library, num_threads):
    before = host_library.int8_conv_invocations()
    for name, (flatbuffer, x, _) in cases.items():
        reference = run_at_batch(xnor_lite.Interpreter(flatbuffer, kernel="lce", num_threads=num_threads,
                                               library=host_library), x)
        actual = run_at_batch(xnor_lite.Interpreter(flatbuffer, kernel="default", num_threads=num_threads,
                                            library=host_library), x)
        np.testing.assert_array_equal(actual, reference, err_msg=name)
    assert host_library.int8_conv_invocations() == before


# ---- on the emulated aarch64 target ------------------------------------------------------------

_ARM64_SETTINGS = [("default", 1), ("default", 2), ("lce", 1), ("lce", 2)]

# QEMU CPU model -> whether the convolution runs there: a Raspberry Pi 4's Cortex-A72 has no
# dot-product instruction, qemu's "max" has it.
_CPUS = {"cortex-a72": True, "max": False}


@pytest.fixture(scope="module", params=list(_CPUS))
def arm64_runs(request, cases, tmp_path_factory):
    """(runs there?, outputs, counts) on one emulated CPU: outputs[(case, kernel, threads)],
    counts["case/kernel/threads"]."""
    from xnor_keras.convert.runtime import arm64_target
    from xnor_lite.emulate import Arm64Target

    cpu = request.param
    target = arm64_target() if cpu == "max" else Arm64Target(cpu=cpu, log=lambda line: None).setup()
    tmp = tmp_path_factory.mktemp(f"int8-conv-arm64-{cpu}")
    return (_CPUS[cpu], *run_native_cases_on_arm64(target, cases, _ARM64_SETTINGS,
                                                    "int8_conv_invocations", tmp))


@pytest.mark.parametrize("name", list(CASES))
def test_int8_conv_equals_litert_on_arm64(cases, arm64_runs, name):
    runs_here, outputs, counts = arm64_runs
    expected = cases[name][2] if runs_here else 0
    for threads in (1, 2):
        assert counts[f"{name}/default/{threads}"] == expected
        assert counts[f"{name}/lce/{threads}"] == 0
        reference = outputs[(name, "lce", threads)]
        actual = outputs[(name, "default", threads)]
        assert actual.dtype == reference.dtype
        np.testing.assert_array_equal(actual, reference)
