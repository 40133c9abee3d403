"""What every input reader shares: ``SourceSpec`` in, ``RawRecord``/``Reject`` out.

The spec kinds, the reject reasons (the dead-letter contract counted by the job), the size
limit behind ``oversized`` and ``InputError``, the one fatal error a reader raises. The readers
live in pipeline/ende_sources.py, imdb_sources.py and tfds_sources.py; pipeline/sources.py picks
one per spec (and reads the embedded corpus itself).
"""

from __future__ import annotations

import dataclasses

UNDECODABLE = "undecodable"
WRONG_COLUMNS = "wrong_columns"
MISSING_LABEL = "missing_label"
INVALID_LABEL = "invalid_label"
UNREADABLE_MEMBER = "unreadable_member"
OVERSIZED = "oversized"
REJECT_REASONS = (
    UNDECODABLE,
    WRONG_COLUMNS,
    MISSING_LABEL,
    INVALID_LABEL,
    UNREADABLE_MEMBER,
    OVERSIZED,
)
# A line, review file or archive member longer than this is rejected without being held in
# memory: no sentence or review comes near it, and one such line must not exhaust a worker.
# Readers look it up here at read time (source_records.MAX_TEXT_BYTES), so lowering it in this
# one place lowers it for all of them.
MAX_TEXT_BYTES = 1 << 20

ALIGNED = "aligned"
TSV = "tsv"
PICKLE = "pickle"
TFDS = "tfds"
ACLIMDB_DIR = "aclimdb_dir"
ACLIMDB_TAR = "aclimdb_tar"
CSV = "csv"
EMBEDDED = "embedded"


@dataclasses.dataclass(frozen=True)
class RawRecord:
    origin: str  # "path:LINE" (1-based), "archive.tar.gz:member/name" or "path:row N"
    fields: tuple[str, ...]  # ende: (source, target); imdb: (review,)
    label: int | None  # imdb: 0 negative / 1 positive; ende: None
    split: str | None  # a given split, or None: carved by hash later


@dataclasses.dataclass(frozen=True)
class Reject:
    origin: str
    reason: str  # one of REJECT_REASONS
    detail: str  # short human text


class InputError(Exception):
    """A fatal input problem; str(e) is one line naming the flag or file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    kind: str  # ALIGNED | TSV | PICKLE | TFDS | ACLIMDB_DIR | ACLIMDB_TAR | CSV | EMBEDDED
    path: str  # the prefix for ALIGNED, "tfds:NAME/CONFIG" for TFDS, else a file or directory
    split: str | None  # the given split, or None
    options: tuple[tuple[str, str], ...] = ()  # always includes ("flag", the flag it came from)

    def option(self, key: str) -> str:
        return dict(self.options)[key]


def oversized_reject(origin: str, size: int) -> Reject:
    return Reject(origin, OVERSIZED, f"{size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit")


def undecodable_reject(origin: str, where: str, error: UnicodeDecodeError) -> Reject:
    return Reject(origin, UNDECODABLE, f"{where}: not UTF-8 ({error.reason} at byte {error.start})")
