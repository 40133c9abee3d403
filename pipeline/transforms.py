"""The preprocessing job's PTransforms, one per concept, in the order the job applies them.

Every record that enters leaves through exactly one door: written to a shard, dropped
(with a reason, tagged ``DROPPED``), or rejected as malformed (tagged ``REJECTED``, kept
in the dead-letter file). ``preprocess.build_pipeline`` counts those doors into the figures that
``metadata.json`` reconciles.

Records travel one by one up to ``GroupByContent``, the job's one shuffle of records; after
it they travel in batches (tuples), so the per-element cost of the runner is paid per batch.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import operator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import features, shards, sources, text, tokenizer

DROPPED = "dropped"
REJECTED = "rejected"
DROP_REASONS = ("empty", "duplicate", "too_long", "length_ratio")
NAMESPACE = "preprocess"


def _drop(reason: str) -> beam.pvalue.TaggedOutput:
    Metrics.counter(NAMESPACE, f"dropped_{reason}").inc()
    return beam.pvalue.TaggedOutput(DROPPED, reason)


class ReadSourceFn(beam.DoFn):
    """SourceSpec -> RawRecord (main) | Reject (tagged REJECTED)."""

    def process(self, spec: sources.SourceSpec):
        for item in sources.read_source(spec):
            if isinstance(item, sources.Reject):
                Metrics.counter(NAMESPACE, f"rejected_{item.reason}").inc()
                yield beam.pvalue.TaggedOutput(REJECTED, item)
            else:
                yield item


class ReadSources(beam.PTransform):
    """Reads every source -> (records, rejects), as read: the job counts them before it groups
    them across workers, so a record lost in any later step shows up when the counts reconcile."""

    def expand(self, specs):
        outputs = specs | "Read" >> beam.ParDo(ReadSourceFn()).with_outputs(
            REJECTED, main="records"
        )
        return outputs.records, outputs[REJECTED]


class NormalizeText(beam.PTransform):
    def __init__(self, *, lowercase: bool):
        super().__init__()
        self.lowercase = lowercase

    def expand(self, records):
        lowercase = self.lowercase
        return records | beam.Map(
            lambda r: dataclasses.replace(
                r, fields=tuple(text.normalize(f, lowercase=lowercase) for f in r.fields)
            )
        )


class DropEmptyFn(beam.DoFn):
    def process(self, record: sources.RawRecord):
        if all(record.fields):
            yield record
        else:
            yield _drop("empty")


def split_key(record: sources.RawRecord) -> str:
    """What decides the split: the source sentence (all its translations go together) or the review."""
    return text.content_hash(record.fields[0])


class AssignSplit(beam.PTransform):
    """Keeps given splits; carves validation/test out of the rest by a content hash."""

    def __init__(self, *, validation_fraction: float, test_fraction: float):
        super().__init__()
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction

    def expand(self, records):
        validation, test = self.validation_fraction, self.test_fraction

        def assign(record: sources.RawRecord) -> sources.RawRecord:
            if record.split:
                return record
            coin = text.hash_fraction(split_key(record))
            if coin < validation:
                split = features.VALIDATION
            elif coin < validation + test:
                split = features.TEST
            else:
                split = features.TRAIN
            return dataclasses.replace(record, split=split)

        return records | beam.Map(assign)


CONTENT_BUCKETS = 1024


class RawRecordCoder(beam.coders.Coder):
    """A RawRecord as the tuple of its fields: deterministic, and smaller on the wire than the
    pickled dataclass Beam would fall back to (docs/BENCHMARKS.md: 0.66x the bytes for a
    Multi30k pair, 0.94x for an IMDB review), which is the shuffle's volume on Dataflow."""

    _tuple = beam.coders.FastPrimitivesCoder()

    def encode(self, record: sources.RawRecord) -> bytes:
        return self._tuple.encode((record.origin, record.fields, record.label, record.split))

    def decode(self, encoded: bytes) -> sources.RawRecord:
        return sources.RawRecord(*self._tuple.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


beam.coders.registry.register_coder(sources.RawRecord, RawRecordCoder)


def content_bucket(record: sources.RawRecord) -> int:
    """Which batch a record joins: a function of its split key alone."""
    return int(split_key(record)[:8], 16) % CONTENT_BUCKETS


class GroupByContent(beam.PTransform):
    """Records -> batches: one tuple per bucket of split keys, its records sorted by origin.

    The job's one shuffle of records. Everything that must meet — duplicates within a split,
    examples sharing a source sentence across splits — shares a split key and so a batch;
    the steps after this one work batch by batch, with no further per-record shuffle.
    """

    def expand(self, records):
        return (
            records
            | "KeyByBucket"
            >> beam.Map(lambda r: (content_bucket(r), r)).with_output_types(
                tuple[int, sources.RawRecord]
            )
            | "Group" >> beam.GroupByKey()
            | "Batch"
            >> beam.MapTuple(
                lambda _, group: tuple(sorted(group, key=operator.attrgetter("origin")))
            )
        )


class DropDuplicates(beam.PTransform):
    """Batches -> batches without exact duplicates within a split (same normalized pair / same
    review text); of each set of duplicates the first by origin stays."""

    def expand(self, batches):
        def drop_duplicates(batch):
            kept = {}
            for record in batch:
                # A review is a duplicate by its text alone, whatever its label says.
                key = (record.split, text.content_hash(*record.fields))
                first = kept.get(key)
                if first is not None:
                    yield _drop("duplicate")
                if first is None or record.origin < first.origin:
                    kept[key] = record
            if kept:
                yield tuple(kept.values())

        return batches | beam.FlatMap(drop_duplicates).with_outputs(DROPPED, main="batches")


class CountTrainOverlap(beam.PTransform):
    """Batches -> ("overlap/<split>", n) per batch, summed by ``WriteStats``: validation/test
    split keys that also occur in train (one batch holds every record of a split key)."""

    def expand(self, batches):
        def overlaps(batch):
            splits_by_key = collections.defaultdict(set)
            for record in batch:
                splits_by_key[split_key(record)].add(record.split)
            return collections.Counter(
                f"overlap/{split}"
                for splits in splits_by_key.values()
                if features.TRAIN in splits
                for split in splits - {features.TRAIN}
            ).items()

        return batches | "Overlaps" >> beam.FlatMap(overlaps)


class TrainTokenizer(beam.PTransform):
    """Batches -> serialized SentencePiece model of their train-split texts (a single element).

    The sample is the ``sample_size`` texts with the smallest content hashes: a
    uniform sample that is the same on every run and runner; so is the model trained on it
    with ``threads`` threads.
    """

    def __init__(self, *, vocab_size: int, sample_size: int, threads: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.sample_size = sample_size
        self.threads = threads

    def expand(self, batches):
        vocab_size, threads = self.vocab_size, self.threads

        def train_texts(batch):
            return [
                (text.content_hash(f), f)
                for r in batch
                if r.split == features.TRAIN
                for f in r.fields
            ]

        return (
            batches
            | "Texts" >> beam.FlatMap(train_texts)
            | "Sample" >> beam.combiners.Top.Smallest(self.sample_size)
            | "Train"
            >> beam.Map(
                lambda sample: tokenizer.train(
                    [t for _, t in sample], vocab_size=vocab_size, num_threads=threads
                )
            )
        )


class WriteFileFn(beam.DoFn):
    """bytes -> the same bytes, after writing them atomically to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def process(self, data: bytes):
        shards.write_atomically(self.path, [data])
        yield data


class Encoded(NamedTuple):
    split: str
    key: str  # content hash: decides the shard and the order within it
    example: bytes  # serialized tf.train.Example
    lengths: tuple[int, ...]  # tokens per side, EOS excluded


class EncodeFn(beam.DoFn):
    """Batch of RawRecords + model bytes (side input) -> tuple of Encoded | dropped reasons."""

    def __init__(self, *, task: str, max_tokens: int, max_length_ratio: float):
        self.task = task
        self.max_tokens = max_tokens
        self.max_length_ratio = max_length_ratio
        self._tokenizer = None

    def process(self, batch: tuple[sources.RawRecord, ...], model_bytes: bytes):
        if self._tokenizer is None or self._tokenizer.model_bytes != model_bytes:
            self._tokenizer = tokenizer.Tokenizer(model_bytes)
        encoded = []
        for record in batch:
            result = self._encode(record)
            if isinstance(result, str):
                yield _drop(result)
            else:
                encoded.append(result)
        if encoded:
            yield tuple(encoded)

    def _encode(self, record: sources.RawRecord) -> Encoded | str:
        """-> the Encoded record, or the reason it is dropped."""
        ids = self._tokenizer.encode_batch(list(record.fields))
        lengths = tuple(len(i) - 1 for i in ids)
        if max(lengths) > self.max_tokens:
            return "too_long"
        if self.task == features.TRANSLATION:
            ratio = max(lengths) / max(1, min(lengths))
            if ratio > self.max_length_ratio:
                return "length_ratio"
            example = features.serialize_example(self.task, ids[0], targets=ids[1])
        else:
            example = features.serialize_example(self.task, ids[0], label=record.label)
        return Encoded(record.split, text.content_hash(*record.fields), example, lengths)


class WriteShards(beam.PTransform):
    """Batches of Encoded -> ("shard/<split>/<file name>", examples) for every shard, empty ones
    too. A shard holds its examples sorted by content hash."""

    def __init__(self, *, output_dir: str, shards_per_split: dict[str, int]):
        super().__init__()
        self.output_dir = output_dir
        self.shards_per_split = shards_per_split

    def expand(self, encoded):
        counts = self.shards_per_split
        output_dir = self.output_dir

        def shard_parts(batch: tuple[Encoded, ...]):
            parts = collections.defaultdict(list)
            for e in batch:
                parts[(e.split, int(e.key[:12], 16) % counts[e.split])].append((e.key, e.example))
            return [(shard, tuple(items)) for shard, items in parts.items()]

        def write(item):
            (split, index), parts = item
            records = sorted(record for part in parts for record in part)
            name = features.shard_name(split, index, counts[split])
            n = shards.write_tfrecords(shards.join(output_dir, name), (ex for _, ex in records))
            yield f"shard/{split}/{name}", n

        every_shard = [((s, i), ()) for s, n in counts.items() for i in range(n)]
        seeds = encoded.pipeline | "EveryShard" >> beam.Create(every_shard)
        return (
            (encoded | "AssignShards" >> beam.FlatMap(shard_parts), seeds)
            | "WithEmpty" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.FlatMap(write)
        )


class WriteRejects(beam.PTransform):
    """The dead-letter file: one JSON line per rejected record."""

    def __init__(self, *, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, rejects):
        return (
            rejects
            | "ToJson" >> beam.Map(lambda r: json.dumps(dataclasses.asdict(r), ensure_ascii=False))
            | "Write"
            >> beam.io.WriteToText(
                shards.join(self.output_dir, features.REJECTS_PREFIX),
                file_name_suffix=".jsonl",
                num_shards=1,
                shard_name_template="-SSSSS-of-NNNNN",
            )
        )


def length_histogram(encoded):
    """Batches of Encoded -> ("length/<split>/<side>/<n>", count) per batch; summed by
    ``WriteStats``, exact percentiles come from it in the driver."""

    def batch_histogram(batch):
        return collections.Counter(
            f"length/{e.split}/{side}/{n}" for e in batch for side, n in enumerate(e.lengths)
        ).items()

    return encoded | "LengthKeys" >> beam.FlatMap(batch_histogram)


def count_reasons(pcoll, prefix: str, label: str):
    """Reason strings (or objects with .reason) -> ("<prefix>/<reason>", 1) each; summed by
    ``WriteStats``."""
    return pcoll | f"{label}Reasons" >> beam.Map(
        lambda x: (f"{prefix}/{getattr(x, 'reason', x)}", 1)
    )


class WriteStats(beam.PTransform):
    """("name", n) pairs -> their sums per name, in one JSON file the driver turns into
    metadata.json. Every count of the job is a sum here: one combine for all of them."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, pairs):
        path = self.path
        return (
            pairs
            | "Sum" >> beam.CombinePerKey(sum)
            | "ToDict" >> beam.combiners.ToDict()
            | "Write"
            >> beam.Map(
                lambda d: shards.write_atomically(path, [json.dumps(d, sort_keys=True).encode()])
            )
        )
