"""Fuzzing every reader with random and mutated bytes (hypothesis): no traceback, every unit
counted, counts reconciled. The properties live in tests/fuzz_inputs.py; scripts/fuzz_readers.py
runs them at full size. A few whole-job runs check the same at the command line.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import source_files, source_records
from tests import fuzz_inputs as fz
from tests import tiny_models

# CI size: a few seconds per property; scripts/fuzz_readers.py sets FUZZ_EXAMPLES to thousands.
CI = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
ROOT = tiny_models.ROOT


@CI
@given(data=st.one_of(fz.random_bytes(), fz.mutated(fz.seed_tsv())), gz=st.booleans())
def test_tsv(data, gz):
    fz.check_tsv(fz.maybe_gzip(data, gz), gz=gz)


@CI
@given(data=st.one_of(fz.random_bytes(), fz.mutated(fz.maybe_gzip(fz.seed_tsv(), True))))
def test_corrupt_gzip_is_one_line(data):
    outcome = fz.check_tsv(data, gz=True)
    if outcome.fatal is not None:
        assert "pairs.tsv.gz" in outcome.fatal


@CI
@given(
    source=st.one_of(fz.random_bytes(200), fz.mutated(b"A dog.\nA cat.\n")),
    target=st.one_of(fz.random_bytes(200), fz.mutated(b"Ein Hund.\nEine Katze.\n")),
    gz=st.booleans(),
)
def test_aligned(source, target, gz):
    fz.check_aligned(fz.maybe_gzip(source, gz), fz.maybe_gzip(target, gz), gz=gz)


@CI
@given(
    data=st.one_of(
        fz.random_bytes(),
        st.integers(0, 5).flatmap(lambda protocol: fz.mutated(fz.seed_pickle(protocol))),
    )
)
def test_pickle(data):
    fz.check_pickle(data)


@CI
@given(data=st.one_of(fz.random_bytes(), fz.mutated(fz.seed_csv())), gz=st.booleans())
def test_csv(data, gz):
    fz.check_csv(fz.maybe_gzip(data, gz), gz=gz)


@CI
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.text(max_size=30),
                st.sampled_from(["positive", "NEG", " 1 ", "", "maybe", "0"]),
            ),
            max_size=3,
        ),
        max_size=8,
    )
)
def test_csv_rows_reconcile_exactly(rows):
    fz.check_csv_rows(rows)


@CI
@given(files=st.lists(st.one_of(fz.random_bytes(100), st.text().map(str.encode)), max_size=6))
def test_aclimdb_directory(files):
    fz.check_aclimdb_dir(files)


@CI
@given(data=st.one_of(fz.random_bytes(), fz.mutated(fz.seed_archive(), max_operations=3)))
def test_archive_bytes(data):
    fz.check_archive_bytes(data)


_NAME_PART = st.sampled_from(["aclImdb", "train", "test", "pos", "neg", "unsup", "..", "", "x"])
_LEAF = st.sampled_from(["1_7.txt", "..", "README", "2_3.txt"])
_MEMBER_NAME = st.one_of(
    st.builds(  # near-reviews: a real layout, sometimes escaping with '..' or '/'
        lambda prefix, leaf: prefix + leaf,
        st.sampled_from(
            ["aclImdb/train/pos/", "aclImdb/test/neg/", "train/neg/", "../train/pos/"]
            + ["/train/pos/", "aclImdb/train/pos/../../", "aclImdb/unsup/"]
        ),
        _LEAF,
    ),
    st.builds(  # anything made of the layout's words
        lambda absolute, parts, leaf: ("/" if absolute else "") + "/".join([*parts, leaf]),
        st.booleans(),
        st.lists(_NAME_PART, max_size=4),
        _LEAF,
    ),
)


@CI
@given(
    members=st.lists(
        st.builds(
            fz.Member,
            name=_MEMBER_NAME,
            kind=st.sampled_from(["file", "file", "symlink", "hardlink", "dir"]),
            data=fz.random_bytes(50),
        ),
        max_size=8,
    )
)
def test_archive_members_traversal_and_links_are_counted(members):
    fz.check_archive_members(members)


@CI
@given(data=st.one_of(fz.random_bytes(), fz.mutated(fz.seed_tsv())), gz=st.booleans())
def test_inference_readers_agree(data, gz):
    fz.check_inference_lines(fz.maybe_gzip(data, gz), gz=gz)


@CI
@given(data=fz.mutated(gzip.compress(b"A dog.\nA cat.\n" * 20, mtime=0)))
def test_inference_readers_refuse_corrupt_gzip_in_one_line(data):
    fz.check_inference_lines(data, gz=True)


def test_oversized_lines_are_rejected_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(source_records, "MAX_TEXT_BYTES", 100)
    monkeypatch.setattr(source_files, "_CHUNK", 7)  # a long line spans many reads
    long_line = b"x" * 101
    tsv = fz.check_tsv(b"a\tb\n" + long_line + b"\tc\n" + b"d\te\n" + long_line)
    assert (tsv.records, dict(tsv.rejects)) == (2, {source_records.OVERSIZED: 2})
    aligned = fz.check_aligned(b"a\n" + long_line + b"\nb\n", b"x\ny\nz\n")
    assert (aligned.records, dict(aligned.rejects)) == (2, {source_records.OVERSIZED: 1})
    csv_data = b'review,sentiment\nok,positive\n"' + long_line + b'",negative\nfine,neg\n'
    reviews = fz.check_csv(csv_data)
    assert (reviews.records, dict(reviews.rejects)) == (2, {source_records.OVERSIZED: 1})
    archive = fz.check_archive_members(
        [
            fz.Member("aclImdb/train/pos/1_9.txt", "file", long_line),
            fz.Member("a/test/neg/2_1.txt", "file", b"ok"),
        ]
    )
    assert (archive.records, dict(archive.rejects)) == (1, {source_records.OVERSIZED: 1})
    directory = fz.check_aclimdb_dir([long_line, b"fine"])
    assert (directory.records, dict(directory.rejects)) == (1, {source_records.OVERSIZED: 1})


# ----------------------------------------------------------------------------- whole jobs


def _run(module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tiny_models.subprocess_env(),
        cwd=ROOT,
    )


def _assert_one_line_error(program: str, process: subprocess.Popen, err: str) -> str:
    # The inference commands name the checkpoint they loaded before they read the inputs.
    lines = [
        line
        for line in tiny_models.own_stderr_lines(err)
        if not line.startswith("using checkpoint ")
    ]
    assert process.returncode == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), err[-3000:]
    assert "Traceback" not in err
    return lines[0]


def _garbage_tsv(seed: int, lines: int) -> bytes:
    """Good pairs mixed with lines of every kind of damage, deterministically."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(lines):
        kind = rng.randrange(6)
        if kind == 0:
            out.append(
                bytes(rng.randrange(256) for _ in range(rng.randrange(40))).replace(b"\n", b"")
            )
        elif kind == 1:
            out.append(b"no tab here")
        else:
            out.append(f"A dog {i} runs.\tEin Hund {i} rennt.".encode())
    return b"\n".join(out) + b"\n"


def test_preprocess_end_to_end_on_damaged_inputs(tmp_path):
    """The job either finishes with counts that reconcile against the input and the
    dead-letter file, or refuses in one line and leaves no metadata.json."""
    inputs = {
        "mixed": ("pairs.tsv", _garbage_tsv(0, 300), ["--max_reject_fraction=1"]),
        "too_many_rejects": ("pairs.tsv", _garbage_tsv(1, 300), []),
        "nothing_usable": ("pairs.tsv", b"no tab\n\xff\xfe\n", ["--max_reject_fraction=1"]),
        "corrupt_gzip": ("pairs.tsv.gz", gzip.compress(_garbage_tsv(2, 50))[:-30], []),
    }
    runs = {}
    for name, (file_name, data, extra) in inputs.items():
        path = tmp_path / name / file_name
        path.parent.mkdir()
        path.write_bytes(data)
        out = str(tmp_path / name / "out")
        runs[name] = (
            str(path),
            out,
            _run(
                "pipeline.preprocess",
                "--dataset=ende",
                f"--input={path}",
                f"--output_dir={out}",
                "--vocab_size=320",
                "--num_shards=1",
                *extra,
            ),
        )
    for name, (path, out, process) in runs.items():
        _, err = process.communicate(timeout=300)
        if name == "mixed":
            assert process.returncode == 0, err[-3000:]
            metadata = json.loads(open(f"{out}/metadata.json").read())
            rejected_lines = [
                json.loads(line)
                for file in glob.glob(f"{out}/rejected-*.jsonl")
                for line in open(file, encoding="utf-8")
            ]
            rejected = sum(metadata["rejected"].values())
            assert metadata["read"] == source_files.count_lines(path) == 300
            assert metadata["read"] == (
                metadata["written"] + sum(metadata["dropped"].values()) + rejected
            )
            assert len(rejected_lines) == rejected > 0
            by_reason = {}
            for line in rejected_lines:
                by_reason[line["reason"]] = by_reason.get(line["reason"], 0) + 1
            assert by_reason == metadata["rejected"]
        else:
            line = _assert_one_line_error("preprocess", process, err)
            assert not os.path.exists(f"{out}/metadata.json")
            expected = {
                "too_many_rejects": "records were malformed",
                "nothing_usable": "no usable training text",
                "corrupt_gzip": "corrupt compressed data",
            }[name]
            assert expected in line, line


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, ende_data, imdb_data):
    dirs = tiny_models.train_models(
        tmp_path_factory.getbasetemp(), ende_data=ende_data, imdb_data=imdb_data
    )
    return dirs


def test_translate_and_classify_keep_every_line_of_damaged_inputs(model_dirs, tmp_path):
    data = (
        _garbage_tsv(3, 40) + b"\r\n\xef\xbb\xbf\x00\n" + b"\xff" * 30 + b"\nlast line, no newline"
    )
    (tmp_path / "in.txt").write_bytes(data)
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress(data))
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-10])
    expected_lines = data.count(b"\n") + 1
    runs = {
        "translate": _run(
            "trainer.translate",
            f"--model_dir={model_dirs['translation']}",
            f"--input={tmp_path}/in.txt*",
            f"--output={tmp_path}/translated/",
            "--beam_size=1",
            "--max_decode_length=4",
        ),
        "classify": _run(
            "trainer.classify",
            f"--model_dir={model_dirs['classification']}",
            f"--input={tmp_path}/in.txt",
            f"--output={tmp_path}/classified.jsonl",
        ),
        "corrupt": _run(
            "trainer.translate",
            f"--model_dir={model_dirs['translation']}",
            f"--input={tmp_path}/bad.gz",
            f"--output={tmp_path}/bad.out.gz",
        ),
    }
    for name, process in runs.items():
        out, err = process.communicate(timeout=300)
        if name == "corrupt":
            line = _assert_one_line_error("translate", process, err)
            assert f"--input: cannot read {tmp_path}/bad.gz" in line
            continue
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        assert "had bytes that are not UTF-8" in out
    for output in ("translated/in.txt", "classified.jsonl"):
        assert (tmp_path / output).read_bytes().count(b"\n") == expected_lines
    with gzip.open(tmp_path / "translated/in.txt.gz") as f:
        assert f.read().count(b"\n") == expected_lines
    assert not (tmp_path / "bad.out.gz").exists()
