"""Preprocessing job: raw English-German pairs or IMDB reviews -> tokenized TFRecord shards.

    python -m pipeline.preprocess --dataset=ende --output_dir=/tmp/ende \
        [--input=PATH/train --validation_input=PATH/val --source_lang=en --target_lang=de] \
        [Beam options, e.g. --runner=DataflowRunner --project=P --region=R --temp_location=gs://...]

With no --input it runs on the embedded default corpus. Flags that are not this
job's own pass through to Beam's PipelineOptions; unknown ones are refused.
The output directory ends with metadata.json, written last: a directory without it
is not a finished dataset.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys

import apache_beam as beam
from absl import flags
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import cli, features, shards, sources, tokenizer, transforms
from pipeline.beam_options import new_pipeline, pipeline_options, recordable_options
from pipeline.config import DEFAULT_MAX_TOKENS, PreprocessConfig

PROGRAM = "preprocess"
STATS_FILE = "_stats.json"

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset",
    None,
    list(features.DATASET_TASKS),
    "Which task's data: ende (translation) or imdb (classification).",
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Where shards, the tokenizer and metadata.json go (local or gs://). Must be empty unless --overwrite.",
)
flags.DEFINE_string(
    "input",
    None,
    "Training input: aligned-file prefix (PATH/train reads PATH/train.en[.gz] and .de), a .tsv/.txt, a .pkl, an aclImdb dir or .tar.gz, a .csv, or tfds:NAME. Default: the embedded corpus.",
)
flags.DEFINE_string(
    "validation_input",
    None,
    "Validation input in any of --input's formats; kept as the validation split (else carved from --input).",
)
flags.DEFINE_string(
    "test_input", None, "Test input in any of --input's formats; kept as the test split."
)
flags.DEFINE_string(
    "source_lang", "en", "Source language code: the suffix of aligned files and the TFDS feature."
)
flags.DEFINE_string("target_lang", "de", "Target language code, likewise.")
flags.DEFINE_string(
    "tfds_data_dir",
    None,
    "Local TFDS data dir holding an already prepared dataset (for --input=tfds:NAME).",
)
flags.DEFINE_bool("lowercase", False, "Lowercase text after Unicode normalization.")
flags.DEFINE_integer(
    "max_tokens",
    None,
    "Drop examples with more subword tokens than this on any side (default: 256 for ende, 4096 for imdb).",
)
flags.DEFINE_float(
    "max_length_ratio",
    3.0,
    "Drop translation pairs whose longer side has more than this many times the tokens of the shorter.",
)
flags.DEFINE_float(
    "validation_fraction",
    0.05,
    "Fraction of --input carved out as validation by content hash (when --validation_input is not given).",
)
flags.DEFINE_float(
    "test_fraction",
    0.0,
    "Fraction of --input carved out as test by content hash (when --test_input is not given).",
)
flags.DEFINE_integer(
    "vocab_size",
    8000,
    f"SentencePiece vocabulary size (joint for translation); at least {tokenizer.MIN_VOCAB_SIZE}.",
)
flags.DEFINE_integer(
    "tokenizer_sample_size",
    1_000_000,
    "Train the tokenizer on at most this many training texts (a deterministic hash sample).",
)
flags.DEFINE_integer(
    "tokenizer_threads",
    tokenizer.TRAIN_THREADS,
    "Threads SentencePiece trains with. The model depends on this number, not on the machine: keep it to get the same model again.",
)
flags.DEFINE_string("tokenizer", None, "Reuse this SentencePiece model instead of training one.")
flags.DEFINE_integer(
    "num_shards", 8, "Number of training shards (examples are shuffled across them)."
)
flags.DEFINE_integer("num_eval_shards", 1, "Number of shards for validation and test.")
flags.DEFINE_float(
    "max_reject_fraction",
    0.01,
    "Fail the job when more than this fraction of records is malformed.",
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the outputs of an earlier run in --output_dir (its metadata.json is removed first).",
)

flags.register_validator(
    "max_tokens", lambda v: v is None or v >= 1, "--max_tokens must be a positive integer"
)
flags.register_validator("max_length_ratio", lambda v: v >= 1.0, "--max_length_ratio must be >= 1")
flags.register_validator(
    "validation_fraction", lambda v: 0.0 <= v < 1.0, "--validation_fraction must be in [0, 1)"
)
flags.register_validator(
    "test_fraction", lambda v: 0.0 <= v < 1.0, "--test_fraction must be in [0, 1)"
)
flags.register_validator(
    "vocab_size",
    lambda v: v >= tokenizer.MIN_VOCAB_SIZE,
    f"--vocab_size must be at least {tokenizer.MIN_VOCAB_SIZE}",
)
flags.register_validator(
    "tokenizer_sample_size", lambda v: v >= 1, "--tokenizer_sample_size must be positive"
)
flags.register_validator(
    "tokenizer_threads",
    lambda v: 1 <= v <= tokenizer.MAX_TRAIN_THREADS,
    f"--tokenizer_threads must be in [1, {tokenizer.MAX_TRAIN_THREADS}]",
)
flags.register_validator("num_shards", lambda v: v >= 1, "--num_shards must be positive")
flags.register_validator("num_eval_shards", lambda v: v >= 1, "--num_eval_shards must be positive")
flags.register_validator(
    "max_reject_fraction", lambda v: 0.0 <= v <= 1.0, "--max_reject_fraction must be in [0, 1]"
)
flags.register_multi_flags_validator(
    ["validation_fraction", "test_fraction"],
    lambda f: f["validation_fraction"] + f["test_fraction"] < 1.0,
    "--validation_fraction + --test_fraction must be below 1",
)

# Files this job writes; --overwrite removes only these. Beam's text sink writes the rejects
# file through a directory of its own, which a killed run leaves behind with its files.
BEAM_TEMP_PREFIX = "beam-temp-"
OWN_FILE_PATTERNS = (
    features.METADATA_FILE,
    features.TOKENIZER_FILE,
    STATS_FILE,
    f"{features.REJECTS_PREFIX}-*.jsonl",
    f"*{features.SHARD_SUFFIX}",
    f"{shards.TMP_PREFIX}*",
    f"{BEAM_TEMP_PREFIX}*/**",
)


def build_pipeline(
    pipeline: beam.Pipeline, *, config: PreprocessConfig, tokenizer_bytes: bytes | None = None
) -> dict:
    """Adds the job's transforms to ``pipeline``; returns its main PCollections for tests."""
    out = config.output_dir
    specs = pipeline | "Sources" >> beam.Create(list(config.sources))
    read, rejects = specs | "ReadSources" >> transforms.ReadSources()
    normalized = read | "NormalizeText" >> transforms.NormalizeText(lowercase=config.lowercase)
    nonempty = normalized | "DropEmpty" >> beam.ParDo(transforms.DropEmptyFn()).with_outputs(
        transforms.DROPPED, main="records"
    )
    split = nonempty.records | "AssignSplit" >> transforms.AssignSplit(
        validation_fraction=config.validation_fraction if config.carve_validation() else 0.0,
        test_fraction=config.test_fraction if config.carve_test() else 0.0,
    )
    # The one shuffle of records; from here on the job works on batches of them.
    batches = split | "GroupByContent" >> transforms.GroupByContent()
    unique = batches | "DropDuplicates" >> transforms.DropDuplicates()

    if tokenizer_bytes is None:
        model = unique.batches | "TrainTokenizer" >> transforms.TrainTokenizer(
            vocab_size=config.vocab_size,
            sample_size=config.tokenizer_sample_size,
            threads=config.tokenizer_threads,
        )
    else:
        model = pipeline | "GivenTokenizer" >> beam.Create([tokenizer_bytes])
    model = model | "WriteTokenizer" >> beam.ParDo(
        transforms.WriteFileFn(shards.join(out, features.TOKENIZER_FILE))
    )

    encoded = unique.batches | "Encode" >> beam.ParDo(
        transforms.EncodeFn(
            task=config.task, max_tokens=config.max_tokens, max_length_ratio=config.max_length_ratio
        ),
        beam.pvalue.AsSingleton(model),
    ).with_outputs(transforms.DROPPED, main="encoded")
    written = encoded.encoded | "WriteShards" >> transforms.WriteShards(
        output_dir=out, shards_per_split={s: config.shards_for(s) for s in config.output_splits()}
    )
    rejects | "WriteRejects" >> transforms.WriteRejects(output_dir=out)

    drops = (
        nonempty[transforms.DROPPED],
        unique[transforms.DROPPED],
        encoded[transforms.DROPPED],
    ) | "AllDrops" >> beam.Flatten()
    stats = (
        read  # counted as read, before the shuffle: see ReadSources
        | "CountRead" >> beam.Map(lambda _: ("records", 1)),
        transforms.count_reasons(drops, "dropped", "Drops"),
        transforms.count_reasons(rejects, "rejected", "Rejects"),
        written,
        unique.batches | "CountTrainOverlap" >> transforms.CountTrainOverlap(),
        transforms.length_histogram(encoded.encoded),
    ) | "AllStats" >> beam.Flatten()
    stats | "WriteStats" >> transforms.WriteStats(shards.join(out, STATS_FILE))
    return {
        "batches": unique.batches,
        "encoded": encoded.encoded,
        "rejects": rejects,
        "stats": stats,
    }


def _percentile(histogram: dict[int, int], q: float) -> int:
    total = sum(histogram.values())
    rank, seen = q * total, 0
    for length in sorted(histogram):
        seen += histogram[length]
        if seen >= rank:
            return length
    return 0


def length_statistics(raw: dict[str, int], task: str) -> dict[str, dict[str, dict[str, float]]]:
    sides = ("inputs", "targets") if task == features.TRANSLATION else ("inputs",)
    hists: dict[tuple[str, str], dict[int, int]] = {}
    for name, count in raw.items():
        if name.startswith("length/"):
            _, split, side, n = name.split("/")
            hists.setdefault((split, sides[int(side)]), {})[int(n)] = count
    result: dict[str, dict[str, dict[str, float]]] = {}
    for (split, side), hist in sorted(hists.items()):
        total = sum(hist.values())
        result.setdefault(split, {})[side] = {
            "mean": round(sum(n * c for n, c in hist.items()) / total, 2),
            "p50": _percentile(hist, 0.5),
            "p95": _percentile(hist, 0.95),
            "max": max(hist),
        }
    return result


def _project_version() -> str:
    try:
        return importlib.metadata.version("transformer-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_metadata(
    config: PreprocessConfig, raw: dict[str, int], model_bytes: bytes, options: dict
) -> features.Metadata:
    """Turns the job's counters into metadata.json's content."""

    def section(prefix: str) -> dict[str, int]:
        return {k.split("/", 1)[1]: v for k, v in sorted(raw.items()) if k.startswith(prefix + "/")}

    splits: dict[str, features.SplitInfo] = {}
    for key, count in sorted(raw.items()):
        if key.startswith("shard/"):
            _, split, name = key.split("/")
            info = splits.setdefault(split, features.SplitInfo(examples=0, files=[]))
            info.files.append(name)
            splits[split] = features.SplitInfo(examples=info.examples + count, files=info.files)
    rejected = section("rejected")
    return features.Metadata(
        task=config.task,
        dataset=config.dataset,
        tokenizer=features.TokenizerInfo(
            file=features.TOKENIZER_FILE,
            sha256=features.sha256_bytes(model_bytes),
            vocab_size=tokenizer.Tokenizer(model_bytes).vocab_size,
            special_ids=dict(features.SPECIAL_IDS),
        ),
        splits=splits,
        read=raw.get("records", 0) + sum(rejected.values()),
        written=sum(s.examples for s in splits.values()),
        dropped=section("dropped"),
        rejected=rejected,
        overlap_with_train=section("overlap"),
        token_lengths=length_statistics(raw, config.task),
        inputs={spec.split or "train": spec.path for spec in config.sources},
        options=options,
        version=_project_version(),
    )


def prepare_output_dir(output_dir: str, *, overwrite: bool) -> None:
    """Refuses a non-empty dir without --overwrite; with it, removes our old files, metadata first."""
    pattern = shards.join(output_dir, "**")  # files in subdirectories too
    existing = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if not existing and not FileSystems.exists(output_dir):
        try:
            FileSystems.mkdirs(output_dir)
        except OSError as e:
            raise cli.UsageError(f"--output_dir: cannot create {output_dir} ({e})") from None
    if not existing:
        return
    if not overwrite:
        raise cli.UsageError(
            f"--output_dir: {output_dir} is not empty; pass --overwrite to replace an earlier run's output"
        )
    own = set()
    for name in OWN_FILE_PATTERNS:
        own.update(
            m.path for m in FileSystems.match([shards.join(output_dir, name)])[0].metadata_list
        )
    foreign = sorted(set(existing) - own)
    if foreign:
        raise cli.UsageError(
            f"--output_dir: {output_dir} holds files this job did not write (e.g. {foreign[0]}); choose another directory"
        )
    metadata = shards.join(output_dir, features.METADATA_FILE)
    if FileSystems.exists(metadata):
        FileSystems.delete(
            [metadata]
        )  # first: the dir must never look complete while half-replaced
    FileSystems.delete(sorted(own - {metadata}))
    prefix = shards.join(output_dir, BEAM_TEMP_PREFIX)
    for temp_dir in sorted({p[: p.index("/", len(prefix))] for p in own if p.startswith(prefix)}):
        if FileSystems.exists(temp_dir):  # a local directory, now empty; none on GCS
            FileSystems.delete([temp_dir])


def config_from_flags() -> PreprocessConfig:
    if FLAGS.input is None and (FLAGS.validation_input or FLAGS.test_input):
        raise cli.UsageError(
            "--validation_input/--test_input need --input (the embedded corpus brings its own splits)"
        )
    try:
        if FLAGS.input is None:
            specs = sources.embedded_sources(FLAGS.dataset)
        else:
            specs = sources.resolve_sources(
                dataset=FLAGS.dataset,
                input=FLAGS.input,
                validation_input=FLAGS.validation_input,
                test_input=FLAGS.test_input,
                source_lang=FLAGS.source_lang,
                target_lang=FLAGS.target_lang,
                tfds_data_dir=FLAGS.tfds_data_dir,
            )
    except sources.InputError as e:
        raise cli.UsageError(str(e)) from None
    return PreprocessConfig(
        dataset=FLAGS.dataset,
        output_dir=FLAGS.output_dir.rstrip("/"),
        sources=tuple(specs),
        lowercase=FLAGS.lowercase,
        max_tokens=FLAGS.max_tokens or DEFAULT_MAX_TOKENS[FLAGS.dataset],
        max_length_ratio=FLAGS.max_length_ratio,
        validation_fraction=FLAGS.validation_fraction,
        test_fraction=FLAGS.test_fraction,
        vocab_size=FLAGS.vocab_size,
        tokenizer_sample_size=FLAGS.tokenizer_sample_size,
        tokenizer_threads=FLAGS.tokenizer_threads,
        tokenizer_path=FLAGS.tokenizer,
        num_shards=FLAGS.num_shards,
        num_eval_shards=FLAGS.num_eval_shards,
        max_reject_fraction=FLAGS.max_reject_fraction,
    )


def load_given_tokenizer(path: str) -> bytes:
    try:
        data = shards.read_bytes(path)
    except Exception as e:
        raise cli.UsageError(f"--tokenizer: cannot read {path} ({type(e).__name__})") from None
    try:
        tokenizer.Tokenizer(data)
    except tokenizer.TokenizerError as e:
        raise cli.UsageError(f"--tokenizer: {path}: {e}") from None
    return data


def run_job(
    config: PreprocessConfig, options: PipelineOptions, *, overwrite: bool
) -> features.Metadata:
    """Runs the job and writes metadata.json last. Raises cli.UsageError for input problems."""
    given = load_given_tokenizer(config.tokenizer_path) if config.tokenizer_path else None
    prepare_output_dir(config.output_dir, overwrite=overwrite)
    pipeline = new_pipeline(options)
    build_pipeline(pipeline, config=config, tokenizer_bytes=given)
    try:
        pipeline.run().wait_until_finish()
    except (sources.InputError, tokenizer.TokenizerError) as e:
        # Raised by a step reading or training on the input; the runner appends the step.
        raise cli.UsageError(str(e).split(" [while running")[0]) from None

    stats_path = shards.join(config.output_dir, STATS_FILE)
    raw = json.loads(shards.read_bytes(stats_path))
    model_bytes = shards.read_bytes(shards.join(config.output_dir, features.TOKENIZER_FILE))
    recorded_options = recordable_options(options)
    recorded_options.update({k: v for k, v in vars(config).items() if k not in ("sources",)})
    meta = build_metadata(config, raw, model_bytes, recorded_options)
    if not meta.reconciles():
        raise RuntimeError(f"counts do not reconcile: {summary(meta)}")
    rejected = sum(meta.rejected.values())
    if meta.read and rejected / meta.read > config.max_reject_fraction:
        raise cli.UsageError(
            f"{rejected} of {meta.read} records were malformed ({rejected / meta.read:.1%} > --max_reject_fraction="
            f"{config.max_reject_fraction}); see {config.output_dir}/{features.REJECTS_PREFIX}-*.jsonl"
        )
    shards.write_atomically(
        shards.join(config.output_dir, features.METADATA_FILE), [meta.to_json().encode()]
    )
    FileSystems.delete([stats_path])
    return meta


def summary(meta: features.Metadata) -> str:
    def reasons(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "none"

    lines = [
        f"read {meta.read:,} = written {meta.written:,} + dropped {sum(meta.dropped.values()):,} "
        f"({reasons(meta.dropped)}) + rejected {sum(meta.rejected.values()):,} ({reasons(meta.rejected)})",
    ]
    for split in sorted(meta.splits, key=features.SPLITS.index):
        info = meta.splits[split]
        overlap = meta.overlap_with_train.get(split)
        extra = f"; {overlap:,} also occur in train" if overlap else ""
        lines.append(
            f"{split}: {cli.plural(info.examples, 'example')} in {cli.plural(len(info.files), 'shard')}{extra}"
        )
    lines.append(
        f"tokenizer: {meta.tokenizer.file}, {meta.tokenizer.vocab_size:,} pieces, sha256 {meta.tokenizer.sha256[:16]}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # The runner logs a failing step's traceback before re-raising the same error, which
    # run_main reports in one line (or with its traceback when it is not the user's).
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
    for name in ("dataset", "output_dir"):
        if getattr(FLAGS, name) is None:
            raise cli.UsageError(f"--{name} is required")
    options = pipeline_options(argv[1:])
    config = config_from_flags()
    meta = run_job(config, options, overwrite=FLAGS.overwrite)
    print(summary(meta))
    print(f"wrote {config.output_dir}/{features.METADATA_FILE}")


def run() -> None:
    cli.run_main(PROGRAM, main, known_only=True)


if __name__ == "__main__":
    sys.exit(run())
