r"""Optimizers that apply the latent weights' ``WeightClip`` inside their update step.

Every binarized layer here keeps latent float weights under larq's ``WeightClip(c)`` constraint
(the straight-through window). Keras applies a constraint as a pass of its own after the update
(``variable.assign(constraint(variable))``), and on CPU it runs the update itself as a dozen
separate elementwise ops (Keras compiles the per-variable update with XLA only when it sees a
GPU). For the latent weights that is many passes over every binary weight per step, work the
float twin does not have, and at small inputs it is a visible share of the step.

:class:`Adam` and :class:`SGD` below are Keras' optimizers with one change: for every variable
whose constraint is a ``WeightClip``, the update and the clip run as one XLA-compiled function
(:math:`W \leftarrow \mathrm{clip}(\mathrm{update}(W, g), -c, c)`), and the separate constraint pass
is skipped for it. The result is the same update followed by the same clip (up to XLA's float
rounding of the update arithmetic); other variables and other constraints take Keras' usual path.

Example:
    >>> model.compile(optimizer=xnor_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
"""

from __future__ import annotations

import contextlib

import larq as lq
import tensorflow as tf

__all__ = ["SGD", "Adam", "fused_clip_value"]

_PACKAGE = "xnor_keras"


def fused_clip_value(variable) -> float | None:
    """The clip value of `variable`'s ``WeightClip`` constraint, or None (no such constraint)."""
    constraint = getattr(variable, "constraint", None)
    if type(constraint) is lq.constraints.WeightClip:
        return float(constraint.clip_value)
    return None


def _constraint_owner(variable):
    """The variable object that stores the constraint: a larq QuantizedVariable's latent
    variable, a distributed variable's primary copy (whose constraint Keras reads)."""
    variable = getattr(variable, "latent_variable", variable)
    return getattr(variable, "_primary", variable)


class _FusedWeightClipMixin:
    """Runs update + WeightClip as one XLA function per clipped variable (see the module doc)."""

    _fused_clips: dict = {}

    def apply_gradients(self, grads_and_vars, name=None, **kwargs):
        grads_and_vars = list(grads_and_vars)
        clips = {}
        for _, variable in grads_and_vars:
            clip = fused_clip_value(variable)
            if clip is not None:
                clips[self._var_key(variable)] = (clip, variable)
        with _hidden_constraints([variable for _, variable in clips.values()]):
            self._fused_clips = {key: clip for key, (clip, _) in clips.items()}
            try:
                return super().apply_gradients(grads_and_vars, name=name, **kwargs)
            finally:
                self._fused_clips = {}

    def _update_step(self, gradient, variable):
        clip = self._fused_clips.get(self._var_key(variable))
        if clip is None or getattr(variable, "_unique_id", None) is None:
            return super()._update_step(gradient, variable)
        # `key` makes tf.function trace once per variable (as Keras' own _update_step_xla does).
        return self._clipped_update_xla(gradient, variable, clip, id(self._var_key(variable)))

    @tf.function(jit_compile=True)
    def _clipped_update_xla(self, gradient, variable, clip, key):
        super()._update_step(gradient, variable)
        latent = getattr(variable, "latent_variable", variable)
        latent.assign(tf.clip_by_value(tf.convert_to_tensor(latent), -clip, clip))


@contextlib.contextmanager
def _hidden_constraints(variables):
    """Keras' constraint pass skips these variables: their clip is in the update already."""
    owners = [_constraint_owner(v) for v in variables]
    saved = [owner._constraint for owner in owners]
    for owner in owners:
        owner._constraint = None
    try:
        yield
    finally:
        for owner, constraint in zip(owners, saved):
            owner._constraint = constraint


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class Adam(_FusedWeightClipMixin, tf.keras.optimizers.Adam):
    """``tf.keras.optimizers.Adam`` with each ``WeightClip`` applied inside the update step."""


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class SGD(_FusedWeightClipMixin, tf.keras.optimizers.SGD):
    """``tf.keras.optimizers.SGD`` with each ``WeightClip`` applied inside the update step."""
