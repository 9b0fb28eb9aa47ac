"""The model zoo: XNOR, BWN and full-precision AlexNet and ResNet-18.

Every builder takes Keras-applications keyword arguments; variants of a family differ only in
their binarization. ``list_models()`` names them, ``get_model(name, **kwargs)`` builds one.

Example:
    >>> import xnor_keras
    >>> model = xnor_keras.zoo.XNORResNet18(input_shape=(32, 32, 3), classes=10)
"""

from xnor_keras.zoo._common import Binarization
from xnor_keras.zoo._registry import get_model, list_models, register_model
from xnor_keras.zoo.alexnet import AlexNet, BWNAlexNet, XNORAlexNet
from xnor_keras.zoo.resnet import BWNResNet18, ResNet18, XNORResNet18

__all__ = [
    "AlexNet",
    "BWNAlexNet",
    "BWNResNet18",
    "Binarization",
    "ResNet18",
    "XNORAlexNet",
    "XNORResNet18",
    "get_model",
    "list_models",
    "register_model",
]
