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

TensorFlow 2.21 also writes a few log lines while it is imported, before its logging reads
``TF_CPP_MIN_LOG_LEVEL`` ("All log messages before absl::InitializeLog() ...", "oneDNN custom
operations are on", "Could not find cuda drivers"), so no setting hides them. :func:`import_tensorflow`
applies that setting to them itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

__all__ = ["import_tensorflow", "min_log_level", "native_log_filter", "quiet_tensorflow_logs", "use_legacy_keras"]

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
        import_tensorflow()
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


# What native code writes to stderr, by severity (0 info, 1 warning, 2 error, 3 fatal):
# absl's pre-initialisation banner; glog-style lines (I0000 00:00:17.5  1234 port.cc:153] ...);
# the converter's TensorFlow copy (2026-01-01 12:00:00.000: I external/...] ...); TFLite's
# minimal logging (INFO: Created TensorFlow Lite XNNPACK delegate for CPU.).
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NATIVE_LINE = re.compile(
    r"^(?:([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ ]+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) [^ ]+:\d+\] "
    r"|(INFO|WARNING|ERROR): )"
)
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3, "INFO": 0, "WARNING": 1, "ERROR": 2}
# The programs this package ships default TF_CPP_MIN_LOG_LEVEL to 3: their output is their own.
_PROGRAMS = ("xnor-train", "xnor-to-tflite")
_MODULE_PROGRAMS = ("xnor_keras.demo",)


def _is_our_program() -> bool:
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1] in _MODULE_PROGRAMS
    return any(os.path.basename(arg) in _PROGRAMS for arg in argv[:2])


def min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as an int (unset: 1, i.e. INFO hidden, for the lines filtered here)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    except ValueError:
        return 1


def import_tensorflow():
    """``import tensorflow``, keeping the lines it logs below ``TF_CPP_MIN_LOG_LEVEL`` off stderr.

    Unset, the level counts as 1 (INFO hidden) for these import-time lines only: they are INFO
    lines about the build (oneDNN, no CUDA driver), not about the user's program. Set
    ``TF_CPP_MIN_LOG_LEVEL=0`` to see them. The programs this package ships (``xnor-train``,
    ``xnor-to-tflite``, ``python -m xnor_keras.demo``) default the variable to 3 before TensorFlow
    reads it.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if _is_our_program():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_log_filter():
        import tensorflow
    return tensorflow


@contextlib.contextmanager
def native_log_filter(level: int | None = None):
    """Hold back what is written to stderr meanwhile; pass on the native log lines at or above
    `level` (default: :func:`min_log_level`) and everything else, in order, when the block ends.

    For native libraries that log whatever ``TF_CPP_MIN_LOG_LEVEL`` says (TensorFlow before its
    logging starts, LCE's interpreter). A dropped message's continuation lines (cpu_feature_guard
    writes two) go with it.
    """
    level = min_log_level() if level is None else level
    if level <= 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept, dropping = [], False
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                severity = _severity(line)
                if severity is not None:
                    dropping = severity < level
                if not dropping:
                    kept.append(line)
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _severity(line: str) -> int | None:
    if line.rstrip("\n") == _BANNER:
        return 0
    match = _NATIVE_LINE.match(line)
    if match is None:
        return None
    return _SEVERITY[next(group for group in match.groups() if group)]


def quiet_tensorflow_logs(*, datasets: bool = True) -> None:
    """For command-line programs: only errors from TensorFlow's and absl's Python logging, and
    (with `datasets`) no TFDS progress bars.

    What the user of a CLI reads is the program's own output; warnings such as Keras' "compiled
    metrics have yet to be built" after loading a model are not about anything they did.
    """
    import logging

    import tensorflow as tf
    from absl import logging as absl_logging

    tf.get_logger().setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.ERROR)
    if datasets:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
