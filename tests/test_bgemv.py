"""The "default" kernel's binary GEMV (xnor_lite/native/bgemv.cc) against LCE's reference kernel.

An LceBconv2d that computes one matrix-vector product (batch 1, a 1x1 output map whose filter
covers the whole input map: a binary dense layer, or a kxk "valid" conv over a kxk map like
AlexNet's fc6) runs our GEMV under kernel "default"; every other node runs LCE's BGEMM. The
GEMV hands each xor-popcount to LCE's own output transform, so its outputs must equal those
of LCE's reference kernel exactly: float (BatchNorm folded into multiplier and bias, or not),
int8 and bitpacked outputs, input depths and output counts off every multiple of 32, 1 and 2
threads. The library's invocation counter checks that the dispatch really takes the GEMV (and
that kernel "lce", LCE's BGEMM alone, never does). The host build runs the portable C++ path,
the emulated aarch64 target (see test_arm64.py) the NEON one.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf

import xnor_lite
from xnor_keras import convert
from xnor_keras.layers import XNORConv2D, XNORDense
from xnor_keras.testing_utils import calibrate_batchnorm

from conftest import run_native_cases_on_arm64

SAMPLES = 3
# name -> (input shape, layer, units, head, batchnorm, GEMV nodes per sample). head: "float"
# (the binary layer's output is the model's), "binary" (a second binary dense layer follows, so
# the first writes bitpacked output), "int8" (int8 output), "relu" (a fused ReLU).
CASES = {
    "dense70x3-bn": ((70,), "dense", 3, "float", True, 1),
    "dense100x37": ((100,), "dense", 37, "float", False, 1),
    "dense100x37-relu": ((100,), "dense", 37, "relu", False, 1),
    "dense513x1000-bitpacked-bn": ((513,), "dense", 1000, "binary", True, 2),
    "dense9216x1-bn": ((9216,), "dense", 1, "float", True, 1),
    "dense9216x37-int8-bn": ((9216,), "dense", 37, "int8", True, 1),
    "dense100x37-int8": ((100,), "dense", 37, "int8", False, 1),
    "dense64x8-bitpacked": ((64,), "dense", 8, "binary", False, 2),
    # fc6's form: a 3x3 valid conv over a 3x3 map, 40 channels (each pixel's bits padded to 64)
    "conv3x3on3x3-c40x37-bn": ((3, 3, 40), "conv_valid", 37, "float", True, 1),
    "conv3x3on3x3-c40x11-bitpacked": ((3, 3, 40), "conv_valid", 11, "binary", True, 2),
    # Not a GEMV: a 3x3 conv with zero padding on a 1x1 map, and a 2x2 output map.
    "conv3x3same-on1x1": ((1, 1, 64), "conv_same", 16, "float", True, 0),
    "conv2x2on3x3": ((3, 3, 64), "conv_2x2_out", 16, "float", True, 0),
}


def _model(input_shape, layer: str, units: int, head: str, batchnorm: bool, rng) -> tf.keras.Model:
    inputs = tf.keras.Input(input_shape)
    activation = "relu" if head == "relu" else None
    if layer == "dense":
        h = XNORDense(units, activation=activation)(inputs)
    elif layer == "conv_valid":
        h = XNORConv2D(units, input_shape[:2], padding="valid", activation=activation)(inputs)
    elif layer == "conv_same":
        h = XNORConv2D(units, 3, padding="same", activation=activation)(inputs)
    else:  # conv_2x2_out
        h = XNORConv2D(units, 2, padding="valid", activation=activation)(inputs)
    if batchnorm:
        h = tf.keras.layers.BatchNormalization()(h)
    if layer != "dense":
        h = tf.keras.layers.Flatten()(h)
    if head == "binary":
        h = XNORDense(units // 2 + 5)(h)
    if head == "int8":
        # int8 output needs a fake-quantized output; its range from the calibration data.
        calibration = rng.standard_normal((32, *input_shape)).astype(np.float32)
        prefix = tf.keras.Model(inputs, h)
        calibrate_batchnorm(prefix, calibration)
        limit = 1.2 * float(np.abs(prefix.predict(calibration, verbose=0)).max())
        h = tf.keras.layers.Lambda(
            lambda t: tf.quantization.fake_quant_with_min_max_args(t, -limit, limit))(h)
    return tf.keras.Model(inputs, h)


def _with_int8_bconv_output(flatbuffer: bytes) -> bytes:
    """The graph LCE's converter makes when a QUANTIZE directly follows LceBconv2d: the bconv
    writes int8. Our converter's dense layers put a RESHAPE between them, so this moves the
    final QUANTIZE's int8 type and quantization onto the bconv's output and the RESHAPE's, and
    drops the QUANTIZE."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph = model.subgraphs[0]

    def name(op):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode
            return custom.decode() if isinstance(custom, bytes) else custom
        return builtin

    bconv, reshape, quantize = graph.operators[-3:]
    assert (name(bconv), name(reshape), name(quantize)) == (
        "LceBconv2d", schema.BuiltinOperator.RESHAPE, schema.BuiltinOperator.QUANTIZE)
    int8 = graph.tensors[quantize.outputs[0]]
    for index in (bconv.outputs[0], reshape.outputs[0]):
        graph.tensors[index].type = schema.TensorType.INT8
        graph.tensors[index].quantization = int8.quantization
    for signature in model.signatureDefs or []:
        for output in signature.outputs or []:
            if output.tensorIndex == quantize.outputs[0]:
                output.tensorIndex = reshape.outputs[0]
    graph.outputs = [reshape.outputs[0]]
    graph.operators = graph.operators[:-1]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.fixture(scope="module")
def cases():
    """name -> (flatbuffer, inputs, GEMV invocations expected per `predict`), converted once."""
    built = {}
    for name, (input_shape, layer, units, head, batchnorm, gemv_nodes) in CASES.items():
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(len(built))
        rng = np.random.default_rng(len(built))
        model = _model(input_shape, layer, units, head, batchnorm, rng)
        calibrate_batchnorm(model, rng.standard_normal((32, *input_shape)).astype(np.float32))
        if head == "int8":
            flatbuffer = _with_int8_bconv_output(convert.convert(model, inference_output_type="int8"))
        else:
            flatbuffer = convert.convert(model)
        x = rng.standard_normal((SAMPLES, *input_shape)).astype(np.float32)
        built[name] = (flatbuffer, x, gemv_nodes * SAMPLES)
    return built


def _assert_same_as_reference(actual: np.ndarray, reference: np.ndarray, *, gemv: bool) -> None:
    """The GEMV's outputs are the reference kernel's, bit for bit. LCE's BGEMM rounds its float
    transform differently (NEON: fmul then fadd, where the reference fuses them; int8 ties to
    even): an ulp of the multiplier and bias terms (which cancel), or one int8 step on a tie."""
    assert actual.dtype == reference.dtype
    if gemv:
        np.testing.assert_array_equal(actual, reference)
    else:
        atol = 1 if actual.dtype == np.int8 else 1e-5 * max(1.0, float(np.abs(reference).max()))
        np.testing.assert_allclose(actual.astype(np.float64), reference.astype(np.float64), rtol=0, atol=atol)


def _bconv_output_types(interpreter: xnor_lite.Interpreter) -> list[str]:
    runtime = interpreter._interpreter
    tensors = {t["index"]: t for t in runtime.get_tensor_details()}
    return [np.dtype(tensors[op["outputs"][0]]["dtype"]).name
            for op in runtime._get_ops_details() if op["op_name"] == "LceBconv2d"]


def test_cases_cover_float_int8_and_bitpacked_outputs(cases, host_library):
    kinds = set()
    for name, (flatbuffer, _, _) in cases.items():
        types = _bconv_output_types(xnor_lite.Interpreter(flatbuffer, library=host_library))
        kinds.update(types)
        if CASES[name][3] == "binary":
            assert types == ["int32", "float32"], name
        if CASES[name][3] == "int8":
            assert types == ["int8"], name
    assert kinds == {"float32", "int8", "int32"}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("num_threads", [1, 2])
def test_gemv_equals_lces_reference_kernel_on_the_host(cases, host_library, name, num_threads):
    flatbuffer, x, expected_gemv = cases[name]
    reference = xnor_lite.Interpreter(flatbuffer, kernel="reference", library=host_library).predict(x)
    before = host_library.binary_gemv_invocations()
    actual = xnor_lite.Interpreter(flatbuffer, kernel="default", num_threads=num_threads,
                                   library=host_library).predict(x)
    assert host_library.binary_gemv_invocations() - before == expected_gemv
    _assert_same_as_reference(actual, reference, gemv=expected_gemv > 0)


def test_kernel_lce_never_takes_the_gemv(cases, host_library):
    flatbuffer, x, _ = cases["dense513x1000-bitpacked-bn"]
    before = host_library.binary_gemv_invocations()
    lce = xnor_lite.Interpreter(flatbuffer, kernel="lce", library=host_library).predict(x)
    assert host_library.binary_gemv_invocations() == before
    default = xnor_lite.Interpreter(flatbuffer, kernel="default", library=host_library).predict(x)
    # LCE's BGEMM and the reference kernel agree to float rounding; the GEMV is the reference.
    np.testing.assert_allclose(default, lce, rtol=0, atol=1e-5 * max(1.0, float(np.abs(lce).max())))


# ---- on the emulated aarch64 target: the NEON path ---------------------------------------------

_ARM64_SETTINGS = [("default", 1), ("default", 2), ("reference", 1), ("lce", 1)]


@pytest.fixture(scope="module")
def arm64_runs(cases, tmp_path_factory):
    """(outputs, counts): outputs[(case, kernel, threads)], counts["case/kernel/threads"]."""
    from xnor_keras.convert.runtime import arm64_target

    target = arm64_target()
    tmp = tmp_path_factory.mktemp("bgemv-arm64")
    return run_native_cases_on_arm64(target, cases, _ARM64_SETTINGS, "binary_gemv_invocations", tmp)


@pytest.mark.parametrize("name", list(CASES))
def test_gemv_kernel_equals_lces_reference_kernel_on_arm64(cases, arm64_runs, name):
    outputs, counts = arm64_runs
    expected_gemv = cases[name][2]
    reference = outputs[(name, "reference", 1)]
    for threads in (1, 2):
        assert counts[f"{name}/default/{threads}"] == expected_gemv
        _assert_same_as_reference(outputs[(name, "default", threads)], reference, gemv=expected_gemv > 0)
    assert counts[f"{name}/lce/1"] == 0
    _assert_same_as_reference(outputs[(name, "lce", 1)], reference, gemv=False)
