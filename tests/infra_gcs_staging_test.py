"""python -m infra.gcp stage / fetch, for real against a local GCS emulator (google-cloud-storage)."""

from __future__ import annotations

import json
import os

import pytest
import tensorflow as tf

from infra import gcp, gcs_staging
from pipeline import features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_dataset(root) -> str:
    """A prepared-data-shaped dir: shards, tokenizer, metadata.json (the staging unit)."""
    data = root / "ende"
    data.mkdir()
    (data / "train-00000-of-00002.tfrecord.gz").write_bytes(os.urandom(3000))
    (data / "train-00001-of-00002.tfrecord.gz").write_bytes(os.urandom(2000))
    (data / "validation-00000-of-00001.tfrecord.gz").write_bytes(os.urandom(500))
    (data / features.TOKENIZER_FILE).write_bytes(b"spm")
    (data / features.METADATA_FILE).write_text(json.dumps({"task": "translation"}))
    return str(data)


def objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    return {
        blob.name[len(prefix) :]: blob.download_as_bytes()
        for blob in client.list_blobs(bucket, prefix=prefix)
    }


def test_stage_uploads_configs_and_data_then_skips_unchanged_files(gcs_emulator, tmp_path, capsys):
    data_dir = make_dataset(tmp_path)
    argv = ["stage", f"--bucket={gcs_emulator}", "--prefix=stage1", f"--data_dir={data_dir}"]
    assert gcp.run(argv) == 0
    out = capsys.readouterr().out
    client = gcs_staging.storage_client("test")
    data = objects(client, gcs_emulator, "stage1/data/ende/")
    assert data == {
        name: open(os.path.join(data_dir, name), "rb").read() for name in os.listdir(data_dir)
    }
    configs = objects(client, gcs_emulator, "stage1/configs/")
    assert set(configs) == set(os.listdir(os.path.join(ROOT, "configs")))
    assert configs["tiny.cfg"] == open(os.path.join(ROOT, "configs", "tiny.cfg"), "rb").read()
    assert f"--data_dir=gs://{gcs_emulator}/stage1/data/ende\n" in out
    transfers = [line for line in out.splitlines() if " -> gs://" in line]
    assert transfers[-1].startswith(os.path.join(data_dir, features.METADATA_FILE))  # last
    total = len(data) + len(configs)
    assert f"uploaded {total} files, 0 unchanged" in out

    (tmp_path / "ende" / "train-00001-of-00002.tfrecord.gz").write_bytes(b"changed")
    assert gcp.run(argv) == 0
    assert f"uploaded 1 file, {total - 1} unchanged" in capsys.readouterr().out
    assert (
        objects(client, gcs_emulator, "stage1/data/ende/")["train-00001-of-00002.tfrecord.gz"]
        == b"changed"
    )


def test_stage_refuses_an_unfinished_dataset(gcs_emulator, tmp_path, capsys):
    data_dir = make_dataset(tmp_path)
    os.remove(os.path.join(data_dir, features.METADATA_FILE))
    code = gcp.run(["stage", f"--bucket={gcs_emulator}", f"--data_dir={data_dir}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        f"gcp: error: --data_dir: {data_dir} has no metadata.json: "
        "not a finished preprocessing output\n"
    )
    client = gcs_staging.storage_client("test")
    assert not list(client.list_blobs(gcs_emulator, prefix="transformer-pipeline/"))


def make_model_dir(root) -> str:
    """The files trainer.train leaves, with real TF checkpoints (so the state files are TF's)."""
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model": {}}')
    (model / "metrics.jsonl").write_text('{"step": 10}\n{"step": 20}\n')
    (model / "loss_curve.png").write_bytes(b"\x89PNG")
    (model / "tokenizer.json").write_text("{}")
    (model / "spm.model").write_bytes(b"spm")
    (model / "tensorboard").mkdir()
    (model / "tensorboard" / "events.out").write_bytes(b"e")
    (model / "export" / "variables").mkdir(parents=True)
    (model / "export" / "saved_model.pb").write_bytes(b"pb")
    (model / "export" / "variables" / "variables.index").write_bytes(b"i")
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    latest = tf.train.CheckpointManager(checkpoint, str(model), max_to_keep=3)
    best = tf.train.CheckpointManager(checkpoint, str(model / "best"), max_to_keep=2)
    for step in (10, 20):
        latest.save(checkpoint_number=step)
    best.save(checkpoint_number=10)
    best.save(checkpoint_number=20)
    latest.save(checkpoint_number=30)
    return str(model)


def upload_dir(client, bucket: str, local: str, prefix: str) -> None:
    for base, _, names in os.walk(local):
        for name in names:
            path = os.path.join(base, name)
            relative = os.path.relpath(path, local)
            client.bucket(bucket).blob(f"{prefix}/{relative}").upload_from_filename(path)


def test_fetch_downloads_results_export_and_best_checkpoint(gcs_emulator, tmp_path, capsys):
    client = gcs_staging.storage_client("test")
    upload_dir(client, gcs_emulator, make_model_dir(tmp_path), "runs/base")
    dest = tmp_path / "fetched"
    argv = ["fetch", f"--model_dir=gs://{gcs_emulator}/runs/base", f"--dest={dest}"]
    assert gcp.run(argv) == 0
    out = capsys.readouterr().out
    fetched = sorted(
        os.path.relpath(os.path.join(base, n), dest)
        for base, _, names in os.walk(dest)
        for n in names
    )
    assert fetched == [
        "best/checkpoint",
        "best/ckpt-20.data-00000-of-00001",
        "best/ckpt-20.index",
        "config.json",
        "export/saved_model.pb",
        "export/variables/variables.index",
        "loss_curve.png",
        "metrics.jsonl",
        "spm.model",
        "tokenizer.json",
    ]
    assert f"fetched 10 files into {dest}" in out
    assert (dest / "metrics.jsonl").read_text() == '{"step": 10}\n{"step": 20}\n'
    # The fetched best checkpoint loads where it landed.
    restored = tf.train.Checkpoint(v=tf.Variable(0.0))
    restored.restore(tf.train.latest_checkpoint(str(dest / "best"))).assert_consumed()
    assert float(restored.v.numpy()) == 1.0


def test_fetch_reports_what_a_model_dir_lacks(gcs_emulator, tmp_path, capsys):
    client = gcs_staging.storage_client("test")
    client.bucket(gcs_emulator).blob("runs/early/config.json").upload_from_string("{}")
    assert (
        gcp.run(["fetch", f"--model_dir=gs://{gcs_emulator}/runs/early", f"--dest={tmp_path}"]) == 0
    )
    out = capsys.readouterr().out
    assert "fetched 1 file " in out
    assert (
        "not in the model dir: metrics.jsonl, loss_curve.png, tokenizer.json, spm.model, export/, best/checkpoint"
        in out
    )


@pytest.mark.parametrize(
    "model_dir, message",
    [
        (
            "gs://{bucket}/runs/nothing",
            "--model_dir: gs://{bucket}/runs/nothing has no config.json: not a trainer model dir",
        ),
        ("/local/model", "--model_dir must be a gs:// path, got /local/model"),
    ],
)
def test_fetch_errors_are_one_line(model_dir, message, gcs_emulator, tmp_path, capsys):
    model_dir = model_dir.format(bucket=gcs_emulator)
    code = gcp.run(["fetch", f"--model_dir={model_dir}", f"--dest={tmp_path}"])
    assert code == 2
    assert capsys.readouterr().err == f"gcp: error: {message.format(bucket=gcs_emulator)}\n"


def test_fetch_names_are_the_trainers():
    # infra/gcs_staging.py names them again so that the launchers need no TensorFlow.
    from trainer import checkpoints, reporting

    assert gcs_staging.METRICS_FILE == reporting.METRICS_FILE
    assert gcs_staging.CURVE_FILE == reporting.CURVE_FILE
    assert gcs_staging.BEST_DIR == checkpoints.BEST_DIR


@pytest.mark.parametrize(
    "text, name",
    [
        ('model_checkpoint_path: "ckpt-20"\nall_model_checkpoint_paths: "ckpt-10"\n', "ckpt-20"),
        ('model_checkpoint_path: "/abs/dir/best/ckpt-7"\n', "ckpt-7"),
        ("", None),
    ],
)
def test_best_checkpoint_name(text, name):
    assert gcs_staging.best_checkpoint_name(text) == name
