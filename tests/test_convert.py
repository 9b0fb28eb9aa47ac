"""The converter's entry points: argument checks and atomic writes.

(Layer-by-layer conversion checks live with the layers; full conversions with the zoo.)
"""

from __future__ import annotations

import pytest

from xnor_keras import convert


def test_convert_rejects_non_model():
    with pytest.raises(ValueError, match="Expected `model` to be a tf.keras.Model"):
        convert.convert("model.h5")


def test_convert_rejects_unknown_target():
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match="target='riscv'"):
        convert.convert(model, target="riscv")


def test_save_tflite_writes_atomically(tmp_path):
    path = convert.save_tflite(b"\x00flatbuffer", tmp_path / "sub" / "m.tflite")
    assert path.read_bytes() == b"\x00flatbuffer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.tflite"]


def test_save_tflite_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        convert.save_tflite("not bytes", target)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
