"""Masked, label-smoothed cross-entropy and accuracy, returned as (sum, weight) pairs.

Every function returns sums, never means: with token-budget batches the number
of real tokens differs per replica and per step, so the caller adds the sums
across replicas and divides by the global weight:

    loss_sum, tokens = masked_cross_entropy(targets, logits, label_smoothing=0.1)
    loss = loss_sum / global_tokens   # global_tokens = all-reduced `tokens`

Label smoothing puts `1 - eps` on the true class and spreads `eps` evenly over
the other `C - 1` classes (Szegedy et al. 2016 as used by tensor2tensor). With
`subtract_min_entropy` the entropy of that target distribution, a constant, is
subtracted, so the loss is the KL divergence to the smoothed targets and a
perfect model reads 0. For perplexity evaluate with `label_smoothing=0`, where
both variants equal the plain cross-entropy.
"""

from __future__ import annotations

import math

import tensorflow as tf
from keras import ops

from pipeline import features


def _smoothed_cross_entropy(labels, logits, *, label_smoothing: float, subtract_min_entropy: bool):
    """Per-example loss: labels `[...]` int, logits `[..., C]` -> `[...]` float32.

    With target `q = (1 - eps) at the label, eps / (C - 1) = low elsewhere`:
    `-sum_c q_c log p_c = lse - (1 - eps - low) z_label - low * sum_c z_c`, where
    `lse = logsumexp(z)`. TensorFlow's fused sparse cross-entropy kernel supplies
    `lse - z_label` and its gradient `p - onehot` in one pass over the logits; the
    smoothing adds one sum over the classes, and the gradient `p - q` is that
    kernel's gradient shifted by constants (see `_fused_smoothed_cross_entropy`).
    Materializing `log_softmax` instead costs several more passes over the
    `[tokens, vocab]` logits, the largest tensor of a small model's step.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    logits = tf.cast(logits, tf.float32)
    num_classes = logits.shape[-1]
    flat_logits = tf.reshape(logits, [-1, num_classes])
    flat_labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    if label_smoothing == 0.0:
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=flat_labels, logits=flat_logits
        )
    else:
        loss = _fused_smoothed_cross_entropy(flat_labels, flat_logits, label_smoothing)
        if subtract_min_entropy:
            confidence, low = 1.0 - label_smoothing, label_smoothing / (num_classes - 1)
            loss -= -(confidence * math.log(confidence) + label_smoothing * math.log(low))
    return tf.reshape(loss, tf.shape(logits)[:-1])


def _fused_smoothed_cross_entropy(labels, logits, label_smoothing: float):
    """Label-smoothed cross-entropy of `logits [n, C]` against `labels [n]`, with its gradient.

    `d loss / d z = p - q = (p - onehot) - low + (eps + low) onehot`: the fused kernel's
    own gradient, shifted by a constant and by a sparse update at the labels.
    """
    num_classes = logits.shape[-1]
    low = label_smoothing / (num_classes - 1)
    at_label = label_smoothing + low  # 1 - (1 - eps - low)
    positions = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)

    @tf.custom_gradient
    def smoothed(z):
        cross_entropy, cross_entropy_grad = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=z, labels=labels
        )
        label_logits = tf.gather_nd(z, positions)
        loss = cross_entropy + at_label * label_logits - low * tf.reduce_sum(z, axis=-1)

        def grad(upstream):
            g = (cross_entropy_grad - low) * upstream[:, None]
            return tf.tensor_scatter_nd_add(g, positions, at_label * upstream)

        return loss, grad

    return smoothed(logits)


def masked_cross_entropy(
    targets, logits, *, label_smoothing: float = 0.0, subtract_min_entropy: bool = True
):
    """Label-smoothed cross-entropy summed over non-PAD target tokens.

    Args:
      targets: `[b, t]` int ids; `features.PAD_ID` positions carry no weight.
      logits: `[b, t, vocab]` (cast to float32).
      label_smoothing: eps in [0, 1), see the module docstring.
      subtract_min_entropy: report the KL divergence to the smoothed targets
        (0 for a perfect model) instead of the raw cross-entropy.

    Returns:
      `(loss_sum, weight_sum)`, float32 scalars; `weight_sum` = non-PAD tokens.
    """
    loss = _smoothed_cross_entropy(
        targets, logits, label_smoothing=label_smoothing, subtract_min_entropy=subtract_min_entropy
    )
    weights = ops.cast(ops.not_equal(targets, features.PAD_ID), "float32")
    return ops.sum(loss * weights), ops.sum(weights)


def masked_accuracy(targets, logits):
    """`(correct_sum, weight_sum)`: argmax hits over non-PAD tokens of `targets [b, t]`."""
    weights = ops.cast(ops.not_equal(targets, features.PAD_ID), "float32")
    return ops.sum(_hits(targets, logits) * weights), ops.sum(weights)


def classification_cross_entropy(
    labels, logits, *, label_smoothing: float = 0.0, subtract_min_entropy: bool = True
):
    """`(loss_sum, count)` for labels `[b]` int and logits `[b, classes]`; smoothing as above."""
    loss = _smoothed_cross_entropy(
        labels, logits, label_smoothing=label_smoothing, subtract_min_entropy=subtract_min_entropy
    )
    return ops.sum(loss), ops.cast(ops.shape(labels)[0], "float32")


def classification_accuracy(labels, logits):
    """`(correct_sum, count)` for labels `[b]` int and logits `[b, classes]`."""
    return ops.sum(_hits(labels, logits)), ops.cast(ops.shape(labels)[0], "float32")


def _hits(labels, logits):
    """1.0 where the label's logit is the largest of `logits [..., C]`, else 0.0.

    The argmax hit, computed as `z_label >= max(z)`: one max-reduction over the
    classes, where `ops.argmax` on TensorFlow adds several element-wise passes
    over the logits (profiled in docs/BENCHMARKS.md). An exact tie with a larger
    class counts as a hit, which float logits practically never produce.
    """
    label_logits = ops.take_along_axis(logits, ops.cast(labels, "int32")[..., None], axis=-1)
    return ops.cast(label_logits[..., 0] >= ops.max(logits, axis=-1), "float32")
