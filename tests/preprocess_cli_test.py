"""The preprocessing command as users run it: every fatal error is one line, exit 2, no metadata.json."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import testdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    prefix = testdata.write_aligned(str(d), "train", testdata.PAIRS)
    uneven = testdata.write_aligned(str(d), "uneven", testdata.PAIRS)
    with open(f"{uneven}.de", "a", encoding="utf-8") as f:
        f.write("Eine Zeile zu viel.\n")
    (d / "garbage.model").write_bytes(b"this is not a sentencepiece model")
    full = d / "full"
    full.mkdir()
    (full / "train-00000-of-00001.tfrecord.gz").write_bytes(b"")
    return {
        "prefix": prefix,
        "uneven": uneven,
        "garbage": str(d / "garbage.model"),
        "full": str(full),
        "dir": str(d),
    }


CASES = [
    (
        ["--dataset=fr", "--output_dir={out}"],
        "flag --dataset=fr: value should be one of <ende|imdb>",
    ),
    (["--dataset=ende"], "--output_dir is required"),
    (
        ["--dataset=ende", "--input={dir}/missing/train", "--output_dir={out}"],
        "--input: no files match",
    ),
    (
        ["--dataset=ende", "--input={uneven}", "--output_dir={out}"],
        "aligned files must have the same number of lines",
    ),
    (
        ["--dataset=ende", "--input={prefix}", "--tokenizer={garbage}", "--output_dir={out}"],
        "--tokenizer: ",
    ),
    (
        ["--dataset=ende", "--input={prefix}", "--output_dir={full}"],
        "is not empty; pass --overwrite",
    ),
    (
        ["--dataset=ende", "--input={prefix}", "--max_token=5", "--output_dir={out}"],
        "unknown flag --max_token",
    ),
    (
        ["--dataset=ende", "--vocab_size=10", "--output_dir={out}"],
        "--vocab_size must be at least 320",
    ),
    (
        ["--dataset=ende", "--tokenizer_threads=0", "--output_dir={out}"],
        "--tokenizer_threads must be in [1, 1024]",
    ),
    (
        [
            "--dataset=ende",
            "--validation_fraction=0.7",
            "--test_fraction=0.5",
            "--output_dir={out}",
        ],
        "--validation_fraction + --test_fraction must be below 1",
    ),
    (
        [
            "--dataset=ende",
            "--runner=DataflowRunner",
            "--project=p",
            "--region=r",
            "--output_dir={out}",
        ],
        "--temp_location is required with --runner=DataflowRunner",
    ),
    (["--dataset=imdb", "--input={prefix}.en", "--output_dir={out}"], "--input: "),
]


def test_fatal_errors_are_one_line_and_leave_no_metadata(inputs, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    runs = []
    for i, (args, expected) in enumerate(CASES):
        out = str(tmp_path / f"out{i}")
        argv = [a.format(out=out, **inputs) for a in args]
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.preprocess", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        runs.append((argv, expected, out, process))
    for argv, expected, out, process in runs:
        stdout, stderr = process.communicate(timeout=300)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert process.returncode == 2, (argv, stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("preprocess: error: "), (
            argv,
            stderr[-2000:],
        )
        assert expected in lines[0], (argv, lines[0])
        assert not os.path.exists(os.path.join(out, "metadata.json"))
