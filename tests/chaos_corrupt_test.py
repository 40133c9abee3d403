"""Corrupt data and full disks: the mechanisms (shard checks, checkpoint fallback, one-line
storage errors) in process, then scripts/chaos_corrupt.py end to end in its CI form
(a flipped shard; a full and a read-only model dir)."""

from __future__ import annotations

import logging
import os

import pytest
import tensorflow as tf

from pipeline import cli, features
from tests.chaos_testing import run_chaos_script
from tests.input_pipeline_test import write_fake_dataset
from trainer import checkpoints, input_pipeline, reporting, shard_checks


@pytest.fixture()
def dataset(tmp_path):
    return write_fake_dataset(
        str(tmp_path), task=features.TRANSLATION, num_examples=60, num_shards=3, seed=0
    )


def _shards(data):
    return shard_checks.shard_files(data.data_dir, data.metadata, features.TRAIN)


def _truncate(path: str, keep: float = 0.5) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _flip(path: str) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x20
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_check_shard_counts_an_intact_shard_and_names_the_damage(dataset):
    intact, truncated, flipped = _shards(dataset)
    expected = shard_checks.check_shard(truncated).records
    _truncate(truncated)
    _flip(flipped)
    assert shard_checks.check_shard(intact).error is None
    cut = shard_checks.check_shard(truncated)
    assert cut.records is None and "truncated record" in cut.error
    assert "{{" not in cut.error and "[Op:" not in cut.error
    assert shard_checks.check_shard(flipped).error is not None
    assert expected > 0


def test_corrupt_shard_error_names_the_first_corrupt_shard(dataset):
    assert shard_checks.corrupt_shard_error(dataset.data_dir, dataset.metadata, ["train"]) is None
    paths = _shards(dataset)
    _flip(paths[2])
    _truncate(paths[1])
    error = shard_checks.corrupt_shard_error(dataset.data_dir, dataset.metadata, ["train"])
    message = str(error)
    assert message.startswith(f"--data_dir: shard {paths[1]} is corrupt (")
    assert "(and 1 more)" in message and "--skip_corrupt_shards" in message
    assert len(message.splitlines()) == 1


def test_without_corrupt_shards_drops_the_shard_and_counts_the_loss(dataset):
    paths = _shards(dataset)
    lost = shard_checks.check_shard(paths[1]).records
    _truncate(paths[1], keep=0.3)
    meta, notes = shard_checks.without_corrupt_shards(dataset.data_dir, dataset.metadata, ["train"])
    assert meta.splits["train"].files == [os.path.basename(paths[0]), os.path.basename(paths[2])]
    assert meta.splits["train"].examples == dataset.metadata.splits["train"].examples - lost
    assert notes[0].startswith(f"skipping corrupt shard {paths[1]} (")
    total = dataset.metadata.splits["train"].examples
    assert notes[1].startswith(f"train: skipped 1 of 3 shards; lost {lost} of {total} examples")
    # The filtered metadata feeds the input pipeline unchanged: no error, fewer examples.
    batches = input_pipeline.train_dataset(
        data_dir=dataset.data_dir, metadata=meta, epoch=0, seed=0, max_length=64, batch_tokens=256
    )
    read = sum(int(b["inputs"].shape[0]) for b in batches)
    assert 0 < read <= total - lost


def test_a_split_without_an_intact_shard_is_refused(dataset):
    for path in _shards(dataset):
        _flip(path)
    with pytest.raises(shard_checks.CorruptShardError, match="every shard of split 'train'"):
        shard_checks.without_corrupt_shards(dataset.data_dir, dataset.metadata, ["train"])


def _two_checkpoints(directory):
    value = tf.Variable(1.0)
    checkpoint = tf.train.Checkpoint(value=value)
    manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=5)
    manager.save(checkpoint_number=1)
    value.assign(2.0)
    newest = manager.save(checkpoint_number=2)
    value.assign(0.0)
    return checkpoint, value, newest


@pytest.mark.parametrize("damage", ["truncate data", "flip data", "truncate index", "delete data"])
def test_restore_latest_falls_back_to_the_previous_checkpoint(damage, tmp_path, caplog):
    checkpoint, value, newest = _two_checkpoints(tmp_path)
    target = newest + (".index" if "index" in damage else ".data-00000-of-00001")
    if damage == "delete data":
        os.remove(target)
    elif damage.startswith("truncate"):
        _truncate(target)
    else:
        _flip(target)
    with caplog.at_level(logging.WARNING):
        restored = checkpoints.restore_latest(checkpoint, str(tmp_path))
    assert restored == str(tmp_path / "ckpt-1")
    assert float(value.numpy()) == 1.0
    assert f"checkpoint {newest} does not load" in caplog.text


def test_restore_latest_refuses_when_no_checkpoint_loads(tmp_path):
    checkpoint, _, newest = _two_checkpoints(tmp_path)
    for path in (str(tmp_path / "ckpt-1"), newest):
        _truncate(path + ".index")
    with pytest.raises(ValueError, match="no checkpoint there loads"):
        checkpoints.restore_latest(checkpoint, str(tmp_path))


def test_interrupted_checkpoint_writes_are_removed(tmp_path):
    (tmp_path / "ckpt-7_temp").mkdir()
    (tmp_path / "ckpt-7_temp" / "part-00000-of-00001.index.tempstate123").write_bytes(b"x")
    (tmp_path / "keep_temp").mkdir()
    checkpoints.remove_interrupted_writes(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["keep_temp"]


def test_metrics_log_knows_evaluated_steps_and_evaluations_since_best(tmp_path):
    log = reporting.MetricsLog(str(tmp_path), enabled=False)
    log.entries = [{"step": 5, "best": True}, {"step": 10}, {"step": 15}]
    assert log.has_step(10) and not log.has_step(12)
    assert log.evaluations_since_best() == 2


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            RuntimeError(
                "OSError: [Errno 28] No space left on device [while running 'WriteTokenizer']"
            ),
            "disk full: [Errno 28] No space left on device",
        ),
        (
            tf.errors.ResourceExhaustedError(
                None,
                None,
                "{{function_node __wrapped__SaveV2}} /m/ckpt-6_temp/part; No space left on device "
                "[Op:SaveV2]",
            ),
            "disk full: /m/ckpt-6_temp/part; No space left on device",
        ),
        (
            tf.errors.PermissionDeniedError(None, None, "/ro/m; Read-only file system"),
            "not writable: /ro/m; Read-only file system",
        ),
        (OSError(27, "File too large", "/x/y"), "disk full: [Errno 27] File too large: '/x/y'"),
        (ValueError("something else"), None),
    ],
)
def test_storage_errors_become_one_line(error, expected):
    assert cli.storage_error(error) == expected


@pytest.mark.slow
def test_chaos_corrupt_script_small(ende_data, tmp_path):
    saved, stdout = run_chaos_script(
        "chaos_corrupt",
        "--small",
        "--suites=shards,disk",  # checkpoint damage: the in-process tests above
        "--rounds=1",
        "--shard_damage=flip",
        f"--data_dir={ende_data}",
        tmp_path=tmp_path,
    )
    figures = saved["figures"]
    assert figures["shards"]["runs_stopped_naming_the_shard"] == 1
    assert figures["shards"]["skip_runs_right"] == 1
    assert "| disk | disk full" in stdout
