"""Bad-input properties of every reader, shared by tests/fuzz_readers_test.py and scripts/fuzz_readers.py.

Each ``check_*`` function writes the bytes it is given where a reader expects a file, reads
them the way the job does and asserts what must hold for any input:

- the reader raises nothing but the project's declared user error (``sources.InputError``,
  ``infer_files.InferenceError``, ``batch_inference.InferenceInputError``), whose message is
  one line;
- every unit (line, row, file, member) comes out as a record or as a Reject with a known
  reason, and the counts reconcile with an independent count of the input;
- a record's text is valid UTF-8.

It returns an ``Outcome`` (records, rejects by reason, the fatal message) so the full-size
script can report figures. The strategies (``random_bytes``, ``mutated``) give random bytes
and mutations of a valid seed document.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import tempfile

import numpy as np
from hypothesis import strategies as st

from pipeline import ende_sources, imdb_sources, source_files, source_records, sources

SEED_PAIRS = [
    ("A dog runs.", "Ein Hund läuft."),
    ("Two men, one ball.", 'Zwei "Männer".'),
    ("", "Leer."),
]
SEED_REVIEWS = [("Great film, loved it.", "positive"), ('Bad "plot",\nboring.', "negative")]
# Bytes that matter to the readers: separators, quotes, BOM, invalid UTF-8, NUL.
SPECIAL = [b"\n", b"\r", b"\r\n", b"\t", b",", b'"', b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xc3"]


@dataclasses.dataclass
class Outcome:
    records: int = 0
    rejects: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    fatal: str | None = None  # the one-line user error, when the input was refused as a whole

    def add(self, item) -> None:
        if isinstance(item, sources.Reject):
            assert item.reason in source_records.REJECT_REASONS, item
            assert item.detail and "\n" not in item.detail, item
            self.rejects[item.reason] += 1
        else:
            assert isinstance(item, sources.RawRecord), item
            for field in item.fields:
                field.encode("utf-8")  # a lone surrogate would raise here
            self.records += 1

    @property
    def total(self) -> int:
        return self.records + sum(self.rejects.values())


def one_line_error(error: Exception) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, repr(message)
    return message


# ----------------------------------------------------------------------------- strategies


def random_bytes(max_size: int = 600) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size)


def _mutate(seed: bytes, operations: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, position, value in operations:
        at = position % (len(data) + 1)
        if kind == 0 and data:  # flip bits of a byte
            data[at % len(data)] ^= value or 1
        elif kind == 1:  # insert a byte that matters to a reader
            data[at:at] = SPECIAL[value % len(SPECIAL)]
        elif kind == 2:  # delete a run
            del data[at : at + value % 8 + 1]
        elif kind == 3:  # truncate
            del data[at:]
        else:  # duplicate a run (repeated lines, long lines)
            data[at:at] = data[at : at + value % 64] * (value % 5 + 1)
    return bytes(data)


def mutated(seed: bytes, max_operations: int = 6) -> st.SearchStrategy[bytes]:
    """``seed`` with a few bit flips, special-byte inserts, deletions, truncations, repeats."""
    operation = st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255))
    return st.lists(operation, max_size=max_operations).map(lambda ops: _mutate(seed, ops))


def seed_tsv() -> bytes:
    return "".join(f"{en}\t{de}\tCC-BY\n" for en, de in SEED_PAIRS).encode()


def seed_csv() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["review", "sentiment"])
    writer.writerows(SEED_REVIEWS)
    return out.getvalue().encode()


def seed_pickle(protocol: int) -> bytes:
    return pickle.dumps(np.array([[en, de, "x"] for en, de in SEED_PAIRS]), protocol=protocol)


def seed_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (
            ("aclImdb/train/pos/0_9.txt", b"Great."),
            ("aclImdb/test/neg/1_2.txt", b"Bad."),
            ("aclImdb/README", b"readme"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def maybe_gzip(data: bytes, gz: bool) -> bytes:
    return gzip.compress(data, mtime=0) if gz else data


# ----------------------------------------------------------------------------- preprocessing readers


def _read(spec: sources.SourceSpec, outcome: Outcome) -> Outcome:
    try:
        for item in sources.read_source(spec):
            outcome.add(item)
    except sources.InputError as e:
        outcome.fatal = one_line_error(e)
    return outcome


def _write(directory: str, name: str, data: bytes) -> str:
    """``data`` written to ``directory/name``; its path."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _write_and_resolve(
    dataset: str, directory: str, name: str, data: bytes
) -> tuple[str, list[sources.SourceSpec] | str]:
    """``data`` written to ``directory/name`` and resolved as ``--input``: (path, specs or error)."""
    path = _write(directory, name, data)
    return path, _resolve(dataset, path)


def _resolve(dataset: str, path: str) -> list[sources.SourceSpec] | str:
    try:
        return sources.resolve_sources(
            dataset=dataset,
            input=path,
            validation_input=None,
            test_input=None,
            source_lang="en",
            target_lang="de",
            tfds_data_dir=None,
        )
    except sources.InputError as e:
        return one_line_error(e)


def check_tsv(data: bytes, *, gz: bool = False) -> Outcome:
    """A .tsv[.gz]: one record or Reject per line, in order."""
    with tempfile.TemporaryDirectory() as d:
        path, specs = _write_and_resolve("ende", d, "pairs.tsv" + (".gz" if gz else ""), data)
        if isinstance(specs, str):
            return Outcome(fatal=specs)
        outcome = _read(specs[0], Outcome())
        if outcome.fatal is None:
            assert outcome.total == source_files.count_lines(path), (outcome, data)
    return outcome


def check_aligned(source: bytes, target: bytes, *, gz: bool = False) -> Outcome:
    """PREFIX.en/PREFIX.de: refused when the line counts differ, else one item per line."""
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "train")
        for lang, data in (("en", source), ("de", target)):
            with open(f"{prefix}.{lang}" + (".gz" if gz else ""), "wb") as f:
                f.write(data)
        specs = _resolve("ende", prefix)
        if isinstance(specs, str):
            return Outcome(fatal=specs)
        outcome = _read(specs[0], Outcome())
        if outcome.fatal is None:
            assert outcome.total == source_files.count_lines(specs[0].option("source_path"))
    return outcome


def check_pickle(data: bytes) -> Outcome:
    """A .pkl: refused as a whole (never run), or one item per array row."""
    with tempfile.TemporaryDirectory() as d:
        path, specs = _write_and_resolve("ende", d, "pairs.pkl", data)
        if isinstance(specs, str):
            return Outcome(fatal=specs)
        outcome = _read(specs[0], Outcome())
        rows = len(ende_sources._load_pair_array("--input", path))
        assert outcome.fatal is None and outcome.total == rows, (outcome, rows)
    return outcome


def check_csv(data: bytes, *, gz: bool = False) -> Outcome:
    """An IMDB .csv: refused (no header), or one item per non-blank CSV record."""
    with tempfile.TemporaryDirectory() as d:
        path, specs = _write_and_resolve("imdb", d, "reviews.csv" + (".gz" if gz else ""), data)
        if isinstance(specs, str):
            return Outcome(fatal=specs)
        outcome, rows = Outcome(), []
        try:
            for item in sources.read_source(specs[0]):
                outcome.add(item)
                rows.append(int(item.origin.rsplit("row ", 1)[1]))
        except sources.InputError as e:
            outcome.fatal = one_line_error(e)
        assert rows == sorted(set(rows)) and all(r >= 2 for r in rows), rows
        if outcome.fatal is None:
            # A row number is a CSV record; a record can span lines but never exceed them.
            assert outcome.total <= max(source_files.count_lines(path) - 1, 0)
    return outcome


def check_csv_rows(rows: list[list[str]]) -> Outcome:
    """Rows written by csv.writer: exactly the records and Rejects the rows call for."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["review", "sentiment"])
    writer.writerows(rows)
    outcome = check_csv(out.getvalue().encode("utf-8"))
    assert outcome.fatal is None, outcome
    # csv.writer writes [] as a blank line, which is no record; every other row is one.
    nonblank = [row for row in rows if row]
    assert outcome.total == len(nonblank), (outcome, rows)
    valid = sum(
        len(row) == 2 and row[1].strip().lower() in imdb_sources._SENTIMENTS for row in nonblank
    )
    assert outcome.records == valid, (outcome, rows)
    return outcome


def check_aclimdb_dir(files: list[bytes]) -> Outcome:
    """An aclImdb directory: one item per review file, each with its directory's label."""
    with tempfile.TemporaryDirectory() as d:
        for i, data in enumerate(files):
            label = ("neg", "pos")[i % 2]
            os.makedirs(os.path.join(d, "train", label), exist_ok=True)
            with open(os.path.join(d, "train", label, f"{i}_1.txt"), "wb") as f:
                f.write(data)
        os.makedirs(os.path.join(d, "train", "neg"), exist_ok=True)
        specs = _resolve("imdb", d)
        if isinstance(specs, str):
            assert not files, specs
            return Outcome(fatal=specs)
        outcome = Outcome()
        for spec in specs:
            _read(spec, outcome)
        assert outcome.fatal is None and outcome.total == len(files), (outcome, len(files))
    return outcome


def check_archive_bytes(data: bytes) -> Outcome:
    """Any bytes as a .tar.gz: records and Rejects only, or one refusal; nothing extracted."""
    with tempfile.TemporaryDirectory() as d:
        path, specs = _write_and_resolve("imdb", d, "aclImdb_v1.tar.gz", data)
        if isinstance(specs, str):
            return Outcome(fatal=specs)
        outcome = Outcome()
        for spec in specs:
            _read(spec, outcome)
        assert sorted(os.listdir(d)) == ["aclImdb_v1.tar.gz"]  # the reader wrote nothing
    return outcome


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    kind: str  # "file" | "symlink" | "hardlink" | "dir"
    data: bytes = b""


def check_archive_members(members: list[Member]) -> Outcome:
    """A well-formed .tar.gz of these members: each review member and each unsafe one
    (absolute, '..', a link) comes out as exactly one item; other members are ignored."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            if member.kind == "file":
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                info.type = {
                    "symlink": tarfile.SYMTYPE,
                    "hardlink": tarfile.LNKTYPE,
                    "dir": tarfile.DIRTYPE,
                }[member.kind]
                info.linkname = "../../etc/passwd" if member.kind != "dir" else ""
                tar.addfile(info)
    outcome = check_archive_bytes(buffer.getvalue())
    expected = reviews = 0
    for member in members:
        # What tarfile reads back: it strips trailing slashes from names.
        name = member.name.rstrip("/")
        unsafe = name.startswith("/") or ".." in name.split("/")
        link = member.kind in ("symlink", "hardlink")
        review = bool(imdb_sources._REVIEW_MEMBER.search(name))
        expected += unsafe or link or review
        reviews += review and not (unsafe or link) and member.kind == "file"
    if outcome.fatal is None:
        assert outcome.total == expected, (outcome, members)
        assert outcome.rejects[source_records.UNREADABLE_MEMBER] >= sum(
            m.kind in ("symlink", "hardlink") for m in members
        )
    else:
        assert reviews == 0, (outcome, members)  # refused only when it has no review
    return outcome


# ----------------------------------------------------------------------------- inference readers


def check_inference_lines(data: bytes, *, gz: bool = False) -> Outcome:
    """trainer.infer_files and the Beam jobs' ReadNumberedLinesFn read the same lines.

    A record is a line (any bytes: an undecodable line becomes U+FFFD text and is counted,
    never dropped, because each output line must match its input line); a damaged .gz is
    the declared user error.
    """
    from pipeline import batch_inference
    from trainer import infer_files

    with tempfile.TemporaryDirectory() as d:
        path = _write(d, "input.txt" + (".gz" if gz else ""), data)
        try:
            lines, undecodable = infer_files.read_lines(path)
        except infer_files.InferenceError as e:
            message = one_line_error(e)
            beam_error = _beam_read_error(path)
            assert beam_error is not None, f"ReadNumberedLinesFn read what read_lines refused: {e}"
            return Outcome(fatal=message)
        assert len(lines) == infer_files.count_lines(path), (len(lines), data)
        assert all("\n" not in line for line in lines)
        assert 0 <= undecodable <= len(lines)
        fn = batch_inference.ReadNumberedLinesFn()
        keyed, counts = [], []
        for item in fn.process(path):
            if isinstance(item, tuple):
                keyed.append(item)
            else:
                counts.append(item.value)
        assert counts == [(path, len(lines))], (counts, len(lines))
        assert keyed == [((path, i), line) for i, line in enumerate(lines)]
    outcome = Outcome(records=len(lines))
    outcome.rejects["undecodable (kept as U+FFFD)"] = undecodable
    return outcome


def _beam_read_error(path: str) -> str | None:
    from pipeline import batch_inference

    try:
        list(batch_inference.ReadNumberedLinesFn().process(path))
    except batch_inference.InferenceInputError as e:
        return one_line_error(e)
    return None
