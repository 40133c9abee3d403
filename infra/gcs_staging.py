"""Moves files between this machine and GCS: stage configs and data up, fetch results down.

Uses google-cloud-storage with Application Default Credentials, or anonymous ones when
``STORAGE_EMULATOR_HOST`` points at a local emulator (the tests). Uploads skip objects
whose MD5 already matches, so staging again is cheap.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os

from pipeline import features
from pipeline.cli import plural
from pipeline.export_contract import EXPORT_SUBDIR, TOKENIZER_INFO_FILE
from trainer.config import CONFIG_FILE

# Names in a trainer model dir. The trainer defines them in modules that import TensorFlow,
# which a download should not wait for; tests/infra_gcs_staging_test.py checks they agree.
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
BEST_DIR = "best"
RESULT_FILES = (CONFIG_FILE, METRICS_FILE, CURVE_FILE, TOKENIZER_INFO_FILE, features.TOKENIZER_FILE)


class StagingError(ValueError):
    """A path that cannot be staged or fetched (one line, naming the flag)."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    source: str
    destination: str


def storage_client(project: str | None = None):
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def split_gs(uri: str, flag: str) -> tuple[str, str]:
    """gs://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not uri.startswith("gs://") or len(uri) <= len("gs://"):
        raise StagingError(f"--{flag} must be a gs:// path, got {uri}")
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    return bucket, prefix.strip("/")


def _local_files(directory: str) -> list[str]:
    found = []
    for base, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(base, n) for n in sorted(names) if not n.startswith(".")]
    return found


# ---- stage --------------------------------------------------------------------------------


def stage_plan(
    *, bucket: str, prefix: str, data_dir: str | None, configs_dir: str | None
) -> list[Transfer]:
    """configs_dir -> gs://B/P/configs/, data_dir -> gs://B/P/data/<its name>/."""
    root = f"gs://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"gs://{bucket}"
    plan = []
    if configs_dir:
        if not os.path.isdir(configs_dir):
            raise StagingError(f"--configs_dir: {configs_dir} is not a directory")
        for path in _local_files(configs_dir):
            relative = os.path.relpath(path, configs_dir)
            plan.append(Transfer(path, f"{root}/configs/{relative}"))
    if data_dir:
        data_dir = data_dir.rstrip("/")
        if not os.path.isfile(os.path.join(data_dir, features.METADATA_FILE)):
            raise StagingError(
                f"--data_dir: {data_dir} has no {features.METADATA_FILE}: "
                "not a finished preprocessing output"
            )
        name = os.path.basename(os.path.abspath(data_dir))
        for path in _local_files(data_dir):
            relative = os.path.relpath(path, data_dir)
            plan.append(Transfer(path, f"{root}/data/{name}/{relative}"))
    if not plan:
        raise StagingError("nothing to stage: give --data_dir and/or --configs_dir")
    # metadata.json last: a reader never sees a dataset marked finished before its shards.
    plan.sort(key=lambda t: os.path.basename(t.source) == features.METADATA_FILE)
    return plan


def staged_data_dir(bucket: str, prefix: str, data_dir: str) -> str:
    root = f"gs://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"gs://{bucket}"
    return f"{root}/data/{os.path.basename(os.path.abspath(data_dir.rstrip('/')))}"


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def upload(client, plan: list[Transfer]) -> tuple[int, int]:
    """Uploads the plan; returns (uploaded, unchanged and skipped)."""
    uploaded = skipped = 0
    for transfer in plan:
        bucket, name = split_gs(transfer.destination, "bucket")
        blob = client.bucket(bucket).get_blob(name)
        if blob is not None and blob.md5_hash == _md5(transfer.source):
            skipped += 1
            continue
        client.bucket(bucket).blob(name).upload_from_filename(transfer.source)
        uploaded += 1
    return uploaded, skipped


# ---- fetch --------------------------------------------------------------------------------


def best_checkpoint_name(state_text: str) -> str | None:
    """The checkpoint a TF ``checkpoint`` state file names (``ckpt-40``), or None."""
    for line in state_text.splitlines():
        if line.startswith("model_checkpoint_path:"):
            value = line.split(":", 1)[1].strip().strip('"')
            return value.replace("\\", "/").rsplit("/", 1)[-1] or None
    return None


def fetch_plan(client, *, model_dir: str, dest: str) -> tuple[list[Transfer], list[str]]:
    """What to download from a trainer model dir: (transfers, names that are not there).

    The results (config, metrics, curve, tokenizer), export/ and the best checkpoint;
    the model dir must at least hold config.json.
    """
    bucket_name, prefix = split_gs(model_dir.rstrip("/"), "model_dir")
    bucket = client.bucket(bucket_name)
    base = f"{prefix}/" if prefix else ""
    names = {blob.name for blob in client.list_blobs(bucket_name, prefix=base)}
    if f"{base}{CONFIG_FILE}" not in names:
        raise StagingError(
            f"--model_dir: {model_dir} has no {CONFIG_FILE}: not a trainer model dir"
        )
    wanted = [f"{base}{name}" for name in RESULT_FILES]
    missing = [name for name in RESULT_FILES if f"{base}{name}" not in names]
    wanted += sorted(n for n in names if n.startswith(f"{base}{EXPORT_SUBDIR}/"))
    if not any(n.startswith(f"{base}{EXPORT_SUBDIR}/") for n in names):
        missing.append(f"{EXPORT_SUBDIR}/")
    state = f"{base}{BEST_DIR}/checkpoint"
    checkpoint = (
        best_checkpoint_name(bucket.blob(state).download_as_text()) if state in names else None
    )
    if checkpoint:
        stem = f"{base}{BEST_DIR}/{checkpoint}."
        wanted += [state] + sorted(n for n in names if n.startswith(stem))
    else:
        missing.append(f"{BEST_DIR}/checkpoint")
    plan = [
        Transfer(f"gs://{bucket_name}/{name}", os.path.join(dest, name[len(base) :]))
        for name in wanted
        if name in names
    ]
    return plan, missing


def download(client, plan: list[Transfer]) -> int:
    for transfer in plan:
        bucket, name = split_gs(transfer.source, "model_dir")
        os.makedirs(os.path.dirname(transfer.destination) or ".", exist_ok=True)
        partial = transfer.destination + ".partial"
        client.bucket(bucket).blob(name).download_to_filename(partial)
        os.replace(partial, transfer.destination)  # never a half file under the real name
    return len(plan)


# ---- the two commands (python -m infra.gcp stage|fetch) -----------------------------------


def stage(
    *,
    bucket: str,
    prefix: str,
    data_dir: str | None,
    configs_dir: str | None,
    project: str | None = None,
    dry_run: bool = False,
) -> None:
    """Uploads configs and a prepared dataset; prints each transfer and the --data_dir to use."""
    plan = stage_plan(bucket=bucket, prefix=prefix, data_dir=data_dir, configs_dir=configs_dir)
    for transfer in plan:
        print(f"{transfer.source} -> {transfer.destination}")
    if data_dir:
        print(f"--data_dir={staged_data_dir(bucket, prefix, data_dir)}")
    if not dry_run:
        uploaded, skipped = upload(storage_client(project), plan)
        print(f"uploaded {plural(uploaded, 'file')}, {skipped:,} unchanged")


def fetch(*, model_dir: str, dest: str, project: str | None = None, dry_run: bool = False) -> None:
    """Downloads a model dir's results; prints each transfer and what the model dir lacks."""
    split_gs(model_dir, "model_dir")
    if dry_run:
        names = [
            *RESULT_FILES,
            f"{EXPORT_SUBDIR}/**",
            f"{BEST_DIR}/checkpoint and the checkpoint it names",
        ]
        for name in names:
            print(f"{model_dir.rstrip('/')}/{name} -> {dest}")
        return
    client = storage_client(project)
    plan, missing = fetch_plan(client, model_dir=model_dir, dest=dest)
    download(client, plan)
    for transfer in plan:
        print(f"{transfer.source} -> {transfer.destination}")
    print(f"fetched {plural(len(plan), 'file')} into {dest}")
    if missing:
        print(f"not in the model dir: {', '.join(missing)}")
