"""The model zoo: XNOR, BWN and full-precision AlexNet and ResNet-18.

Every builder takes Keras-applications keyword arguments; variants of a family differ only in
their binarization. ``list_models()`` names them, ``get_model(name, **kwargs)`` builds one.
``weights=`` takes a path or a name registered with ``register_weights`` (``list_weights()``).

Example:
    >>> import xnor_keras
    >>> model = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
"""

from xnor_keras.zoo._common import Binarization
from xnor_keras.zoo._registry import get_model, list_models, register_model
from xnor_keras.zoo._weights import (
    PretrainedWeights,
    WeightsDownloadError,
    fetch_weights,
    get_weights,
    list_weights,
    register_weights,
)
from xnor_keras.zoo.alexnet import AlexNet, BWNAlexNet, XNORAlexNet
from xnor_keras.zoo.resnet import BWNResNet18, ResNet18, XNORResNet18

__all__ = [
    "AlexNet",
    "BWNAlexNet",
    "BWNResNet18",
    "Binarization",
    "PretrainedWeights",
    "WeightsDownloadError",
    "ResNet18",
    "XNORAlexNet",
    "XNORResNet18",
    "fetch_weights",
    "get_model",
    "get_weights",
    "list_models",
    "list_weights",
    "register_model",
    "register_weights",
]
