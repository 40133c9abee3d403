"""Tests for batch inference as a library: trainer/infer.py, infer_files.py and model_dir.py.

The module fixture trains a translation and a classification model for two steps with
the real trainer CLI (in parallel subprocesses). Two steps leave the weights near
their random start, which is what these tests want: every input gets an output of
its own (a trained tiny model answers every sentence alike), so a line that lands in
the wrong place is caught. Translations still come out as repeated tokens, but each
runs to its own source's length limit (max_length 128 keeps the limits distinct).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from pipeline import features, text
from tests.tiny_models import MICRO_ARCHITECTURE
from trainer import checkpoints, decode, infer, infer_batches, infer_tasks, model_dir
from trainer.infer_files import (
    SavedChunks,
    count_lines,
    iter_line_chunks,
    iter_stream_chunks,
    plan_jobs,
    read_lines,
    stream_input,
    write_lines_atomically,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LENGTH = 128
TRANSLATION_FLAGS = [
    "--flagfile=" + os.path.join(ROOT, "configs", "tiny.cfg"),
    *MICRO_ARCHITECTURE,
    "--batch_tokens=1024",
    f"--max_length={MAX_LENGTH}",
    "--eval_bleu_sentences=0",
    "--shuffle_buffer=200",
]
CLASSIFICATION_FLAGS = [
    "--flagfile=" + os.path.join(ROOT, "configs", "imdb.cfg"),
    *MICRO_ARCHITECTURE,
    "--batch_size=16",
    "--max_length=64",
]
STEPS = ["--train_steps=2", "--eval_every=2", "--checkpoint_every=2", "--log_every=1"]

SENTENCES = [
    "Yesterday the mouse waited.",
    "The old brother heard a woman.",
    "Did a friend visit the tired child in the kitchen?",
    "Today your girls do not buy your beautiful apple.",
    "The doctors sing on a table because the sisters brought your owl the bag.",
    "A dog runs.",
    "The teacher reads a long book in the garden every evening.",
]
LONG_LINE = " ".join(f"word{i}" for i in range(90))  # well over MAX_LENGTH tokens
REVIEWS = [
    "The story was so great.",
    "The plot was not weak at all. This film was quite good.",
    "The script was bad.<br /><br />I saw the trailer first.",
    "It came out in 1974.",
    "Terrible acting, boring dialogue, and the jokes were stupid.",
]


def train_models(ende_data: str, imdb_data: str, directory) -> tuple[str, str]:
    """(translation model dir, classification model dir), each trained two steps by the CLI."""
    runs = {
        str(directory / "ende"): [f"--data_dir={ende_data}", *TRANSLATION_FLAGS],
        str(directory / "imdb"): [f"--data_dir={imdb_data}", *CLASSIFICATION_FLAGS],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    processes = {
        path: subprocess.Popen(
            [sys.executable, "-m", "trainer.train", f"--model_dir={path}", *flags, *STEPS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for path, flags in runs.items()
    }
    for process in processes.values():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    return tuple(processes)


@pytest.fixture(scope="module")
def model_dirs(ende_data, imdb_data, tmp_path_factory) -> tuple[str, str]:
    return train_models(ende_data, imdb_data, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def translator(model_dirs) -> model_dir.LoadedModel:
    return model_dir.load_model_dir(model_dirs[0], task=features.TRANSLATION)


@pytest.fixture(scope="module")
def two_replicas(model_dirs) -> model_dir.LoadedModel:
    """Two model copies on one device: the threaded path that spreads batches over GPUs."""
    return model_dir.load_model_dir(
        model_dirs[0], task=features.TRANSLATION, devices=["/CPU:0", "/CPU:0"]
    )


@pytest.fixture(scope="module")
def classifier(model_dirs) -> model_dir.LoadedModel:
    return model_dir.load_model_dir(model_dirs[1], task=features.CLASSIFICATION)


def write(path, lines: list[str] | bytes, *, newline_at_end: bool = True) -> str:
    data = lines if isinstance(lines, bytes) else "\n".join(lines).encode("utf-8")
    if newline_at_end and not isinstance(lines, bytes) and lines:
        data += b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def read(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def source_ids(loaded, line: str) -> list[int]:
    """What inference feeds the model for ``line``: normalized, encoded, cut to max_length."""
    ids = loaded.tokenizer.encode(text.normalize(line, lowercase=loaded.lowercase))
    limit = loaded.max_length - 1
    return ids[:limit] + [features.EOS_ID] if len(ids) - 1 > limit else ids


_ALONE = {}


def translate_alone(loaded, lines: list[str], **decode_args) -> list[str]:
    """Each line decoded on its own, a batch of one, by the project's decoder."""
    key = (id(loaded), *sorted(decode_args.items()))
    if key not in _ALONE:
        _ALONE[key] = tf.function(
            decode.make_translate_fn(loaded.replicas[0].model, **decode_args),
            input_signature=[tf.TensorSpec([None, None], tf.int32)],  # one trace for all
        )
    translate = _ALONE[key]
    return [
        loaded.tokenizer.decode(translate(tf.constant([source_ids(loaded, line)])).numpy()[0])
        if text.normalize(line)
        else ""
        for line in lines
    ]


def mixed_inputs(directory) -> dict[str, list[str] | bytes]:
    """Input files with empty lines, a long line, non-ASCII text and a byte that is not UTF-8."""
    return {
        "a.txt": [SENTENCES[0], "", SENTENCES[1], SENTENCES[2]],
        "b.txt": "Über den Fluß – ein café 🐍 naïve\n   \n".encode()
        + b"bad \xff byte here\n"
        + (LONG_LINE + "\n" + SENTENCES[3] + "\n").encode(),
        "c.txt": [SENTENCES[4], SENTENCES[5], SENTENCES[6]],  # no "\n" after the last line
        "d.txt": [],
    }


def write_inputs(directory, files) -> None:
    for name, lines in files.items():
        write(directory / name, lines, newline_at_end=name != "c.txt")


def test_translation_keeps_every_line_in_place_and_equals_decoding_it_alone(two_replicas, tmp_path):
    assert len(two_replicas.replicas) == 2
    files = mixed_inputs(tmp_path)
    write_inputs(tmp_path / "in", files)
    logs = []
    summary = infer.translate_files(
        two_replicas,
        plan_jobs(str(tmp_path / "in" / "*.txt"), str(tmp_path / "out")),
        beam_size=1,  # greedy
        batch_tokens=200,  # several batches, each mixing lines of several files
        progress=False,
        log=logs.append,
    )
    all_outputs = []
    for name in files:
        lines, _ = read_lines(str(tmp_path / "in" / name))
        outputs = read(tmp_path / "out" / name)
        assert len(outputs) == len(lines)
        assert outputs == translate_alone(two_replicas, lines, beam_size=1, alpha=0.6)
        assert all(out == "" for line, out in zip(lines, outputs) if not line.strip())
        all_outputs += [out for line, out in zip(lines, outputs) if line.strip()]
        assert f"wrote {tmp_path / 'out' / name} ({len(lines)} lines)" in logs
    # The check above can only catch a misplaced line if outputs differ from line to line.
    assert len(set(all_outputs)) >= 6
    assert (summary.files, summary.skipped, summary.lines) == (4, 0, 12)
    assert (summary.sentences, summary.truncated, summary.undecodable) == (10, 1, 1)
    assert summary.target_tokens > summary.sentences
    assert summary.notes() == [
        f"1 line truncated to {MAX_LENGTH - 1} tokens",
        "1 line had bytes that are not UTF-8 (now U+FFFD)",
    ]
    assert summary.describe().startswith("4 files, 12 lines, 10 sentences, ")
    assert "sentences/s" in summary.describe() and "target tokens/s" in summary.describe()


def test_beam_search_in_small_groups_equals_decoding_alone(translator, tmp_path):
    files = mixed_inputs(tmp_path)
    write_inputs(tmp_path / "in", files)
    summary = infer.translate_files(
        translator,
        plan_jobs(str(tmp_path / "in" / "*.txt"), str(tmp_path / "out") + "/"),
        beam_size=3,
        alpha=0.6,
        batch_tokens=150,
        max_decode_length=24,
        group_lines=3,  # a group per file or two
        progress=False,
        log=lambda message: None,
    )
    assert summary.sentences == 10
    for name in files:
        lines, _ = read_lines(str(tmp_path / "in" / name))
        expected = translate_alone(translator, lines, beam_size=3, alpha=0.6, max_decode_length=24)
        assert read(tmp_path / "out" / name) == expected


def test_rerun_skips_complete_outputs_and_redoes_missing_short_or_all(translator, tmp_path):
    write(tmp_path / "in" / "a.txt", SENTENCES[:3])
    write(tmp_path / "in" / "b.txt", SENTENCES[3:])
    jobs = plan_jobs(str(tmp_path / "in" / "*.txt"), str(tmp_path / "out"))
    out_a, out_b = tmp_path / "out" / "a.txt", tmp_path / "out" / "b.txt"

    def run(**kwargs):
        logs = []
        summary = infer.translate_files(
            translator, jobs, beam_size=1, progress=False, log=logs.append, **kwargs
        )
        return summary, logs

    run()
    first_a, first_b = read(out_a), read(out_b)
    out_b.unlink()
    summary, logs = run()
    assert f"skipping {tmp_path / 'in' / 'a.txt'}: output complete ({out_a}, 3 lines)" in logs
    assert f"wrote {out_b} (4 lines)" in logs and f"wrote {out_a} (3 lines)" not in logs
    assert (summary.files, summary.skipped, summary.sentences) == (2, 1, 4)
    assert "(1 skipped: output complete)" in summary.describe()
    assert read(out_b) == first_b

    out_a.write_text("\n".join(first_a[:2]) + "\n")  # complete-looking name, wrong line count
    summary, logs = run()
    assert f"redoing {tmp_path / 'in' / 'a.txt'}: {out_a} has 2 lines, the input 3" in logs
    assert read(out_a) == first_a and summary.skipped == 1

    summary, logs = run(overwrite=True)
    assert not [line for line in logs if line.startswith("skipping")]
    assert summary.skipped == 0 and summary.sentences == 7
    assert (read(out_a), read(out_b)) == (first_a, first_b)


def test_a_crash_while_writing_leaves_no_partial_output(translator, tmp_path):
    write(tmp_path / "in" / "a.txt", SENTENCES[:2])
    write(tmp_path / "in" / "b.txt", SENTENCES[2:4])
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".tmp-0123abcd-b.txt"  # left by an earlier run that was killed
    stale.write_text("half a file\n")
    jobs = plan_jobs(str(tmp_path / "in" / "*.txt"), str(out))

    def crash_on_b(path):
        if path.endswith("b.txt"):
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        infer.translate_files(
            translator,
            jobs,
            beam_size=1,
            progress=False,
            log=lambda message: None,
            before_rename=crash_on_b,
        )
    assert sorted(os.listdir(out)) == ["a.txt"]  # b's stale and new temporaries are gone
    assert count_lines(str(out / "a.txt")) == 2

    logs = []
    infer.translate_files(translator, jobs, beam_size=1, progress=False, log=logs.append)
    assert any(line.startswith(f"skipping {tmp_path / 'in' / 'a.txt'}") for line in logs)
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]
    assert read(out / "b.txt") == translate_alone(
        translator, SENTENCES[2:4], beam_size=1, alpha=0.6
    )


def test_a_stream_summary_counts_working_time_not_the_wait_for_input(classifier):
    task = infer_tasks.Classification(classifier, batch_size=4)
    written: list[str] = []

    def chunks():
        yield ["a great film", "dull"], 0
        time.sleep(2)  # nobody types
        yield ["not bad at all"], 1

    started = time.monotonic()
    summary = infer.process_stream(classifier, task, chunks(), written.extend)
    wall = time.monotonic() - started
    assert len(written) == 3 and summary.lines == 3 and summary.undecodable == 1
    assert 0 < summary.seconds <= wall - 2, (summary.seconds, wall)


@pytest.mark.parametrize("group_lines", [1000, 2], ids=["pooled", "in chunks of 2 lines"])
def test_classification_writes_a_json_line_per_input_line(classifier, group_lines, tmp_path):
    write(tmp_path / "in" / "one.txt", [REVIEWS[0], "", REVIEWS[1], REVIEWS[2]])
    write(tmp_path / "in" / "two.txt", REVIEWS[3:] + [" "])
    summary = infer.classify_files(
        classifier,
        plan_jobs(str(tmp_path / "in" / "*.txt"), str(tmp_path / "out")),
        batch_size=2,
        group_lines=group_lines,
        progress=False,
        log=lambda message: None,
    )
    assert (summary.files, summary.lines, summary.sentences) == (2, 7, 5)
    model = classifier.replicas[0].model
    seen = []
    for name in ("one.txt", "two.txt"):
        lines, _ = read_lines(str(tmp_path / "in" / name))
        outputs = read(tmp_path / "out" / name)
        assert len(outputs) == len(lines)
        for line, output in zip(lines, outputs):
            if not line.strip():
                assert output == "{}"  # still one JSON object per line
                continue
            record = json.loads(output)
            assert set(record) == {"label", "probability", "probabilities"}
            probabilities = record["probabilities"]
            assert len(probabilities) == 2 and sum(probabilities) == pytest.approx(1.0, abs=2e-6)
            best = int(np.argmax(probabilities))
            assert record["label"] == features.CLASS_NAMES[best]
            assert record["probability"] == probabilities[best]
            alone = tf.nn.softmax(model(tf.constant([source_ids(classifier, line)]))).numpy()[0]
            np.testing.assert_allclose(probabilities, alone, atol=1e-5)
            seen.append(round(probabilities[0], 6))
    assert len(set(seen)) == 5  # every review its own answer: misplaced lines would show


def test_restored_weights_are_the_trained_ones(model_dirs, translator):
    import keras

    from trainer.model import build_model
    from trainer.schedule import WarmupInverseSqrt

    model = build_model(translator.config.model)
    # The optimizer as training builds it, so the whole training state restores.
    schedule = WarmupInverseSqrt(d_model=32, warmup_steps=10, scale=1.0)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    optimizer.build(model.trainable_variables)
    state = checkpoints.TrainingState(model=model, optimizer=optimizer)
    state.checkpoint.restore(translator.checkpoint).expect_partial()  # as training resumes
    loaded = translator.replicas[0].model
    assert len(loaded.weights) == len(model.weights) > 10
    for restored, trained in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy(), err_msg=restored.path)
    fresh = build_model(translator.config.model)
    assert any(
        not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fresh.weights, model.weights)
    )
    assert translator.checkpoint_choice == "best"
    assert translator.checkpoint.startswith(f"{model_dirs[0]}/{checkpoints.BEST_DIR}/ckpt-")


def test_checkpoint_choices(model_dirs):
    ende = model_dirs[0]
    assert model_dir.resolve_checkpoint(ende, "latest") == (f"{ende}/ckpt-2", "latest")
    assert model_dir.resolve_checkpoint(ende, f"{ende}/ckpt-2") == (f"{ende}/ckpt-2", "given")
    assert model_dir.resolve_checkpoint(ende, f"{ende}/best") == (
        f"{ende}/best/ckpt-2",
        f"latest in {ende}/best",
    )


def copy_model_dir(source: str, target, *, checkpoints_too: bool = True) -> str:
    shutil.copytree(source, target, ignore=None if checkpoints_too else _only_metadata)
    return str(target)


def _only_metadata(directory, names):
    return [n for n in names if n.startswith(("ckpt-", "checkpoint", "best"))]


def test_model_dir_errors_name_the_flag(model_dirs, tmp_path):
    ende, imdb = model_dirs

    def error(path, task=features.TRANSLATION, **kwargs) -> str:
        with pytest.raises(infer.InferenceError) as raised:
            model_dir.load_model_dir(path, task=task, **kwargs)
        return str(raised.value)

    assert error(str(tmp_path)) == (
        f"--model_dir: {tmp_path} has no config.json; it is not a model dir written by "
        "trainer.train"
    )
    assert error(imdb) == (
        f"--model_dir: {imdb} holds a classification model, not a translation model; "
        "use trainer.classify"
    )
    assert error(ende, task=features.CLASSIFICATION) == (
        f"--model_dir: {ende} holds a translation model, not a classification model; "
        "use trainer.translate"
    )
    bare = copy_model_dir(ende, tmp_path / "bare", checkpoints_too=False)
    assert error(bare) == f"--model_dir: {bare} has no checkpoint; train the model first"
    assert error(ende, checkpoint=f"{ende}/ckpt-999").startswith(
        f"--checkpoint: no checkpoint at {ende}/ckpt-999; use best, latest,"
    )
    assert error(ende, checkpoint=f"{imdb}/ckpt-2").startswith(
        f"--checkpoint: {imdb}/ckpt-2 comes from {imdb}, trained with another tokenizer"
    )
    other = copy_model_dir(ende, tmp_path / "other")
    with open(f"{other}/spm.model", "ab") as f:
        f.write(b"\x00")
    with open(f"{ende}/tokenizer.json") as f:
        recorded = json.load(f)["sha256"]
    message = error(other)
    assert message.startswith(f"--model_dir: {other}/spm.model (sha256 ")
    assert message.endswith(
        f") is not the tokenizer the model was trained with (tokenizer.json says sha256 "
        f"{recorded[:12]})"
    )


def test_an_output_that_cannot_be_written_is_refused_before_decoding(translator, tmp_path):
    write(tmp_path / "a.txt", SENTENCES[:1])
    write(tmp_path / "file", ["not a directory"])
    jobs = plan_jobs(str(tmp_path / "a.txt"), str(tmp_path / "file" / "sub" / "out.txt"))
    with pytest.raises(infer.InferenceError) as raised:
        infer.translate_files(translator, jobs, progress=False, log=lambda message: None)
    assert str(raised.value).startswith(
        f"--output: cannot create the directory {tmp_path}/file/sub ("
    )


def test_max_decode_length_beyond_the_model_is_refused(translator, tmp_path):
    write(tmp_path / "a.txt", SENTENCES[:1])
    with pytest.raises(
        infer.InferenceError, match=r"^--max_decode_length=129 must be in \[1, 128\]"
    ):
        infer.translate_files(
            translator,
            plan_jobs(str(tmp_path / "a.txt"), str(tmp_path / "out.txt")),
            max_decode_length=MAX_LENGTH + 1,
        )


def test_output_naming(tmp_path):
    a = write(tmp_path / "in" / "a.en", ["x"])
    b = write(tmp_path / "in" / "b.en", ["y"])
    (tmp_path / "existing").mkdir()
    one = str(tmp_path / "in" / "a.en")
    assert plan_jobs(one, str(tmp_path / "o.txt")) == [infer.FileJob(a, str(tmp_path / "o.txt"))]
    assert plan_jobs(one, f"{tmp_path}/new/") == [infer.FileJob(a, f"{tmp_path}/new/a.en")]
    assert plan_jobs(one, f"{tmp_path}/existing") == [infer.FileJob(a, f"{tmp_path}/existing/a.en")]
    assert plan_jobs(str(tmp_path / "in" / "*.en"), f"{tmp_path}/many") == [
        infer.FileJob(a, f"{tmp_path}/many/a.en"),
        infer.FileJob(b, f"{tmp_path}/many/b.en"),
    ]


def test_input_and_output_errors_name_the_flag(tmp_path):
    write(tmp_path / "x" / "same.txt", ["1"])
    write(tmp_path / "y" / "same.txt", ["2"])
    write(tmp_path / "y" / "other.txt", ["3"])
    write(tmp_path / "file.txt", ["4"])

    def error(pattern, output) -> str:
        with pytest.raises(infer.InferenceError) as raised:
            plan_jobs(pattern, output)
        return str(raised.value)

    assert error(f"{tmp_path}/nothing*.txt", "out") == (
        f"--input: no files match {tmp_path}/nothing*.txt"
    )
    assert error(f"{tmp_path}/?", "out") == (
        f"--input: {tmp_path}/? matches only directories; use a glob such as {tmp_path}/x/*"
    )
    assert error(f"{tmp_path}/*/same.txt", f"{tmp_path}/out") == (
        f"--input: {tmp_path}/x/same.txt and {tmp_path}/y/same.txt have the same name; "
        f"both outputs would be {tmp_path}/out/same.txt"
    )
    assert error(f"{tmp_path}/y/*.txt", f"{tmp_path}/file.txt") == (
        f"--output: {tmp_path}/file.txt is a file, but 2 input files need an output directory"
    )
    assert error(f"{tmp_path}/y/*.txt", f"{tmp_path}/y") == (
        f"--output: writing {tmp_path}/y/other.txt would overwrite an input file"
    )
    assert error(f"{tmp_path}/file.txt", "") == "--output is required"
    assert error("-", f"{tmp_path}/o.txt") == (
        "--input=- (standard input) writes to standard output only: give --output=-"
    )


def test_standard_output_takes_standard_input_or_one_file(tmp_path):
    write(tmp_path / "y" / "one.txt", ["1"])
    write(tmp_path / "y" / "two.txt", ["2"])
    assert stream_input("-") == "-"
    assert stream_input(f"{tmp_path}/y/o*.txt") == f"{tmp_path}/y/one.txt"
    with pytest.raises(infer.InferenceError) as raised:
        stream_input(f"{tmp_path}/y/*.txt")
    assert str(raised.value) == (
        "--output=-: --input matches 2 files and standard output takes one; "
        "give --output a directory"
    )
    with pytest.raises(infer.InferenceError, match=f"--input: no files match {tmp_path}/z"):
        stream_input(f"{tmp_path}/z")


@pytest.mark.timeout(60)
def test_standard_input_chunks_end_when_no_more_input_waits():
    read_end, write_end = os.pipe()
    try:
        chunks = iter_stream_chunks(read_end, 3)
        os.write(write_end, b"\xef\xbb\xbfone\r\ntwo\n")
        # Nothing more waits: the two lines come out without the writer closing its end.
        assert next(chunks) == (["one", "two"], 0)
        os.write(write_end, b"a\nb\nc\nd\nbad \xfe\nlast without newline")
        assert next(chunks) == (["a", "b", "c"], 0)  # at most 3 lines a chunk
        assert next(chunks) == (["d", "bad \ufffd"], 1)
        os.close(write_end)
        write_end = None
        assert list(chunks) == [(["last without newline"], 0)]
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def test_a_long_input_is_saved_chunk_by_chunk_and_a_rerun_resumes_after_the_saved_ones(
    translator, tmp_path
):
    lines = [*SENTENCES, "", SENTENCES[0], SENTENCES[1]]  # 10 lines, one empty
    source = write(tmp_path / "in" / "long.txt", lines)
    out = tmp_path / "out"
    jobs = plan_jobs(source, str(out / "long.txt.gz"))
    expected = translate_alone(translator, lines, beam_size=1, alpha=0.6)

    def run(**kwargs):
        logs = []
        summary = infer.translate_files(
            translator, jobs, beam_size=1, group_lines=4, progress=False, log=logs.append, **kwargs
        )
        return summary, logs

    def crash(path):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(before_rename=crash)  # every chunk saved, the output not renamed into place
    parts = out / ".parts-long.txt.gz"
    assert os.listdir(out) == [parts.name]
    assert sorted(os.listdir(parts)) == ["manifest.json", "part-00000", "part-00001", "part-00002"]
    assert [count_lines(str(parts / f"part-0000{i}")) for i in range(3)] == [4, 4, 2]

    (parts / "part-00001").unlink()  # as if the run had stopped while decoding chunk 1
    summary, logs = run()
    assert f"resuming {source}: found saved chunks in {parts}" in logs
    assert f"reused 2 of 3 saved chunks of {source}" in logs
    assert f"wrote {out / 'long.txt.gz'} (10 lines, 3 chunks)" in logs
    assert (summary.lines, summary.resumed_lines, summary.sentences) == (4, 6, 3)
    assert "(and 6 lines reused from saved chunks)" in summary.describe()
    with gzip.open(out / "long.txt.gz", "rt", encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == expected
    assert os.listdir(out) == ["long.txt.gz"]  # the chunks are gone with the output whole

    # Saved chunks made with other decoding settings are discarded, not mixed in.
    (out / "long.txt.gz").unlink()
    with pytest.raises(RuntimeError):
        run(before_rename=crash)
    summary, logs = run(alpha=1.0)
    assert not [line for line in logs if line.startswith(("resuming", "reused"))]
    assert summary.resumed_lines == 0 and summary.lines == 10


def test_chunked_and_pooled_runs_write_the_same_bytes(translator, tmp_path):
    files = mixed_inputs(tmp_path)
    write_inputs(tmp_path / "in", files)
    outputs = {}
    for group_lines in (2, 1000):
        out = tmp_path / f"out-{group_lines}"
        infer.translate_files(
            translator,
            plan_jobs(str(tmp_path / "in" / "*.txt"), str(out) + "/"),
            beam_size=1,
            group_lines=group_lines,
            progress=False,
            log=lambda message: None,
        )
        outputs[group_lines] = {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}
    assert sorted(outputs[2]) == sorted(files)
    assert outputs[2] == outputs[1000]


@pytest.mark.parametrize(
    "group_lines, model",
    [(1000, "two_replicas"), (3, "translator")],
    ids=["pooled, two replicas", "in chunks of 3 lines"],
)
def test_runs_stopped_between_batches_save_their_lines_and_end_as_one_run_would(
    group_lines, model, request, tmp_path
):
    loaded = request.getfixturevalue(model)
    files = mixed_inputs(tmp_path)
    write_inputs(tmp_path / "in", files)
    pattern = str(tmp_path / "in" / "*.txt")

    def run(out, stop=None, **kwargs):
        return infer.translate_files(
            loaded,
            plan_jobs(pattern, str(out) + "/"),
            beam_size=1,
            batch_tokens=1,  # a batch per sentence
            group_lines=group_lines,
            progress=False,
            log=lambda message: None,
            stop=stop,
            **kwargs,
        )

    def stop_asked_late():  # in the middle of a group or chunk, after a few batches
        asked = itertools.count(1)
        return lambda: next(asked) >= (4 if group_lines == 1000 else 3)

    run(tmp_path / "whole")
    out = tmp_path / "stopped"
    runs = [run(out, stop_asked_late())]
    assert runs[0].stopped
    left = sorted(os.listdir(out))
    assert any(n.startswith(".parts-") for n in left) and set(left) < {*files, *parts(files)}
    if group_lines == 1000:  # one group: its lines saved under its first file, however many
        assert [n for n in left if n.startswith(".parts-")] == [".parts-a.txt"]
        assert sorted(os.listdir(out / ".parts-a.txt")) == ["manifest.json", "partial-00000.json"]
        assert "4 files (0 written before the stop), " in runs[0].describe()
    if group_lines == 1000:  # a partial saved under other settings is not reused
        shutil.copytree(out, tmp_path / "other")
        assert run(tmp_path / "other", alpha=1.0).resumed_lines == 0
    while runs[-1].stopped:  # as a spot VM preempted again and again
        runs.append(run(out, stop_asked_late()))
        assert len(runs) < 30
    assert len(runs) >= 2 and any(r.saved_at_stop > 0 for r in runs)
    if group_lines == 1000:  # one group: each run takes up the lines the one before saved
        for before, after in zip(runs, runs[1:]):
            assert after.resumed_lines == before.saved_at_stop > 0
    whole = {n: (tmp_path / "whole" / n).read_bytes() for n in files}
    assert {n: (out / n).read_bytes() for n in sorted(os.listdir(out))} == whole


def parts(names):
    return [f".parts-{name}" for name in names]


def test_a_rerun_that_groups_the_files_otherwise_leaves_no_saved_lines_behind(
    translator, tmp_path, monkeypatch
):
    files = mixed_inputs(tmp_path)
    write_inputs(tmp_path / "in", files)
    out = tmp_path / "out"

    def run(stop=None):
        return infer.translate_files(
            translator,
            plan_jobs(str(tmp_path / "in" / "*.txt"), str(out) + "/"),
            beam_size=1,
            batch_tokens=1,
            progress=False,
            log=lambda message: None,
            stop=stop,
        )

    asked = itertools.count(1)
    assert run(stop=lambda: next(asked) >= 4).stopped
    assert sorted(os.listdir(out)) == [".parts-a.txt"]  # the group's lines, under a.txt
    (out / ".tmp-0123abcd-c.txt").write_text("half a file\n")  # a killed run's
    write(tmp_path / "in" / "0.txt", [SENTENCES[5]])  # the group now starts at 0.txt
    listed = []
    listdir = tf.io.gfile.listdir
    monkeypatch.setattr(tf.io.gfile, "listdir", lambda d: listed.append(d) or listdir(d))
    summary = run()
    assert not summary.stopped and summary.written == 5
    assert sorted(os.listdir(out)) == ["0.txt", *files]  # a.txt's saved lines are gone
    assert listed == [str(out)]  # one listing of the output directory, not one per file


def test_a_partial_chunk_that_does_not_fit_is_ignored(tmp_path):
    saved = SavedChunks(str(tmp_path / "out.txt"))
    saved.save_partial(2, 5, {0: "a", 4: "e"})
    assert saved.load_partial(2, 5) == {0: "a", 4: "e"}
    assert saved.load_partial(2, 6) == {} and saved.load_partial(1, 5) == {}
    path = tmp_path / ".parts-out.txt" / "partial-00002.json"
    for bad in ('{"lines": 5, "outputs": [[7, "x"]]}', '{"lines": 5, "outputs": [[0, 1]]}', "{"):
        path.write_text(bad)
        assert saved.load_partial(2, 5) == {}


def test_lines_are_read_and_written_as_the_contract_says(tmp_path):
    path = write(tmp_path / "crlf.txt", b"\xef\xbb\xbfone\r\ntwo\r\n\r\nbad \xfe\nlast")
    lines, undecodable = read_lines(path)
    assert lines == ["one", "two", "", "bad \ufffd", "last"] and undecodable == 1
    assert count_lines(path) == 5
    assert read_lines(write(tmp_path / "empty.txt", b"")) == ([], 0)

    gz = str(tmp_path / "out" / "lines.txt.gz")
    write_lines_atomically(gz, ["é", "", "z"])
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        assert f.read() == "é\n\nz\n"
    assert count_lines(gz) == 3 and read_lines(gz) == (["é", "", "z"], 0)
    assert list(iter_line_chunks(path, 2)) == [
        (["one", "two"], 0),
        (["", "bad \ufffd"], 1),
        (["last"], 0),
    ]
    assert list(iter_line_chunks(write(tmp_path / "empty2.txt", b""), 2)) == []


@pytest.mark.parametrize(
    "lengths, budget, size, beam, expected",
    [
        ([3, 5, 4, 5], 10, None, 1, [[1, 3], [2, 0]]),  # 2 x 5 fits, 3 x 5 not; 2 x 4 fits
        ([3, 5, 4, 5], 10, None, 2, [[1], [3], [2], [0]]),  # x beam: 1 x 5 x 2 fills it
        ([3, 5, 4, 5], 20, None, 2, [[1, 3], [2, 0]]),
        ([2, 2, 2, 2, 2], None, 2, 1, [[0, 1], [2, 3], [4]]),
        ([50, 1], 10, None, 1, [[0], [1]]),  # over budget alone: a batch of its own
        ([], 10, None, 1, []),
    ],
)
def test_plan_batches(lengths, budget, size, beam, expected):
    assert (
        infer.plan_batches(lengths, batch_tokens=budget, batch_size=size, beam_size=beam)
        == expected
    )


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_stop_drops_the_batches_not_started_and_keeps_those_running(replicas):
    release = threading.Event()
    ran = []

    def work(replica, item):
        ran.append(item)
        if item:  # the first item ends at once; the others wait for the stop
            assert release.wait(30)
        return item * 10

    def stop():
        release.set()
        return True

    devices = [model_dir.Replica(device="/CPU:0", model=None)] * replicas
    yielded = dict(infer_batches.run_on_replicas(devices, work, list(range(10)), stop=stop))
    # Asked after item 0: with two replicas item 1 was running (and item 2 may have
    # started), so they finish and come back; nothing that ran is lost, nothing else runs.
    assert sorted(yielded) == sorted(ran) and {i: i * 10 for i in ran} == yielded
    if replicas == 1:
        assert ran == [0]
    else:
        assert {0, 1} <= set(ran) <= {0, 1, 2}
