"""The paper's learning-rate schedule: linear warmup, then inverse square root decay."""

from __future__ import annotations

import keras
import tensorflow as tf


class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1."""

    def __init__(self, *, d_model: int, warmup_steps: int, scale: float = 1.0):
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        warmup = tf.cast(self.warmup_steps, tf.float32)
        factor = tf.minimum(tf.math.rsqrt(step), step * warmup**-1.5)
        return self.scale * (self.d_model**-0.5) * factor

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}
