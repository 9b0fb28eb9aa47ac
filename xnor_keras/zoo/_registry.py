"""Model registry: builders register by name; the CLI and the tests enumerate it."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = ["get_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., tf.keras.Model]] = {}


def register_model(builder: Callable[..., tf.keras.Model]) -> Callable[..., tf.keras.Model]:
    """Register `builder` under its function name (decorator)."""
    name = builder.__name__
    if name in _MODELS and _MODELS[name] is not builder:
        raise ValueError(f"A model named {name!r} is already registered.")
    _MODELS[name] = builder
    return builder


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> tf.keras.Model:
    """Build the registered model `name` with builder keyword arguments `kwargs`.

    Raises:
        ValueError: if `name` is not registered; the message lists the known names.
    """
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Known models: {', '.join(list_models())}. "
            f"Received: name={name!r}"
        )
    return _MODELS[name](**kwargs)
