"""Tests for pipeline/sources.py: every format, every reject reason, every fatal message."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import sources
from pipeline.sources import InputError, RawRecord, Reject, SourceSpec
from tests import testdata

REAL_DATA = Path("/work/shared/data")


def _write(path: Path, data: bytes, *, gz: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def _resolve(input: str, **flags) -> list[SourceSpec]:
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


def _read(specs: list[SourceSpec]) -> list[RawRecord | Reject]:
    return [item for spec in specs for item in sources.read_source(spec)]


def _records(items) -> list[tuple]:
    return [(r.fields, r.label, r.split) for r in items if isinstance(r, RawRecord)]


def _rejects(items) -> list[tuple[str, str]]:
    return [(r.origin, r.reason) for r in items if isinstance(r, Reject)]


def _error(**kwargs) -> str:
    with pytest.raises(InputError) as raised:
        _resolve(**kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message


# Flags.


def test_unknown_dataset():
    assert _error(input="x", dataset="wmt") == (
        "--dataset: unknown dataset 'wmt' (expected ende or imdb)"
    )


def test_missing_input_and_equal_languages():
    assert _error(input="") == "--input: required"
    assert _error(input="x", target_lang="en") == "--target_lang: same as --source_lang ('en')"


def test_reject_reasons_are_the_contract():
    assert sources.REJECT_REASONS == (
        "undecodable",
        "wrong_columns",
        "missing_label",
        "invalid_label",
        "unreadable_member",
    )


def test_unknown_kind_is_refused():
    with pytest.raises(InputError, match="unknown source kind 'xml'"):
        list(sources.read_source(SourceSpec("xml", "f.xml", None)))


# Aligned files.


@pytest.mark.parametrize("gz", [False, True])
def test_aligned_pair(tmp_path, gz):
    prefix = tmp_path / "train"
    en = _write(tmp_path / "train.en", "\ufeffHello.\r\nTwo words\n\nlast".encode(), gz=gz)
    _write(tmp_path / "train.de", "Hallo.\nZwei Wörter\n\nletzte\n".encode(), gz=not gz)
    specs = _resolve(str(prefix))
    assert [(s.kind, s.path, s.split) for s in specs] == [("aligned", str(prefix), None)]
    items = _read(specs)
    assert items == [
        RawRecord(f"{en}:1", ("Hello.", "Hallo."), None, None),
        RawRecord(f"{en}:2", ("Two words", "Zwei Wörter"), None, None),
        RawRecord(f"{en}:3", ("", ""), None, None),
        RawRecord(f"{en}:4", ("last", "letzte"), None, None),
    ]


def test_aligned_languages_follow_the_flags(tmp_path):
    _write(tmp_path / "p.en", b"Yes\n")
    _write(tmp_path / "p.de", b"Ja\n")
    items = _read(_resolve(str(tmp_path / "p"), source_lang="de", target_lang="en"))
    assert _records(items) == [(("Ja", "Yes"), None, None)]
    assert items[0].origin == f"{tmp_path}/p.de:1"


def test_aligned_undecodable_line_is_rejected_alone(tmp_path):
    _write(tmp_path / "p.en", b"one\ntwo\nthree\n")
    de = _write(tmp_path / "p.de", b"eins\nzw\xffei\ndrei\n")
    items = _read(_resolve(str(tmp_path / "p")))
    assert _records(items) == [(("one", "eins"), None, None), (("three", "drei"), None, None)]
    assert items[1] == Reject(
        f"{tmp_path}/p.en:2", "undecodable", f"{de}: not UTF-8 (invalid start byte at byte 2)"
    )


def test_aligned_line_counts_must_match(tmp_path):
    en = _write(tmp_path / "p.en", b"a\nb\nc\n")
    de = _write(tmp_path / "p.de", b"a\nb\n", gz=True)
    assert _error(input=str(tmp_path / "p")) == (
        f"--input: {en} has 3 lines but {de} has 2; aligned files must have the same number of lines"
    )


def test_aligned_errors(tmp_path):
    prefix = str(tmp_path / "p")
    assert _error(input=prefix) == f"--input: no files match {prefix}.en[.gz] and {prefix}.de[.gz]"
    en = _write(tmp_path / "p.en", b"a\n")
    assert _error(input=prefix) == f"--input: found {en} but no {prefix}.de[.gz]"
    _write(tmp_path / "p.de", b"a\n")
    _write(tmp_path / "p.de", b"a\n", gz=True)
    assert _error(input=prefix) == f"--input: both {prefix}.de and {prefix}.de.gz exist; remove one"


def test_given_splits_name_their_flag(tmp_path):
    for name in ("train", "val", "test"):
        _write(tmp_path / f"{name}.en", b"a\n")
        _write(tmp_path / f"{name}.de", b"b\n")
    specs = _resolve(
        str(tmp_path / "train"),
        validation_input=str(tmp_path / "val"),
        test_input=str(tmp_path / "test"),
    )
    assert [s.split for s in specs] == [None, "validation", "test"]
    assert [r.split for r in _read(specs)] == [None, "validation", "test"]
    missing = str(tmp_path / "nope")
    assert _error(input=str(tmp_path / "train"), validation_input=missing).startswith(
        f"--validation_input: no files match {missing}.en[.gz]"
    )
    assert _error(input=str(tmp_path / "train"), test_input=missing).startswith("--test_input: ")


def test_aligned_files_that_change_after_resolving(tmp_path):
    _write(tmp_path / "p.en", b"a\nb\n")
    _write(tmp_path / "p.de", b"a\nb\n")
    [spec] = _resolve(str(tmp_path / "p"))
    de = _write(tmp_path / "p.de", b"a\n")
    with pytest.raises(InputError) as raised:
        _read([spec])
    assert str(raised.value) == (
        f"--input: {de} ended at line 1 before the other file; "
        "aligned files must have the same number of lines"
    )


@pytest.mark.parametrize(
    "data, lines",
    [(b"", 0), (b"a", 1), (b"a\n", 1), (b"\n", 1), (b"a\n\nb", 3), (b"ab\r\ncd\r\n", 2)],
)
def test_count_lines_agrees_with_the_reader(tmp_path, monkeypatch, data, lines):
    monkeypatch.setattr(sources, "_CHUNK", 2)  # lines that straddle reads
    path = _write(tmp_path / "f.txt", data)
    assert sources.count_lines(path) == lines
    assert sources.count_lines(_write(tmp_path / "f.txt", data, gz=True)) == lines
    assert len(list(sources._lines(path))) == lines
    assert b"".join(line + b"\n" for line in sources._lines(path)) == (
        data if data.endswith(b"\n") or not data else data + b"\n"
    )


# TSV.


@pytest.mark.parametrize("name, gz", [("pairs.tsv", False), ("deu.txt", True)])
def test_tsv(tmp_path, name, gz):
    path = _write(
        tmp_path / name, b"Hi.\tHallo!\tCC-BY\nno tab here\nBad\t\xe4\nGo.\tGeh.\r\n", gz=gz
    )
    items = _read(_resolve(path))
    assert items == [
        RawRecord(f"{path}:1", ("Hi.", "Hallo!"), None, None),
        Reject(f"{path}:2", "wrong_columns", "1 column, expected >= 2 (english<TAB>german)"),
        Reject(f"{path}:3", "undecodable", f"{path}: not UTF-8 (unexpected end of data at byte 4)"),
        RawRecord(f"{path}:4", ("Go.", "Geh."), None, None),
    ]


def test_tsv_columns_follow_the_flags(tmp_path):
    path = _write(tmp_path / "p.tsv", b"Yes\tJa\n")
    assert _records(_read(_resolve(path, source_lang="de", target_lang="en"))) == [
        (("Ja", "Yes"), None, None)
    ]
    assert _error(input=path, source_lang="fr") == (
        "--source_lang/--target_lang: fr-de, but TSV and pickle inputs hold English and German "
        "columns (use en and de)"
    )


def test_tsv_glob_and_file_errors(tmp_path):
    a = _write(tmp_path / "a.tsv", b"a\tb\n")
    b = _write(tmp_path / "b.tsv", b"c\td\n", gz=True)
    assert [s.path for s in _resolve(str(tmp_path / "*.tsv*"))] == [a, b]
    assert _error(input=str(tmp_path / "*.csv")) == f"--input: no files match {tmp_path}/*.csv"
    assert _error(input=str(tmp_path / "c.tsv")) == f"--input: no such file {tmp_path}/c.tsv"
    json_file = _write(tmp_path / "d.json", b"{}")
    assert _error(input=json_file).startswith(
        f"--input: unsupported input '{json_file}' for --dataset=ende (expected a PREFIX"
    )


# Pickle.

TEXTBOOK = [["Hi.", "Hallo!", "CC-BY 2.0 #1"], ["Run!", "Lauf!", "CC-BY 2.0 #2"]]


@pytest.mark.parametrize("protocol", [2, 5])
def test_textbook_pickle(tmp_path, protocol):
    path = _write(tmp_path / "english-german-both.pkl", pickle.dumps(np.array(TEXTBOOK), protocol))
    specs = _resolve(path)
    assert [(s.kind, s.split) for s in specs] == [("pickle", None)]
    assert _read(specs) == [
        RawRecord(f"{path}:row 1", ("Hi.", "Hallo!"), None, None),
        RawRecord(f"{path}:row 2", ("Run!", "Lauf!"), None, None),
    ]


def test_pickle_cells_that_are_not_text(tmp_path):
    array = np.array([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]], dtype=object)
    array[1, 1], array[2, 0], array[3, 1] = 7, b"\xff", b"ok"
    path = _write(tmp_path / "p.pkl", pickle.dumps(array, protocol=4))
    assert _read(_resolve(path)) == [
        RawRecord(f"{path}:row 1", ("a", "b"), None, None),
        Reject(f"{path}:row 2", "wrong_columns", "column 1 is int, expected text"),
        Reject(
            f"{path}:row 3", "undecodable", "column 0: not UTF-8 (invalid start byte at byte 0)"
        ),
        RawRecord(f"{path}:row 4", ("g", "ok"), None, None),
    ]


class _ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    top = _write(tmp_path / "top.pkl", pickle.dumps(_ShellPayload(marker)))
    expected = "refusing to unpickle 'posix.system' (only NumPy arrays are allowed)"
    assert _error(input=top) == f"--input: {top}: {expected}"
    nested_array = np.array(TEXTBOOK, dtype=object)
    nested_array[1, 0] = _ShellPayload(marker)
    nested = _write(tmp_path / "nested.pkl", pickle.dumps(nested_array, protocol=5))
    assert _error(input=nested) == f"--input: {nested}: {expected}"
    with pytest.raises(InputError, match="refusing to unpickle 'posix.system'"):
        list(sources.read_source(SourceSpec("pickle", nested, None, (("flag", "--input"),))))
    assert not marker.exists()


def test_pickles_that_are_not_pair_arrays(tmp_path):
    flat = _write(tmp_path / "flat.pkl", pickle.dumps(np.array(["a", "b"])))
    assert _error(input=flat) == (
        f"--input: {flat}: array of shape (2,), expected (N, >=2) with columns [english, german, ...]"
    )
    narrow = _write(tmp_path / "narrow.pkl", pickle.dumps(np.array([["a"], ["b"]])))
    assert "array of shape (2, 1), expected (N, >=2)" in _error(input=narrow)
    numbers = _write(tmp_path / "numbers.pkl", pickle.dumps(np.zeros((2, 2))))
    assert _error(input=numbers) == f"--input: {numbers}: array of float64, expected strings"
    listed = _write(tmp_path / "list.pkl", pickle.dumps(TEXTBOOK))
    assert _error(input=listed) == (
        f"--input: {listed}: not a pickled NumPy array (holds a list, not a NumPy array)"
    )


# TFDS.


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> Path:
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    pairs = tfds.features.FeaturesDict({"de": tfds.features.Text(), "en": tfds.features.Text()})
    testdata.write_tfds_dataset(
        data_dir / "tiny_pairs" / "de-en" / "1.0.0",
        pairs,
        {
            "train": [{"de": "Hallo", "en": "Hello"}, {"de": b"\xff", "en": "Bad"}],
            "validation": [{"de": "Ja", "en": "Yes"}],
        },
    )
    reviews = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
    )
    testdata.write_tfds_dataset(
        data_dir / "imdb_reviews" / "plain_text" / "1.0.0",
        reviews,
        {
            "train": [{"text": "great", "label": 1}, {"text": "odd", "label": -1}],
            "test": [{"text": "awful", "label": 0}],
            "unsupervised": [{"text": "meh", "label": -1}],
        },
    )
    return data_dir


def test_tfds_pairs(tfds_dir):
    specs = _resolve("tfds:tiny_pairs/de-en", tfds_data_dir=str(tfds_dir))
    assert [(s.kind, s.split, s.option("tfds_split")) for s in specs] == [
        ("tfds", None, "train"),
        ("tfds", "validation", "validation"),
    ]
    origin = "tfds:tiny_pairs/de-en"
    assert _read(specs) == [
        RawRecord(f"{origin}:train row 1", ("Hello", "Hallo"), None, None),
        Reject(
            f"{origin}:train row 2", "undecodable", "text: not UTF-8 (invalid start byte at byte 0)"
        ),
        RawRecord(f"{origin}:validation row 1", ("Yes", "Ja"), None, "validation"),
    ]
    swapped = _resolve(
        "tfds:tiny_pairs", tfds_data_dir=str(tfds_dir), source_lang="de", target_lang="en"
    )
    assert _records(_read(swapped))[0] == (("Hallo", "Hello"), None, None)


def test_tfds_reviews(tfds_dir):
    specs = _resolve("tfds:imdb_reviews", dataset="imdb", tfds_data_dir=str(tfds_dir))
    assert [(s.split, s.option("tfds_split")) for s in specs] == [("test", "test"), (None, "train")]
    items = _read(specs)
    assert _records(items) == [(("awful",), 0, "test"), (("great",), 1, None)]
    assert _rejects(items) == [("tfds:imdb_reviews:train row 2", "invalid_label")]


def test_tfds_errors(tfds_dir, tmp_path):
    assert _error(input="tfds:tiny_pairs") == (
        "--tfds_data_dir: required with --input=tfds:tiny_pairs "
        "(the directory the dataset was prepared in; nothing is downloaded)"
    )
    assert _error(input="tfds:wmt14", tfds_data_dir=str(tmp_path)) == (
        f"--input: tfds:wmt14 is not prepared in --tfds_data_dir={tmp_path} "
        f"(no {tmp_path}/wmt14/<version>/dataset_info.json)"
    )
    assert _error(input="tfds:tiny_pairs", tfds_data_dir=str(tfds_dir), source_lang="fr") == (
        "--input: tfds:tiny_pairs has features ['de', 'en'], not fr"
    )
    assert _error(
        input="tfds:tiny_pairs", validation_input="tfds:tiny_pairs", tfds_data_dir=str(tfds_dir)
    ) == (
        "--validation_input: tfds: datasets are read from --input only, "
        "with their own validation and test splits"
    )


def test_tfds_unloadable_directory(tfds_dir, tmp_path):
    broken = tmp_path / "tiny_pairs" / "de-en" / "1.0.0"
    shutil.copytree(tfds_dir / "tiny_pairs" / "de-en" / "1.0.0", broken)
    (broken / "dataset_info.json").write_text("{not json")
    assert _error(input="tfds:tiny_pairs/de-en", tfds_data_dir=str(tmp_path)).startswith(
        f"--input: cannot load tfds:tiny_pairs/de-en from {broken}: "
    )


def test_tfds_picks_config_and_newest_version(tfds_dir, tmp_path):
    prepared = tfds_dir / "tiny_pairs" / "de-en" / "1.0.0"
    for version in ("1.9.0", "1.10.0"):
        shutil.copytree(prepared, tmp_path / "tiny_pairs" / "de-en" / version)
    (tmp_path / "tiny_pairs" / "de-en" / "incomplete.X_2.0.0").mkdir()
    [train, _] = _resolve("tfds:tiny_pairs", tfds_data_dir=str(tmp_path))
    assert train.option("tfds_dir") == f"{tmp_path}/tiny_pairs/de-en/1.10.0"
    shutil.copytree(prepared, tmp_path / "tiny_pairs" / "en-de" / "1.0.0")
    assert _error(input="tfds:tiny_pairs", tfds_data_dir=str(tmp_path)) == (
        f"--input: tfds:tiny_pairs has configs de-en, en-de in {tmp_path}; "
        "name one as tfds:tiny_pairs/CONFIG"
    )


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
    return {name: _write(root / "aclImdb" / name, data) for name, data in files.items()}


def test_aclimdb_directory(tmp_path):
    paths = _write_aclimdb(tmp_path)
    specs = _resolve(str(tmp_path), dataset="imdb")
    assert specs == _resolve(f"{tmp_path}/aclImdb/", dataset="imdb")
    assert [(s.kind, s.path, s.split) for s in specs] == [
        ("aclimdb_dir", f"{tmp_path}/aclImdb/train", None),
        ("aclimdb_dir", f"{tmp_path}/aclImdb/test", "test"),
    ]
    assert _read(specs) == [
        RawRecord(paths["train/neg/1_2.txt"], ("Dull.",), 0, None),
        Reject(
            paths["train/neg/2_1.txt"],
            "undecodable",
            f"{paths['train/neg/2_1.txt']}: not UTF-8 (invalid start byte at byte 4)",
        ),
        RawRecord(paths["train/pos/0_9.txt"], ("A great film.<br />Loved it.",), 1, None),
        RawRecord(paths["test/pos/4_8.txt"], ("Schön.",), 1, "test"),
    ]
    [train, test] = _resolve(str(tmp_path), dataset="imdb", test_input=str(tmp_path))[2:]
    assert (train.split, test.split) == ("test", "test")


def test_aclimdb_directory_errors(tmp_path):
    assert _error(input=str(tmp_path / "nope"), dataset="imdb") == (
        f"--input: no such file or directory {tmp_path}/nope"
    )
    (tmp_path / "empty" / "aclImdb" / "train" / "unsup").mkdir(parents=True)
    assert _error(input=str(tmp_path / "empty"), dataset="imdb") == (
        f"--input: {tmp_path}/empty has no aclImdb reviews "
        "(expected train/{pos,neg}/*.txt or test/{pos,neg}/*.txt in it or in its aclImdb/)"
    )
    json_file = _write(tmp_path / "reviews.json", b"[]")
    assert _error(input=json_file, dataset="imdb") == (
        f"--input: unsupported input '{json_file}' for --dataset=imdb (expected an aclImdb "
        "directory, its .tar.gz/.tgz, a .csv or tfds:imdb_reviews)"
    )


# aclImdb archive.


def _tar_bytes(members: list[tuple[str, bytes | str]]) -> bytes:
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


@pytest.mark.parametrize("name", ["aclImdb_v1.tar.gz", "reviews.tgz"])
def test_aclimdb_archive(tmp_path, name):
    path = _write(
        tmp_path / name,
        _tar_bytes(
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
    specs = _resolve(path, dataset="imdb")
    assert [(s.kind, s.split) for s in specs] == [("aclimdb_tar", None)]
    items = _read(specs)
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
    given = _resolve(str(tmp_path / "*.t*z"), dataset="imdb", test_input=path)[-1]
    assert {r.split for r in _read([given]) if isinstance(r, RawRecord)} == {"test"}


def test_corrupt_archive_stops_with_a_reject(tmp_path):
    rng = random.Random(0)
    members = [
        (f"aclImdb/train/pos/{i}_9.txt", "".join(rng.choices("abcdefgh ", k=4000)).encode())
        for i in range(20)
    ]
    data = _tar_bytes(members)
    path = _write(tmp_path / "cut.tar.gz", data[: len(data) // 2])
    items = _read(_resolve(path, dataset="imdb"))
    records, last = items[:-1], items[-1]
    assert 3 <= len(records) < 20
    assert all(isinstance(r, RawRecord) for r in records)
    assert last.reason == "unreadable_member"
    assert last.origin.startswith(f"{path}:aclImdb/train/pos/")
    assert last.detail.startswith("archive corrupt after this member, rest not read: ")


def test_archive_errors(tmp_path):
    not_gzip = _write(tmp_path / "plain.tar.gz", b"just text")
    assert _error(input=not_gzip, dataset="imdb").startswith(
        f"--input: {not_gzip} is not a readable .tar.gz archive (archive corrupt"
    )
    empty = _write(tmp_path / "empty.tgz", _tar_bytes([("aclImdb/README", b"x")]))
    assert _error(input=empty, dataset="imdb") == (
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
    path = _write(tmp_path / "imdb.csv", rows, gz=gz)
    items = _read(_resolve(path, dataset="imdb"))
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
    path = _write(tmp_path / "big.csv", b"review,sentiment\n" + huge + b",positive\nok,negative\n")
    assert _read(_resolve(path, dataset="imdb")) == [
        Reject(
            f"{path}:row 2",
            "wrong_columns",
            "malformed CSV: field larger than field limit (131072)",
        ),
        RawRecord(f"{path}:row 3", ("ok",), 0, None),
    ]


def test_csv_header_errors(tmp_path):
    path = _write(tmp_path / "a.csv", b"text,label\nx,1\n")
    assert _error(input=path, dataset="imdb") == (
        f"--input: {path}: the header has no 'review' column (found: text, label)"
    )
    empty = _write(tmp_path / "b.csv", b"")
    assert _error(input=empty, dataset="imdb") == (
        f"--input: {empty} is empty (expected a header with review and sentiment)"
    )
    assert _error(input=str(tmp_path / "c.csv"), dataset="imdb") == (
        f"--input: no such file {tmp_path}/c.csv"
    )


# gs:// through a local emulator.


def test_gcs_paths(gcs_emulator, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_emulator)
    base = f"gs://{gcs_emulator}/sources_test"
    uploads = {
        "train.en.gz": gzip.compress(b"Hello\nBye\n"),
        "train.de": b"Hallo\nTsch\xc3\xbcss\n",
        "pairs.tsv": b"Yes\tJa\n",
        "imdb.csv": b"review,sentiment\nGood,pos\n",
        "imdb.tar.gz": _tar_bytes([("aclImdb/train/neg/0_1.txt", b"Meh.")]),
        "dir/aclImdb/test/pos/0_9.txt": b"Wow.",
    }
    for name, data in uploads.items():
        bucket.blob(f"sources_test/{name}").upload_from_string(data)

    aligned = _resolve(f"{base}/train")
    assert aligned[0].option("source_path") == f"{base}/train.en.gz"
    assert _records(_read(aligned)) == [
        (("Hello", "Hallo"), None, None),
        (("Bye", "Tschüss"), None, None),
    ]
    assert _records(_read(_resolve(f"{base}/pairs.tsv"))) == [(("Yes", "Ja"), None, None)]
    imdb = _resolve(f"{base}/imdb.csv", dataset="imdb", validation_input=f"{base}/imdb.tar.gz")
    imdb += _resolve(f"{base}/dir", dataset="imdb")
    assert _records(_read(imdb)) == [
        (("Good",), 1, None),
        (("Meh.",), 0, "validation"),
        (("Wow.",), 1, "test"),
    ]
    assert _error(input=f"{base}/nope") == (
        f"--input: no files match {base}/nope.en[.gz] and {base}/nope.de[.gz]"
    )
    assert _error(input=f"{base}/nope", dataset="imdb") == (
        f"--input: no such file or directory {base}/nope"
    )


# The real data, where this machine has it.


@pytest.mark.skipif(not (REAL_DATA / "multi30k").exists(), reason="no /work/shared/data")
def test_real_multi30k():
    [spec] = _resolve(str(REAL_DATA / "multi30k" / "val"))
    assert sources.count_lines(spec.option("source_path")) == 1014
    items = _read([spec])
    assert len(items) == 1014 and all(isinstance(r, RawRecord) for r in items)


@pytest.mark.skipif(not (REAL_DATA / "imdb").exists(), reason="no /work/shared/data")
def test_real_aclimdb_archive_first_reviews():
    [spec] = _resolve(str(REAL_DATA / "imdb" / "aclImdb_train.tar.gz"), dataset="imdb")
    reader = sources.read_source(spec)
    first = [next(reader) for _ in range(5)]
    reader.close()
    assert all(isinstance(r, RawRecord) and r.label in (0, 1) and r.split is None for r in first)
