"""Helpers for the reader tests (sources_test.py, ende_/imdb_/tfds_sources_test.py): write an
input, resolve flags and read specs through pipeline/sources.py as the job does, and catch its
one-line errors."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.sources import InputError, RawRecord, Reject, SourceSpec

REAL_DATA = Path("/work/shared/data")


def write(path: Path, data: bytes, *, gz: bool = False) -> str:
    """Writes ``data`` to ``path`` (gzipped to ``path.gz`` when ``gz``) -> the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def resolve(input: str, **flags) -> list[SourceSpec]:
    """resolve_sources with the job's defaults (ende, en->de, no other inputs) and ``flags``."""
    args = dict(
        dataset="ende",
        input=input,
        validation_input=None,
        test_input=None,
        source_lang="en",
        target_lang="de",
        tfds_data_dir=None,
    )
    return sources.resolve_sources(**{**args, **flags})


def read(specs: list[SourceSpec]) -> list[RawRecord | Reject]:
    return [item for spec in specs for item in sources.read_source(spec)]


def records(items) -> list[tuple]:
    return [(r.fields, r.label, r.split) for r in items if isinstance(r, RawRecord)]


def rejects(items) -> list[tuple[str, str]]:
    return [(r.origin, r.reason) for r in items if isinstance(r, Reject)]


def error(**kwargs) -> str:
    """The InputError message ``resolve(**kwargs)`` raises, asserted to be one line."""
    with pytest.raises(InputError) as raised:
        resolve(**kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


def tar_bytes(members: list[tuple[str, bytes | str]]) -> bytes:
    """A .tar.gz of (name, content) members; str content makes a symlink to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
