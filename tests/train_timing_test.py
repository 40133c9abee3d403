"""scripts/train_timing.py: the fixed-length batches bench_train feeds keras-hub."""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")
)
import train_timing  # noqa: E402

from pipeline import features  # noqa: E402


def bucketed(batches):
    """Length-bucketed batches as the trainer draws them: each padded to its own longest row."""
    signature = {
        features.INPUTS: tf.TensorSpec([None, None], tf.int64),
        features.TARGETS: tf.TensorSpec([None, None], tf.int64),
    }
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature)


def rows(dataset):
    """Every example's (inputs, targets) without padding, in order."""
    out = []
    for batch in dataset:
        for source, target in zip(batch[features.INPUTS].numpy(), batch[features.TARGETS].numpy()):
            out.append(
                (tuple(source[source != features.PAD_ID]), tuple(target[target != features.PAD_ID]))
            )
    return out


def test_fixed_length_batches_keep_the_examples_in_one_shape_and_the_same_budget():
    short = {
        features.INPUTS: np.array([[5, 6, 0], [7, 8, 9]] * 4),  # 8 rows, width 3
        features.TARGETS: np.array([[4, 0], [3, 2]] * 4),
    }
    long = {
        features.INPUTS: np.array([[5, 6, 7, 8, 9, 10]] * 2),  # 2 rows, source width 6
        features.TARGETS: np.array([[2, 3, 4, 5, 6, 0, 0, 0]] * 2)[:, :5],
    }
    source = bucketed([short, long])

    dataset, target_tokens, length = train_timing.fixed_length_batches(source, batch_tokens=24)

    assert length == 6  # the longest source or target
    shapes = [tuple(batch[features.TARGETS].shape) for batch in dataset]
    assert shapes == [(4, 6), (4, 6), (2, 6)]  # 24 // 6 = 4 examples a batch, the rest last
    assert all(tuple(batch[features.INPUTS].shape)[1] == 6 for batch in dataset)
    assert rows(dataset) == rows(source)
    assert target_tokens == [6, 6, 10]
    assert sum(target_tokens) == sum(
        int(np.count_nonzero(b[features.TARGETS])) for b in [short, long]
    )
