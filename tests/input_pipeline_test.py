"""Tests for trainer/input_pipeline.py on small fake preprocessing outputs."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pipeline import features
from trainer import input_pipeline, shard_checks

MAX_LENGTH = 32
VOCAB_SIZE = 100


@dataclasses.dataclass(frozen=True)
class FakeDataset:
    data_dir: str
    metadata: features.Metadata
    # split -> shard index -> examples in file order; an example is (inputs, targets)
    # for translation and (inputs, label) for classification, ids as tuples.
    shards: dict[str, list[list[tuple]]]

    def examples(self, split: str) -> list[tuple]:
        return [example for shard in self.shards[split] for example in shard]


def write_fake_dataset(
    tmp_dir: str, *, task: str, num_examples: int, num_shards: int, seed: int
) -> FakeDataset:
    """A finished preprocessing output in `tmp_dir`: shards of every split plus metadata.json.

    The train split has `num_examples` examples in `num_shards` shards; validation and
    test have a quarter as many (at least one) in one shard each. Every example is
    unique: its first two ids encode its index. Translation sides are 3..41 ids long and
    classification inputs 3..61, EOS-terminated, so that some exceed a max length of 32.
    """
    rng = random.Random(seed)
    longest = 40 if task == features.TRANSLATION else 60
    first_id = features.EOS_ID + 1

    def ids(index: int) -> tuple[int, ...]:
        base = VOCAB_SIZE - first_id
        unique = [first_id + index // base, first_id + index % base]
        body = [rng.randrange(first_id, VOCAB_SIZE) for _ in range(rng.randint(0, longest - 2))]
        return tuple(unique + body + [features.EOS_ID])

    counts = {
        features.TRAIN: (num_examples, num_shards),
        features.VALIDATION: (max(1, num_examples // 4), 1),
        features.TEST: (max(1, num_examples // 4), 1),
    }
    shards, splits, lengths = {}, {}, {}
    index = 0
    for split, (count, shard_count) in counts.items():
        examples = []
        for _ in range(count):
            if task == features.TRANSLATION:
                examples.append((ids(index), ids(index)))
            else:
                examples.append((ids(index), rng.randint(0, 1)))
            index += 1
        shards[split] = [examples[i::shard_count] for i in range(shard_count)]
        names = [features.shard_name(split, i, shard_count) for i in range(shard_count)]
        for name, shard in zip(names, shards[split]):
            path = os.path.join(tmp_dir, name)
            with tf.io.TFRecordWriter(path, options=features.SHARD_COMPRESSION) as writer:
                for example in shard:
                    writer.write(_serialize(task, example))
        splits[split] = features.SplitInfo(examples=count, files=names)
        input_lengths = [len(example[0]) for example in examples]
        lengths[split] = {
            features.INPUTS: {"max": max(input_lengths), "mean": float(np.mean(input_lengths))}
        }
    metadata = features.Metadata(
        task=task,
        dataset="ende" if task == features.TRANSLATION else "imdb",
        tokenizer=features.TokenizerInfo(
            file=features.TOKENIZER_FILE,
            sha256=features.sha256_bytes(b"not a real tokenizer"),
            vocab_size=VOCAB_SIZE,
            special_ids=dict(features.SPECIAL_IDS),
        ),
        splits=splits,
        read=index,
        written=index,
        dropped={},
        rejected={},
        overlap_with_train={features.VALIDATION: 0, features.TEST: 0},
        token_lengths=lengths,
        inputs={"fake": f"write_fake_dataset(seed={seed})"},
        options={"num_shards": num_shards},
        version="test",
    )
    with open(os.path.join(tmp_dir, features.METADATA_FILE), "w") as f:
        f.write(metadata.to_json())
    return FakeDataset(data_dir=str(tmp_dir), metadata=metadata, shards=shards)


def _serialize(task: str, example: tuple) -> bytes:
    if task == features.TRANSLATION:
        return features.serialize_example(task, list(example[0]), targets=list(example[1]))
    return features.serialize_example(task, list(example[0]), label=example[1])


def _context(pipelines: int, pipeline_id: int, replicas: int) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(
        num_input_pipelines=pipelines, input_pipeline_id=pipeline_id, num_replicas_in_sync=replicas
    )


def _batches(dataset: tf.data.Dataset) -> list[dict[str, np.ndarray]]:
    return list(dataset.as_numpy_iterator())


def _unpadded(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.trim_zeros(row, "b"))


def _examples(batches: list[dict[str, np.ndarray]]) -> list[tuple]:
    """The examples in `batches`, in order, padding removed."""
    out = []
    for batch in batches:
        for row, inputs in enumerate(batch[features.INPUTS]):
            if features.TARGETS in batch:
                out.append((_unpadded(inputs), _unpadded(batch[features.TARGETS][row])))
            else:
                out.append((_unpadded(inputs), int(batch[features.LABEL][row])))
    return out


def _fits(example: tuple) -> bool:
    return max(len(example[0]), len(example[1])) <= MAX_LENGTH


def _truncated(example: tuple) -> tuple:
    inputs, label = example
    if len(inputs) > MAX_LENGTH:
        inputs = inputs[: MAX_LENGTH - 1] + (features.EOS_ID,)
    return inputs, label


@pytest.fixture(scope="module")
def translation(tmp_path_factory) -> FakeDataset:
    return write_fake_dataset(
        tmp_path_factory.mktemp("ende"),
        task=features.TRANSLATION,
        num_examples=240,
        num_shards=5,
        seed=1,
    )


@pytest.fixture(scope="module")
def classification(tmp_path_factory) -> FakeDataset:
    return write_fake_dataset(
        tmp_path_factory.mktemp("imdb"),
        task=features.CLASSIFICATION,
        num_examples=120,
        num_shards=3,
        seed=2,
    )


def _train(dataset: FakeDataset, **overrides) -> tf.data.Dataset:
    args = dict(
        data_dir=dataset.data_dir,
        metadata=dataset.metadata,
        epoch=0,
        seed=7,
        max_length=MAX_LENGTH,
        shuffle_buffer=64,
    )
    if dataset.metadata.task == features.TRANSLATION:
        args["batch_tokens"] = 256
    else:
        args["batch_size"] = 8
    return input_pipeline.train_dataset(**{**args, **overrides})


def test_fake_dataset_is_a_valid_preprocessing_output(translation):
    assert features.load_metadata(translation.data_dir) == translation.metadata
    paths = shard_checks.shard_files(translation.data_dir, translation.metadata, features.TRAIN)
    assert paths == sorted(paths)
    assert [os.path.basename(p) for p in paths] == [
        features.shard_name(features.TRAIN, i, 5) for i in range(5)
    ]
    assert all(p.startswith(translation.data_dir + "/") and os.path.exists(p) for p in paths)


def test_shard_files_names_the_split_without_shards(tmp_path):
    data = write_fake_dataset(
        str(tmp_path), task=features.TRANSLATION, num_examples=4, num_shards=2, seed=0
    )
    with pytest.raises(ValueError, match="split 'dev' has no shards"):
        shard_checks.shard_files(data.data_dir, data.metadata, "dev")
    os.remove(os.path.join(data.data_dir, features.shard_name(features.TRAIN, 1, 2)))
    with pytest.raises(ValueError, match=r"split 'train' is missing 1 of its 2 shards.*00001-of"):
        shard_checks.shard_files(data.data_dir, data.metadata, features.TRAIN)


def test_bucket_boundaries_grow_geometrically_up_to_max_length():
    assert input_pipeline.bucket_boundaries(12) == [8, 9, 10, 11, 12]
    assert input_pipeline.bucket_boundaries(100, min_length=8, growth=2.0) == [8, 16, 32, 64, 100]
    assert input_pipeline.bucket_boundaries(4) == [4]
    long = input_pipeline.bucket_boundaries(256)
    assert long[-1] == 256 and long == sorted(set(long))
    assert long[-2] >= 256 / 1.1 - 1
    with pytest.raises(ValueError, match="growth"):
        input_pipeline.bucket_boundaries(64, growth=1.0)


@pytest.mark.parametrize("replicas", [1, 2])
def test_translation_batches_fit_the_per_replica_token_budget(translation, replicas):
    budget = 256 // replicas
    batches = _batches(_train(translation, input_context=_context(1, 0, replicas)))
    padded_sizes = []
    for batch in batches:
        inputs, targets = batch[features.INPUTS], batch[features.TARGETS]
        assert inputs.dtype == np.int32 and targets.dtype == np.int32
        assert inputs.shape[0] == targets.shape[0]
        padded_sizes.append(inputs.shape[0] * max(inputs.shape[1], targets.shape[1]))
    assert max(padded_sizes) <= budget
    # Buckets are filled: the budget is used, not one example per batch.
    assert np.mean(padded_sizes) > budget / 2
    expected = [example for example in translation.examples(features.TRAIN) if _fits(example)]
    assert 0 < len(expected) < len(translation.examples(features.TRAIN))
    assert collections.Counter(_examples(batches)) == collections.Counter(expected)


@pytest.mark.parametrize("pool", [40, 1000])
def test_translation_pools_pack_full_batches(translation, pool):
    batches = _batches(_train(translation, pool_examples=pool))
    expected = [example for example in translation.examples(features.TRAIN) if _fits(example)]
    assert collections.Counter(_examples(batches)) == collections.Counter(expected)
    pools = -(-len(expected) // pool)
    used = []
    for batch in batches:
        for key in (features.INPUTS, features.TARGETS):
            # Padded to the batch's longest pair on each side, not to a bucket.
            assert batch[key][:, -1].any()
        used.append(
            batch[features.INPUTS].shape[0]
            * max(batch[features.INPUTS].shape[1], batch[features.TARGETS].shape[1])
        )
    assert max(used) <= 256
    # Only the last batch of a pool may fall short; buckets would flush one per length.
    assert len([u for u in used if u < 256 / 2]) <= pools
    assert len(batches) <= -(-sum(used) // 256) + pools
    bucketed = _batches(_train(translation, pool_examples=pool, pad_to_bucket=True))
    assert len(batches) < len(bucketed)


def _batch_stats(*args: str) -> subprocess.CompletedProcess:
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "batch_stats.py")
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


def test_batch_stats_script_counts_the_short_steps_of_each_batching(translation, classification):
    common = [translation.data_dir, "--batch_tokens=256", "--max_length=32", "--epochs=0,1"]
    pattern = (
        r"epoch (\d): (\d+) batches, (\d+) pairs, (\d+) target tokens, median \d+ a batch, "
        r"(\d+) under half the median, [\d.]+% of padded slots real"
    )
    runs = {}
    for batching, extra in (("pools", []), ("buckets", ["--xla"])):
        result = _batch_stats(*common, *extra)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["0", "1"]
        runs[batching] = [re.fullmatch(pattern, line).groups() for line in lines]
    fitting = [example for example in translation.examples(features.TRAIN) if _fits(example)]
    targets = sum(len(example[1]) for example in fitting)
    for batching, epochs in runs.items():
        for _epoch, _batches, pairs, tokens, _short in epochs:
            assert (int(pairs), int(tokens)) == (len(fitting), targets), batching
    # One pool (240 pairs): at most its last batch is short; buckets flush several.
    assert all(int(short) <= 1 for *_, short in runs["pools"])
    assert all(int(short) > 1 for *_, short in runs["buckets"])
    assert int(runs["pools"][0][1]) < int(runs["buckets"][0][1])
    wrong = _batch_stats(classification.data_dir)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.strip().splitlines()[-1] == (
        f"batch_stats: error: {classification.data_dir} holds classification data"
    )
    assert "Traceback" not in wrong.stderr


def test_pad_to_bucket_pads_both_sides_to_a_boundary(translation):
    batches = _batches(_train(translation, pad_to_bucket=True))
    boundaries = input_pipeline.bucket_boundaries(MAX_LENGTH)
    shapes = {batch[features.INPUTS].shape[1] for batch in batches}
    assert shapes <= set(boundaries) and len(shapes) > 1
    for batch in batches:
        assert batch[features.INPUTS].shape[1] == batch[features.TARGETS].shape[1]
        assert batch[features.INPUTS].shape[0] * batch[features.INPUTS].shape[1] <= 256
    expected = [example for example in translation.examples(features.TRAIN) if _fits(example)]
    assert collections.Counter(_examples(batches)) == collections.Counter(expected)


def test_train_order_is_a_function_of_seed_and_epoch(translation):
    first = _batches(_train(translation, epoch=3))
    again = _batches(_train(translation, epoch=3))
    assert len(first) == len(again) > 5
    for a, b in zip(first, again):
        for key in (features.INPUTS, features.TARGETS):
            np.testing.assert_array_equal(a[key], b[key])
    assert _examples(_batches(_train(translation, epoch=4))) != _examples(first)
    assert _examples(_batches(_train(translation, epoch=3, seed=8))) != _examples(first)
    resumed = _batches(_train(translation, epoch=3, skip_batches=3))
    assert _examples(resumed) == _examples(first[3:])


def test_pipelines_read_disjoint_files_covering_the_epoch(translation):
    per_pipeline = [
        _examples(_batches(_train(translation, input_context=_context(2, i, 2)))) for i in (0, 1)
    ]
    shard_sets = [
        {i for i, shard in enumerate(translation.shards[features.TRAIN]) if set(shard) & set(seen)}
        for seen in per_pipeline
    ]
    # Sharded by file: pipeline i reads whole shards files[i::2], the other pipeline none of
    # them. (An odd shard count, since round-robin record sharding over an even number of
    # equal shards would look the same.)
    assert [len(s) for s in shard_sets] == [3, 2] and not shard_sets[0] & shard_sets[1]
    assert not set(per_pipeline[0]) & set(per_pipeline[1])
    expected = [example for example in translation.examples(features.TRAIN) if _fits(example)]
    assert collections.Counter(per_pipeline[0] + per_pipeline[1]) == collections.Counter(expected)


def test_fewer_files_than_pipelines_shards_by_record(tmp_path, caplog):
    data = write_fake_dataset(
        str(tmp_path), task=features.TRANSLATION, num_examples=60, num_shards=1, seed=3
    )
    with caplog.at_level(logging.WARNING):
        per_pipeline = [
            _examples(_batches(_train(data, input_context=_context(2, i, 2)))) for i in (0, 1)
        ]
    assert "1 shards for 2 input pipelines: sharding by record" in caplog.text
    assert per_pipeline[0] and per_pipeline[1]
    assert not set(per_pipeline[0]) & set(per_pipeline[1])
    expected = [example for example in data.examples(features.TRAIN) if _fits(example)]
    assert collections.Counter(per_pipeline[0] + per_pipeline[1]) == collections.Counter(expected)


def test_classification_batches_split_the_global_batch_and_truncate(classification):
    batches = _batches(_train(classification, batch_size=8, input_context=_context(1, 0, 2)))
    for batch in batches:
        inputs, labels = batch[features.INPUTS], batch[features.LABEL]
        assert inputs.dtype == np.int32 and labels.dtype == np.int32
        assert labels.shape == (inputs.shape[0],) and inputs.shape[0] <= 4
        assert inputs.shape[1] <= MAX_LENGTH
    assert max(batch[features.LABEL].shape[0] for batch in batches) == 4
    written = classification.examples(features.TRAIN)
    assert any(len(inputs) > MAX_LENGTH for inputs, _ in written)
    expected = [_truncated(example) for example in written]
    assert collections.Counter(_examples(batches)) == collections.Counter(expected)


def test_eval_keeps_file_order_and_every_fitting_example(classification, translation):
    def evaluate(data, **overrides):
        args = dict(
            data_dir=data.data_dir,
            metadata=data.metadata,
            split=features.VALIDATION,
            max_length=MAX_LENGTH,
        )
        if data.metadata.task == features.TRANSLATION:
            args["batch_tokens"] = 256
        else:
            args["batch_size"] = 4
        return _examples(_batches(input_pipeline.eval_dataset(**{**args, **overrides})))

    written = classification.examples(features.VALIDATION)
    assert evaluate(classification) == [_truncated(example) for example in written]
    halves = [evaluate(classification, input_context=_context(2, i, 2)) for i in (0, 1)]
    assert halves[0] + halves[1] != [] and not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(_truncated(e) for e in written)

    pairs = evaluate(translation)
    assert pairs == evaluate(translation)
    expected = [example for example in translation.examples(features.VALIDATION) if _fits(example)]
    assert collections.Counter(pairs) == collections.Counter(expected)


def test_batch_arguments_are_checked(translation, classification):
    with pytest.raises(ValueError, match="pass batch_tokens, not batch_size"):
        _train(translation, batch_tokens=None, batch_size=8)
    with pytest.raises(ValueError, match="leaves 15 tokens per replica, fewer than max_length=32"):
        _train(translation, batch_tokens=60, input_context=_context(1, 0, 4))
    with pytest.raises(ValueError, match="pass batch_size, not batch_tokens"):
        _train(classification, batch_size=None, batch_tokens=256)
    with pytest.raises(ValueError, match="pool_examples must be >= 1, got 64, 0"):
        _train(translation, pool_examples=0)
    with pytest.raises(ValueError, match="supplies input_context"):
        input_pipeline.dataset_fn(input_context=_context(1, 0, 1))


def test_dataset_fn_feeds_a_distribution_strategy(translation):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    make = input_pipeline.dataset_fn(
        data_dir=translation.data_dir,
        metadata=translation.metadata,
        epoch=1,
        skip_batches=2,
        seed=7,
        max_length=MAX_LENGTH,
        batch_tokens=256,
        shuffle_buffer=64,
    )
    seen = [
        {key: value.numpy() for key, value in batch.items()}
        for batch in strategy.distribute_datasets_from_function(make)
    ]
    assert _examples(seen) == _examples(_batches(_train(translation, epoch=1))[2:])
