"""The README's offline demo runs end to end (short training) and checks itself."""

from __future__ import annotations

import numpy as np
import pytest

from xnor_keras import demo


def test_digits_split_is_fixed_by_seed_and_disjoint():
    (x_a, y_a), (t_a, _) = demo.load_digits(seed=3)
    (x_b, y_b), _ = demo.load_digits(seed=3)
    (x_c, _), _ = demo.load_digits(seed=4)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(x_a, x_c)
    assert x_a.shape[1:] == (16, 16, 1) and len(x_a) + len(t_a) == 1797
    assert 0.0 <= x_a.min() and x_a.max() <= 1.0


def test_demo_quick_run_converts_and_verifies(tmp_path, capsys):
    assert demo.main(["--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "digits_xnor.tflite").stat().st_size > 0
    assert "top-1 agreement with Keras" in out
    assert "LceBconv2d x3" in out
    assert "verification on LCE's interpreter" in out


def test_demo_rejects_bad_epochs(capsys):
    with pytest.raises(SystemExit) as excinfo:
        demo.main(["--epochs", "0"])
    assert excinfo.value.code == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_digits_net_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind='ternary'"):
        demo.digits_net("ternary")
