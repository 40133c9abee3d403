"""The preprocessing output's shards: the files of a split, and whether each reads to its end.

A shard that does not read to its end (truncated, or changed bytes caught by the gzip
and TFRecord checksums) is never read around silently: `corrupt_shard_error` names it
once reading has failed, and `without_corrupt_shards` drops such shards whole and
counts the examples lost (the trainer's --skip_corrupt_shards).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import tensorflow as tf

from pipeline import features


def shard_files(data_dir: str, metadata: features.Metadata, split: str) -> list[str]:
    """Full paths of the shards `metadata` lists for `split`, sorted.

    Only the listed files are used: a directory may also hold shards of an earlier
    run with another shard count, which the glob would match too.

    Raises:
      ValueError: naming the split, when it has no shards or a listed shard is missing.
    """
    info = metadata.splits.get(split)
    if info is None or not info.files:
        raise ValueError(
            f"{data_dir}: split {split!r} has no shards "
            f"(metadata lists shards for {sorted(s for s, i in metadata.splits.items() if i.files)})"
        )
    root = data_dir.rstrip("/")
    # One glob instead of one existence check per file: each is a round trip on gs://.
    present = set(tf.io.gfile.glob(f"{root}/{features.shard_glob(split)}"))
    paths = sorted(f"{root}/{name}" for name in info.files)
    missing = [path for path in paths if path not in present]
    if missing:
        raise ValueError(
            f"{data_dir}: split {split!r} is missing {len(missing)} of its {len(paths)} "
            f"shards listed in {features.METADATA_FILE}, e.g. {missing[0]}"
        )
    return paths


class CorruptShardError(ValueError):
    """A shard that does not read to its end: truncated, or bytes changed (gzip or record CRC)."""


@dataclasses.dataclass(frozen=True)
class ShardCheck:
    path: str
    records: int | None  # None when the shard does not read to its end
    error: str | None  # the read error, one line


def check_shard(path: str) -> ShardCheck:
    """Reads every record of ``path``; gzip and TFRecord checksums catch changed bytes."""
    records = tf.data.TFRecordDataset(path, compression_type=features.SHARD_COMPRESSION)
    try:
        count = records.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
    except tf.errors.OpError as e:
        return ShardCheck(path=path, records=None, error=error_line(e))
    return ShardCheck(path=path, records=int(count), error=None)


def error_line(error: BaseException) -> str:
    """A TensorFlow error's message as one line, without the graph-node decorations."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    line = message.strip().splitlines()[0]
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()


def corrupt_shard_error(
    data_dir: str, metadata: features.Metadata, splits: Sequence[str]
) -> CorruptShardError | None:
    """Finds the corrupt shards of ``splits`` after a read failed; None when every one reads.

    Checking costs a full read, so it runs only once reading has failed.
    """
    bad = [
        check
        for split in splits
        for check in map(check_shard, shard_files(data_dir, metadata, split))
        if check.error
    ]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return CorruptShardError(
        f"--data_dir: shard {bad[0].path} is corrupt ({bad[0].error}){more}; restore it or rerun "
        "pipeline.preprocess, or pass --skip_corrupt_shards to train without it"
    )


def without_corrupt_shards(
    data_dir: str, metadata: features.Metadata, splits: Sequence[str]
) -> tuple[features.Metadata, list[str]]:
    """``metadata`` with the corrupt shards of ``splits`` left out, and one line per loss.

    A corrupt shard is skipped whole, so the data order stays a function of the seed.
    The examples lost are the split's count in metadata.json minus the records of the
    intact shards.

    Raises:
      CorruptShardError: when every shard of a split is corrupt.
    """
    split_infos = dict(metadata.splits)
    notes = []
    for split in splits:
        checks = [check_shard(path) for path in shard_files(data_dir, metadata, split)]
        bad = [check for check in checks if check.error]
        if not bad:
            continue
        if len(bad) == len(checks):
            raise CorruptShardError(
                f"--data_dir: every shard of split {split!r} is corrupt, e.g. {bad[0].path} "
                f"({bad[0].error})"
            )
        kept = sum(check.records for check in checks if not check.error)
        examples = metadata.splits[split].examples
        for check in bad:
            notes.append(f"skipping corrupt shard {check.path} ({check.error})")
        notes.append(
            f"{split}: skipped {len(bad)} of {len(checks)} shards; lost {examples - kept} of "
            f"{examples} examples ({(examples - kept) / max(examples, 1):.1%})"
        )
        split_infos[split] = features.SplitInfo(
            examples=kept,
            files=[os.path.basename(check.path) for check in checks if not check.error],
        )
    return dataclasses.replace(metadata, splits=split_infos), notes
