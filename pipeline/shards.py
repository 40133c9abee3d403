"""Atomic file writes through Beam FileSystems (local and gs://), and TFRecord framing.

The job writes its own TFRecord shards instead of using WriteToTFRecord so that the
shard an example lands in, and its position there, are a function of its content:
two runs produce byte-identical shards. Every file is written under a temporary name
and renamed into place, so a crash never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator
from gzip import BadGzipFile, GzipFile
from typing import BinaryIO

import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

TMP_PREFIX = ".tmp-"


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def tfrecord_frame(record: bytes) -> bytes:
    """One record in the TFRecord wire format: length, crc(length), data, crc(data)."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


def temp_path_for(path: str) -> str:
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    return f"{directory}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"


def write_atomically(path: str, chunks: Iterable[bytes], *, gzip: bool = False) -> None:
    """Writes ``chunks`` to ``path`` via a temporary file and a rename."""
    tmp = temp_path_for(path)
    compression = CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED
    try:
        with FileSystems.create(tmp, compression_type=compression) as f:
            for chunk in chunks:
                f.write(chunk)
        if FileSystems.exists(path):
            FileSystems.delete([path])
        FileSystems.rename([tmp], [path])
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise


def write_tfrecords(path: str, records: Iterable[bytes]) -> int:
    """Writes a gzipped TFRecord file atomically; returns the record count."""
    count = 0

    def framed():
        nonlocal count
        for record in records:
            count += 1
            yield tfrecord_frame(record)

    write_atomically(path, framed(), gzip=True)
    return count


# What reading a damaged .gz raises through ``open_decompressed``.
DECOMPRESSION_ERRORS = (EOFError, zlib.error, BadGzipFile)


@contextlib.contextmanager
def open_decompressed(path: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading; gunzipped when its name ends in ".gz".

    The .gz goes through Python's gzip, which checks the CRC and the length at the end of the
    stream: a truncated or corrupted .gz raises one of DECOMPRESSION_ERRORS where Beam's own
    reader would silently end early and lose the rest of the file.
    """
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if not path.endswith(".gz"):
            yield raw
            return
        with GzipFile(fileobj=raw, mode="rb") as f:
            yield f


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)
