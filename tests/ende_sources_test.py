"""Tests for pipeline/ende_sources.py through pipeline/sources.py: aligned PREFIX files, TSV and
the pickled array; their records, reject reasons and fatal messages."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from pipeline import source_files, sources
from pipeline.sources import InputError, RawRecord, Reject, SourceSpec
from tests.sources_testing import REAL_DATA, error, read, records, resolve, write

# Aligned files.


@pytest.mark.parametrize("gz", [False, True])
def test_aligned_pair(tmp_path, gz):
    prefix = tmp_path / "train"
    en = write(tmp_path / "train.en", "\ufeffHello.\r\nTwo words\n\nlast".encode(), gz=gz)
    write(tmp_path / "train.de", "Hallo.\nZwei Wörter\n\nletzte\n".encode(), gz=not gz)
    specs = resolve(str(prefix))
    assert [(s.kind, s.path, s.split) for s in specs] == [("aligned", str(prefix), None)]
    items = read(specs)
    assert items == [
        RawRecord(f"{en}:1", ("Hello.", "Hallo."), None, None),
        RawRecord(f"{en}:2", ("Two words", "Zwei Wörter"), None, None),
        RawRecord(f"{en}:3", ("", ""), None, None),
        RawRecord(f"{en}:4", ("last", "letzte"), None, None),
    ]


def test_aligned_languages_follow_the_flags(tmp_path):
    write(tmp_path / "p.en", b"Yes\n")
    write(tmp_path / "p.de", b"Ja\n")
    items = read(resolve(str(tmp_path / "p"), source_lang="de", target_lang="en"))
    assert records(items) == [(("Ja", "Yes"), None, None)]
    assert items[0].origin == f"{tmp_path}/p.de:1"


def test_aligned_undecodable_line_is_rejected_alone(tmp_path):
    write(tmp_path / "p.en", b"one\ntwo\nthree\n")
    de = write(tmp_path / "p.de", b"eins\nzw\xffei\ndrei\n")
    items = read(resolve(str(tmp_path / "p")))
    assert records(items) == [(("one", "eins"), None, None), (("three", "drei"), None, None)]
    assert items[1] == Reject(
        f"{tmp_path}/p.en:2", "undecodable", f"{de}: not UTF-8 (invalid start byte at byte 2)"
    )


def test_aligned_line_counts_must_match(tmp_path):
    en = write(tmp_path / "p.en", b"a\nb\nc\n")
    de = write(tmp_path / "p.de", b"a\nb\n", gz=True)
    assert error(input=str(tmp_path / "p")) == (
        f"--input: {en} has 3 lines but {de} has 2; aligned files must have the same number of lines"
    )


def test_aligned_errors(tmp_path):
    prefix = str(tmp_path / "p")
    assert error(input=prefix) == f"--input: no files match {prefix}.en[.gz] and {prefix}.de[.gz]"
    en = write(tmp_path / "p.en", b"a\n")
    assert error(input=prefix) == f"--input: found {en} but no {prefix}.de[.gz]"
    write(tmp_path / "p.de", b"a\n")
    write(tmp_path / "p.de", b"a\n", gz=True)
    assert error(input=prefix) == f"--input: both {prefix}.de and {prefix}.de.gz exist; remove one"


def test_aligned_files_that_change_after_resolving(tmp_path):
    write(tmp_path / "p.en", b"a\nb\n")
    write(tmp_path / "p.de", b"a\nb\n")
    [spec] = resolve(str(tmp_path / "p"))
    de = write(tmp_path / "p.de", b"a\n")
    with pytest.raises(InputError) as raised:
        read([spec])
    assert str(raised.value) == (
        f"--input: {de} ended at line 1 before the other file; "
        "aligned files must have the same number of lines"
    )


# TSV.


@pytest.mark.parametrize("name, gz", [("pairs.tsv", False), ("deu.txt", True)])
def test_tsv(tmp_path, name, gz):
    path = write(
        tmp_path / name, b"Hi.\tHallo!\tCC-BY\nno tab here\nBad\t\xe4\nGo.\tGeh.\r\n", gz=gz
    )
    items = read(resolve(path))
    assert items == [
        RawRecord(f"{path}:1", ("Hi.", "Hallo!"), None, None),
        Reject(f"{path}:2", "wrong_columns", "1 column, expected >= 2 (english<TAB>german)"),
        Reject(f"{path}:3", "undecodable", f"{path}: not UTF-8 (unexpected end of data at byte 4)"),
        RawRecord(f"{path}:4", ("Go.", "Geh."), None, None),
    ]


def test_tsv_columns_follow_the_flags(tmp_path):
    path = write(tmp_path / "p.tsv", b"Yes\tJa\n")
    assert records(read(resolve(path, source_lang="de", target_lang="en"))) == [
        (("Ja", "Yes"), None, None)
    ]
    assert error(input=path, source_lang="fr") == (
        "--source_lang/--target_lang: fr-de, but TSV and pickle inputs hold English and German "
        "columns (use en and de)"
    )


def test_tsv_glob_and_file_errors(tmp_path):
    a = write(tmp_path / "a.tsv", b"a\tb\n")
    b = write(tmp_path / "b.tsv", b"c\td\n", gz=True)
    assert [s.path for s in resolve(str(tmp_path / "*.tsv*"))] == [a, b]
    assert error(input=str(tmp_path / "*.csv")) == f"--input: no files match {tmp_path}/*.csv"
    assert error(input=str(tmp_path / "c.tsv")) == f"--input: no such file {tmp_path}/c.tsv"
    json_file = write(tmp_path / "d.json", b"{}")
    assert error(input=json_file).startswith(
        f"--input: unsupported input '{json_file}' for --dataset=ende (expected a PREFIX"
    )


# Pickle.

TEXTBOOK = [["Hi.", "Hallo!", "CC-BY 2.0 #1"], ["Run!", "Lauf!", "CC-BY 2.0 #2"]]


@pytest.mark.parametrize("protocol", [2, 5])
def test_textbook_pickle(tmp_path, protocol):
    path = write(tmp_path / "english-german-both.pkl", pickle.dumps(np.array(TEXTBOOK), protocol))
    specs = resolve(path)
    assert [(s.kind, s.split) for s in specs] == [("pickle", None)]
    assert read(specs) == [
        RawRecord(f"{path}:row 1", ("Hi.", "Hallo!"), None, None),
        RawRecord(f"{path}:row 2", ("Run!", "Lauf!"), None, None),
    ]


def test_pickle_cells_that_are_not_text(tmp_path):
    array = np.array([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]], dtype=object)
    array[1, 1], array[2, 0], array[3, 1] = 7, b"\xff", b"ok"
    path = write(tmp_path / "p.pkl", pickle.dumps(array, protocol=4))
    assert read(resolve(path)) == [
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
    top = write(tmp_path / "top.pkl", pickle.dumps(_ShellPayload(marker)))
    expected = "refusing to unpickle 'posix.system' (only NumPy arrays are allowed)"
    assert error(input=top) == f"--input: {top}: {expected}"
    nested_array = np.array(TEXTBOOK, dtype=object)
    nested_array[1, 0] = _ShellPayload(marker)
    nested = write(tmp_path / "nested.pkl", pickle.dumps(nested_array, protocol=5))
    assert error(input=nested) == f"--input: {nested}: {expected}"
    with pytest.raises(InputError, match="refusing to unpickle 'posix.system'"):
        list(sources.read_source(SourceSpec("pickle", nested, None, (("flag", "--input"),))))
    assert not marker.exists()


def test_pickles_that_are_not_pair_arrays(tmp_path):
    flat = write(tmp_path / "flat.pkl", pickle.dumps(np.array(["a", "b"])))
    assert error(input=flat) == (
        f"--input: {flat}: array of shape (2,), expected (N, >=2) with columns [english, german, ...]"
    )
    narrow = write(tmp_path / "narrow.pkl", pickle.dumps(np.array([["a"], ["b"]])))
    assert "array of shape (2, 1), expected (N, >=2)" in error(input=narrow)
    numbers = write(tmp_path / "numbers.pkl", pickle.dumps(np.zeros((2, 2))))
    assert error(input=numbers) == f"--input: {numbers}: array of float64, expected strings"
    listed = write(tmp_path / "list.pkl", pickle.dumps(TEXTBOOK))
    assert error(input=listed) == (
        f"--input: {listed}: not a pickled NumPy array (holds a list, not a NumPy array)"
    )


# The real data, where this machine has it.


@pytest.mark.skipif(not (REAL_DATA / "multi30k").exists(), reason="no /work/shared/data")
def test_real_multi30k():
    [spec] = resolve(str(REAL_DATA / "multi30k" / "val"))
    assert source_files.count_lines(spec.option("source_path")) == 1014
    items = read([spec])
    assert len(items) == 1014 and all(isinstance(r, RawRecord) for r in items)
