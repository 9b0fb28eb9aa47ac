"""xnor_keras: XNOR-Net and Binary-Weight-Networks for Keras, made fast on device by LCE.

Importing this package makes ``tf.keras`` resolve to Keras 2 (the ``tf_keras`` package), which
larq and Larq Compute Engine need, whether TensorFlow was imported before or after it. Write your
models against ``tf.keras`` after ``import xnor_keras`` (or against ``tf_keras`` directly; they are
the same objects).
"""

from xnor_keras._compat import use_legacy_keras as _use_legacy_keras

_use_legacy_keras()

from xnor_keras import binary_weights, distillation, layers, optimizers, quantizers, zoo  # noqa: E402
from xnor_keras.binary_weights import (  # noqa: E402
    binary_weights_summary,
    load_binary_weights,
    save_binary_weights,
)
from xnor_keras.layers import BWNConv2D, BWNDense, XNORConv2D, XNORDense  # noqa: E402
from xnor_keras.quantizers import (  # noqa: E402
    BinaryActivation,
    ScaledBinaryActivation,
    ScaledWeightSign,
)

__version__ = "0.1.0"

__all__ = [
    "BWNConv2D",
    "BWNDense",
    "BinaryActivation",
    "ScaledBinaryActivation",
    "ScaledWeightSign",
    "XNORConv2D",
    "XNORDense",
    "__version__",
    "binary_weights",
    "binary_weights_summary",
    "layers",
    "load_binary_weights",
    "optimizers",
    "quantizers",
    "save_binary_weights",
    "zoo",
]
