"""The only place that knows about TensorFlow / Keras / larq version quirks.

larq and Larq Compute Engine's converter are written against Keras 2. TensorFlow 2.16+ binds
``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set, and it reads that variable at two
different moments:

* ``tensorflow/__init__.py`` prepends a Keras API folder to ``tensorflow.__path__`` *at import
  time*. That folder decides what the module path ``tensorflow.keras`` (as in
  ``from tensorflow.keras.optimizers import ...``, which larq uses) resolves to.
* ``tf.keras`` (the attribute) is a lazy loader that reads the variable *on first access*.

So setting the variable after ``import tensorflow`` fixes the attribute but not the module path,
and ``import larq`` then fails inside ``larq/optimizers.py``. :func:`use_legacy_keras` repairs both
as long as Keras 3 has not been bound yet; once it has, mixing would break in confusing ways, so it
raises an ``ImportError`` that says what to do instead.
"""

from __future__ import annotations

import os
import sys

__all__ = ["use_legacy_keras"]

_ENV = "TF_USE_LEGACY_KERAS"
_LEGACY_API = "tf_keras.api._v2.keras"

_HOW_TO_FIX = (
    "Either set the environment variable before Python starts "
    "(`export TF_USE_LEGACY_KERAS=1`), or import xnor_keras (or set "
    "`os.environ['TF_USE_LEGACY_KERAS'] = '1'`) before the first use of `tf.keras` / "
    "`tensorflow.keras` in the process."
)


def _is_legacy(module) -> bool:
    """True when `module` is (a part of) the tf_keras package.

    Careful: Keras 3 ships a shim called ``keras._tf_keras``; it is not Keras 2.
    """
    name = getattr(module, "__name__", "") or ""
    path = getattr(module, "__file__", None) or ""
    return name.split(".")[0] == "tf_keras" or f"{os.sep}tf_keras{os.sep}" in path


def use_legacy_keras() -> None:
    """Make ``tf.keras`` and the ``tensorflow.keras`` module path resolve to Keras 2 (tf_keras).

    Safe to call any number of times, before or after ``import tensorflow``.

    Raises:
        ImportError: if Keras 3 is already bound as ``tf.keras`` in this process, or if the
            ``tf_keras`` package is missing.
    """
    requested = os.environ.get(_ENV)
    if requested not in (None, "1", "true", "True"):
        # Explicitly set to something else: Keras 3 cannot run larq, so we override, loudly.
        import warnings

        warnings.warn(
            f"xnor_keras needs Keras 2 (tf_keras); overriding {_ENV}={requested!r} with '1'.",
            RuntimeWarning,
            stacklevel=3,
        )
    os.environ[_ENV] = "1"

    tf = sys.modules.get("tensorflow")
    if tf is None:
        # TensorFlow reads the variable when it is imported: nothing else to do.
        _require_tf_keras()
        return

    # TensorFlow is already imported. First refuse if Keras 3 has been bound anywhere.
    bound = tf.__dict__.get("keras")
    keras3_bound = bound is not None and (
        # The lazy loader has been resolved to a real module ...
        (not _is_lazy_loader(bound) and not _is_legacy(bound))
        # ... or resolved itself to Keras 3 without replacing itself yet.
        or (_is_lazy_loader(bound) and getattr(bound, "_tfll_keras_version", None) == "keras_3")
    )
    stale = sorted(
        name
        for name, module in list(sys.modules.items())
        if (name == "tensorflow.keras" or name.startswith("tensorflow.keras."))
        and module is not None
        and not _is_legacy(module)
    )
    if keras3_bound or stale:
        what = ", ".join(stale[:3]) if stale else "tf.keras"
        raise ImportError(
            "xnor_keras needs Keras 2 (the tf_keras package), but Keras 3 is already bound in "
            f"this process ({what} was used before xnor_keras was imported). " + _HOW_TO_FIX
        )

    _require_tf_keras()
    # Route the module path `tensorflow.keras` to tf_keras, as TensorFlow itself would have done
    # had the variable been set before `import tensorflow`.
    from tensorflow.python.tools import module_util

    legacy_dir = module_util.get_parent_dir_for_name(_LEGACY_API)
    if legacy_dir and (not tf.__path__ or tf.__path__[0] != legacy_dir):
        tf.__path__.insert(0, legacy_dir)


def _is_lazy_loader(obj) -> bool:
    return type(obj).__name__ == "KerasLazyLoader"


def _require_tf_keras() -> None:
    try:
        import tf_keras  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "xnor_keras needs the `tf_keras` package (Keras 2 for TensorFlow 2.16+). "
            "Install it with `pip install 'tf-keras==2.21.*'`."
        ) from error
