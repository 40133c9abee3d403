"""Finding and streaming the files behind an input flag, for every file-based reader.

``input_files`` expands a path or glob named by a flag; ``lines`` streams a (possibly gzipped)
file line by line without ever holding a line over ``source_records.MAX_TEXT_BYTES``;
``count_lines`` counts lines exactly as ``lines`` yields them. Files are opened only through
Beam's ``FileSystems``, so local paths and gs:// URIs both work; a corrupt .gz is an
``InputError`` naming the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

from pipeline import shards, source_records
from pipeline.source_records import InputError

_CHUNK = 1 << 20


def is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def match(pattern: str, limit: int | None = None) -> list[str]:
    """The paths ``pattern`` matches, sorted; at most ``limit`` of them when given."""
    result = FileSystems.match([pattern], limits=[limit] if limit else None)[0]
    return sorted(m.path for m in result.metadata_list)


def input_files(flag: str, path: str) -> list[str]:
    """The file ``path`` names, or the files its glob matches; InputError naming ``flag`` if none."""
    if not is_glob(path):
        if not FileSystems.exists(path):
            raise InputError(f"{flag}: no such file {path}")
        return [path]
    files = match(path)
    if not files:
        raise InputError(f"{flag}: no files match {path}")
    return files


@dataclasses.dataclass(frozen=True)
class OversizedLine:
    """Stands for a line over MAX_TEXT_BYTES, which was skipped instead of held."""

    size: int  # bytes, without the newline


def count_lines(path: str) -> int:
    """Lines in a (possibly gzipped) text file, counted as ``lines`` yields them."""
    count, last = 0, b"\n"
    for chunk in _chunks(path):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def lines(path: str) -> Iterator[bytes | OversizedLine]:
    """The lines of a (possibly gzipped) file as bytes, without their newline.

    A line over MAX_TEXT_BYTES comes as an ``OversizedLine``: its bytes are skipped as they are
    read, so memory stays within a few chunks whatever the file holds.
    """
    limit = source_records.MAX_TEXT_BYTES
    pending: list[bytes] = []
    size = 0  # bytes of the current line so far
    for chunk in _chunks(path):
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            size += len(piece)
            yield OversizedLine(size) if size > limit else b"".join([*pending, piece])
            pending, size = [], 0
        size += len(rest)
        if size > limit:
            pending = []
        elif rest:
            pending.append(rest)
    if size:
        yield OversizedLine(size) if size > limit else b"".join(pending)


def decode_line(raw: bytes, *, first: bool) -> str:
    """One line as text: strict UTF-8, a BOM dropped from the first line, a trailing CR dropped."""
    text = raw.decode("utf-8-sig" if first else "utf-8")
    return text[:-1] if text.endswith("\r") else text


def _chunks(path: str) -> Iterator[bytes]:
    """The (decompressed) bytes of ``path``; InputError when its compression is corrupt."""
    with shards.open_decompressed(path) as f:
        while True:
            try:
                chunk = f.read(_CHUNK)
            except shards.DECOMPRESSION_ERRORS as e:
                raise InputError(
                    f"{path}: corrupt compressed data ({type(e).__name__}: {e})"
                ) from None
            if not chunk:
                return
            yield chunk
