"""`import xnor_keras` binds Keras 2 in either import order, or says exactly what to do.

Each case runs in a fresh interpreter: the binding happens once per process.
"""

from __future__ import annotations

import pytest

from xnor_keras.testing_utils import run_python

_CHECK = """
import tensorflow as tf, tf_keras, larq
assert tf.keras.layers.Layer is tf_keras.layers.Layer, tf.keras
from tensorflow.keras import layers  # the module path larq itself uses
assert layers.Dense is tf_keras.layers.Dense, layers
import xnor_keras
model = tf.keras.Sequential([xnor_keras.XNORConv2D(4, 3, input_shape=(5, 5, 2))])
print(model.output_shape)
"""


@pytest.mark.parametrize(
    "prelude",
    [
        "import xnor_keras\nimport tensorflow as tf",
        "import tensorflow as tf\nimport xnor_keras",
        # TensorFlow imported and used (without Keras) before xnor_keras.
        "import tensorflow as tf\ntf.constant(1.0) + 1\nimport xnor_keras",
    ],
    ids=["xnor_keras-first", "tensorflow-first", "tensorflow-used-first"],
)
def test_import_order_binds_keras2(prelude):
    out = run_python(prelude + "\n" + _CHECK)
    assert out.strip().endswith("(None, 3, 3, 4)")


@pytest.mark.parametrize(
    "prelude, culprit",
    [
        ("import tensorflow as tf\ntf.keras.layers.Dense", "tf.keras"),
        ("from tensorflow.keras import layers", "tensorflow.keras"),
    ],
    ids=["tf.keras-attribute", "tensorflow.keras-module"],
)
def test_keras3_already_bound_raises_actionable_import_error(prelude, culprit):
    code = f"""
{prelude}
try:
    import xnor_keras
except ImportError as error:
    print("ImportError:", error)
else:
    print("imported")
"""
    out = run_python(code)
    assert out.startswith("ImportError:"), out
    assert culprit in out
    assert "export TF_USE_LEGACY_KERAS=1" in out


def test_env_var_set_to_zero_is_overridden_with_warning():
    code = """
import os, warnings
os.environ["TF_USE_LEGACY_KERAS"] = "0"
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import xnor_keras
import tensorflow as tf, tf_keras
assert tf.keras.layers.Layer is tf_keras.layers.Layer
print([str(w.message) for w in caught if "TF_USE_LEGACY_KERAS" in str(w.message)])
"""
    out = run_python(code)
    assert "overriding TF_USE_LEGACY_KERAS='0'" in out
