"""Preprocessed TFRecord shards -> padded, length-bucketed batches for the training loop.

Reads the directory the preprocessing job wrote (the layout is `pipeline.features`) and
builds one `tf.data.Dataset` per input pipeline, ready for
`strategy.distribute_datasets_from_function`:

    metadata = features.load_metadata(data_dir)
    make = dataset_fn(data_dir=data_dir, metadata=metadata, epoch=epoch, skip_batches=done,
                      seed=0, max_length=256, batch_tokens=16384)
    for batch in strategy.distribute_datasets_from_function(make): ...

A training dataset is exactly one epoch, and its order is a pure function of
(seed, epoch, input context): a distributed iterator cannot be checkpointed, so a
resumed run rebuilds the epoch and skips the batches it had already consumed.
tf.data's shuffle also folds in TensorFlow's global seed when one is set
(`tf.random.set_seed`); set it identically in every process and on every restart,
or not at all.

Batch sizes are global and split evenly across replicas: `batch_tokens` (translation;
padding counts as tokens) or `batch_size` examples (classification). Translation
training batches are packed from pools of shuffled pairs sorted by length, so that
nearly every batch fills the token budget (see `_pack_pools`). Batches are dicts
of int32 tensors: translation {"inputs": [b, S], "targets": [b, T]}, classification
{"inputs": [b, S], "label": [b]}, padded with `features.PAD_ID`.

Which shards a split has, and what to do about one that does not read to its end, is
trainer/shard_checks.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from pipeline import features
from trainer.shard_checks import shard_files

# Records parsed per `tf.io.parse_example` call: one vectorized call amortizes the
# per-call overhead that parsing record by record pays for every example.
_PARSE_BATCH = 256
# Files read concurrently by one pipeline; more mixing costs memory per open reader.
_MAX_CYCLE_LENGTH = 16
# Shuffled translation pairs sorted and packed together (`_pack_pools`): each pool ends in
# at most one batch below the token budget.
POOL_EXAMPLES = 16_384


def bucket_boundaries(max_length: int, *, min_length: int = 8, growth: float = 1.1) -> list[int]:
    """Inclusive upper lengths of the length buckets: geometric from `min_length`, ending
    at `max_length` (as tensor2tensor's, which grows each boundary by at least 1)."""
    if max_length < 1 or min_length < 1:
        raise ValueError(f"max_length and min_length must be >= 1, got {max_length}, {min_length}")
    if growth <= 1.0:
        raise ValueError(f"growth must be > 1, got {growth}")
    boundaries = []
    length = min_length
    while length < max_length:
        boundaries.append(length)
        length = max(length + 1, int(length * growth))
    return boundaries + [max_length]


def train_dataset(
    *,
    data_dir: str,
    metadata: features.Metadata,
    epoch: int,
    skip_batches: int = 0,
    seed: int,
    max_length: int,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 10_000,
    pad_to_bucket: bool = False,
    pool_examples: int = POOL_EXAMPLES,
) -> tf.data.Dataset:
    """One epoch of the train split for one input pipeline, shuffled and batched by length.

    Examples of similar length share a batch, for both tasks. Translation batches hold as
    many pairs as fit the token budget: pools of `pool_examples` shuffled pairs are sorted
    by length and packed, and each pool's batches come in a seeded random order, so only
    the last batch of a pool may fall short of the budget. Classification batches (and
    translation batches with `pad_to_bucket`) come from length buckets of a fixed number
    of examples each, and the last batch of each bucket may be smaller.

    Args:
      data_dir: the preprocessing output (local or gs://).
      metadata: `features.load_metadata(data_dir)`; its task picks the layout.
      epoch: mixed with `seed` into the file and example order.
      skip_batches: batches of this pipeline already consumed in this epoch. Under a
        strategy each step takes one batch per local replica from a pipeline, so after
        `s` steps that is `s * num_replicas_in_sync // num_input_pipelines`.
      seed: the run's data seed.
      max_length: translation pairs with either side longer are dropped; classification
        inputs longer are cut to their first `max_length - 1` ids plus EOS.
      batch_tokens: translation only: global token budget per step, padding included.
      batch_size: classification only: global examples per step.
      input_context: from `distribute_datasets_from_function`; None for one replica.
      shuffle_buffer: examples in the shuffle buffer.
      pad_to_bucket: pad every batch to its bucket's upper length rather than to its
        longest example, so that only a few shapes occur (XLA compiles each once).
      pool_examples: translation pairs sorted and packed together.
    """
    if epoch < 0 or skip_batches < 0:
        raise ValueError(f"epoch and skip_batches must be >= 0, got {epoch}, {skip_batches}")
    if shuffle_buffer < 1 or pool_examples < 1:
        raise ValueError(
            f"shuffle_buffer and pool_examples must be >= 1, got {shuffle_buffer}, {pool_examples}"
        )
    batch_of = _batching(
        metadata.task, max_length, batch_tokens, batch_size, input_context, pad_to_bucket
    )
    files = shard_files(data_dir, metadata, features.TRAIN)
    random.Random(_derived_seed(seed, epoch, "files")).shuffle(files)
    records = _read_sharded(files, input_context, shard_by_file=True)
    examples = _parse(records, metadata.task, max_length)
    examples = examples.shuffle(
        shuffle_buffer, seed=_derived_seed(seed, epoch, "examples"), reshuffle_each_iteration=False
    )
    if metadata.task == features.TRANSLATION and not pad_to_bucket:
        batches = _pack_pools(
            examples,
            budget=batch_of.budget,
            pool_examples=pool_examples,
            seed=_derived_seed(seed, epoch, "batches"),
        )
    else:
        batches = _bucket(examples, batch_of, metadata.task)
    return batches.skip(skip_batches).prefetch(tf.data.AUTOTUNE)


def eval_dataset(
    *,
    data_dir: str,
    metadata: features.Metadata,
    split: str,
    max_length: int,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    pad_to_bucket: bool = False,
) -> tf.data.Dataset:
    """Every example of `split`, unshuffled and the same on every call.

    Batched as by `train_dataset` (same arguments): translation batches are bucketed by
    length, classification batches keep the file order unless `pad_to_bucket`. Pairs
    longer than `max_length` are dropped (the preprocessing job filters them already);
    classification inputs are truncated. Pipelines split the records, not the files:
    evaluation splits usually have fewer shards than there are workers.
    """
    batch_of = _batching(
        metadata.task, max_length, batch_tokens, batch_size, input_context, pad_to_bucket
    )
    files = shard_files(data_dir, metadata, split)
    records = _read_sharded(files, input_context, shard_by_file=False)
    examples = _parse(records, metadata.task, max_length)
    if metadata.task == features.CLASSIFICATION and not pad_to_bucket:
        # A fixed batch size needs no buckets: batches follow the file order.
        batches = examples.padded_batch(
            batch_of.sizes[0], padding_values=_padding_values(metadata.task)
        )
    else:
        batches = _bucket(examples, batch_of, metadata.task)
    return batches.prefetch(tf.data.AUTOTUNE)


def dataset_fn(
    build: Callable[..., tf.data.Dataset] = train_dataset, /, **kwargs: Any
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """`build(**kwargs, input_context=...)` for `strategy.distribute_datasets_from_function`.

    dataset_fn(data_dir=d, metadata=m, epoch=3, seed=0, max_length=256, batch_tokens=4096)
    dataset_fn(eval_dataset, data_dir=d, metadata=m, split="validation", ...)
    """
    if "input_context" in kwargs:
        raise ValueError("dataset_fn supplies input_context itself; do not pass it")

    def make(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return build(input_context=input_context, **kwargs)

    return make


@dataclasses.dataclass(frozen=True)
class _Batching:
    """How one pipeline batches: per-replica batch sizes per length bucket."""

    boundaries: list[int]  # inclusive upper length of each bucket
    sizes: list[int]  # examples per batch in each bucket
    pad_to_bucket: bool
    budget: int | None = None  # translation: padded tokens per batch of this pipeline


def _batching(
    task: str,
    max_length: int,
    batch_tokens: int | None,
    batch_size: int | None,
    input_context: tf.distribute.InputContext | None,
    pad_to_bucket: bool,
) -> _Batching:
    boundaries = bucket_boundaries(max_length)
    replicas = input_context.num_replicas_in_sync if input_context else 1
    budget = None
    if task == features.TRANSLATION:
        if batch_tokens is None or batch_size is not None:
            raise ValueError("translation batches by tokens: pass batch_tokens, not batch_size")
        budget = batch_tokens // replicas
        if budget < max_length:
            raise ValueError(
                f"batch_tokens={batch_tokens} over {replicas} replicas leaves {budget} tokens "
                f"per replica, fewer than max_length={max_length}: the longest pairs would not fit"
            )
        sizes = [budget // boundary for boundary in boundaries]
    elif task == features.CLASSIFICATION:
        if batch_size is None or batch_tokens is not None:
            raise ValueError(
                "classification batches by examples: pass batch_size, not batch_tokens"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        per_replica = (
            input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
        )
        sizes = [per_replica] * len(boundaries)
    else:
        raise ValueError(f"unknown task {task!r}")
    return _Batching(
        boundaries=boundaries,
        sizes=sizes,
        pad_to_bucket=pad_to_bucket,
        budget=budget,
    )


def _derived_seed(seed: int, epoch: int, purpose: str) -> int:
    """A stable 31-bit seed: the same in every process and Python version."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _read_sharded(
    files: list[str], input_context: tf.distribute.InputContext | None, *, shard_by_file: bool
) -> tf.data.Dataset:
    """Serialized records of this pipeline's share of `files`, interleaved."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    shard_records = pipelines > 1 and not (shard_by_file and len(files) >= pipelines)
    if pipelines > 1 and shard_by_file and shard_records:
        logging.warning(
            "%d shards for %d input pipelines: sharding by record, so every pipeline reads "
            "every file; write at least one shard per worker to avoid it",
            len(files),
            pipelines,
        )
    if pipelines > 1 and not shard_records:
        files = files[pipeline_id::pipelines]
    records = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=features.SHARD_COMPRESSION),
        cycle_length=min(len(files), _MAX_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shard_records:
        records = records.shard(pipelines, pipeline_id)
    return records


def _parse(records: tf.data.Dataset, task: str, max_length: int) -> tf.data.Dataset:
    """Examples as dicts of int32 tensors, too-long pairs dropped / inputs truncated."""
    spec = features.feature_spec(task)

    def parse_batch(serialized: tf.Tensor) -> dict[str, tf.Tensor | tf.RaggedTensor]:
        parsed = tf.io.parse_example(serialized, spec)
        return {
            key: tf.RaggedTensor.from_sparse(value)
            if isinstance(value, tf.sparse.SparseTensor)
            else value
            for key, value in parsed.items()
        }

    # A map after unbatch is also what turns the unbatched ragged rows into plain
    # tensors, which padded batching requires.
    examples = (
        records.batch(_PARSE_BATCH)
        .map(parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .unbatch()
        .map(
            functools.partial(_fit_example, max_length=max_length),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    )
    if task == features.TRANSLATION:
        examples = examples.filter(lambda example: _example_length(example) <= max_length)
    return examples


def _fit_example(example: dict[str, tf.Tensor], *, max_length: int) -> dict[str, tf.Tensor]:
    """int32 ids; classification inputs cut to `max_length`, still EOS-terminated."""
    example = {key: tf.cast(value, tf.int32) for key, value in example.items()}
    if features.TARGETS in example:
        return example  # translation pairs are dropped when too long, not cut
    ids = example[features.INPUTS]
    # The model sees the end of a cut review as the end of the text, as for a whole one.
    example[features.INPUTS] = tf.cond(
        tf.size(ids) > max_length,
        lambda: tf.concat([ids[: max_length - 1], [features.EOS_ID]], axis=0),
        lambda: ids,
    )
    return example


def _example_length(example: dict[str, tf.Tensor]) -> tf.Tensor:
    length = tf.size(example[features.INPUTS])
    if features.TARGETS in example:
        length = tf.maximum(length, tf.size(example[features.TARGETS]))
    return length


def _padding_values(task: str) -> dict[str, tf.Tensor]:
    pad = tf.constant(features.PAD_ID, tf.int32)
    if task == features.TRANSLATION:
        return {features.INPUTS: pad, features.TARGETS: pad}
    return {features.INPUTS: pad, features.LABEL: tf.constant(0, tf.int32)}


def _bucket(examples: tf.data.Dataset, batching: _Batching, task: str) -> tf.data.Dataset:
    """Batches of examples of similar length, keeping every example."""
    # tf.data buckets are half-open [lower, upper); ours are inclusive upper lengths. The
    # extra last bucket (longer than max_length) stays empty: _parse removed those.
    return examples.bucket_by_sequence_length(
        _example_length,
        bucket_boundaries=[boundary + 1 for boundary in batching.boundaries],
        bucket_batch_sizes=batching.sizes + [1],
        padding_values=_padding_values(task),
        pad_to_bucket_boundary=batching.pad_to_bucket,
    )


def _pack_pools(
    examples: tf.data.Dataset, *, budget: int, pool_examples: int, seed: int
) -> tf.data.Dataset:
    """Translation batches packed to the token budget from sorted pools of pairs.

    Length buckets flush one short batch per bucket at the end of every epoch (on
    Multi30k 18 of 97 steps, some of one pair: `scripts/batch_stats.py --xla`), and each
    is a full optimizer step on a sliver of data. Here `pool_examples` shuffled pairs at
    a time are sorted by length (the longer side) and cut greedily into batches of n
    pairs where n times the longest pair stays within `budget`; only the pool's last
    batch can be short. The pool's batches then come in an order drawn from `seed` and
    the pool's index.
    """
    lengths = {
        features.INPUTS: features.INPUTS + "_length",
        features.TARGETS: features.TARGETS + "_length",
    }

    def with_lengths(example):
        return {**example, **{lengths[k]: tf.size(example[k]) for k in lengths}}

    pools = (
        examples.map(with_lengths, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .padded_batch(
            pool_examples,
            padding_values={
                **_padding_values(features.TRANSLATION),
                **{name: tf.constant(0, tf.int32) for name in lengths.values()},
            },
        )
        .enumerate()
    )

    def pool_batches(index, pool):
        longer = tf.maximum(pool[lengths[features.INPUTS]], pool[lengths[features.TARGETS]])
        order = tf.argsort(longer, stable=True)

        def add(state, length):
            batch, count = state
            full = (count + 1) * length > budget
            return tf.where(full, batch + 1, batch), tf.where(full, 1, count + 1)

        zero = tf.constant(0, tf.int32)
        batch_of_pair, _ = tf.scan(add, tf.gather(longer, order), initializer=(zero, zero))
        members = tf.RaggedTensor.from_value_rowids(order, batch_of_pair)
        draw = tf.random.stateless_uniform(
            [members.nrows()], seed=tf.stack([tf.constant(seed, tf.int64), index])
        )
        members = tf.gather(members, tf.argsort(draw, stable=True))

        def gather(rows):
            batch = {}
            for key, length in lengths.items():
                width = tf.reduce_max(tf.gather(pool[length], rows))
                batch[key] = tf.gather(pool[key], rows)[:, :width]
            return batch

        return tf.data.Dataset.from_tensor_slices(members).map(gather)

    return pools.flat_map(pool_batches)
