"""Tests for pipeline/sources.py: the flag checks, the reject-reason contract, the dispatch to
each reader, given splits, and every format over gs://. Each format's own records, rejects and
messages are tested in tests/ende_sources_test.py, imdb_sources_test.py and tfds_sources_test.py.
"""

from __future__ import annotations

import gzip

import pytest

from pipeline import source_records, sources
from pipeline.sources import InputError, SourceSpec
from tests.sources_testing import error, read, records, resolve, tar_bytes, write

# Flags.


def test_unknown_dataset():
    assert error(input="x", dataset="wmt") == (
        "--dataset: unknown dataset 'wmt' (expected ende or imdb)"
    )


def test_missing_input_and_equal_languages():
    assert error(input="") == "--input: required"
    assert error(input="x", target_lang="en") == "--target_lang: same as --source_lang ('en')"


def test_reject_reasons_are_the_contract():
    assert source_records.REJECT_REASONS == (
        "undecodable",
        "wrong_columns",
        "missing_label",
        "invalid_label",
        "unreadable_member",
        "oversized",
    )


def test_unknown_kind_is_refused():
    with pytest.raises(InputError, match="unknown source kind 'xml'"):
        list(sources.read_source(SourceSpec("xml", "f.xml", None)))


def test_given_splits_name_their_flag(tmp_path):
    for name in ("train", "val", "test"):
        write(tmp_path / f"{name}.en", b"a\n")
        write(tmp_path / f"{name}.de", b"b\n")
    specs = resolve(
        str(tmp_path / "train"),
        validation_input=str(tmp_path / "val"),
        test_input=str(tmp_path / "test"),
    )
    assert [s.split for s in specs] == [None, "validation", "test"]
    assert [r.split for r in read(specs)] == [None, "validation", "test"]
    missing = str(tmp_path / "nope")
    assert error(input=str(tmp_path / "train"), validation_input=missing).startswith(
        f"--validation_input: no files match {missing}.en[.gz]"
    )
    assert error(input=str(tmp_path / "train"), test_input=missing).startswith("--test_input: ")


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
        "imdb.tar.gz": tar_bytes([("aclImdb/train/neg/0_1.txt", b"Meh.")]),
        "dir/aclImdb/test/pos/0_9.txt": b"Wow.",
    }
    for name, data in uploads.items():
        bucket.blob(f"sources_test/{name}").upload_from_string(data)

    aligned = resolve(f"{base}/train")
    assert aligned[0].option("source_path") == f"{base}/train.en.gz"
    assert records(read(aligned)) == [
        (("Hello", "Hallo"), None, None),
        (("Bye", "Tschüss"), None, None),
    ]
    assert records(read(resolve(f"{base}/pairs.tsv"))) == [(("Yes", "Ja"), None, None)]
    imdb = resolve(f"{base}/imdb.csv", dataset="imdb", validation_input=f"{base}/imdb.tar.gz")
    imdb += resolve(f"{base}/dir", dataset="imdb")
    assert records(read(imdb)) == [
        (("Good",), 1, None),
        (("Meh.",), 0, "validation"),
        (("Wow.",), 1, "test"),
    ]
    assert error(input=f"{base}/nope") == (
        f"--input: no files match {base}/nope.en[.gz] and {base}/nope.de[.gz]"
    )
    assert error(input=f"{base}/nope", dataset="imdb") == (
        f"--input: no such file or directory {base}/nope"
    )
