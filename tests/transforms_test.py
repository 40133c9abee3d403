"""Tier 2: each PTransform under TestPipeline, asserted against literal expectations."""

import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import beam_options, features, tokenizer, transforms
from pipeline.sources import RawRecord, Reject


def local_pipeline() -> TestPipeline:
    """Beam's TestPipeline on the runner the jobs run on locally (beam_options.local_runner)."""
    return TestPipeline(runner=beam_options.local_runner(PipelineOptions([])))


def pair(src, tgt, split=None, origin="f:1"):
    return RawRecord(origin=origin, fields=(src, tgt), label=None, split=split)


def test_normalize_text():
    with local_pipeline() as p:
        out = (
            p
            | beam.Create([pair(" A  dog<br />runs ", "Ein\tHund  läuft")])
            | transforms.NormalizeText(lowercase=True)
        )
        assert_that(out, equal_to([pair("a dog runs", "ein hund läuft")]))


def test_drop_empty_tags_the_reason():
    with local_pipeline() as p:
        out = (
            p
            | beam.Create([pair("a", "b"), pair("", "b"), pair("a", "")])
            | beam.ParDo(transforms.DropEmptyFn()).with_outputs(transforms.DROPPED, main="records")
        )
        assert_that(out.records, equal_to([pair("a", "b")]), label="kept")
        assert_that(out[transforms.DROPPED], equal_to(["empty", "empty"]), label="dropped")


def test_assign_split_by_source_hash_keeps_given_splits():
    # hash fractions: "three" 0.05, "ein hund" 0.235, "a dog" 0.552, "a cat" 0.885
    records = [
        pair("three", "drei"),
        pair("ein hund", "a dog"),
        pair("a dog", "ein Hund"),
        pair("a cat", "eine Katze"),
        pair("a cat", "die Katze", split="test"),
    ]
    with local_pipeline() as p:
        out = (
            p
            | beam.Create(records)
            | transforms.AssignSplit(validation_fraction=0.1, test_fraction=0.2)
            | beam.Map(lambda r: (r.fields[1], r.split))
        )
        assert_that(
            out,
            equal_to(
                [
                    ("drei", "validation"),
                    ("a dog", "test"),
                    ("ein Hund", "train"),
                    ("eine Katze", "train"),
                    ("die Katze", "test"),
                ]
            ),
        )


def test_raw_record_coder_round_trips_and_is_what_beam_picks():
    from apache_beam.coders import typecoders

    coder = typecoders.registry.get_coder(RawRecord)
    assert isinstance(coder, transforms.RawRecordCoder) and coder.is_deterministic()
    records = [
        pair("Ein Hund läuft.", "A dog runs.", None, "f.de.gz:7"),
        RawRecord(
            origin="a.tar.gz:train/pos/1_9.txt", fields=("Great film",), label=1, split="train"
        ),
    ]
    for record in records:
        assert coder.decode(coder.encode(record)) == record


def test_content_bucket_is_the_source_sentences_and_stable():
    # The bucket is fixed by the source sentence alone (so duplicates and cross-split overlaps
    # meet in one batch), and by a content hash, so every run and runner agrees on it.
    assert transforms.content_bucket(pair("a", "b")) == 746
    assert transforms.content_bucket(pair("a", "c", "validation", "g:9")) == 746
    assert transforms.content_bucket(pair("x", "b")) == 434
    buckets = {transforms.content_bucket(pair(f"s{i}", "t")) for i in range(5000)}
    assert min(buckets) >= 0 and max(buckets) < transforms.CONTENT_BUCKETS
    assert len(buckets) > 0.9 * transforms.CONTENT_BUCKETS


def test_group_by_content_batches_records_by_split_key_sorted_by_origin():
    # content buckets: source "a" 746, "x" 434
    records = [
        pair("a", "b", "train", "f:3"),
        pair("x", "y", "validation", "g:2"),
        pair("a", "c", "validation", "g:1"),
        pair("a", "b", "train", "f:1"),
    ]
    with local_pipeline() as p:
        out = p | beam.Create(records) | transforms.GroupByContent()
        assert_that(
            out | beam.Map(lambda batch: [(r.origin, r.fields[1]) for r in batch]),
            equal_to([[("f:1", "b"), ("f:3", "b"), ("g:1", "c")], [("g:2", "y")]]),
        )


def test_drop_duplicates_within_a_split_only():
    batch = (
        pair("a", "b", "train", "f:3"),
        pair("a", "b", "train", "f:1"),
        pair("a", "b", "train", "f:2"),
        pair("a", "b", "validation", "g:1"),
        pair("a", "c", "train", "f:4"),
    )
    duplicates_only = (pair("x", "y", "train", "h:2"), pair("x", "y", "train", "h:1"))
    with local_pipeline() as p:
        out = p | beam.Create([batch, duplicates_only]) | transforms.DropDuplicates()
        kept = out.batches | beam.Map(lambda b: sorted((r.origin, r.split) for r in b))
        assert_that(
            kept,
            equal_to(
                [[("f:1", "train"), ("f:4", "train"), ("g:1", "validation")], [("h:1", "train")]]
            ),
            label="kept",
        )
        assert_that(
            out[transforms.DROPPED],
            equal_to(["duplicate", "duplicate", "duplicate"]),
            label="dropped",
        )


def test_count_train_overlap_by_source():
    batches = [
        (pair("a", "b", "train"), pair("a", "c", "validation"), pair("a", "d", "test")),
        (pair("x", "y", "validation"), pair("x", "v", "validation")),
        (pair("z", "w", "test"), pair("q", "w", "train")),
        (pair("m", "n", "train"), pair("m", "o", "validation"), pair("k", "l", "train")),
    ]
    with local_pipeline() as p:
        out = p | beam.Create(batches) | transforms.CountTrainOverlap()
        # One count per batch and split; WriteStats sums them.
        assert_that(
            out,
            equal_to([("overlap/validation", 1), ("overlap/test", 1), ("overlap/validation", 1)]),
        )


@pytest.fixture(scope="module")
def model_bytes():
    words = "the a dog cat sees likes park ball der die das Hund Katze sieht mag Park Ball".split()
    sentences = [f"{a} {b} {c}" for a in words for b in words for c in words[:6]]
    return tokenizer.train(sentences, vocab_size=400)


def test_encode_drops_too_long_and_ratio_outliers(model_bytes):
    tok = tokenizer.Tokenizer(model_bytes)
    ok = pair("the dog sees the cat", "the cat likes the dog", "train")  # 5 and 5 tokens
    long = pair(" ".join(["the dog"] * 20), " ".join(["the cat"] * 20), "train")  # 40 tokens
    skewed = pair("dog", "the dog sees the cat", "train")  # 1 vs 5 tokens
    with local_pipeline() as p:
        model = p | "Model" >> beam.Create([model_bytes])
        out = (
            p
            | beam.Create([(ok, long, skewed), (long,)])
            | beam.ParDo(
                transforms.EncodeFn(task=features.TRANSLATION, max_tokens=30, max_length_ratio=3.0),
                beam.pvalue.AsSingleton(model),
            ).with_outputs(transforms.DROPPED, main="encoded")
        )
        expected = features.serialize_example(
            features.TRANSLATION, tok.encode(ok.fields[0]), targets=tok.encode(ok.fields[1])
        )
        assert_that(
            out.encoded | beam.Map(lambda batch: [(e.split, e.example) for e in batch]),
            equal_to([[("train", expected)]]),
            label="kept",
        )
        assert_that(
            out[transforms.DROPPED],
            equal_to(["too_long", "length_ratio", "too_long"]),
            label="dropped",
        )


def test_write_shards_writes_every_shard_even_empty(tmp_path):
    out_dir = str(tmp_path)
    encoded = [
        (
            transforms.Encoded("train", "0" * 64, b"ex-a", (1, 1)),
            transforms.Encoded("train", "1" + "0" * 63, b"ex-b", (1, 1)),
        ),
        (
            transforms.Encoded("validation", "2" * 64, b"ex-c", (1, 1)),
            transforms.Encoded("train", "3" + "0" * 63, b"ex-d", (1, 1)),
        ),
    ]
    with local_pipeline() as p:
        out = (
            p
            | beam.Create(encoded)
            | transforms.WriteShards(
                output_dir=out_dir, shards_per_split={"train": 3, "validation": 1}
            )
        )
        # % 3 of int("000000000000", 16): 0, of "100000000000": 1, of "300000000000": 0
        assert_that(
            out,
            equal_to(
                [
                    ("shard/train/train-00000-of-00003.tfrecord.gz", 2),
                    ("shard/train/train-00001-of-00003.tfrecord.gz", 1),
                    ("shard/train/train-00002-of-00003.tfrecord.gz", 0),
                    ("shard/validation/validation-00000-of-00001.tfrecord.gz", 1),
                ]
            ),
        )
    assert sorted(os.listdir(out_dir)) == [
        "train-00000-of-00003.tfrecord.gz",
        "train-00001-of-00003.tfrecord.gz",
        "train-00002-of-00003.tfrecord.gz",
        "validation-00000-of-00001.tfrecord.gz",
    ]

    def read(name):
        shard = os.path.join(out_dir, name)
        return [r.numpy() for r in tf.data.TFRecordDataset(shard, compression_type="GZIP")]

    # Examples from different batches meet in a shard, sorted by content hash.
    assert read("train-00000-of-00003.tfrecord.gz") == [b"ex-a", b"ex-d"]
    assert read("train-00001-of-00003.tfrecord.gz") == [b"ex-b"]


def test_count_reasons_and_length_histogram():
    encoded = [
        (transforms.Encoded("train", "k1", b"", (3, 4)),),
        (
            transforms.Encoded("train", "k2", b"", (3, 5)),
            transforms.Encoded("train", "k3", b"", (3, 5)),
            transforms.Encoded("test", "k4", b"", (3, 5)),
        ),
    ]
    with local_pipeline() as p:
        reasons = transforms.count_reasons(
            p | beam.Create(["empty", Reject("f:2", "wrong_columns", "")]), "dropped", "D"
        )
        hist = transforms.length_histogram(p | "Enc" >> beam.Create(encoded))
        assert_that(
            reasons, equal_to([("dropped/empty", 1), ("dropped/wrong_columns", 1)]), label="reasons"
        )
        # Counts per batch; WriteStats sums them.
        assert_that(
            hist,
            equal_to(
                [
                    ("length/train/0/3", 1),
                    ("length/train/1/4", 1),
                    ("length/train/0/3", 2),
                    ("length/train/1/5", 2),
                    ("length/test/0/3", 1),
                    ("length/test/1/5", 1),
                ]
            ),
            label="hist",
        )


def test_read_sources_splits_records_and_rejects(tmp_path):
    from pipeline import sources

    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"Hello\tHallo\nno tab\nbad \xff\tx\n")
    spec = sources.SourceSpec(
        sources.TSV,
        str(path),
        None,
        (("flag", "--input"), ("source_column", "0"), ("target_column", "1")),
    )
    with local_pipeline() as p:
        records, rejects = p | beam.Create([spec]) | transforms.ReadSources()
        assert_that(
            records | beam.Map(lambda r: (r.origin, r.fields)),
            equal_to([(f"{path}:1", ("Hello", "Hallo"))]),
            label="records",
        )
        assert_that(
            rejects | beam.Map(lambda r: (r.origin, r.reason)),
            equal_to([(f"{path}:2", "wrong_columns"), (f"{path}:3", "undecodable")]),
            label="rejects",
        )


def test_train_tokenizer_uses_a_deterministic_hash_sample():
    from pipeline import text

    words = ["dog", "cat", "bird", "sees", "likes", "the", "a", "park", "Hund", "Katze"]
    records = [
        pair(f"the {a} {b}", f"die {b} {a}", split)
        for a in words
        for b in words
        for split in ("train", "validation")
    ]
    train_texts = [f for r in records if r.split == "train" for f in r.fields]
    expected_sample = sorted((text.content_hash(t), t) for t in train_texts)[:150]
    expected = tokenizer.train([t for _, t in expected_sample], vocab_size=400, num_threads=2)
    batches = [tuple(records[: len(records) // 2]), tuple(records[len(records) // 2 :])]
    with local_pipeline() as p:
        model = (
            p
            | beam.Create(batches)
            | transforms.TrainTokenizer(vocab_size=400, sample_size=150, threads=2)
        )
        assert_that(model, equal_to([expected]))


def test_write_rejects_and_stats(tmp_path):
    import json

    stats_path = str(tmp_path / "_stats.json")
    with local_pipeline() as p:
        (
            p
            | "Rejects" >> beam.Create([Reject("f:2", "wrong_columns", "1 column")])
            | transforms.WriteRejects(output_dir=str(tmp_path))
        )
        (
            p
            | "Stats" >> beam.Create([("records", 3), ("dropped/empty", 1), ("records", 2)])
            | transforms.WriteStats(stats_path)
        )
    lines = (tmp_path / "rejected-00000-of-00001.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"origin": "f:2", "reason": "wrong_columns", "detail": "1 column"}
    ]
    assert json.loads(open(stats_path).read()) == {"dropped/empty": 1, "records": 5}
