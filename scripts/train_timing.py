"""Timing the project's trainer step: what scripts/bench_train.py and scripts/profile_train_step.py share.

No flags here: both scripts define their own and pass the values in.
"""

from __future__ import annotations

import os
import time

from absl import logging

from pipeline import cli, features
from trainer.model_config import MODEL_PRESETS

TRANSLATION_PRESETS = sorted(name for name in MODEL_PRESETS if name != "imdb")


def start(data_dir: str):
    """An entry point's common start, after its command-line check: `--data_dir` must hold
    translation data. Returns the metadata; raises `cli.UsageError` (one line) otherwise.
    Quiets TF's logs.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.WARNING)
    try:
        metadata = features.load_metadata(data_dir)
    except features.MetadataError as e:
        raise cli.UsageError(f"--data_dir: {str(e).splitlines()[0]}") from None
    if metadata.task != features.TRANSLATION:
        raise cli.UsageError(f"--data_dir: {data_dir} holds {metadata.task} data, not translation")
    return metadata


# ---- data --------------------------------------------------------------------------------------


def fixed_batches(
    *,
    data_dir: str,
    metadata,
    batch_tokens: int,
    max_length: int,
    count: int,
    pad_to_bucket: bool = False,
):
    """The first `count` training batches (the epoch repeats if shorter), cached in memory.

    Returns `(dataset, target_tokens)`: a dataset of `{"inputs", "targets"}` batches and the
    non-PAD target tokens of each, in order.
    """
    from trainer import input_pipeline

    dataset = (
        input_pipeline.train_dataset(
            data_dir=data_dir,
            metadata=metadata,
            epoch=0,
            seed=0,
            max_length=max_length,
            batch_tokens=batch_tokens,
            pad_to_bucket=pad_to_bucket,
        )
        .repeat()
        .take(count)
        .cache()
    )
    return dataset, _target_tokens(dataset)


def fixed_length_batches(batches, batch_tokens: int):
    """The examples of `batches` re-batched as a Keras user's fixed-shape input.

    Every sequence is padded to the longest source or target among them (L) and every batch
    holds `batch_tokens // L` examples, the same token budget as a bucketed batch. Returns
    `(dataset, target_tokens per batch, L)`; the examples and their order are unchanged.
    """
    length = max(
        max(int(batch[features.INPUTS].shape[1]), int(batch[features.TARGETS].shape[1]))
        for batch in batches
    )
    size = max(1, batch_tokens // length)
    shape = {features.INPUTS: [length], features.TARGETS: [length]}
    dataset = batches.unbatch().padded_batch(size, padded_shapes=shape).cache()
    return dataset, _target_tokens(dataset), length


def _target_tokens(dataset) -> list[int]:
    """Non-PAD target tokens of each batch of a cached `dataset` (this pass fills the cache)."""
    import tensorflow as tf

    return [
        int(tf.math.count_nonzero(batch[features.TARGETS] != features.PAD_ID)) for batch in dataset
    ]


# ---- the trainer -----------------------------------------------------------------------------


def make_trainer(
    *,
    data_dir: str,
    metadata,
    model_dir: str,
    preset: str,
    precision: str,
    batch_tokens: int,
    xla: bool = False,
):
    """The project's Trainer for `preset` on one device (it sets the global dtype policy).

    `metadata` is `data_dir`'s (from `start`): the model takes its vocabulary size and task.
    """
    from trainer.config import TrainConfig
    from trainer.loop import Trainer
    from trainer.model_config import model_config_from_preset

    model = model_config_from_preset(
        preset, vocab_size=metadata.tokenizer.vocab_size, task=metadata.task
    )
    config = TrainConfig(
        data_dir=data_dir,
        model_dir=model_dir,
        model=model,
        preset=preset,
        batch_tokens=batch_tokens,
        precision=precision,
        strategy="one_device",
        xla=xla,
        eval_bleu_sentences=0,
    )
    return Trainer(config)


def time_trainer(trainer, dataset) -> float:
    """Seconds from the end of the first step to the end of the last, over `dataset`.

    Each step is what `Trainer.train` does per step, less logging: take the batches as
    the loop does (`_next_batches` on a distributed iterator), run the step, read the
    step counter (the loop's host sync).
    """
    iterator = iter(trainer.strategy.distribute_datasets_from_function(lambda _: dataset))
    start = None
    while (batches := trainer._next_batches(iterator)) is not None:
        trainer._train_step(batches)
        _ = trainer.state.step  # the loop reads it after every step: a host sync
        start = start or time.perf_counter()
    return time.perf_counter() - start
