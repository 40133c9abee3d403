"""Tests for pipeline/imdb_sources.py through pipeline/sources.py: aclImdb directories, .tar.gz
archives (unsafe members refused, nothing extracted) and CSV; their records, reject reasons and
fatal messages."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline import sources
from pipeline.sources import InputError, RawRecord, Reject, SourceSpec
from tests.sources_testing import REAL_DATA, error, read, resolve, tar_bytes, write

# aclImdb directory.


def _write_aclimdb(root: Path) -> dict[str, str]:
    files = {
        "train/pos/0_9.txt": b"A great film.<br />Loved it.",
        "train/neg/1_2.txt": b"Dull.",
        "train/neg/2_1.txt": b"Bad \xff bytes",
        "train/unsup/3_0.txt": b"Ignored.",
        "train/urls_pos.txt": b"http://ignored",
        "test/pos/4_8.txt": "Schön.".encode(),
    }
    return {name: write(root / "aclImdb" / name, data) for name, data in files.items()}


def test_aclimdb_directory(tmp_path):
    paths = _write_aclimdb(tmp_path)
    specs = resolve(str(tmp_path), dataset="imdb")
    assert specs == resolve(f"{tmp_path}/aclImdb/", dataset="imdb")
    assert [(s.kind, s.path, s.split) for s in specs] == [
        ("aclimdb_dir", f"{tmp_path}/aclImdb/train", None),
        ("aclimdb_dir", f"{tmp_path}/aclImdb/test", "test"),
    ]
    assert read(specs) == [
        RawRecord(paths["train/neg/1_2.txt"], ("Dull.",), 0, None),
        Reject(
            paths["train/neg/2_1.txt"],
            "undecodable",
            f"{paths['train/neg/2_1.txt']}: not UTF-8 (invalid start byte at byte 4)",
        ),
        RawRecord(paths["train/pos/0_9.txt"], ("A great film.<br />Loved it.",), 1, None),
        RawRecord(paths["test/pos/4_8.txt"], ("Schön.",), 1, "test"),
    ]
    [train, test] = resolve(str(tmp_path), dataset="imdb", test_input=str(tmp_path))[2:]
    assert (train.split, test.split) == ("test", "test")


def test_aclimdb_directory_errors(tmp_path):
    assert error(input=str(tmp_path / "nope"), dataset="imdb") == (
        f"--input: no such file or directory {tmp_path}/nope"
    )
    (tmp_path / "empty" / "aclImdb" / "train" / "unsup").mkdir(parents=True)
    assert error(input=str(tmp_path / "empty"), dataset="imdb") == (
        f"--input: {tmp_path}/empty has no aclImdb reviews "
        "(expected train/{pos,neg}/*.txt or test/{pos,neg}/*.txt in it or in its aclImdb/)"
    )
    json_file = write(tmp_path / "reviews.json", b"[]")
    assert error(input=json_file, dataset="imdb") == (
        f"--input: unsupported input '{json_file}' for --dataset=imdb (expected an aclImdb "
        "directory, its .tar.gz/.tgz, a .csv or tfds:imdb_reviews)"
    )


# aclImdb archive.


@pytest.mark.parametrize("name", ["aclImdb_v1.tar.gz", "reviews.tgz"])
def test_aclimdb_archive(tmp_path, name):
    path = write(
        tmp_path / name,
        tar_bytes(
            [
                ("aclImdb/README", b"readme"),
                ("aclImdb/train/pos/0_9.txt", b"Great."),
                ("aclImdb/train/unsup/1_0.txt", b"Ignored."),
                ("aclImdb/train/neg/2_1.txt", b"\xffoops"),
                ("../../etc/train/pos/3_9.txt", b"Escapes."),
                ("/abs/train/neg/4_1.txt", b"Absolute."),
                ("aclImdb/train/pos/5_9.txt", "/etc/passwd"),
                ("aclImdb/test/neg/6_2.txt", b"Awful."),
            ]
        ),
    )
    specs = resolve(path, dataset="imdb")
    assert [(s.kind, s.split) for s in specs] == [("aclimdb_tar", None)]
    items = read(specs)
    assert items == [
        RawRecord(f"{path}:aclImdb/train/pos/0_9.txt", ("Great.",), 1, None),
        Reject(
            f"{path}:aclImdb/train/neg/2_1.txt",
            "undecodable",
            "aclImdb/train/neg/2_1.txt: not UTF-8 (invalid start byte at byte 0)",
        ),
        Reject(
            f"{path}:../../etc/train/pos/3_9.txt",
            "unreadable_member",
            "unsafe member path (absolute or '..'), refused",
        ),
        Reject(
            f"{path}:/abs/train/neg/4_1.txt",
            "unreadable_member",
            "unsafe member path (absolute or '..'), refused",
        ),
        Reject(
            f"{path}:aclImdb/train/pos/5_9.txt",
            "unreadable_member",
            "link to '/etc/passwd', refused",
        ),
        RawRecord(f"{path}:aclImdb/test/neg/6_2.txt", ("Awful.",), 0, "test"),
    ]
    assert not (tmp_path / "aclImdb").exists()
    given = resolve(str(tmp_path / "*.t*z"), dataset="imdb", test_input=path)[-1]
    assert {r.split for r in read([given]) if isinstance(r, RawRecord)} == {"test"}


def test_corrupt_archive_stops_with_a_reject(tmp_path):
    rng = random.Random(0)
    members = [
        (f"aclImdb/train/pos/{i}_9.txt", "".join(rng.choices("abcdefgh ", k=4000)).encode())
        for i in range(20)
    ]
    data = tar_bytes(members)
    path = write(tmp_path / "cut.tar.gz", data[: len(data) // 2])
    items = read(resolve(path, dataset="imdb"))
    records, last = items[:-1], items[-1]
    assert 3 <= len(records) < 20
    assert all(isinstance(r, RawRecord) for r in records)
    assert last.reason == "unreadable_member"
    assert last.origin.startswith(f"{path}:aclImdb/train/pos/")
    assert last.detail.startswith("archive corrupt after this member, rest not read: ")


def test_archive_errors(tmp_path):
    not_gzip = write(tmp_path / "plain.tar.gz", b"just text")
    assert error(input=not_gzip, dataset="imdb").startswith(
        f"--input: {not_gzip} is not a readable .tar.gz archive (archive corrupt"
    )
    empty = write(tmp_path / "empty.tgz", tar_bytes([("aclImdb/README", b"x")]))
    assert error(input=empty, dataset="imdb") == (
        f"--input: {empty} has no aclImdb reviews (expected members like */train/pos/*.txt)"
    )
    spec = SourceSpec("aclimdb_tar", empty, None, (("flag", "--test_input"),))
    with pytest.raises(InputError, match=f"--test_input: {empty} has no aclImdb reviews"):
        list(sources.read_source(spec))


# CSV.


@pytest.mark.parametrize("gz", [False, True])
def test_csv(tmp_path, gz):
    rows = (
        b"\xef\xbb\xbfReview,Sentiment\r\n"
        b'"Two\nlines, quoted",positive\r\n'
        b"Fine,NEG\n"
        b"Ok,1\n"
        b"\n"
        b"No label,\n"
        b"Unsure,maybe\n"
        b"Extra,positive,column\n"
        b"Bad \xff byte,negative\n"
        b"Last,0"
    )
    path = write(tmp_path / "imdb.csv", rows, gz=gz)
    items = read(resolve(path, dataset="imdb"))
    assert items == [
        RawRecord(f"{path}:row 2", ("Two\nlines, quoted",), 1, None),
        RawRecord(f"{path}:row 3", ("Fine",), 0, None),
        RawRecord(f"{path}:row 4", ("Ok",), 1, None),
        Reject(f"{path}:row 6", "missing_label", "empty sentiment"),
        Reject(
            f"{path}:row 7", "invalid_label", "sentiment 'maybe', expected positive or negative"
        ),
        Reject(f"{path}:row 8", "wrong_columns", "3 columns, expected 2"),
        Reject(f"{path}:row 9", "undecodable", "not UTF-8 (byte 0xff)"),
        RawRecord(f"{path}:row 10", ("Last",), 0, None),
    ]


def test_csv_malformed_record_does_not_stop_the_file(tmp_path):
    huge = b"x" * 200_000
    path = write(tmp_path / "big.csv", b"review,sentiment\n" + huge + b",positive\nok,negative\n")
    assert read(resolve(path, dataset="imdb")) == [
        Reject(
            f"{path}:row 2",
            "wrong_columns",
            "malformed CSV: field larger than field limit (131072)",
        ),
        RawRecord(f"{path}:row 3", ("ok",), 0, None),
    ]


def test_csv_header_errors(tmp_path):
    path = write(tmp_path / "a.csv", b"text,label\nx,1\n")
    assert error(input=path, dataset="imdb") == (
        f"--input: {path}: the header has no 'review' column (found: text, label)"
    )
    empty = write(tmp_path / "b.csv", b"")
    assert error(input=empty, dataset="imdb") == (
        f"--input: {empty} is empty (expected a header with review and sentiment)"
    )
    assert error(input=str(tmp_path / "c.csv"), dataset="imdb") == (
        f"--input: no such file {tmp_path}/c.csv"
    )


@pytest.mark.skipif(not (REAL_DATA / "imdb").exists(), reason="no /work/shared/data")
def test_real_aclimdb_archive_first_reviews():
    [spec] = resolve(str(REAL_DATA / "imdb" / "aclImdb_train.tar.gz"), dataset="imdb")
    reader = sources.read_source(spec)
    first = [next(reader) for _ in range(5)]
    reader.close()
    assert all(isinstance(r, RawRecord) and r.label in (0, 1) and r.split is None for r in first)
