"""The ``to_tflite`` command line: zoo names and saved models in, verified ``.tflite`` out.

Exit codes are the contract: 0 written, 1 verification failed, 2 usage or input error; on 1 and 2
nothing is written (no ``.tflite``, no report, no temp files). Most runs call
:func:`xnor_keras.cli.to_tflite_main` in-process; one runs ``convert/to_tflite.py`` as a script.
The saved models are built once per module (small, BN-calibrated, 8x8x32 input).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from xnor_keras import convert, zoo
from xnor_keras import layers as xl
from xnor_keras.cli import to_tflite_main
from xnor_keras.testing_utils import calibrate_batchnorm, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")

REPO = Path(__file__).resolve().parents[1]
L = tf.keras.layers


def _small_model(stem: bool = False) -> tf.keras.Model:
    inputs = tf.keras.Input((8, 8, 32), name="image")
    x = L.Conv2D(32, 3, padding="same", name="stem")(inputs) if stem else inputs
    x = xl.XNORConv2D(32, 3, padding="same", name="xconv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = xl.XNORConv2D(32, 3, padding="same", pad_values=1.0, name="xconv2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = xl.XNORDense(32, name="xdense")(x)
    x = L.BatchNormalization(name="bn3")(x)
    outputs = L.Dense(10, activation="softmax", name="predictions")(x)
    return tf.keras.Model(inputs, outputs, name="small_xnor")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One small calibrated model in every format, plus broken and mixed-precision files."""
    root = tmp_path_factory.mktemp("models")
    tf.keras.utils.set_random_seed(0)
    model = _small_model()
    calibrate_batchnorm(model, np.random.default_rng(1).standard_normal((32, 8, 8, 32)).astype(np.float32))
    paths = types.SimpleNamespace(root=root, model=model)
    paths.keras = root / "small.keras"
    paths.h5 = root / "small.h5"
    paths.savedmodel = root / "small_savedmodel"
    model.save(paths.keras)
    model.save(paths.h5)
    model.save(paths.savedmodel, save_format="tf")

    paths.junk_h5 = root / "foo.h5"
    paths.junk_h5.write_text("this is not an HDF5 file\n")
    paths.truncated_keras = root / "truncated.keras"
    paths.truncated_keras.write_bytes(paths.keras.read_bytes()[:100])
    paths.truncated_h5 = root / "truncated.h5"
    paths.truncated_h5.write_bytes(paths.h5.read_bytes()[:100])
    paths.not_savedmodel = root / "empty_dir"
    paths.not_savedmodel.mkdir()
    np.save(root / "x_bad.npy", np.zeros((2, 4, 4, 3), np.float32))  # wrong shape for --verify-data

    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = tf.keras.Input((8, 8, 32))
        outputs = L.BatchNormalization(name="bn")(xl.XNORConv2D(32, 3, name="xconv")(inputs))
        mixed = tf.keras.Model(inputs, outputs)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    paths.mixed = root / "mixed.keras"
    mixed.save(paths.mixed)
    return paths


def run(argv, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr); argparse exits count as codes."""
    return run_cli(to_tflite_main, argv, capsys)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


# --------------------------------------------------------------------------------------------
# Saved models


def test_saved_keras_model_converts_with_report_and_benchmark(saved, tmp_path, capsys):
    out = tmp_path / "out" / "small.tflite"
    report = tmp_path / "out" / "report.json"
    code, stdout, stderr = run(
        [saved.keras, "-o", out, "--report-json", report, "--benchmark", "--benchmark-runs", "3"],
        capsys,
    )
    assert code == 0, stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json", "small.tflite"]
    flatbuffer = out.read_bytes()
    assert convert.op_histogram(flatbuffer)["LceBconv2d"] == 3

    data = json.loads(report.read_text())
    assert [layer["name"] for layer in data["layers"]] == ["xconv1", "xconv2", "xdense"]
    assert all(layer["binary"] for layer in data["layers"])
    assert data["op_histogram"] == convert.op_histogram(flatbuffer)
    assert data["flatbuffer_bytes"] == len(flatbuffer)
    assert data["verification"]["passed"] is True
    assert data["verification"]["max_rel_diff"] <= 1e-3
    assert data["host_latency"]["runs"] == 3 and data["host_latency"]["median_ms"] > 0

    assert "host latency (LCE interpreter, 1 thread(s), batch 1)" in stdout
    assert "Conversion report: small_xnor" in stdout and "PASSED" in stdout
    assert "[4/4] writing" in stderr and not _error_lines(stderr)

    x = np.random.default_rng(5).standard_normal((4, 8, 8, 32)).astype(np.float32)
    np.testing.assert_allclose(
        convert.run_flatbuffer(flatbuffer, x), saved.model(x).numpy(), rtol=0, atol=1e-5
    )


def test_verify_on_host_and_arm64_runs_both_runtimes(saved, tmp_path, capsys):
    out = tmp_path / "small.tflite"
    report = tmp_path / "report.json"
    code, stdout, stderr = run(
        [saved.keras, "-o", out, "--report-json", report, "--verify-on", "host", "arm64"], capsys
    )
    assert code == 0, stderr
    assert "host: top-1 agreement 100.0%" in stderr and "arm64: top-1 agreement 100.0%" in stderr
    assert "LCE's aarch64 kernels on the emulated arm64 target" in stderr
    assert json.loads(report.read_text())["verification"]["passed"] is True


@pytest.mark.parametrize(
    "fmt, options, inputs",
    [("h5", ["--verify-data", "x.npy"], 3), ("savedmodel", ["--verify-samples", "4"], 4)],
)
def test_h5_and_savedmodel_load(saved, tmp_path, capsys, fmt, options, inputs):
    np.save(tmp_path / "x.npy", np.random.default_rng(2).standard_normal((3, 8, 8, 32)).astype(np.float32))
    options = [tmp_path / o if o.endswith(".npy") else o for o in options]
    out = tmp_path / "small.tflite"
    code, stdout, stderr = run([getattr(saved, fmt), "-o", out, *options], capsys)
    assert code == 0, stderr
    assert "LceBconv2d x3" in stdout
    assert f"verification ({inputs} inputs, LCE interpreter): PASSED" in stdout
    assert convert.op_histogram(out.read_bytes())["LceBconv2d"] == 3


def test_script_runs_as_a_subprocess(saved, tmp_path):
    out = tmp_path / "script.tflite"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)  # the script must set up Keras 2 by itself
    result = subprocess.run(
        [sys.executable, str(REPO / "convert" / "to_tflite.py"), str(saved.keras), "-o", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LceBconv2d" in convert.op_histogram(out.read_bytes())
    assert "Conversion report: small_xnor" in result.stdout


# --------------------------------------------------------------------------------------------
# Zoo models


ZOO_RESNET = ["XNORResNet18", "--input-shape", "32,32,3", "--classes", "10"]


def test_untrained_zoo_resnet_fails_verification_and_writes_nothing(tmp_path, capsys):
    # Untrained BatchNorm statistics + zero padding: exact sign ties LCE resolves at random.
    # Whether any of them comes out differently from Keras depends on the random weights: with
    # seed 0 all of them happen to agree (measured), with seeds 1 and 2 some do not.
    tf.keras.utils.set_random_seed(1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, stdout, stderr = run(
        [*ZOO_RESNET, "--no-float-twin", "-o", out_dir / "r.tflite", "--report-json", out_dir / "r.json"],
        capsys,
    )
    assert code == 1
    assert list(out_dir.iterdir()) == []
    (line,) = _error_lines(stderr)
    assert "verification failed" in line and "not written" in line
    assert "conv2_block1_1_conv" in line and "--no-verify" in line
    assert "FAILED" in stdout  # the report is still printed


def test_untrained_zoo_resnet_with_no_verify_is_written_with_float_twin_size(tmp_path, capsys):
    out = tmp_path / "r.tflite"
    report = tmp_path / "r.json"
    code, stdout, stderr = run([*ZOO_RESNET, "-o", out, "--no-verify", "--report-json", report], capsys)
    assert code == 0, stderr
    assert "verification skipped" in stderr and "float twin ResNet18" in stderr
    data = json.loads(report.read_text())
    assert data["model_name"] == "xnor_resnet18" and data["verification"] is None
    assert len(data["layers"]) == 16
    assert data["float_twin_flatbuffer_bytes"] > 0
    assert data["size_ratio_vs_float_twin"] == pytest.approx(
        data["float_twin_flatbuffer_bytes"] / data["flatbuffer_bytes"]
    )
    assert convert.op_histogram(out.read_bytes())["LceBconv2d"] == data["op_histogram"]["LceBconv2d"]


def test_int8_float_layers_make_the_float_convolutions_int8(tmp_path, capsys):
    from tensorflow.lite.python import schema_py_generated as schema

    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32))
    out = tmp_path / "r.tflite"
    code, stdout, stderr = run(
        ["XNORResNet18", "--input-shape", "32,32,3", "--classes", "10", "--no-verify", "--no-float-twin",
         "--int8-float-layers", "--calibration-data", calibration, "-o", out],
        capsys,
    )
    assert code == 0, stderr
    assert "int8 full-precision layers" in stderr
    assert ("int8 layers (int8 weights and activations): conv1, conv3_block1_0_conv, "
            "conv4_block1_0_conv, conv5_block1_0_conv, fc") in stdout
    flatbuffer = out.read_bytes()
    m = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    graph = m.subgraphs[0]
    filters = [graph.tensors[op.inputs[1]].type for name, op in zip(convert.op_names(flatbuffer), graph.operators)
               if name in ("CONV_2D", "FULLY_CONNECTED")]
    # conv1, the three 1x1 shortcuts, fc; the 3x3 convs on tiny maps that stay float for the
    # LCE padding bug are binary layers (XNORConv2D), not int8 candidates.
    int8_filters = [t for t in filters if t == schema.TensorType.INT8]
    assert len(int8_filters) == 5
    assert convert.op_histogram(flatbuffer)["LceBconv2d"] >= 9


@pytest.mark.parametrize("form", ["int8", "int8_dynamic", "int8_full"])
def test_bwn_weights_choose_the_form_of_the_bwn_layers(tmp_path, capsys, form):
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32))
    out, report = tmp_path / "r.tflite", tmp_path / "r.json"
    code, stdout, stderr = run(
        ["BWNResNet18", "--input-shape", "32,32,3", "--classes", "10", "--no-verify", "--no-float-twin",
         "--bwn-weights", form, *(["--calibration-data", calibration] if form == "int8_full" else []),
         "-o", out, "--report-json", report],
        capsys,
    )
    assert code == 0, stderr
    assert f"BWN weights {form}" in stderr
    assert "BWN layer weights: " + form + " x16" in stdout
    data = json.loads(report.read_text())
    assert {layer["bwn_weights"] for layer in data["layers"]} == {form}
    if form == "int8":  # each BWN filter is unpacked once by a DEQUANTIZE op
        assert convert.op_histogram(out.read_bytes())["DEQUANTIZE"] == 16


def test_help_names_the_deployment_targets(capsys):
    code, stdout, _ = run(["--help"], capsys)
    assert code == 0
    assert "Raspberry Pi" in stdout and "Android" in stdout
    assert "--report-json" in stdout and "--list-models" in stdout


def test_list_models_prints_the_registry(capsys):
    code, stdout, _ = run(["--list-models"], capsys)
    assert code == 0
    assert stdout.split() == zoo.list_models()
    assert "XNORAlexNet" in stdout.split()


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one error line naming the problem, nothing written


_ZOO_NAMES = re.escape(", ".join(zoo.list_models()))

# argv (before -o), and a pattern the one error line must match. "@name" is the path `saved.name`;
# "@name/file" a file inside it.
BAD_INPUTS = [
    pytest.param(["@root/nope.keras"], "neither a zoo model .* nor an existing path", id="no_such_path"),
    pytest.param(["@junk_h5"], "could not load a Keras model from .*foo.h5", id="junk_h5"),
    pytest.param(["@truncated_keras"], "could not load a Keras model from .*truncated.keras", id="cut_keras"),
    pytest.param(["@truncated_h5"], "could not load a Keras model from .*truncated.h5", id="cut_h5"),
    pytest.param(["@not_savedmodel"], "is a directory but not a SavedModel", id="dir_not_savedmodel"),
    pytest.param(["XNORVGG16"], f"'XNORVGG16' is neither a zoo model \\({_ZOO_NAMES}\\)", id="unknown_zoo"),
    pytest.param(["XNORResNet18", "--input-shape", "224,224"], "--input-shape: .*HEIGHT,WIDTH,CHANNELS.*'224,224'",
                 id="shape_2d"),
    pytest.param(["XNORResNet18", "--input-shape", "0,1,3"], "--input-shape: .*'0,1,3'", id="shape_zero"),
    pytest.param(["XNORResNet18", "--input-shape", "abc"], "--input-shape: .*'abc'", id="shape_text"),
    pytest.param(["XNORResNet18", "--input-shape", "16,16,3"], "at least 32", id="shape_too_small"),
    pytest.param(["XNORResNet18", "--classes", "0"], "--classes: .*positive integer.*'0'", id="classes_zero"),
    pytest.param(["@keras", "--weights", "@h5"], "--weights applies only to zoo models", id="weights_with_path"),
    pytest.param(["XNORAlexNet", "--weights", "@root/none.h5"], "--weights: no such file", id="weights_missing"),
    pytest.param(["@mixed"], "mixed precision .*float16", id="mixed_precision"),
    pytest.param(["@keras", "--verify-data", "@root/x_bad.npy"],
                 "--verify-data: expected arrays of shape \\(N, 8, 8, 32\\)", id="verify_data_shape"),
    pytest.param(["@keras", "--int8-float-layers"], "--int8-float-layers: expected --calibration-data",
                 id="int8_without_calibration"),
    pytest.param(["@keras", "--calibration-data", "@root/x_bad.npy"], "only used with --int8-float-layers",
                 id="calibration_without_int8"),
    pytest.param(["@keras", "--bwn-weights", "int4"], "argument --bwn-weights: invalid choice: 'int4'",
                 id="bwn_weights_unknown"),
    pytest.param(["@keras", "--bwn-weights", "int8_full"], "--bwn-weights int8_full: expected --calibration-data",
                 id="bwn_int8_full_without_calibration"),
    pytest.param(["@keras", "--int8-float-layers", "--calibration-data", "@root/x_bad.npy"],
                 "--calibration-data of shape \\(n, 8, 8, 32\\), got \\(2, 4, 4, 3\\)", id="calibration_shape"),
    pytest.param(["@keras", "--int8-float-layers", "--calibration-data", "@junk_h5"],
                 "--calibration-data: could not read", id="calibration_unreadable"),
]


def _resolve(arg: str, saved) -> str:
    if not arg.startswith("@"):
        return arg
    name, _, rest = arg[1:].partition("/")
    path = getattr(saved, name)
    return str(path / rest if rest else path)


@pytest.mark.parametrize("argv, pattern", BAD_INPUTS)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(saved, tmp_path, capsys, argv, pattern):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [_resolve(a, saved) for a in argv]
    code, _, stderr = run([*argv, "-o", out_dir / "m.tflite", "--report-json", out_dir / "m.json"], capsys)
    assert code == 2, stderr
    (line,) = _error_lines(stderr)
    assert re.search(pattern, line), line
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    "output, pattern",
    [("model.tfl", "expected a path ending in .tflite"), (None, "-o/--output")],
)
def test_bad_output_path_exits_2(saved, tmp_path, capsys, output, pattern):
    argv = [saved.keras] + (["-o", tmp_path / output] if output else [])
    code, _, stderr = run(argv, capsys)
    assert code == 2
    (line,) = _error_lines(stderr)
    assert pattern in line
    assert list(tmp_path.iterdir()) == []


def test_output_path_that_is_a_directory_exits_2(saved, tmp_path, capsys):
    target = tmp_path / "dir.tflite"
    target.mkdir()
    code, _, stderr = run([saved.keras, "-o", target], capsys)
    assert code == 2
    assert "is a directory" in _error_lines(stderr)[0]
    assert list(target.iterdir()) == []


# --------------------------------------------------------------------------------------------
# --device: the options measured best for a core, and the runtime settings inside the file


def test_device_picks_int8_layers_records_runtime_settings_and_says_why(saved, tmp_path, capsys):
    import xnor_lite
    from xnor_keras.convert import devices
    from xnor_lite.interpreter import read_metadata

    calibration = tmp_path / "calib.npy"
    np.save(calibration, np.random.default_rng(3).standard_normal((16, 8, 8, 32)).astype(np.float32))
    tf.keras.utils.set_random_seed(2)
    model = _small_model(stem=True)  # a float first layer, as in the zoo
    calibrate_batchnorm(model, np.load(calibration))
    model.save(tmp_path / "stem.keras")
    out, report = tmp_path / "pi5.tflite", tmp_path / "report.json"
    code, stdout, stderr = run([tmp_path / "stem.keras", "-o", out, "--device", "pi5", "--calibration-data",
                                calibration, "--report-json", report], capsys)
    assert code == 0, stderr
    plan = devices.plan(model, "pi5")
    # The stem is made int8, the small classifier stays float.
    assert plan.kind == "xnor" and plan.convert_options == {"int8_float_layers": ["stem"]}
    assert "device pi5: Raspberry Pi 5" in stderr and "XNNPACK" in stderr and "threads" in stderr
    # an XNOR net is told what the int8 first layer does to agreement, and how to avoid it
    assert "agreement with the float model" in stderr and "add --exact" in stderr
    flatbuffer = out.read_bytes()
    recorded = json.loads(read_metadata(flatbuffer, "xnor_lite.runtime"))
    assert recorded == {"device": "pi5", **plan.runtime}
    assert "int8 layers (int8 weights and activations): stem" in stdout
    assert "classifier 'predictions' kept float32" in stderr
    assert json.loads(report.read_text())["device"]["name"] == "pi5"
    # xnor_lite follows the recorded settings unless told otherwise.
    interpreter = xnor_lite.Interpreter(flatbuffer)
    assert interpreter.settings["use_xnnpack"] == (plan.runtime["use_xnnpack"], "flatbuffer (pi5)")
    assert interpreter.settings["num_threads"][0] == (os.cpu_count() or 1)
    told = xnor_lite.Interpreter(flatbuffer, num_threads=1, use_xnnpack=not plan.runtime["use_xnnpack"])
    assert told.settings["num_threads"] == (1, "argument")
    assert told.settings["use_xnnpack"] == (not plan.runtime["use_xnnpack"], "argument")
    x = np.load(calibration)[:4]
    np.testing.assert_allclose(interpreter.predict(x), convert.run_flatbuffer(flatbuffer, x), rtol=0, atol=1e-6)


def test_device_on_a_bwn_net_takes_int8_full():
    from xnor_keras.convert import devices

    inputs = tf.keras.Input((8, 8, 8))
    x = xl.BWNConv2D(8, 3, name="bwn")(inputs)
    model = tf.keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(x)))
    plan = devices.plan(model, "pi4")
    assert plan.kind == "bwn" and plan.needs_calibration
    assert not any("agreement with the float model" in reason for reason in plan.reasons)  # XNOR only
    # The classifier (96 weights) stays float: its only plain layer, so none is made int8.
    assert plan.convert_options == {"bwn_weights": "int8_full"}
    assert any("classifier 'out' kept float32" in reason for reason in plan.reasons)
    # Measured: XNNPACK's int8 kernels lose on a Cortex-A72 and win on a Cortex-A76.
    assert plan.runtime["use_xnnpack"] is False
    assert devices.plan(model, "pi5").runtime["use_xnnpack"] is True
    assert devices.plan(model, "arm64").runtime == devices.plan(model, "pi4").runtime
    with pytest.raises(ValueError, match=r"`device`.*'pi3'"):
        devices.plan(model, "pi3")


def test_device_keeps_a_small_classifier_float_and_a_large_one_int8():
    from xnor_keras.convert import devices

    def model(classes):
        inputs = tf.keras.Input((16, 16, 2))
        x = L.Conv2D(8, 3, name="stem")(inputs)
        x = xl.BWNConv2D(8, 3, name="bwn")(x)
        x = L.Dense(classes, name="fc")(L.Flatten(name="flatten")(x))
        return tf.keras.Model(inputs, L.Activation("softmax", name="predictions")(x))

    small = devices.plan(model(10), "pi4")  # 1,152 x 10 float32 weights: 45 KiB
    assert small.convert_options == {"int8_float_layers": ["stem"], "bwn_weights": "int8_full"}
    assert any("classifier 'fc' kept float32 (45 KiB)" in reason for reason in small.reasons)
    large = devices.plan(model(256), "pi4")  # 1,152 x 256: 1.1 MiB, int8 saves 0.8 MiB
    assert large.convert_options == {"int8_float_layers": True, "bwn_weights": "int8_full"}
    assert not any("classifier" in reason for reason in large.reasons)


def test_device_exact_keeps_the_model_arithmetic_with_the_device_settings(tmp_path, capsys):
    from xnor_keras.convert import devices
    from xnor_lite.interpreter import read_metadata

    tf.keras.utils.set_random_seed(4)
    model = _small_model(stem=True)
    x = np.random.default_rng(5).standard_normal((16, 8, 8, 32)).astype(np.float32)
    calibrate_batchnorm(model, x)
    model.save(tmp_path / "stem.keras")
    plan = devices.plan(model, "pi4", exact=True)
    assert plan.convert_options == {} and plan.runtime["use_xnnpack"] is False
    assert plan.reasons[0].startswith("exact:") and not plan.needs_calibration
    out = tmp_path / "exact.tflite"
    code, _, stderr = run([tmp_path / "stem.keras", "-o", out, "--device", "pi4", "--exact"], capsys)
    assert code == 0, stderr
    assert "exact: full-precision layers float32" in stderr and "agreement with the float model" not in stderr
    flatbuffer = out.read_bytes()
    assert json.loads(read_metadata(flatbuffer, "xnor_lite.runtime"))["device"] == "pi4"
    assert convert.conversion_report(model, flatbuffer).int8_layers == []
    np.testing.assert_allclose(convert.run_flatbuffer(flatbuffer, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # A BWN net keeps exact int8 weights (float arithmetic) and takes XNNPACK, measured faster for float.
    inputs = tf.keras.Input((8, 8, 8))
    bwn = tf.keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(xl.BWNConv2D(8, 3, name="bwn")(inputs))))
    bwn_plan = devices.plan(bwn, "pi4", exact=True)
    assert bwn_plan.convert_options == {"bwn_weights": "int8"} and bwn_plan.runtime["use_xnnpack"] is True


@pytest.mark.parametrize(
    "extra, message",
    [([], "--exact: only with --device"), (["--device", "pi4", "--int8-float-layers"], "are not exact"),
     (["--device", "pi4", "--bwn-weights", "int8_full"], "are not exact")],
)
def test_exact_without_device_or_with_int8_exits_2(saved, tmp_path, capsys, extra, message):
    out = tmp_path / "m.tflite"
    code, _, stderr = run([saved.keras, "-o", out, "--exact", *extra], capsys)
    assert code == 2 and message in stderr and not out.exists()


def test_device_without_calibration_data_exits_2_naming_it(saved, tmp_path, capsys):
    _small_model(stem=True).save(tmp_path / "stem.keras")
    out = tmp_path / "m.tflite"
    code, _, stderr = run([tmp_path / "stem.keras", "-o", out, "--device", "pi4"], capsys)
    assert code == 2 and "--device pi4" in stderr and "--calibration-data" in stderr and "stem" in stderr
    assert not out.exists()
    code, _, stderr = run([saved.keras, "-o", out, "--device", "pi3"], capsys)
    assert code == 2 and "invalid choice: 'pi3'" in stderr
    # Without a float first layer (and with a small classifier) nothing is made int8:
    # no calibration is needed.
    code, _, stderr = run([saved.keras, "-o", out, "--device", "pi4"], capsys)
    assert code == 0 and out.exists(), stderr


def test_device_on_a_float_net_needs_no_calibration_and_turns_xnnpack_on(tmp_path, capsys):
    from xnor_lite.interpreter import read_metadata

    inputs = tf.keras.Input((8, 8, 3))
    model = tf.keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(L.Conv2D(4, 3, name="c")(inputs))))
    saved = tmp_path / "float.keras"
    model.save(saved)
    out = tmp_path / "float.tflite"
    code, stdout, stderr = run([saved, "-o", out, "--device", "pi4"], capsys)
    assert code == 0, stderr
    assert "kept float32" in stderr
    assert json.loads(read_metadata(out.read_bytes(), "xnor_lite.runtime"))["use_xnnpack"] is True
    assert "int8 layers" not in stdout
