"""The data contract between preprocessing, training and inference.

Everything a consumer of a preprocessed directory needs to know lives here and
nowhere else: special token ids, feature keys, split and shard naming, and the
schema of ``metadata.json``. The Beam job writes it, the trainer and the
inference commands read it. No Beam import, and TensorFlow only where a
function needs it, so this module is cheap to import everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

FORMAT_VERSION = 1

# SentencePiece is trained with exactly these ids (see pipeline/tokenizer.py).
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}

TRANSLATION = "translation"
CLASSIFICATION = "classification"
DATASET_TASKS = {"ende": TRANSLATION, "imdb": CLASSIFICATION}

# tf.train.Example feature keys.
INPUTS = "inputs"  # int64 ids, EOS-terminated for translation
TARGETS = "targets"  # int64 ids, EOS-terminated (translation only)
LABEL = "label"  # int64 scalar (classification only)

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION, TEST)

METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "spm.model"
REJECTS_PREFIX = "rejected"
SHARD_SUFFIX = ".tfrecord.gz"
SHARD_COMPRESSION = "GZIP"

CLASS_NAMES = ("negative", "positive")


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard ``index`` of ``count`` for ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_glob(split: str) -> str:
    """Glob (relative to the data dir) matching every shard of ``split``."""
    return f"{split}-?????-of-?????{SHARD_SUFFIX}"


def feature_spec(task: str) -> dict[str, Any]:
    """The ``tf.io.parse_single_example`` spec for ``task``."""
    import tensorflow as tf

    if task == TRANSLATION:
        return {
            INPUTS: tf.io.VarLenFeature(tf.int64),
            TARGETS: tf.io.VarLenFeature(tf.int64),
        }
    if task == CLASSIFICATION:
        return {
            INPUTS: tf.io.VarLenFeature(tf.int64),
            LABEL: tf.io.FixedLenFeature([], tf.int64),
        }
    raise ValueError(
        f"unknown task {task!r}; expected one of {sorted(set(DATASET_TASKS.values()))}"
    )


def serialize_example(
    task: str, inputs: list[int], targets: list[int] | None = None, label: int | None = None
) -> bytes:
    """One serialized ``tf.train.Example`` in the layout ``feature_spec`` parses.

    Written with the protobuf wire format directly: the Example message class lives inside
    TensorFlow, and importing TensorFlow costs every Beam worker seconds for a few bytes.
    tests/features_test.py checks the bytes parse to the same message TensorFlow builds.
    """
    if task == TRANSLATION:
        feature_map = {INPUTS: inputs, TARGETS: targets or []}
    elif task == CLASSIFICATION:
        feature_map = {INPUTS: inputs, LABEL: [int(label)]}
    else:
        raise ValueError(f"unknown task {task!r}")
    entries = b""
    for key in sorted(feature_map):
        packed = b"".join(
            _SMALL_VARINTS[v] if 0 <= v < _SMALL else _varint(v & 0xFFFFFFFFFFFFFFFF)
            for v in feature_map[key]
        )
        int64_list = _field(1, packed)  # Int64List.value, packed
        feature = _field(3, int64_list)  # Feature.int64_list
        entry = _field(1, key.encode()) + _field(2, feature)  # map entry: key, value
        entries += _field(1, entry)  # Features.feature
    return _field(1, entries)  # Example.features


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SMALL = 1 << 16  # token ids: vocabularies are smaller than this
_SMALL_VARINTS = [_varint(v) for v in range(_SMALL)]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    tag, size = number << 3 | 2, len(payload)
    return (
        (_SMALL_VARINTS[tag] if tag < _SMALL else _varint(tag))
        + (_SMALL_VARINTS[size] if size < _SMALL else _varint(size))
        + payload
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MetadataError(ValueError):
    """A data directory whose metadata is missing or does not match the contract."""


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    file: str  # relative to the data dir
    sha256: str
    vocab_size: int
    special_ids: dict[str, int]


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    examples: int
    files: list[str]  # shard file names, relative to the data dir


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Schema of ``metadata.json``, written last by the preprocessing job."""

    task: str
    dataset: str
    tokenizer: TokenizerInfo
    splits: dict[str, SplitInfo]
    read: int
    written: int
    dropped: dict[str, int]  # reason -> count
    rejected: dict[str, int]  # reason -> count
    overlap_with_train: dict[str, int]  # split -> examples that also occur in train
    token_lengths: dict[str, dict[str, dict[str, float]]]  # split -> side -> stat -> value
    inputs: dict[str, str]
    options: dict[str, Any]
    version: str
    format_version: int = FORMAT_VERSION

    def reconciles(self) -> bool:
        """read = written + dropped + rejected."""
        return self.read == self.written + sum(self.dropped.values()) + sum(self.rejected.values())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, where: str = METADATA_FILE) -> Metadata:
        try:
            raw = json.loads(text)
            raw["tokenizer"] = TokenizerInfo(**raw["tokenizer"])
            raw["splits"] = {name: SplitInfo(**info) for name, info in raw["splits"].items()}
            meta = cls(**raw)
        except (ValueError, TypeError, KeyError) as e:
            raise MetadataError(f"{where}: not a valid metadata file ({e})") from None
        if meta.format_version != FORMAT_VERSION:
            raise MetadataError(
                f"{where}: format_version {meta.format_version}, this project reads {FORMAT_VERSION}"
            )
        if meta.task not in DATASET_TASKS.values():
            raise MetadataError(f"{where}: unknown task {meta.task!r}")
        if meta.tokenizer.special_ids != SPECIAL_IDS:
            raise MetadataError(
                f"{where}: tokenizer special ids {meta.tokenizer.special_ids} differ from {SPECIAL_IDS}"
            )
        return meta


def load_metadata(data_dir: str) -> Metadata:
    """Reads ``DATA_DIR/metadata.json`` (local or gs://); MetadataError if absent or invalid."""
    import tensorflow as tf

    path = f"{data_dir.rstrip('/')}/{METADATA_FILE}"
    if not tf.io.gfile.exists(path):
        if not tf.io.gfile.exists(data_dir):
            raise MetadataError(f"{data_dir}: no such directory")
        if not tf.io.gfile.isdir(data_dir):
            raise MetadataError(f"{data_dir}: a file, not a preprocessing output directory")
        raise MetadataError(
            f"{data_dir}: no {METADATA_FILE}; it is not a finished preprocessing output "
            "(run pipeline.preprocess, or it was interrupted)"
        )
    with tf.io.gfile.GFile(path, "r") as f:
        return Metadata.from_json(f.read(), where=path)
