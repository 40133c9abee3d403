"""Tests for the Beam batch inference jobs (pipeline/batch_translate.py, batch_classify.py).

Pure functions (output naming, output formats), the real jobs on the DirectRunner
over real exports of tiny trained models (local files, and gs:// through the GCS
emulator), and the command lines' one-line errors.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the SavedModel's ops)
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import batch_inference, batch_translate, export_contract, text
from pipeline.inference_handler import SavedModelHandler
from tests import tiny_models

# Text with empty, blank, markup-only and non-ASCII lines; a BOM, undecodable bytes, CRLF
# and no final newline; an empty file; a gzipped file.
INPUT_FILES = {
    "a.txt": "A dog runs in the park.\n\nGrüße aus Köln — ﬁne!\n   \n日本語\n<br />\nThe cat sleeps.\n".encode(),
    "b.txt": b"\xef\xbb\xbfbad \xff\xfe bytes here\r\nsecond line\r\n\nlast line without newline",
    "c.txt": b"",
    "d.txt.gz": gzip.compress(b"Ein Hund.\nZwei Katzen.\n"),
}
EXPECTED_LINES = {"a.txt": 7, "b.txt": 4, "c.txt": 0, "d.txt.gz": 2}
REVIEWS = (
    "A wonderful film with great acting.<br /><br />I loved it.\n"
    "\n"
    "Terrible plot and boring characters.\n"
    "Not bad at all, quite enjoyable.\n"
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def models(base, ende_data, imdb_data) -> dict[str, str]:
    return tiny_models.train_models(base, ende_data=ende_data, imdb_data=imdb_data)


@pytest.fixture(scope="module")
def translation_export(models, base) -> str:
    # Greedy: its output for a line does not depend on the other lines in its batch.
    return tiny_models.exported(base, models["translation"], "ende_greedy", beam_size=1)


@pytest.fixture(scope="module")
def classification_export(models, base) -> str:
    return tiny_models.exported(base, models["classification"], "imdb")


def write_inputs(directory) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in INPUT_FILES.items():
        (directory / name).write_bytes(data)
    return str(directory / "*.txt*")


def read_lines(path) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    data = (gzip.decompress(data) if str(path).endswith(".gz") else data).decode("utf-8")
    assert data == "" or data.endswith("\n")
    return data.split("\n")[:-1]


def input_lines(name: str) -> list[str]:
    data = INPUT_FILES[name]
    data = gzip.decompress(data) if name.endswith(".gz") else data
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    return [line.removesuffix("\r") for line in text.split("\n")][: EXPECTED_LINES[name]]


def translate_directly(export_dir: str, lines: list[str]) -> list[str]:
    """What the job should write: the SavedModel called on each line alone."""
    model = tf.saved_model.load(export_dir)
    return [
        batch_translate.format_translation(model.translate(tf.constant([line])).numpy()[0])
        if text.normalize(line)
        else ""
        for line in lines
    ]


def handler_for(export_dir: str, task: str, **batching) -> SavedModelHandler:
    signature = export_contract.SIGNATURE_FOR_TASK[task]
    return SavedModelHandler(
        export_dir,
        signature=signature,
        output_key=export_contract.OUTPUT_KEYS[signature],
        **batching,
    )


def run_translation_job(export_dir: str, outputs: dict[str, str]) -> dict[str, int]:
    return batch_inference.run_job(
        outputs=outputs,
        handler=handler_for(export_dir, "translation", max_batch_size=4),
        format_prediction=batch_translate.format_translation,
        empty_output="",
        options=PipelineOptions([]),
    )


# ---- pure functions -------------------------------------------------------------------------


def test_output_naming(tmp_path):
    inputs = tmp_path / "in"
    write_inputs(inputs)
    out = tmp_path / "out"
    several = batch_inference.resolve_outputs(str(inputs / "*.txt"), str(out))
    assert several == {str(inputs / n): str(out / n) for n in ("a.txt", "b.txt", "c.txt")}
    with pytest.raises(batch_inference.InferenceInputError, match="is a file, but 3 input"):
        batch_inference.resolve_outputs(str(inputs / "*.txt"), str(inputs / "a.txt"))
    single = str(inputs / "a.txt")
    assert batch_inference.resolve_outputs(single, str(out / "x.de")) == {single: str(out / "x.de")}
    assert batch_inference.resolve_outputs(single, f"{out}/") == {single: str(out / "a.txt")}
    out.mkdir()
    assert batch_inference.resolve_outputs(single, str(out)) == {single: str(out / "a.txt")}
    assert batch_inference.resolve_outputs(single, "gs://b/x/") == {single: "gs://b/x/a.txt"}


@pytest.mark.parametrize(
    "pattern, output, message",
    [
        ("in/*.nothing", "out", "--input: no file matches "),
        ("in", "out", "is a directory; give a file or a glob such as "),
        ("*/a.txt", "out", "have the same file name, so their outputs"),
        ("in/*.txt", "in", "is also an input file"),
    ],
)
def test_output_naming_errors(tmp_path, pattern, output, message):
    write_inputs(tmp_path / "in")
    write_inputs(tmp_path / "again")
    with pytest.raises(batch_inference.InferenceInputError, match=message):
        batch_inference.resolve_outputs(str(tmp_path / pattern), str(tmp_path / output))


def test_output_formats():
    assert batch_translate.one_line("a\nb\r\nc\u2028d\x1ce\tf\n") == "a b c d e\tf"
    assert batch_translate.format_translation(b"zwei\nZeilen") == "zwei Zeilen"


def test_the_closing_report_counts_in_words():
    one = {"lines_read": 2, "empty_lines": 1, "undecodable_lines": 1, "files_written": 1}
    assert batch_inference.summary("translated", {"in/a.en": "out/a.en"}, one).splitlines() == [
        "translated 1 line (1 empty line passed through) from 1 file",
        "1 line had bytes that are not UTF-8 (read as U+FFFD)",
        "wrote out/a.en",
    ]
    many = {"lines_read": 1200, "empty_lines": 0, "undecodable_lines": 0, "files_written": 2}
    outputs = {"in/a.en": "out/a.en", "in/b.en": "out/b.en"}
    assert batch_inference.summary("classified", outputs, many).splitlines() == [
        "classified 1,200 lines (0 empty lines passed through) from 2 files",
        "wrote 2 files to out",
    ]


# ---- the jobs on the DirectRunner -----------------------------------------------------------


def test_batch_translate_keeps_every_file_line_and_order(translation_export, tmp_path, no_prism):
    outputs = batch_inference.resolve_outputs(write_inputs(tmp_path / "in"), str(tmp_path / "out"))
    counters = run_translation_job(translation_export, outputs)
    no_prism()
    assert sorted(os.listdir(tmp_path / "out")) == sorted(INPUT_FILES)  # no temp files left
    for name, count in EXPECTED_LINES.items():
        lines = input_lines(name)
        written = read_lines(tmp_path / "out" / name)
        assert len(written) == count == len(lines)
        assert written == translate_directly(translation_export, lines), name
        assert all(w == "" for w, line in zip(written, lines) if not text.normalize(line))
    # The comparison above is not vacuous: the (barely trained) model wrote something.
    assert any(line for name in EXPECTED_LINES for line in read_lines(tmp_path / "out" / name))
    assert counters == {
        "lines_read": 13,
        "empty_lines": 4,
        "undecodable_lines": 1,
        "files_written": 4,
        "lines_written": 13,
    }


def test_batch_classify_writes_one_json_object_per_line(classification_export, tmp_path):
    source = tmp_path / "reviews.txt"
    source.write_text(REVIEWS)
    output = tmp_path / "labels.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.batch_classify",
            f"--export_dir={classification_export}",
            f"--input={source}",
            f"--output={output}",
            "--max_batch_size=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=tiny_models.subprocess_env(),
        cwd=tiny_models.ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {output}" in result.stdout
    # Beam's model-memory probe works (without torch, Beam 2.77 would warn at each load).
    assert "Resource module is not available" not in result.stderr
    written = read_lines(output)
    reviews = REVIEWS.split("\n")[:-1]
    assert len(written) == len(reviews) and written[1] == "{}"
    model = tf.saved_model.load(classification_export)
    expected = model.classify(tf.constant([reviews[i] for i in (0, 2, 3)])).numpy()
    for row, line in zip(expected, (written[i] for i in (0, 2, 3))):
        record = json.loads(line)
        assert list(record) == ["label", "probability", "probabilities"]
        np.testing.assert_allclose(record["probabilities"], row, atol=2e-6)
        best = int(np.argmax(row))
        assert record["label"] == ("negative", "positive")[best]
        assert record["probability"] == record["probabilities"][best]


def test_batch_translate_reads_and_writes_gcs(translation_export, gcs_emulator, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).bucket(gcs_emulator)
    for name in ("a.txt", "b.txt"):
        bucket.blob(f"batch_in/{name}").upload_from_string(INPUT_FILES[name])
    outputs = batch_inference.resolve_outputs(
        f"gs://{gcs_emulator}/batch_in/*.txt", f"gs://{gcs_emulator}/batch_out/"
    )
    assert sorted(outputs.values()) == [
        f"gs://{gcs_emulator}/batch_out/a.txt",
        f"gs://{gcs_emulator}/batch_out/b.txt",
    ]
    counters = run_translation_job(translation_export, outputs)
    assert counters["files_written"] == 2 and counters["lines_written"] == 11
    names = sorted(b.name for b in bucket.list_blobs(prefix="batch_out/"))
    assert names == ["batch_out/a.txt", "batch_out/b.txt"]
    for name in ("a.txt", "b.txt"):
        written = bucket.blob(f"batch_out/{name}").download_as_bytes().decode("utf-8")
        assert written.split("\n")[:-1] == translate_directly(translation_export, input_lines(name))


# ---- the command lines' errors --------------------------------------------------------------


def test_command_line_errors_are_one_line(translation_export, classification_export, tmp_path):
    inputs = write_inputs(tmp_path / "in")
    not_an_export = tmp_path / "not_an_export"
    not_an_export.mkdir()
    common = [f"--input={inputs}", f"--output={tmp_path / 'out'}"]
    cases = {
        "missing model": (
            "batch_translate",
            [f"--export_dir={not_an_export}", *common],
            f"--export_dir: {not_an_export} is not an export of trainer.export",
        ),
        "empty glob": (
            "batch_translate",
            [f"--export_dir={translation_export}", f"--input={tmp_path}/*.none", "--output=x"],
            f"--input: no file matches {tmp_path}/*.none",
        ),
        "wrong task": (
            "batch_translate",
            [f"--export_dir={classification_export}", *common],
            "holds a classification model, not a translation model",
        ),
        "unknown flag": (
            "batch_classify",
            [f"--export_dir={classification_export}", *common, "--bogus=1"],
            "unknown flag --bogus",
        ),
        "missing flag": ("batch_classify", common, "--export_dir is required"),
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"pipeline.{program}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tiny_models.subprocess_env(),
            cwd=tiny_models.ROOT,
        )
        for name, (program, args, _) in cases.items()
    }
    for name, process in processes.items():
        _, err = process.communicate(timeout=180)
        program, _, message = cases[name]
        lines = tiny_models.own_stderr_lines(err)
        assert process.returncode == 2, (name, err[-3000:])
        assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), (name, err)
        assert message in lines[0], (name, lines[0])
    assert not (tmp_path / "out").exists()
