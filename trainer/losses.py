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

from keras import ops

from pipeline import features


def _smoothed_cross_entropy(labels, logits, *, label_smoothing: float, subtract_min_entropy: bool):
    """Per-example loss: labels `[...]` int, logits `[..., C]` -> `[...]` float32.

    With target `q = (1 - eps) at the label, eps / (C - 1) elsewhere` and
    `log p = log_softmax(logits)`:
    `-sum_c q_c log p_c = -(1 - eps - low) log p_label - low * sum_c log p_c`.
    Expanding the sum avoids materializing a `[..., C]` one-hot.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    log_probs = ops.log_softmax(logits, axis=-1)
    label_log_probs = ops.take_along_axis(
        log_probs, ops.expand_dims(ops.cast(labels, "int32"), -1), axis=-1
    )[..., 0]
    if label_smoothing == 0.0:
        return -label_log_probs
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (num_classes - 1)
    loss = -(confidence - low) * label_log_probs - low * ops.sum(log_probs, axis=-1)
    if subtract_min_entropy:
        min_entropy = -(confidence * math.log(confidence) + label_smoothing * math.log(low))
        loss = loss - min_entropy
    return loss


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
    """1.0 where the argmax of `logits [..., C]` equals `labels [...]`, else 0.0."""
    predictions = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.cast(ops.equal(predictions, ops.cast(labels, "int32")), "float32")
