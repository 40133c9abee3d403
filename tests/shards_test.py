"""Tier 1: TFRecord framing and atomic writes, read back with tf.data."""

import contextlib
import os

import tensorflow as tf

from pipeline import features, shards


def test_tfrecords_read_back_with_tf_data(tmp_path):
    path = str(tmp_path / "train-00000-of-00001.tfrecord.gz")
    records = [b"", b"a", b"x" * 100_000] + [
        features.serialize_example("translation", [5, 3], [6, 7, 3])
    ]
    assert shards.write_tfrecords(path, records) == 4
    got = [
        r.numpy()
        for r in tf.data.TFRecordDataset(path, compression_type=features.SHARD_COMPRESSION)
    ]
    assert got == records
    parsed = tf.io.parse_single_example(records[-1], features.feature_spec("translation"))
    assert tf.sparse.to_dense(parsed["targets"]).numpy().tolist() == [6, 7, 3]


def test_failed_write_leaves_nothing(tmp_path):
    path = str(tmp_path / "out.bin")

    def explode():
        yield b"partial"
        raise OSError("disk full")

    with contextlib.suppress(OSError):
        shards.write_atomically(path, explode())
    assert os.listdir(tmp_path) == []


def test_write_replaces_existing_file(tmp_path):
    path = str(tmp_path / "f")
    shards.write_atomically(path, [b"old"])
    shards.write_atomically(path, [b"new"])
    assert shards.read_bytes(path) == b"new"
    assert os.listdir(tmp_path) == ["f"]
