"""Tier 3: the whole job on the DirectRunner, on fixtures of every input format."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import threading

import apache_beam as beam
import psutil
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import beam_options, features, preprocess, sources, tokenizer, transforms
from pipeline.config import PreprocessConfig
from tests import testdata


def make_config(
    output_dir, *, dataset="ende", input, validation_input=None, test_input=None, **overrides
):
    specs = sources.resolve_sources(
        dataset=dataset,
        input=input,
        validation_input=validation_input,
        test_input=test_input,
        source_lang="en",
        target_lang="de",
        tfds_data_dir=None,
    )
    values = dict(vocab_size=400, num_shards=2, max_tokens=256)
    values.update(overrides)
    return PreprocessConfig(
        dataset=dataset, output_dir=str(output_dir), sources=tuple(specs), **values
    )


def run(config, *, overwrite=False):
    return preprocess.run_job(config, PipelineOptions([]), overwrite=overwrite)


def read_split(data_dir, meta, split):
    """Decoded (fields..., label) of every example in a split, via tf.data."""
    tok = tokenizer.Tokenizer(open(os.path.join(data_dir, features.TOKENIZER_FILE), "rb").read())
    spec = features.feature_spec(meta.task)
    out = []
    files = [os.path.join(data_dir, f) for f in meta.splits[split].files]
    for record in tf.data.TFRecordDataset(files, compression_type=features.SHARD_COMPRESSION):
        ex = tf.io.parse_single_example(record, spec)
        inputs = tf.sparse.to_dense(ex[features.INPUTS]).numpy().tolist()
        assert inputs[-1] == features.EOS_ID or meta.task == features.CLASSIFICATION
        if meta.task == features.TRANSLATION:
            targets = tf.sparse.to_dense(ex[features.TARGETS]).numpy().tolist()
            assert targets[-1] == features.EOS_ID
            out.append((tok.decode(inputs), tok.decode(targets)))
        else:
            out.append((tok.decode(inputs), int(ex[features.LABEL].numpy())))
    return out


@pytest.fixture(scope="module")
def aligned_inputs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("aligned"))
    return {
        "input": testdata.write_aligned(d, "train", testdata.PAIRS, gz=True),
        "validation_input": testdata.write_aligned(d, "val", testdata.VAL_PAIRS),
        "test_input": testdata.write_aligned(d, "test_2016_flickr", testdata.TEST_PAIRS),
    }


@pytest.fixture(scope="module")
def aligned_run(aligned_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ende")
    meta = run(make_config(out, **aligned_inputs))
    return str(out), meta


def test_aligned_output_file_set(aligned_run):
    out, _ = aligned_run
    assert sorted(os.listdir(out)) == [
        "metadata.json",
        "rejected-00000-of-00001.jsonl",
        "spm.model",
        "test-00000-of-00001.tfrecord.gz",
        "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
        "validation-00000-of-00001.tfrecord.gz",
    ]


def test_aligned_counts_reconcile_and_splits_are_kept(aligned_run):
    out, meta = aligned_run
    assert meta == features.load_metadata(out)
    assert meta.read == 15 and meta.reconciles()
    assert meta.dropped == {"duplicate": 1, "empty": 1}
    assert meta.rejected == {}
    assert {s: i.examples for s, i in meta.splits.items()} == {
        "train": 10,
        "validation": 2,
        "test": 1,
    }
    assert meta.overlap_with_train == {"validation": 1}
    assert meta.tokenizer.sha256 == features.sha256_bytes(open(f"{out}/spm.model", "rb").read())
    stats = meta.token_lengths["train"]
    assert set(stats) == {"inputs", "targets"}
    assert stats["inputs"]["p50"] <= stats["inputs"]["p95"] <= stats["inputs"]["max"]


def test_the_printed_summary(aligned_run):
    _, meta = aligned_run
    lines = preprocess.summary(meta).splitlines()
    assert lines[:4] == [
        "read 15 = written 13 + dropped 2 (duplicate 1, empty 1) + rejected 0 (none)",
        "train: 10 examples in 2 shards",
        "validation: 2 examples in 1 shard; 1 also occur in train",
        "test: 1 example in 1 shard",
    ]
    tok = meta.tokenizer
    assert lines[4:] == [
        f"tokenizer: spm.model, {tok.vocab_size:,} pieces, sha256 {tok.sha256[:16]}"
    ]


def test_ids_decode_back_to_normalized_text(aligned_run):
    out, meta = aligned_run
    train = read_split(out, meta, "train")
    assert ("A woman reads a book outside.", "Eine Frau liest draußen ein Buch.") in train
    assert ("Two men are playing football.", "Zwei Männer spielen Fußball.") in train
    assert len(set(train)) == len(train) == 10
    assert read_split(out, meta, "test") == [("A bird sings.", "Ein Vogel singt.")]


def assert_same_shards_and_tokenizer(out, other):
    for name in sorted(os.listdir(out)):
        if name.endswith(features.SHARD_SUFFIX) or name == features.TOKENIZER_FILE:
            a = open(os.path.join(out, name), "rb").read()
            b = open(os.path.join(other, name), "rb").read()
            if name.endswith(".gz"):
                a, b = gzip.decompress(a), gzip.decompress(b)
            assert a == b, name


def test_two_runs_give_identical_shards(aligned_run, aligned_inputs, tmp_path):
    out, _ = aligned_run
    run(make_config(tmp_path, **aligned_inputs))
    assert_same_shards_and_tokenizer(out, tmp_path)


@contextlib.contextmanager
def sdk_worker_processes():
    """The pids of Beam SDK worker processes started below this one while the block runs."""
    pids: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.wait(0.02):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "apache_beam.runners.worker.sdk_worker_main" in child.cmdline()[1:3]:
                        pids.add(child.pid)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield pids
    finally:
        done.set()
        watcher.join()


def test_worker_processes_write_the_same_shards(aligned_run, aligned_inputs, tmp_path, caplog):
    """The README's --direct_running_mode=multi_processing: two worker processes, same bytes."""
    out, meta = aligned_run
    args = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    config = make_config(tmp_path, **aligned_inputs)
    caplog.set_level(logging.INFO, logger="apache_beam.runners.portability.local_job_service")
    with sdk_worker_processes() as workers:
        again = preprocess.run_job(config, preprocess.pipeline_options(args), overwrite=False)
    assert len(workers) == 2, workers
    # Each worker's start-up warnings (harmless, Beam's) are not relayed to the user; others are.
    relayed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Worker: ")]
    noise = ("Discarding unparseable args", "No semi_persistent_directory found")
    assert relayed and not [m for m in relayed if any(n in m for n in noise)]
    assert again.options["direct_num_workers"] == 2
    assert (again.read, again.written) == (meta.read, meta.written)
    assert_same_shards_and_tokenizer(out, tmp_path)


def test_given_tokenizer_is_reused(aligned_run, aligned_inputs, tmp_path):
    out, meta = aligned_run
    again = run(make_config(tmp_path, **aligned_inputs, tokenizer_path=f"{out}/spm.model"))
    assert again.tokenizer.sha256 == meta.tokenizer.sha256


def test_carves_validation_and_test_by_hash(aligned_inputs, tmp_path):
    meta = run(
        make_config(
            tmp_path, input=aligned_inputs["input"], validation_fraction=0.3, test_fraction=0.3
        )
    )
    sizes = {s: i.examples for s, i in meta.splits.items()}
    assert set(sizes) == {"train", "validation", "test"} and sum(sizes.values()) == 10
    assert min(sizes.values()) >= 1
    assert meta.overlap_with_train == {}  # a source never lands in two carved splits


def test_tsv_with_rejects_and_dead_letter_file(tmp_path):
    path = testdata.write_tsv(
        str(tmp_path / "deu.txt"),
        testdata.PAIRS[:8],
        extra_lines=[b"no tab here", b"bad \xff\xfe bytes\tx"],
    )
    out = tmp_path / "out"
    meta = run(make_config(out, input=path, validation_fraction=0.0, max_reject_fraction=0.5))
    assert meta.rejected == {"undecodable": 1, "wrong_columns": 1}
    assert meta.read == 10 and meta.written == 8 and meta.reconciles()
    lines = [json.loads(x) for x in open(out / "rejected-00000-of-00001.jsonl")]
    assert sorted((r["origin"], r["reason"]) for r in lines) == [
        (f"{path}:10", "undecodable"),
        (f"{path}:9", "wrong_columns"),
    ]


def test_too_many_rejects_fail_without_metadata(tmp_path):
    path = testdata.write_tsv(
        str(tmp_path / "deu.tsv"), testdata.PAIRS[:3], extra_lines=[b"broken"] * 2
    )
    out = tmp_path / "out"
    with pytest.raises(
        preprocess.cli.UsageError,
        match=r"2 of 5 records were malformed \(40.0% > --max_reject_fraction=0.01\)",
    ):
        run(make_config(out, input=path))
    assert not (out / "metadata.json").exists()


def test_a_record_lost_after_reading_fails_the_job_without_metadata(monkeypatch, tmp_path):
    # A runner that loses a record in the shuffle after reading (Beam 2.77's multi-threaded
    # DirectRunner did: docs/BENCHMARKS.md) must not give a dataset that looks complete: the
    # job counts records as read, before the shuffle, so the counts no longer reconcile.
    prefix = testdata.write_aligned(str(tmp_path), "train", testdata.PAIRS)

    class LosesLineThree(transforms.GroupByContent):
        def expand(self, records):
            return super().expand(records | beam.Filter(lambda r: not r.origin.endswith(":3")))

    monkeypatch.setattr(transforms, "GroupByContent", LosesLineThree)
    out = tmp_path / "out"
    with pytest.raises(
        RuntimeError, match=r"counts do not reconcile: read 12 = written 9 \+ dropped 2 "
    ):
        run(make_config(out, input=prefix))
    assert not (out / "metadata.json").exists()


def test_pickle_input(tmp_path):
    path = testdata.write_pickle(
        str(tmp_path / "english-german-both.pkl"), testdata.PAIRS, protocol=2
    )
    meta = run(make_config(tmp_path / "out", input=path, validation_fraction=0.0))
    assert meta.written == 10 and meta.dropped == {"duplicate": 1, "empty": 1}


@pytest.mark.parametrize("layout", ["dir", "tar", "csv"])
def test_imdb_inputs(layout, tmp_path):
    if layout == "dir":
        path = testdata.write_aclimdb_dir(str(tmp_path), testdata.REVIEWS, splits=("train", "test"))
    elif layout == "tar":
        path = testdata.write_aclimdb_tar(str(tmp_path / "aclImdb_train.tar.gz"), testdata.REVIEWS)
    else:
        path = testdata.write_csv(
            str(tmp_path / "imdb.csv"), testdata.REVIEWS, extra_rows=[["meh", "unsure"]]
        )
    out = tmp_path / "out"
    meta = run(
        make_config(
            out, dataset="imdb", input=path, validation_fraction=0.0, max_reject_fraction=0.5
        )
    )
    assert meta.task == features.CLASSIFICATION and meta.reconciles()
    assert meta.dropped == {"duplicate": 2 if layout == "dir" else 1}
    train = read_split(str(out), meta, "train")
    assert ("A wonderful film with great acting. I loved it.", 1) in train
    assert ("I did not enjoy this movie.", 0) in train
    if layout == "dir":
        assert meta.splits["test"].examples == 6
    if layout == "csv":
        assert meta.rejected == {"invalid_label": 1}


def test_overwrite_replaces_an_earlier_run(aligned_inputs, tmp_path):
    run(make_config(tmp_path, **aligned_inputs, num_shards=3))
    with pytest.raises(preprocess.cli.UsageError, match="is not empty; pass --overwrite"):
        run(make_config(tmp_path, **aligned_inputs))
    run(make_config(tmp_path, **aligned_inputs, num_shards=1), overwrite=True)
    shards = sorted(f for f in os.listdir(tmp_path) if f.startswith("train-"))
    assert shards == ["train-00000-of-00001.tfrecord.gz"]  # no stale shards from the 3-shard run


def test_overwrite_removes_what_a_killed_run_left_in_beams_temp_dir(aligned_inputs, tmp_path):
    # A run killed while Beam wrote the rejects file: the sink's directory and its file.
    debris = tmp_path / "beam-temp-rejected-0123abcd" / "9f1c.rejected.jsonl"
    debris.parent.mkdir()
    debris.write_text('{"origin": "x"}\n')
    with pytest.raises(preprocess.cli.UsageError, match="is not empty; pass --overwrite"):
        run(make_config(tmp_path, **aligned_inputs))
    run(make_config(tmp_path, **aligned_inputs), overwrite=True)
    assert not any(name.startswith("beam-temp-") for name in os.listdir(tmp_path))


def test_overwrite_refuses_foreign_files(aligned_inputs, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(preprocess.cli.UsageError, match="holds files this job did not write"):
        run(make_config(tmp_path, **aligned_inputs), overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")  # in a subdirectory too
    with pytest.raises(preprocess.cli.UsageError, match="holds files this job did not write"):
        run(make_config(tmp_path, **aligned_inputs), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("runner", [None, "DirectRunner", "direct"])
def test_local_runs_go_to_the_fn_api_runner(runner):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    args = [f"--runner={runner}"] if runner else []
    options = preprocess.pipeline_options(args + ["--direct_num_workers=2"])
    assert isinstance(beam_options.local_runner(options), FnApiRunner)
    assert beam_options.local_runner(preprocess.pipeline_options(["--runner=PrismRunner"])) is None


def test_a_local_job_does_not_try_prism_first(no_prism, tmp_path):
    prefix = testdata.write_aligned(str(tmp_path), "train", testdata.PAIRS)
    meta = run(make_config(tmp_path / "out", input=prefix, validation_fraction=0.0))
    assert meta.written == 10
    no_prism()


def test_dataflow_options_are_completed_and_checked():
    options = preprocess.pipeline_options(
        [
            "--runner=DataflowRunner",
            "--project=my-project",
            "--region=europe-west4",
            "--temp_location=gs://bucket/tmp",
            "--machine_type=n2-standard-8",
            "--max_num_workers=20",
        ]
    ).get_all_options()
    assert options["setup_file"].endswith("setup.py") and os.path.exists(options["setup_file"])
    assert (options["project"], options["region"], options["temp_location"]) == (
        "my-project",
        "europe-west4",
        "gs://bucket/tmp",
    )
    assert (options["machine_type"], options["max_num_workers"]) == ("n2-standard-8", 20)
    with pytest.raises(
        preprocess.cli.UsageError, match="--temp_location is required with --runner=DataflowRunner"
    ):
        preprocess.pipeline_options(["--runner=DataflowRunner", "--project=p", "--region=r"])
    with pytest.raises(
        preprocess.cli.UsageError, match="--setup_file: /no/setup.py does not exist"
    ):
        preprocess.pipeline_options(
            ["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/t"]
            + ["--setup_file=/no/setup.py"]
        )
    with pytest.raises(preprocess.cli.UsageError, match="unknown flag --max_token"):
        preprocess.pipeline_options(["--max_token=5"])


def test_gcs_input_and_output_through_beam(gcs_emulator, tmp_path):
    from apache_beam.io.filesystems import FileSystems

    local = testdata.write_aligned(str(tmp_path), "train", testdata.PAIRS)
    for lang in ("en", "de"):
        with FileSystems.create(f"gs://{gcs_emulator}/corpus/train.{lang}") as f:
            f.write(open(f"{local}.{lang}", "rb").read())
    out = f"gs://{gcs_emulator}/prepared"
    meta = run(make_config(out, input=f"gs://{gcs_emulator}/corpus/train", validation_fraction=0.0))
    assert meta.written == 10
    listed = sorted(
        m.path.rsplit("/", 1)[1] for m in FileSystems.match([out + "/*"])[0].metadata_list
    )
    assert listed == [
        "metadata.json",
        "rejected-00000-of-00001.jsonl",
        "spm.model",
        "train-00000-of-00002.tfrecord.gz",
        "train-00001-of-00002.tfrecord.gz",
    ]
    with FileSystems.open(out + "/metadata.json") as f:
        assert features.Metadata.from_json(f.read().decode()).written == 10
    # What a run killed inside Beam's text sink leaves; --overwrite removes it on GCS too.
    with FileSystems.create(out + "/beam-temp-rejected-0123abcd/9f1c.rejected.jsonl") as f:
        f.write(b"{}\n")
    run(
        make_config(out, input=f"gs://{gcs_emulator}/corpus/train", validation_fraction=0.0),
        overwrite=True,
    )
    assert not FileSystems.match([out + "/beam-temp-*/**"])[0].metadata_list


def test_tfds_input(tmp_path):
    import tensorflow_datasets as tfds

    pairs = tfds.features.FeaturesDict({"de": tfds.features.Text(), "en": tfds.features.Text()})
    train = [{"en": en, "de": de} for en, de in testdata.PAIRS]
    testdata.write_tfds_dataset(
        tmp_path / "tfds" / "tiny_pairs" / "de-en" / "1.0.0",
        pairs,
        {"train": train, "validation": [{"en": en, "de": de} for en, de in testdata.VAL_PAIRS]},
    )
    specs = sources.resolve_sources(
        dataset="ende",
        input="tfds:tiny_pairs/de-en",
        validation_input=None,
        test_input=None,
        source_lang="en",
        target_lang="de",
        tfds_data_dir=str(tmp_path / "tfds"),
    )
    out = tmp_path / "out"
    config = PreprocessConfig(
        dataset="ende", output_dir=str(out), sources=tuple(specs), vocab_size=400, num_shards=2
    )
    meta = run(config)
    assert {s: i.examples for s, i in meta.splits.items()} == {"train": 10, "validation": 2}
    assert ("A boy jumps into the water.", "Ein Junge springt ins Wasser.") in read_split(
        str(out), meta, "train"
    )
