"""Packed binary weights: the file holds sign(W) and alpha, reloads to the same outputs, refuses
what does not fit without touching the model; the zoo's named-weights registry; the CLI.

Oracles are independent of the module: the bits are read from the raw bytes with struct, json
and np.unpackbits and compared with numpy's sign of the latent kernel (sign(0) = +1); alpha with
numpy's mean |W| per output channel; outputs with the saved model's own. Models are small and
built once per module (BatchNorm statistics calibrated, so the outputs are not trivially equal).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
import zlib
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import xnor_keras
from xnor_keras import binary_weights as xbw
from xnor_keras import layers as xl
from xnor_keras import zoo
from xnor_keras.cli import weights_main
from xnor_keras.testing_utils import calibrate_batchnorm, run_cli
from xnor_keras.zoo import _weights

L = tf.keras.layers
R18 = dict(input_shape=(32, 32, 3), classes=10)


def test_public_api_is_exported():
    assert xnor_keras.save_binary_weights is xbw.save_binary_weights
    for name in ("save_binary_weights", "load_binary_weights", "binary_weights_summary"):
        assert name in xnor_keras.__all__
    assert xbw.__file__.startswith(str(Path(__file__).resolve().parents[1]))  # this worktree


def _small_model(units: int = 6, dense_class=xl.XNORDense, float_bconv: bool = False) -> tf.keras.Model:
    """Our XNOR/BWN layers, larq layers with larq's 1-bit quantizers, and float layers."""
    inputs = tf.keras.Input((8, 8, 4), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = xl.XNORConv2D(8, 3, padding="same", name="xconv")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = (L.Conv2D(8, 3, use_bias=False, name="bconv") if float_bconv else xl.BWNConv2D(8, 3, name="bconv"))(x)
    x = L.BatchNormalization(name="bn3")(x)
    x = lq.layers.QuantConv2D(8, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name="lq_ste")(x)
    x = L.BatchNormalization(name="bn4")(x)
    x = lq.layers.QuantConv2D(
        8, 1, input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip", name="lq_mag"
    )(x)
    x = L.Flatten(name="flatten")(x)
    x = dense_class(units, use_bias=True, name="xdense")(x)
    x = L.BatchNormalization(name="bn5")(x)
    outputs = L.Dense(3, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="small_binary")


def _calibrated(model: tf.keras.Model, seed: int = 1) -> tf.keras.Model:
    shape = tuple(model.inputs[0].shape[1:])
    calibrate_batchnorm(model, np.random.default_rng(seed).standard_normal((16, *shape)).astype(np.float32))
    return model


def _binarized_layers(model):
    return [layer for layer in model.layers if getattr(getattr(layer, "kernel_quantizer", None), "precision", 0) == 1]


def _latent_kernel(layer) -> np.ndarray:
    return layer.kernel.latent_variable.numpy()


def _x(model, n: int = 4, seed: int = 2) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small model with exact zeros in every binarized kernel, and its packed file."""
    tf.keras.utils.set_random_seed(0)
    model = _calibrated(_small_model())
    for layer in _binarized_layers(model):
        w = _latent_kernel(layer)
        w.reshape(-1)[::7] = 0.0  # sign(0) must be +1 in the file
        layer.kernel.latent_variable.assign(w)
    path = xbw.save_binary_weights(model, tmp_path_factory.mktemp("small") / "small.xbw")
    return model, path


def _fresh_small(**kwargs) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(5)
    return _small_model(**kwargs)


def _raw(path, version: int = 1) -> tuple[dict, bytes]:
    """Header and payload, parsed here from the documented layout (not by the module)."""
    data = path.read_bytes()
    magic, got_version, size = struct.unpack_from("<8sII", data)
    assert (magic, got_version) == (b"XNORBITS", version)
    header = data[16 : 16 + size]
    return json.loads(zlib.decompress(header) if version >= 3 else header), data[16 + size :]


def _weights_of(model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


# --------------------------------------------------------------------------------------------
# The file holds sign(W) and alpha


def test_bits_are_numpy_sign_of_latent_kernel_and_alpha_is_mean_abs(small):
    model, path = small
    header, payload = _raw(path)
    records = {record["name"]: record for record in header["layers"]}
    binarized = _binarized_layers(model)
    assert {layer.name for layer in binarized} == {"xconv", "bconv", "lq_ste", "lq_mag", "xdense"}
    for layer in binarized:
        w = _latent_kernel(layer)
        assert np.any(w == 0)
        (entry,) = [e for e in records[layer.name]["weights"] if e["name"] == "kernel"]
        assert entry["encoding"] == "sign_bits" and entry["shape"] == list(w.shape)
        start, size = entry["bits"]
        assert size == -(-w.size // 8)  # 1 bit a weight
        bits = np.unpackbits(np.frombuffer(payload[start : start + size], np.uint8), bitorder="little")
        np.testing.assert_array_equal(bits[: w.size], (w.reshape(-1) >= 0).astype(np.uint8))
        assert not bits[w.size :].any()
        start, size = entry["alpha"]
        alpha = np.frombuffer(payload[start : start + size], "<f4")
        if layer.name == "lq_ste":  # larq's plain sign: the kernel is sign(W), alpha 1
            expected = np.ones(w.shape[-1])
        else:
            expected = np.abs(w.astype(np.float64)).reshape(-1, w.shape[-1]).mean(axis=0)
        np.testing.assert_allclose(alpha, expected, rtol=1e-6)


def test_full_precision_weights_are_stored_as_float32(small):
    model, path = small
    header, payload = _raw(path)
    assert header["model"]["name"] == "small_binary" and header["float_dtype"] == "float32"
    assert hashlib.sha256(payload).hexdigest() == header["payload_sha256"]
    stored = {}
    for record in header["layers"]:
        for entry in record["weights"]:
            if entry["encoding"] == "float32":
                start, size = entry["data"]
                stored[(record["name"], entry["name"])] = np.frombuffer(payload[start : start + size], "<f4").reshape(entry["shape"])
    bn = model.get_layer("bn2")
    np.testing.assert_array_equal(stored[("bn2", "moving_variance")], bn.moving_variance.numpy())
    np.testing.assert_array_equal(stored[("conv1", "kernel")], model.get_layer("conv1").kernel.numpy())
    np.testing.assert_array_equal(stored[("xdense", "bias")], model.get_layer("xdense").bias.numpy())


# --------------------------------------------------------------------------------------------
# Loading reproduces the outputs


def test_saved_file_gets_the_permissions_open_would_give(small, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = xbw.save_binary_weights(small[0], tmp_path / "w.xbw")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_small_model_reloads_to_identical_outputs(small):
    model, path = small
    fresh = _fresh_small()
    x = _x(model)
    assert not np.array_equal(model(x, training=False), fresh(x, training=False))
    xbw.load_binary_weights(fresh, path)
    np.testing.assert_array_equal(fresh(x, training=False).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("name", ["XNORResNet18", "BWNResNet18"])
def test_zoo_model_reloads_to_identical_outputs(name, tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = _calibrated(zoo.get_model(name, **R18))
    path = xbw.save_binary_weights(model, tmp_path / "r18.xbw")
    tf.keras.utils.set_random_seed(1)
    fresh = zoo.get_model(name, **R18)
    xbw.load_binary_weights(fresh, path)
    x = _x(model)
    np.testing.assert_array_equal(fresh(x, training=False).numpy(), model(x, training=False).numpy())
    # The builder takes the packed file as `weights=` too.
    again = zoo.get_model(name, weights=str(path), **R18)
    np.testing.assert_array_equal(again(x, training=False).numpy(), model(x, training=False).numpy())


def test_latent_weights_after_loading_are_plus_minus_alpha(small):
    model, path = small
    fresh = _fresh_small()
    file = xbw.load_binary_weights(fresh, path)
    for layer in _binarized_layers(fresh):
        sign, alpha = file.sign_and_alpha(layer.name)
        w = _latent_kernel(layer)
        n = w.size // w.shape[-1]
        np.testing.assert_array_equal(np.where(w >= 0, 1, -1), sign)
        # +-alpha up to the spread that makes mean|W| exact (module docstring): n / 2**23.
        np.testing.assert_allclose(np.abs(w), np.broadcast_to(alpha, w.shape), rtol=n / 2**23 + 1e-7)
        with lq.context.quantized_scope(True):
            quantized = layer.kernel_quantizer(tf.constant(w)).numpy()
        np.testing.assert_array_equal(quantized, file.weight(layer.name, "kernel"))


def test_float16_stores_other_weights_rounded_and_the_binary_part_exactly(small, tmp_path):
    model, path = small
    half = xbw.save_binary_weights(model, tmp_path / "half.xbw", float_dtype="float16")
    assert half.stat().st_size < path.stat().st_size
    full_file, half_file = xbw.read_binary_weights(path), xbw.read_binary_weights(half)
    for layer in _binarized_layers(model):
        for a, b in zip(full_file.sign_and_alpha(layer.name), half_file.sign_and_alpha(layer.name)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        half_file.weight("bn1", "moving_variance"),
        model.get_layer("bn1").moving_variance.numpy().astype(np.float16),
    )
    fresh = _fresh_small()
    xbw.load_binary_weights(fresh, half)
    np.testing.assert_array_equal(
        fresh.get_layer("conv1").kernel.numpy(), model.get_layer("conv1").kernel.numpy().astype(np.float16)
    )


def test_int8_kernels_are_per_channel_int8_from_the_raw_bytes_and_reload_exactly(small, tmp_path):
    """int8_kernels stores the named full-precision kernels as int8 q = round(W / s) with
    s = max|W| / 127 per output channel (numpy oracle from the raw bytes); loading gives exactly
    q * s; the binary part and every other weight are unchanged; version 3 (zlib header)."""
    model, path = small
    names = ["conv1", "logits"]
    int8 = xbw.save_binary_weights(model, tmp_path / "int8.xbw", int8_kernels=names)
    header, payload = _raw(int8, version=3)
    for name in names:
        kernel = model.get_layer(name).kernel.numpy()
        (entry,) = [e for r in header["layers"] if r["name"] == name for e in r["weights"] if e["name"] == "kernel"]
        assert entry["encoding"] == "int8_per_channel"
        start, size = entry["data"]
        q = np.frombuffer(payload, np.int8, size, start).reshape(kernel.shape)
        start, size = entry["scale"]
        scale = np.frombuffer(payload, "<f4", size // 4, start)
        flat = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
        expected_scale = (np.abs(flat).max(0) / 127).astype(np.float32)
        np.testing.assert_array_equal(scale, expected_scale)
        np.testing.assert_array_equal(q.reshape(flat.shape), np.rint(flat / expected_scale).astype(np.int8))
        assert np.abs(q).max() == 127
    # 4x smaller for those kernels; every other entry stored as before.
    full_header, _ = _raw(path)
    others = lambda h: [(r["name"], e["name"], e["encoding"]) for r in h["layers"] for e in r["weights"]
                        if not (r["name"] in names and e["name"] == "kernel")]
    assert others(header) == others(full_header)

    fresh = _fresh_small()
    xbw.load_binary_weights(fresh, int8)
    file = xbw.read_binary_weights(int8)
    for name in names:
        kernel = model.get_layer(name).kernel.numpy()
        stored = file.weight(name, "kernel")
        np.testing.assert_array_equal(fresh.get_layer(name).kernel.numpy(), stored)
        step = np.abs(kernel.reshape(-1, kernel.shape[-1])).max(0) / 127
        assert np.all(np.abs(stored - kernel) <= step / 2 * 1.0001)
    # Outputs: exactly the original model's with those kernels replaced by their int8 values.
    expected = _fresh_small()
    expected.set_weights(model.get_weights())
    for name in names:
        expected.get_layer(name).kernel.assign(file.weight(name, "kernel"))
    x = _x(model)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), expected.predict(x, verbose=0))
    # Exact reload: packing the reloaded model again gives the same int8 values and scales.
    again = xbw.pack_binary_weights(fresh, int8_kernels=names)
    reread = xbw.parse_binary_weights(again)
    for name in names:
        np.testing.assert_array_equal(reread.weight(name, "kernel"), file.weight(name, "kernel"))
    summary = xbw.binary_weights_summary(int8)
    (conv1,) = [w for w in summary.weights if w.layer == "conv1" and w.weight == "kernel"]
    assert conv1.encoding == "int8_per_channel" and conv1.stored_bytes == conv1.size + 4 * conv1.shape[-1]


def test_int8_kernels_all_and_bad_names(small):
    model, _ = small
    every = xbw.parse_binary_weights(xbw.pack_binary_weights(model, int8_kernels="all"))
    encoded = {r["name"] for r in every.layers for e in r["weights"] if e["encoding"] == "int8_per_channel"}
    assert encoded == {"conv1", "logits"}  # the full-precision kernels; BWN/XNOR stay sign bits
    with pytest.raises(ValueError, match=r"`int8_kernels`.*'xconv'.*conv1"):
        xbw.pack_binary_weights(model, int8_kernels=["xconv"])
    with pytest.raises(ValueError, match="`int8_kernels`"):
        xbw.pack_binary_weights(model, int8_kernels="conv1")


def test_float16_refuses_values_it_cannot_hold(tmp_path):
    model = _fresh_small()
    bn = model.get_layer("bn1")
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 1e6, np.float32))
    with pytest.raises(ValueError, match="Layer 'bn1' weight 'moving_variance'.*float16"):
        xbw.save_binary_weights(model, tmp_path / "x.xbw", float_dtype="float16")
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match=re.escape("float_dtype='bfloat16'")):
        xbw.pack_binary_weights(model, float_dtype="bfloat16")


# --------------------------------------------------------------------------------------------
# Bad input: one clear error, model unchanged


def _assert_refused(path_or_bytes, match: str, model=None):
    model = model or _fresh_small()
    before = _weights_of(model)
    with pytest.raises(xbw.BinaryWeightsError, match=match):
        xbw.load_binary_weights(model, path_or_bytes)
    for a, b in zip(before, _weights_of(model)):
        np.testing.assert_array_equal(a, b)


def test_another_architecture_is_refused_naming_the_difference(small):
    _, path = small
    _assert_refused(path, r"layer 'xdense' weight 'kernel' has shape \(288, 6\) in the file, \(288, 5\) in the model", _fresh_small(units=5))
    _assert_refused(path, "layer 'xdense' is a XNORDense in the file, a BWNDense in the model", _fresh_small(dense_class=xl.BWNDense))
    tf.keras.utils.set_random_seed(0)
    r18 = zoo.XNORResNet18(**R18)
    _assert_refused(path, "saved from model 'small_binary'.*does not fit model 'xnor_resnet18'.*no weights for the model's layer", r18)


def test_float_twin_is_refused(small):
    """Same names and shapes, but the file's kernel is binarized and the model's is not."""
    _, path = small
    _assert_refused(path, "layer 'bconv' is a BWNConv2D in the file, a Conv2D in the model", _fresh_small(float_bconv=True))


@pytest.mark.parametrize("keep", [0, 5, 12, 15, 40, -1])
def test_truncated_file_is_refused(small, tmp_path, keep):
    _, path = small
    data = path.read_bytes()
    cut = tmp_path / "cut.xbw"
    cut.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    _assert_refused(cut, f"{re.escape(str(cut))}: truncated")


def test_other_version_is_refused(small, tmp_path):
    _, path = small
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", 4)
    _assert_refused(bytes(data), "format version 4 .*newer xnor_keras.* reads versions 1, 2, 3")


def test_version_2_files_with_a_plain_header_still_load(small, tmp_path):
    """Version 2 (int8 weights, plain JSON header) was written before version 3 compressed the
    header: the same header and payload re-framed as version 2 load to the same weights."""
    model, _ = small
    v3 = xbw.save_binary_weights(model, tmp_path / "v3.xbw", int8_kernels=["conv1"])
    header, payload = _raw(v3, version=3)
    plain = json.dumps(header, separators=(",", ":")).encode()
    assert len(v3.read_bytes()) < 16 + len(plain) + len(payload)  # compression paid off
    v2 = tmp_path / "v2.xbw"
    v2.write_bytes(struct.pack("<8sII", b"XNORBITS", 2, len(plain)) + plain + payload)
    a, b = _fresh_small(), _fresh_small()
    xbw.load_binary_weights(a, v3)
    xbw.load_binary_weights(b, v2)
    for x, y in zip(_weights_of(a), _weights_of(b)):
        np.testing.assert_array_equal(x, y)


def test_not_this_format_and_corruption_are_refused(small, tmp_path):
    _, path = small
    _assert_refused(b"PK\x03\x04 a zip file, say", "not an xnor_keras binary weights file")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    _assert_refused(bytes(data), "corrupted: the data's sha256 differs")
    _assert_refused(bytes(path.read_bytes()) + b"\0", "1 unexpected bytes after the end")
    _assert_refused(tmp_path / "missing.xbw", "cannot read it")
    header, payload = _raw(path)
    (record,) = [r for r in header["layers"] if r["name"] == "xconv"]
    record["weights"][0]["bits"][1] -= 1  # a header that disagrees with its own shapes
    text = json.dumps(header).encode()
    _assert_refused(
        struct.pack("<8sII", b"XNORBITS", 1, len(text)) + text + payload,
        r"corrupted header: layer 'xconv': weight 'kernel' bits spans bytes \[\d+, \d+\) of \d+, expected 72 bytes",
    )


# --------------------------------------------------------------------------------------------
# Summary


def test_summary_of_file_and_model_agree_with_numpy(small):
    model, path = small
    summary = xnor_keras.binary_weights_summary(path)
    assert summary.file_bytes == path.stat().st_size
    assert summary.to_dict() == {**xbw.binary_weights_summary(model).to_dict()}
    rows = {(w.layer, w.weight): w for w in summary.weights}
    for layer in _binarized_layers(model):
        w = _latent_kernel(layer)
        row = rows[(layer.name, "kernel")]
        assert row.shape == w.shape and row.stored_bytes == -(-w.size // 8) + 4 * w.shape[-1]
        assert row.plus_one_fraction == pytest.approx(np.mean(w >= 0))
        if layer.name != "lq_ste":
            alpha = np.abs(w).reshape(-1, w.shape[-1]).mean(axis=0)
            assert (row.alpha_min, row.alpha_max) == pytest.approx((alpha.min(), alpha.max()), rel=1e-6)
    assert summary.weight_count == model.count_params()
    assert summary.binary_weight_count == sum(_latent_kernel(layer).size for layer in _binarized_layers(model))
    table = str(summary)
    assert "xconv" in table and "1 bit + alpha" in table and f"{summary.file_bytes:,d} bytes" in table


# --------------------------------------------------------------------------------------------
# CLI


def _cli(argv, capsys) -> tuple[int, str, str]:
    return run_cli(weights_main, argv, capsys)


def test_cli_exports_a_saved_model_and_summarizes_the_file(small, tmp_path, capsys):
    model, path = small
    saved = tmp_path / "small.keras"
    model.save(saved)
    out = tmp_path / "out" / "small.xbw"
    code, _, err = _cli(["export", saved, "-o", out], capsys)
    assert code == 0, err
    assert out.read_bytes() == path.read_bytes()
    code, stdout, err = _cli(["summary", out], capsys)
    assert code == 0, err
    assert "xdense" in stdout and f"sha256: {hashlib.sha256(out.read_bytes()).hexdigest()}" in stdout
    code, stdout, _ = _cli(["summary", out, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["file_bytes"] == out.stat().st_size
    int8 = tmp_path / "int8.xbw"
    code, _, err = _cli(["export", saved, "-o", int8, "--int8-kernels", "conv1, logits"], capsys)
    assert code == 0, err
    assert int8.read_bytes() == xbw.pack_binary_weights(model, int8_kernels=["conv1", "logits"])
    assert "int8)" in err
    bad = tmp_path / "bad.xbw"
    code, _, err = _cli(["export", saved, "-o", bad, "--int8-kernels", "xconv"], capsys)
    assert code == 2 and "`int8_kernels`" in err and not bad.exists()


def test_cli_input_errors_exit_2_and_write_nothing(small, tmp_path, capsys):
    _, path = small
    cut = tmp_path / "cut.xbw"
    cut.write_bytes(path.read_bytes()[:100])
    code, _, err = _cli(["summary", cut], capsys)
    assert code == 2 and "truncated" in err
    code, _, err = _cli(["export", tmp_path / "missing.keras", "-o", tmp_path / "o.xbw"], capsys)
    assert code == 2 and "neither a zoo model" in err
    code, _, _ = _cli(["export", tmp_path / "missing.keras"], capsys)  # no -o: usage error
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.xbw"]


# --------------------------------------------------------------------------------------------
# Named weights: the zoo registry


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """An empty registry and cache for one test, and a test-only packed XNORResNet18 at file://."""
    monkeypatch.setattr(_weights, "_WEIGHTS", {})
    monkeypatch.setenv("XNOR_KERAS_CACHE", str(tmp_path / "cache"))
    tf.keras.utils.set_random_seed(0)
    model = _calibrated(zoo.XNORResNet18(**R18))
    source = xbw.save_binary_weights(model, tmp_path / "hosted" / "r18.xbw")
    entry = zoo.PretrainedWeights(
        model="XNORResNet18",
        name="test_only",
        url=source.as_uri(),
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        classes=10,
        input_shape=(32, 32, 3),
        dataset="random (test only)",
        accuracy=0.0,
    )
    zoo.register_weights(entry)
    return dict(model=model, source=source, entry=entry, cache=tmp_path / "cache" / "weights")


def test_named_weights_download_once_and_reproduce_the_model(registry):
    entry, model = registry["entry"], registry["model"]
    assert zoo.list_weights("XNORResNet18") == [entry] and zoo.list_weights("BWNResNet18") == []
    loaded = zoo.XNORResNet18(weights="test_only")  # classes and input_shape from the entry
    x = _x(model)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())
    cached = registry["cache"] / entry.filename
    assert cached.read_bytes() == registry["source"].read_bytes()
    assert [p.name for p in registry["cache"].iterdir()] == [entry.filename]  # no temp files
    registry["source"].unlink()  # a second use must not download again
    again = zoo.XNORResNet18(weights="test_only", classes=10, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(again(x, training=False).numpy(), model(x, training=False).numpy())
    headless = zoo.XNORResNet18(weights="test_only", include_top=False, input_shape=(40, 40, 3))
    np.testing.assert_array_equal(
        headless.get_layer("post_bn").moving_mean.numpy(), model.get_layer("post_bn").moving_mean.numpy()
    )


def test_named_weights_with_wrong_hash_are_refused_and_not_cached(registry, monkeypatch):
    bad = dataclasses.replace(registry["entry"], sha256="0" * 64)
    zoo.register_weights(bad, replace=True)
    with pytest.raises(zoo.WeightsDownloadError, match=f"sha256 is {registry['entry'].sha256}, the registry expects 0000"):
        zoo.XNORResNet18(weights="test_only")
    assert not registry["cache"].exists() or not list(registry["cache"].iterdir())
    missing = dataclasses.replace(registry["entry"], url=(registry["source"].parent / "nope.xbw").as_uri())
    zoo.register_weights(missing, replace=True)
    with pytest.raises(zoo.WeightsDownloadError, match="Could not download weights 'test_only'"):
        zoo.fetch_weights(missing)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=100), r"trained with classes=10 .*Received: classes=100"),
        (dict(input_shape=(64, 64, 3)), r"trained with input_shape=\(32, 32, 3\).*Received: input_shape=\(64, 64, 3\)"),
        (dict(include_top=False, input_shape=(32, 32, 1)), r"3 input channels.*Received: input_shape=\(32, 32, 1\)"),
    ],
)
def test_named_weights_with_wrong_classes_or_shape_are_refused(registry, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.XNORResNet18(weights="test_only", **kwargs)
    assert not registry["cache"].exists()  # refused before downloading


def test_unknown_weights_name_lists_the_known_ones(registry):
    with pytest.raises(ValueError, match=r"Unknown weights 'imagenet' for XNORResNet18.*\('test_only'\)"):
        zoo.XNORResNet18(weights="imagenet")
    with pytest.raises(ValueError, match="none registered yet.*Received: weights='test_only'"):
        zoo.BWNResNet18(weights="test_only")


def test_named_weights_for_raw_images_resize_and_normalize_inside_the_model(monkeypatch, tmp_path):
    """An entry with raw_input_shape: raw 0-255 images in, the training pipeline's preprocessing as layers."""
    from xnor_keras import data

    monkeypatch.setattr(_weights, "_WEIGHTS", {})
    monkeypatch.setenv("XNOR_KERAS_CACHE", str(tmp_path / "cache"))
    tf.keras.utils.set_random_seed(0)
    trained = _calibrated(zoo.XNORResNet18(input_shape=(32, 32, 1), classes=10, pad_values=1.0))
    source = xbw.save_binary_weights(trained, tmp_path / "r18.xbw")
    (mean,), (std,) = data.NORMALIZATION["fashion_mnist"]
    zoo.register_weights(zoo.PretrainedWeights(
        model="XNORResNet18", name="raw_test", url=source.as_uri(),
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(), classes=10, input_shape=(32, 32, 1),
        dataset="random (test only)", accuracy=0.0, options={"pad_values": 1.0},
        raw_input_shape=(28, 28, 1), mean=(mean,), std=(std,)))

    model = zoo.XNORResNet18(weights="raw_test")
    assert model.input_shape == (None, 28, 28, 1)
    raw = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    # Oracle: the data pipeline's own resize and normalisation.
    expected = data.normalize(tf.image.resize(raw, (32, 32), method="bilinear"), "fashion_mnist").numpy()
    normalized = tf.keras.Model(model.input, model.get_layer("normalize").output)(raw).numpy()
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-5)
    # Behind the preprocessing, the network is the trained one: identical on the same inputs.
    np.testing.assert_array_equal(model(raw, training=False).numpy(), trained(normalized, training=False).numpy())
    # The trained shape builds the bare network; the training options are applied and enforced.
    bare = zoo.XNORResNet18(weights="raw_test", input_shape=(32, 32, 1))
    assert bare.input_shape == (None, 32, 32, 1)
    np.testing.assert_array_equal(bare(normalized, training=False).numpy(), trained(normalized, training=False).numpy())
    with pytest.raises(ValueError, match=r"trained with pad_values=1.0; leave `pad_values` out.*Received: pad_values=0.0"):
        zoo.XNORResNet18(weights="raw_test", pad_values=0.0)
    with pytest.raises(ValueError, match="raw_input_shape="):
        dataclasses.replace(zoo.list_weights("XNORResNet18")[0], raw_input_shape=(28, 28, 3))


def test_registry_entry_is_validated():
    fields = dict(model="XNORResNet18", name="x", url="file:///x.xbw", sha256="a" * 64, classes=10,
                  input_shape=(32, 32, 3), dataset="d", accuracy=0.5)
    with pytest.raises(ValueError, match="url="):
        zoo.PretrainedWeights(**{**fields, "url": "ftp://x"})
    with pytest.raises(ValueError, match="sha256="):
        zoo.PretrainedWeights(**{**fields, "sha256": "abc"})
