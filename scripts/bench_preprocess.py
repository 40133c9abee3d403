"""Benchmark: the whole preprocessing job vs. a plain loop that only reads and encodes.

    python scripts/bench_preprocess.py [--data=../shared/data/multi30k] [--repeats=2] \
        [--append_to=docs/BENCHMARKS.md]

Both sides run in this process, alternately, on the Multi30k training set. The plain
loop reads the same gzipped files and SentencePiece-encodes both sides with the
tokenizer the job trained; the job also normalizes, deduplicates, splits, trains that
tokenizer, filters and writes shards and metadata. Reports pairs/s and the ratio.

A third side, the work loop, does in plain Python the per-record work no runner can skip:
read, normalize, hash, encode, serialize, frame and gzip into one shard, with the job's own
functions. What the job costs beyond it is the runner's: building and starting the pipeline,
the shuffles, per-element overhead, the counts. The job on the first 100 pairs alone, with the
tokenizer given, shows the part of that cost that does not grow with the input.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_report  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline import features, preprocess, shards, sources, text, tokenizer  # noqa: E402
from pipeline.config import PreprocessConfig  # noqa: E402

SECTION = "## Preprocessing throughput"
SMALL_PAIRS = 100


def plain_loop(prefix: str, model_bytes: bytes) -> int:
    tok = tokenizer.Tokenizer(model_bytes)
    with (
        gzip.open(f"{prefix}.en.gz", "rt", encoding="utf-8") as en,
        gzip.open(f"{prefix}.de.gz", "rt", encoding="utf-8") as de,
    ):
        pairs = 0
        for source, target in zip(en, de):
            tok.encode(source.rstrip("\n"))
            tok.encode(target.rstrip("\n"))
            pairs += 1
    return pairs


def _specs(prefix: str) -> list[sources.SourceSpec]:
    return sources.resolve_sources(dataset="ende", input=prefix, source_lang="en", target_lang="de")


def work_loop(prefix: str, model_bytes: bytes, output_dir: str) -> int:
    """The job's per-record work without a runner: read, normalize, hash (the source for the
    split, the pair for duplicates), encode, serialize; then one gzipped TFRecord shard."""
    tok = tokenizer.Tokenizer(model_bytes)
    examples = []
    for spec in _specs(prefix):
        for record in sources.read_source(spec):
            fields = [text.normalize(f) for f in record.fields]
            text.content_hash(fields[0])
            text.content_hash(*fields)
            ids = tok.encode_batch(fields)
            examples.append(
                features.serialize_example(features.TRANSLATION, ids[0], targets=ids[1])
            )
    return shards.write_tfrecords(os.path.join(output_dir, "train.tfrecord.gz"), examples)


def head_prefix(prefix: str, directory: str, lines: int) -> str:
    """Writes the first ``lines`` pairs of ``prefix``'s files under ``directory``; its prefix."""
    small = os.path.join(directory, "train")
    for lang in ("en", "de"):
        with (
            gzip.open(f"{prefix}.{lang}.gz", "rt", encoding="utf-8") as source,
            gzip.open(f"{small}.{lang}.gz", "wt", encoding="utf-8") as head,
        ):
            head.writelines(itertools.islice(source, lines))
    return small


def job(
    prefix: str, output_dir: str, vocab_size: int, tokenizer_path: str | None = None
) -> features.Metadata:
    config = PreprocessConfig(
        dataset="ende",
        output_dir=output_dir,
        sources=tuple(_specs(prefix)),
        vocab_size=vocab_size,
        tokenizer_path=tokenizer_path,
    )
    return preprocess.run_job(config, PipelineOptions([]), overwrite=True)


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "multi30k"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--append_to")
    args = parser.parse_args()
    prefix = os.path.join(args.data, "train")
    if not os.path.exists(prefix + ".en.gz"):
        print(
            f"bench_preprocess: error: {prefix}.en.gz not found (the real Multi30k data is needed)",
            file=sys.stderr,
        )
        return 2
    out = tempfile.mkdtemp(prefix="bench_preprocess-")
    job_times, given_times, loop_times, work_times, small_times = [], [], [], [], []
    given_dir = tempfile.mkdtemp(prefix="bench_preprocess_given-")
    work_dir = tempfile.mkdtemp(prefix="bench_preprocess_work-")
    small_dir = tempfile.mkdtemp(prefix="bench_preprocess_small-")
    try:
        small = head_prefix(prefix, small_dir, SMALL_PAIRS)
        for _ in range(args.repeats):
            start = time.perf_counter()
            meta = job(prefix, out, args.vocab_size)
            job_times.append(time.perf_counter() - start)
            model_path = os.path.join(out, features.TOKENIZER_FILE)
            start = time.perf_counter()
            job(prefix, given_dir, args.vocab_size, tokenizer_path=model_path)
            given_times.append(time.perf_counter() - start)
            model_bytes = pathlib.Path(model_path).read_bytes()
            start = time.perf_counter()
            pairs = plain_loop(prefix, model_bytes)
            loop_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            work_loop(prefix, model_bytes, work_dir)
            work_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            job(small, os.path.join(small_dir, "out"), args.vocab_size, tokenizer_path=model_path)
            small_times.append(time.perf_counter() - start)
    finally:
        for directory in (out, given_dir, work_dir, small_dir):
            shutil.rmtree(directory, ignore_errors=True)
    job_s, loop_s = statistics.median(job_times), statistics.median(loop_times)
    given_s, work_s = statistics.median(given_times), statistics.median(work_times)
    small_s = statistics.median(small_times)
    text = f"""{SECTION}

Whole preprocessing job (locally: Beam's FnApiRunner, in one process) vs. a plain Python loop that
only reads the same gzipped files and SentencePiece-encodes both sides, on Multi30k train ({pairs:,} pairs), run
alternately in one process, median of {args.repeats}.

| | seconds | pairs/s |
|---|---:|---:|
| plain loop (read + encode) | {loop_s:.2f} | {pairs / loop_s:,.0f} |
| work loop (read, normalize, hash, encode, serialize, write one gzipped shard) | {work_s:.2f} | {pairs / work_s:,.0f} |
| preprocessing job (all steps, vocab {args.vocab_size}) | {job_s:.2f} | {pairs / job_s:,.0f} |
| preprocessing job, tokenizer given (`--tokenizer`) | {given_s:.2f} | {pairs / given_s:,.0f} |
| the same on the first {SMALL_PAIRS} pairs only | {small_s:.2f} | |
| **job / loop time** | **{job_s / loop_s:.1f}x** (tokenizer given: **{given_s / loop_s:.1f}x**) | |
| work loop / loop time | {work_s / loop_s:.1f}x | |
| job, tokenizer given / work loop time | {given_s / work_s:.1f}x | |

The difference between the first two job rows is learning the SentencePiece model (on
`--tokenizer_threads`, 8 by default). The work loop does with the job's own functions the
per-record work no runner can skip; what the job with the tokenizer given costs beyond it is the
runner's: building and starting the pipeline (about what the job on {SMALL_PAIRS} pairs
costs), one shuffle of records (grouping them into batches by content), one of the batches'
examples (by shard), per-element overhead, and the job's counts.

Runs in seconds, in order: plain loop {_runs(loop_times)}; work loop {_runs(work_times)}; job
{_runs(job_times)}; job with the tokenizer given {_runs(given_times)}; on {SMALL_PAIRS} pairs
{_runs(small_times)}.

Job counts: read {meta.read}, written {meta.written}, dropped {sum(meta.dropped.values())}.
Machine: {bench_report.machine()}. Command: `python scripts/bench_preprocess.py --repeats={args.repeats}`.
"""
    bench_report.publish(text, SECTION, args.append_to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
