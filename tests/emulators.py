"""The local servers the tests talk to as if they were the cloud (gcp-storage-emulator,
moto_server): a subprocess on a free port of 127.0.0.1, and while it runs the environment
variables that point the clients at it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from infra.local_cluster import free_ports


def free_port() -> int:
    return free_ports(1)[0]


@contextlib.contextmanager
def serving(name: str, argv: list[str], port: int, environment: dict[str, str]) -> Iterator[None]:
    """Runs ``argv`` (a server listening on ``port``) with ``environment`` set in this
    process until the block ends; fails the test when it does not accept a connection
    within 30 s."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{name} did not start on port {port}")
                time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
