"""Readers for the review formats of ``--dataset=imdb`` (tfds: aside).

- an aclImdb directory (``DIR/{train,test}/{pos,neg}/*.txt``, or its parent). Origins are the
  review files' paths.
- the same tree as a ``.tar.gz``/``.tgz``, streamed without extracting; absolute, ``..`` and
  link members are refused as ``unreadable_member``. Origins are ``ARCHIVE:member/name``.
- a ``.csv`` (optionally ``.gz``) with ``review`` and ``sentiment`` columns. Origins are
  ``FILE:row N``, the header being row 1.

``unsup`` reviews are ignored. aclImdb's own test part keeps split test; its train part has
split None (validation is carved from it later). ``resolve`` turns one flag's path into specs,
failing early on anything fatal; ``read_aclimdb_dir``, ``read_aclimdb_tar`` and ``read_csv``
stream one spec each as (review,) records labelled 0 negative / 1 positive.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import re
import tarfile
import zlib
from collections.abc import Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import features, source_files, source_records
from pipeline.source_files import OversizedLine
from pipeline.source_records import (
    ACLIMDB_DIR,
    ACLIMDB_TAR,
    CSV,
    INVALID_LABEL,
    MISSING_LABEL,
    OVERSIZED,
    UNDECODABLE,
    UNREADABLE_MEMBER,
    WRONG_COLUMNS,
    InputError,
    RawRecord,
    Reject,
    SourceSpec,
    oversized_reject,
    undecodable_reject,
)

_CSV_SUFFIXES = (".csv", ".csv.gz")
_TAR_SUFFIXES = (".tar.gz", ".tgz")
_IMDB_FORMS = "expected an aclImdb directory, its .tar.gz/.tgz, a .csv or tfds:imdb_reviews"
_SENTIMENTS = {"positive": 1, "pos": 1, "1": 1, "negative": 0, "neg": 0, "0": 0}
_REVIEW_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")
# What a damaged .tar.gz raises. OSError stays out: an I/O failure should fail the bundle so the
# runner retries it, not pass for a corrupt archive.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error)


def resolve(flag: str, path: str, split: str | None) -> list[SourceSpec]:
    """The specs for ``flag``'s ``path`` (a directory, a file or a glob); InputError if unusable."""
    lower = path.lower()
    if not source_files.is_glob(path) and not lower.endswith(_TAR_SUFFIXES + _CSV_SUFFIXES):
        return _aclimdb_dir_specs(flag, path, split)
    specs = []
    for file in source_files.input_files(flag, path):
        lower = file.lower()
        if lower.endswith(_TAR_SUFFIXES):
            _check_archive(flag, file)
            specs.append(SourceSpec(ACLIMDB_TAR, file, split, (("flag", flag),)))
        elif lower.endswith(_CSV_SUFFIXES):
            with _csv_reader(file) as records:
                _csv_columns(flag, file, records)
            specs.append(SourceSpec(CSV, file, split, (("flag", flag),)))
        else:
            raise InputError(
                f"{flag}: unsupported input {file!r} for --dataset=imdb ({_IMDB_FORMS})"
            )
    return specs


# aclImdb directory.


def _aclimdb_dir_specs(flag: str, path: str, split: str | None) -> list[SourceSpec]:
    root = path.rstrip("/")
    for base in (root, f"{root}/aclImdb"):
        parts = [
            part
            for part in ("train", "test")
            if any(
                source_files.match(f"{base}/{part}/{label}/*.txt", limit=1)
                for label in ("pos", "neg")
            )
        ]
        if parts:
            return [
                SourceSpec(
                    ACLIMDB_DIR, f"{base}/{part}", _given_or_implied(split, part), (("flag", flag),)
                )
                for part in parts
            ]
    exists = FileSystems.exists(root)  # on gs:// only objects exist, not "directories"
    is_directory = (
        _is_local_directory(root) if exists else bool(source_files.match(f"{root}/**", limit=1))
    )
    if exists and not is_directory:
        raise InputError(f"{flag}: unsupported input {path!r} for --dataset=imdb ({_IMDB_FORMS})")
    if not is_directory:
        raise InputError(f"{flag}: no such file or directory {path}")
    raise InputError(
        f"{flag}: {path} has no aclImdb reviews "
        "(expected train/{pos,neg}/*.txt or test/{pos,neg}/*.txt in it or in its aclImdb/)"
    )


def _is_local_directory(path: str) -> bool:
    try:
        FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED).close()
    except IsADirectoryError:
        return True
    return False


def _given_or_implied(split: str | None, part: str) -> str | None:
    # aclImdb's own test part stays test; its train part still gives up a validation carve-out.
    if split is not None:
        return split
    return features.TEST if part == "test" else None


def read_aclimdb_dir(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    for label_name, label in (("neg", 0), ("pos", 1)):
        pattern = f"{spec.path}/{label_name}/*.txt"
        found = FileSystems.match([pattern])[0].metadata_list
        for path, size in sorted((m.path, m.size_in_bytes) for m in found):
            if size > source_records.MAX_TEXT_BYTES:
                yield oversized_reject(path, size)
                continue
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield undecodable_reject(path, path, e)
                continue
            yield RawRecord(path, (text,), label, spec.split)


# aclImdb archive.


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str
    part: str = ""  # "train" or "test" for a review
    label: int = 0
    data: bytes = b""
    problem: str | None = None  # why it is refused; None for a review
    reason: str = UNREADABLE_MEMBER  # the Reject reason when refused
    corrupt: bool = False  # the archive broke here; nothing after it was read


def _check_archive(flag: str, path: str) -> None:
    """Streams up to the first review so a wrong or corrupt archive fails before the job."""
    for member in _scan_archive(path):
        if member.corrupt:
            raise InputError(f"{flag}: {path} is not a readable .tar.gz archive ({member.problem})")
        if member.problem is None:
            return
    raise InputError(
        f"{flag}: {path} has no aclImdb reviews (expected members like */train/pos/*.txt)"
    )


def _scan_archive(path: str) -> Iterator[_Member]:
    """The reviews and the refused members of an aclImdb .tar.gz, streamed, never extracted."""
    last = "<start>"
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        try:
            try:
                tar = tarfile.open(fileobj=raw, mode="r|gz")  # noqa: SIM115 (closed below)
            except TypeError as e:  # CPython's stream mode on a gzip header cut short: ord(b"")
                raise tarfile.ReadError(f"gzip header cut short ({e})") from None
            with tar:
                for member in tar:
                    last = member.name
                    found = _archive_member(tar, member)
                    if found is not None:
                        yield found
        except _ARCHIVE_ERRORS as e:
            problem = f"archive corrupt after this member, rest not read: {type(e).__name__}: {e}"
            yield _Member(last, problem=problem, corrupt=True)


def _archive_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> _Member | None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        return _Member(name, problem="unsafe member path (absolute or '..'), refused")
    if member.issym() or member.islnk():
        return _Member(name, problem=f"link to {member.linkname!r}, refused")
    review = _REVIEW_MEMBER.search(name)
    if review is None:
        return None
    if not member.isfile():
        return _Member(name, problem="not a regular file, refused")
    limit = source_records.MAX_TEXT_BYTES
    if member.size > limit:
        problem = f"{member.size:,} bytes, over the {limit:,}-byte limit"
        return _Member(name, part=review[1], problem=problem, reason=OVERSIZED)
    data = tar.extractfile(member).read()
    return _Member(name, part=review[1], label=int(review[2] == "pos"), data=data)


def read_aclimdb_tar(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    reviews, corrupt = 0, False
    for member in _scan_archive(spec.path):
        origin = f"{spec.path}:{member.name}"
        if member.part:
            reviews += 1
        if member.problem is not None:
            corrupt = corrupt or member.corrupt
            yield Reject(origin, member.reason, member.problem)
            continue
        try:
            text = member.data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield undecodable_reject(origin, member.name, e)
            continue
        yield RawRecord(origin, (text,), member.label, _given_or_implied(spec.split, member.part))
    if not reviews and not corrupt:
        raise InputError(f"{spec.option('flag')}: {spec.path} has no aclImdb reviews")


# CSV.


@contextlib.contextmanager
def _csv_reader(path: str) -> Iterator[Iterator[list[str]]]:
    # Each physical line is decoded with surrogateescape, so a bad byte survives as a lone
    # surrogate that _csv_record spots per record, while csv still joins quoted newlines.
    lines = source_files.lines(path)
    try:
        yield csv.reader(
            _decode_surrogates(raw, first=number == 1) + "\n" for number, raw in enumerate(lines, 1)
        )
    finally:
        lines.close()  # closes the file now, not when the generator is collected


# Stands in for an oversized line inside the CSV text: U+D800 never comes out of decoding
# (surrogateescape yields only U+DC80..U+DCFF), so no real cell can contain it.
_OVERSIZED_MARK = "\ud800"
_OVERSIZED_CELL = re.compile(_OVERSIZED_MARK + r"(\d+)" + _OVERSIZED_MARK)


def _decode_surrogates(raw: bytes | OversizedLine, *, first: bool) -> str:
    if isinstance(raw, OversizedLine):
        return f"{_OVERSIZED_MARK}{raw.size}{_OVERSIZED_MARK}"
    return raw.decode("utf-8-sig" if first else "utf-8", errors="surrogateescape")


def _csv_columns(flag: str, path: str, records: Iterator[list[str]]) -> tuple[list[str], int, int]:
    """(header, review column, sentiment column) from the first CSV record."""
    try:
        header = next(records, None)
    except csv.Error as e:
        raise InputError(f"{flag}: {path}: malformed CSV header ({e})") from None
    if not header:
        raise InputError(f"{flag}: {path} is empty (expected a header with review and sentiment)")
    names = [name.strip().lower() for name in header]
    for wanted in ("review", "sentiment"):
        if wanted not in names:
            found = " ".join(", ".join(header).split())  # one line, whatever the cells hold
            found = found if len(found) <= 200 else found[:200] + "..."
            raise InputError(
                f"{flag}: {path}: the header has no {wanted!r} column (found: {found})"
            )
    return header, names.index("review"), names.index("sentiment")


def read_csv(spec: SourceSpec) -> Iterator[RawRecord | Reject]:
    with _csv_reader(spec.path) as records:
        header, review, sentiment = _csv_columns(spec.option("flag"), spec.path, records)
        for number in itertools.count(2):
            origin = f"{spec.path}:row {number}"
            try:
                row = next(records)
            except StopIteration:
                return
            except csv.Error as e:
                yield Reject(origin, WRONG_COLUMNS, f"malformed CSV: {e}")
                continue
            if not row:
                continue  # a blank line is no record
            yield _csv_record(origin, row, len(header), review, sentiment, spec.split)


def _csv_record(
    origin: str, row: list[str], width: int, review: int, sentiment: int, split: str | None
) -> RawRecord | Reject:
    for cell in row:
        if oversized := _OVERSIZED_CELL.search(cell):
            return oversized_reject(origin, int(oversized[1]))
    try:
        for cell in row:
            cell.encode("utf-8")
    except UnicodeEncodeError as e:
        return Reject(
            origin, UNDECODABLE, f"not UTF-8 (byte 0x{ord(e.object[e.start]) - 0xDC00:02x})"
        )
    if len(row) != width:
        return Reject(origin, WRONG_COLUMNS, f"{len(row)} columns, expected {width}")
    value = row[sentiment].strip().lower()
    if not value:
        return Reject(origin, MISSING_LABEL, "empty sentiment")
    if value not in _SENTIMENTS:
        return Reject(
            origin, INVALID_LABEL, f"sentiment {row[sentiment]!r}, expected positive or negative"
        )
    return RawRecord(origin, (row[review],), _SENTIMENTS[value], split)
