"""Benchmark: SentencePiece training time by thread count, and whether each count repeats its model.

    python scripts/bench_tokenizer.py [--corpus=multi30k|imdb] [--threads=1,2,8] [--repeats=2] \
        [--data=../shared/data] [--append_to=docs/BENCHMARKS.md]

Trains the tokenizer the way the preprocessing job does (`pipeline.tokenizer.train`: unigram,
byte fallback, vocab 8000) on the real corpus beside the repo (../shared/data): every
normalized text of the training files, in content-hash order as the job's sample is (Multi30k's
train sentences of both languages, or the IMDB train reviews read from the .tar.gz). For each thread
count, in turn, `--repeats` times: the seconds and the model's SHA-256. The job's
`--tokenizer_threads` picks the count; the model must be the same for the same count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_report  # noqa: E402

from pipeline import cli, features, sources, text, tokenizer  # noqa: E402

SECTION = "## Tokenizer training by thread count"
# corpus -> (dataset, its input under --data, the suffix of a file that must exist)
INPUTS = {
    "multi30k": ("ende", os.path.join("multi30k", "train"), ".en.gz"),
    "imdb": ("imdb", os.path.join("imdb", "aclImdb_train.tar.gz"), ""),
}


def training_texts(data: str, corpus: str) -> list[str]:
    dataset, relative, suffix = INPUTS[corpus]
    path = os.path.join(data, relative)
    if not os.path.exists(path + suffix):
        raise SystemExit(
            f"bench_tokenizer: error: {path + suffix} not found (the real data is needed)"
        )
    specs = sources.resolve_sources(dataset=dataset, input=path, source_lang="en", target_lang="de")
    texts = [
        text.normalize(field)
        for spec in specs
        for record in sources.read_source(spec)
        if isinstance(record, sources.RawRecord)
        for field in record.fields
    ]
    return sorted(texts, key=text.content_hash)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=sorted(INPUTS), default="multi30k")
    parser.add_argument("--threads", default="1,2,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    parser.add_argument("--append_to")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    texts = training_texts(args.data, args.corpus)
    rows = []
    for threads in counts:
        seconds, models = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model = tokenizer.train(texts, vocab_size=args.vocab_size, num_threads=threads)
            seconds.append(time.perf_counter() - start)
            models.append(features.sha256_bytes(model)[:16])
        rows.append((threads, seconds, models))
    base = statistics.median(rows[0][1])
    table = "\n".join(
        f"| {threads} | {', '.join(f'{s:.2f}' for s in seconds)} | "
        f"{base / statistics.median(seconds):.2f}x | {', '.join(sorted(set(models)))} |"
        for threads, seconds, models in rows
    )
    report = f"""{SECTION}

`pipeline.tokenizer.train` (vocab {args.vocab_size}) on the {args.corpus} training texts
({len(texts):,}), in content-hash order as in the job's sample; each thread count {args.repeats}
times in turn. Speed-up: the median against {cli.plural(counts[0], "thread")}. Model: the first 16 hex digits
of every distinct SHA-256 its runs produced (one per row: the count repeats its model).

| threads | seconds | speed-up | model |
|---:|---|---:|---|
{table}

Machine: {bench_report.cpu_model()}, {os.cpu_count()} cores. Command: `{bench_report.command_line()}`.
"""
    bench_report.publish(report, SECTION, args.append_to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
