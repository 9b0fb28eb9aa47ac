"""Knowledge distillation from a trained teacher (e.g. the float twin) into a binary student.

Binary networks learn better when they also match a full-precision network's class
distribution, not only the one-hot labels (ReActNet's "distributional loss", Real-to-Binary
Nets). Neither the XNOR-Net paper nor its code does this; here it is an option of the training
CLI (``xnor-train --teacher RUN_DIR``) and of :class:`xnor_keras.training.TrainConfig`.

How it fits ``model.fit`` without changing the student model: the dataset carries the teacher's
probabilities next to the label (:func:`with_teacher` packs ``[label, p_teacher...]`` into one
float32 target), :class:`DistillationLoss` reads both, and :class:`LabelAccuracy` /
:class:`LabelTopKAccuracy` read the label only. The student stays a plain Keras model; its saved
``model.keras`` loads wherever ``xnor_keras`` is imported.

The loss, with student probabilities ``p_s``, teacher probabilities ``p_t``, temperature ``T``
and weight ``w``:

    (1 - w) * CE(label, p_s) + w * T^2 * KL(softmax(log p_t / T) || softmax(log p_s / T))

Defaults ``w = 1, T = 1`` are ReActNet's (the teacher's distribution only); ``w = 0`` is plain
cross-entropy.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["DistillationLoss", "LabelAccuracy", "LabelTopKAccuracy", "with_teacher"]

_EPSILON = 1e-7


def with_teacher(dataset: tf.data.Dataset, teacher: tf.keras.Model) -> tf.data.Dataset:
    """``(x, label)`` batches to ``(x, [label, teacher probabilities...])``, float32 targets.

    The teacher runs in inference mode (BatchNorm with its moving statistics) on exactly the
    images the student sees, augmentation included.
    """

    def add_teacher(x, label):
        probabilities = tf.cast(teacher(x, training=False), tf.float32)
        label = tf.cast(tf.reshape(label, (-1, 1)), tf.float32)
        return x, tf.concat([label, probabilities], axis=-1)

    return dataset.map(add_teacher, num_parallel_calls=tf.data.AUTOTUNE)


def _labels(y_true: tf.Tensor) -> tf.Tensor:
    return tf.cast(y_true[:, 0], tf.int64)


@tf.keras.utils.register_keras_serializable(package="xnor_keras")
class DistillationLoss(tf.keras.losses.Loss):
    """Cross-entropy with the label plus KL divergence from the teacher; see the module docstring.

    Args:
        weight: ``w`` in [0, 1], the teacher's share of the loss.
        temperature: ``T`` > 0; both distributions are softened by it, and the KL term is
            scaled by ``T^2`` so that its gradients keep their size.
    """

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, name: str = "distillation", **kwargs):
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"Expected `weight` to be in [0, 1]. Received: weight={weight!r}")
        if not float(temperature) > 0.0:
            raise ValueError(f"Expected `temperature` to be above 0. Received: temperature={temperature!r}")
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        student = tf.clip_by_value(y_pred, _EPSILON, 1.0)
        cross_entropy = tf.keras.losses.sparse_categorical_crossentropy(_labels(y_true), student)
        if self.weight == 0.0:
            return cross_entropy
        t = self.temperature
        log_teacher = tf.nn.log_softmax(tf.math.log(tf.clip_by_value(y_true[:, 1:], _EPSILON, 1.0)) / t)
        log_student = tf.nn.log_softmax(tf.math.log(student) / t)
        kl = tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=-1) * (t * t)
        return (1.0 - self.weight) * cross_entropy + self.weight * kl

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature}


@tf.keras.utils.register_keras_serializable(package="xnor_keras")
class LabelAccuracy(tf.keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy against the label column of :func:`with_teacher`'s targets."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_labels(y_true), y_pred, sample_weight)


@tf.keras.utils.register_keras_serializable(package="xnor_keras")
class LabelTopKAccuracy(tf.keras.metrics.SparseTopKCategoricalAccuracy):
    """Top-k accuracy against the label column of :func:`with_teacher`'s targets."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(_labels(y_true), y_pred, sample_weight)
