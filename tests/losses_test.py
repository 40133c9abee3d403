"""Tests for trainer/losses.py against hand-computed values."""

import keras
import numpy as np
import pytest

from pipeline import features
from trainer import losses

PAD = features.PAD_ID
# Softmax of these logits is exactly [1/8, 1/2, 1/4, 1/8].
PROBS = np.array([0.125, 0.5, 0.25, 0.125])
LOGITS = np.log(PROBS).astype("float32")


def _token_logits():
    """targets [1, 3]: tokens 1 and 2, then PAD with deliberately wild logits."""
    targets = np.array([[1, 2, PAD]])
    logits = np.stack([LOGITS, LOGITS, np.array([50.0, -50.0, 9.0, 0.0], "float32")])[None]
    return targets, logits


def test_cross_entropy_without_smoothing_is_summed_over_real_tokens():
    targets, logits = _token_logits()
    loss_sum, weight_sum = losses.masked_cross_entropy(targets, logits, label_smoothing=0.0)
    # -ln(1/2) - ln(1/4) = ln 8
    np.testing.assert_allclose(float(loss_sum), 2.0794415, rtol=1e-6)
    assert float(weight_sum) == 2.0


def test_cross_entropy_with_label_smoothing():
    targets, logits = _token_logits()
    # eps = 0.3 over 4 classes: 0.7 on the label, 0.1 on each other class.
    # token 1: -(0.6 ln 1/2 + 0.1 (ln 1/8 + ln 1/2 + ln 1/4 + ln 1/8)) = 1.0397208
    # token 2: -(0.6 ln 1/4 + 0.1 (...same sum...))                    = 1.4556091
    raw_sum, weight_sum = losses.masked_cross_entropy(
        targets, logits, label_smoothing=0.3, subtract_min_entropy=False
    )
    np.testing.assert_allclose(float(raw_sum), 2.4953299, rtol=1e-6)
    assert float(weight_sum) == 2.0
    # Minus twice the target entropy -(0.7 ln 0.7 + 0.3 ln 0.1) = 0.9404480.
    kl_sum, _ = losses.masked_cross_entropy(targets, logits, label_smoothing=0.3)
    np.testing.assert_allclose(float(kl_sum), 0.6144339, rtol=1e-5)


def test_padding_contributes_nothing():
    targets, logits = _token_logits()
    unpadded = losses.masked_cross_entropy(targets[:, :2], logits[:, :2], label_smoothing=0.1)
    padded = losses.masked_cross_entropy(targets, logits, label_smoothing=0.1)
    np.testing.assert_allclose(padded, unpadded, rtol=1e-6)
    np.testing.assert_array_equal(
        losses.masked_accuracy(targets, logits),
        losses.masked_accuracy(targets[:, :2], logits[:, :2]),
    )


def test_no_smoothing_equals_sparse_categorical_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    targets = rng.integers(1, 7, size=(3, 5))
    targets[1, 3:] = PAD
    targets[2, 1:] = PAD
    reference = np.asarray(
        keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    )
    loss_sum, weight_sum = losses.masked_cross_entropy(targets, logits)
    np.testing.assert_allclose(float(loss_sum), reference[targets != PAD].sum(), rtol=1e-5)
    assert float(weight_sum) == 9.0


def test_perfect_model_reads_zero_with_smoothing():
    epsilon, vocab = 0.1, 5
    smoothed = np.full(vocab, epsilon / (vocab - 1))
    smoothed[2] = 1 - epsilon
    logits = np.log(smoothed).astype("float32")[None, None]
    loss_sum, _ = losses.masked_cross_entropy(np.array([[2]]), logits, label_smoothing=epsilon)
    assert abs(float(loss_sum)) < 1e-5


def test_masked_accuracy_counts_argmax_hits_on_real_tokens():
    targets, logits = _token_logits()
    targets = np.array([[1, 3, PAD]])  # argmax is 1 everywhere but the PAD row
    correct, weight = losses.masked_accuracy(targets, logits)
    assert (float(correct), float(weight)) == (1.0, 2.0)


def test_classification_cross_entropy_and_accuracy():
    logits = np.array([[0.0, np.log(3.0)], [2.0, 0.0]], "float32")  # softmax [1/4, 3/4]
    labels = np.array([1, 1])
    loss_sum, count = losses.classification_cross_entropy(labels[:1], logits[:1])
    np.testing.assert_allclose(float(loss_sum), 0.2876821, rtol=1e-6)  # -ln 3/4
    assert float(count) == 1.0
    # eps = 0.2 over 2 classes: -(0.8 ln 3/4 + 0.2 ln 1/4) = 0.5074045
    smoothed, _ = losses.classification_cross_entropy(
        labels[:1], logits[:1], label_smoothing=0.2, subtract_min_entropy=False
    )
    np.testing.assert_allclose(float(smoothed), 0.5074045, rtol=1e-6)
    correct, count = losses.classification_accuracy(labels, logits)
    assert (float(correct), float(count)) == (1.0, 2.0)


def test_label_zero_is_a_class_not_padding_for_classification():
    logits = np.array([[np.log(3.0), 0.0]], "float32")
    loss_sum, count = losses.classification_cross_entropy(np.array([0]), logits)
    np.testing.assert_allclose(float(loss_sum), 0.2876821, rtol=1e-6)
    assert float(count) == 1.0


@pytest.mark.parametrize("epsilon", [-0.1, 1.0])
def test_label_smoothing_out_of_range_is_rejected(epsilon):
    targets, logits = _token_logits()
    with pytest.raises(ValueError, match=f"label_smoothing={epsilon} must be in"):
        losses.masked_cross_entropy(targets, logits, label_smoothing=epsilon)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_gradient_matches_autodiff_of_the_explicit_smoothed_targets(epsilon):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    vocab = 11
    logits = tf.constant(rng.normal(size=(2, 4, vocab)) * 3, tf.float32)
    targets = rng.integers(1, vocab, size=(2, 4))
    targets[1, 2:] = PAD
    weights = (targets != PAD).astype("float32")
    smoothed = np.full((2, 4, vocab), epsilon / (vocab - 1), "float32")
    np.put_along_axis(smoothed, targets[..., None], 1 - epsilon, axis=-1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        loss_sum, _ = losses.masked_cross_entropy(
            targets, logits, label_smoothing=epsilon, subtract_min_entropy=False
        )
        explicit = -tf.reduce_sum(
            tf.reduce_sum(smoothed * tf.nn.log_softmax(logits), axis=-1) * weights
        )
    np.testing.assert_allclose(float(loss_sum), float(explicit), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(loss_sum, logits).numpy(),
        tape.gradient(explicit, logits).numpy(),
        atol=1e-6,
    )
