"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GCS_BUCKET = "testbucket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emulator_executable() -> str | None:
    beside_python = Path(sys.executable).with_name("gcp-storage-emulator")
    return str(beside_python) if beside_python.exists() else shutil.which("gcp-storage-emulator")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[str]:
    """A local GCS emulator that Beam's gs:// I/O and google-cloud-storage both use.

    Yields the name of an empty-at-start bucket. Upload with
    ``storage.Client(project="test", credentials=AnonymousCredentials())``.
    """
    executable = _emulator_executable()
    if executable is None:
        pytest.fail("gcp-storage-emulator is not installed (pip install -e '.[dev]')")
    port = _free_port()
    process = subprocess.Popen(
        [executable, "start", "--host", "127.0.0.1", "--port", str(port)]
        + ["--in-memory", "--default-bucket", GCS_BUCKET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Beam looks up Application Default Credentials before creating its GCS client and, finding
    # none, retries with backoff for ~30 s. A token that never expires is found at once and
    # needs no network; the emulator ignores it.
    credentials = tmp_path_factory.mktemp("gcs") / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "test",
                "client_secret": "test",
                "refresh_token": "test",
                "token": "test",
                "expiry": "2999-01-01T00:00:00Z",
            }
        )
    )
    environment = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "GOOGLE_CLOUD_PROJECT": "test",
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gcp-storage-emulator did not start on port {port}")
                time.sleep(0.1)
        yield GCS_BUCKET
    finally:
        process.terminate()
        process.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
