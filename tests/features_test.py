"""The data contract: serialized examples, shard names and metadata round trips."""

import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from pipeline import features


def _tf_example(mapping: dict[str, list[int]]) -> example_pb2.Example:
    example = example_pb2.Example()
    for key, values in mapping.items():
        example.features.feature[key].int64_list.value.extend(values)
    return example


@pytest.mark.parametrize(
    "task, kwargs, mapping",
    [
        (
            "translation",
            {"inputs": [5, 300, 3], "targets": [70000, 3]},
            {"inputs": [5, 300, 3], "targets": [70000, 3]},
        ),
        ("translation", {"inputs": [], "targets": []}, {"inputs": [], "targets": []}),
        ("classification", {"inputs": [9, 3], "label": 1}, {"inputs": [9, 3], "label": [1]}),
        (
            "classification",
            {"inputs": [2**40, 3], "label": 0},
            {"inputs": [2**40, 3], "label": [0]},
        ),
        (  # negative int64s take ten bytes, two's complement
            "translation",
            {"inputs": [-1, 4], "targets": [-(2**63), 2**63 - 1]},
            {"inputs": [-1, 4], "targets": [-(2**63), 2**63 - 1]},
        ),
        (  # a field longer than 64 KiB: its length is a 3-byte varint
            "classification",
            {"inputs": [300] * 40_000, "label": 1},
            {"inputs": [300] * 40_000, "label": [1]},
        ),
    ],
)
def test_serialized_example_is_what_tensorflow_builds(task, kwargs, mapping):
    data = features.serialize_example(task, **kwargs)
    assert example_pb2.Example.FromString(data) == _tf_example(mapping)
    parsed = tf.io.parse_single_example(data, features.feature_spec(task))
    assert tf.sparse.to_dense(parsed["inputs"]).numpy().tolist() == mapping["inputs"]


def test_shard_names_match_their_glob():
    import fnmatch

    name = features.shard_name("train", 3, 16)
    assert name == "train-00003-of-00016.tfrecord.gz"
    assert fnmatch.fnmatch(name, features.shard_glob("train"))
    assert not fnmatch.fnmatch(name, features.shard_glob("validation"))


def test_metadata_refuses_other_special_ids_and_versions():
    meta = features.Metadata(
        task="translation",
        dataset="ende",
        tokenizer=features.TokenizerInfo("spm.model", "ab", 100, dict(features.SPECIAL_IDS)),
        splits={"train": features.SplitInfo(3, ["train-00000-of-00001.tfrecord.gz"])},
        read=5,
        written=3,
        dropped={"duplicate": 1},
        rejected={"undecodable": 1},
        overlap_with_train={},
        token_lengths={},
        inputs={"train": "x"},
        options={},
        version="0.1.0",
    )
    assert meta.reconciles()
    assert features.Metadata.from_json(meta.to_json()) == meta
    with pytest.raises(features.MetadataError, match="special ids"):
        features.Metadata.from_json(meta.to_json().replace('"pad": 0', '"pad": 7'))
    with pytest.raises(features.MetadataError, match="format_version 2"):
        features.Metadata.from_json(
            meta.to_json().replace('"format_version": 1', '"format_version": 2')
        )
    with pytest.raises(features.MetadataError, match="not a valid metadata file"):
        features.Metadata.from_json("{}")
