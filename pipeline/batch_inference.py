"""The batch inference job that batch_translate and batch_classify share: files in, files out.

    outputs = resolve_outputs(input_glob, output)           # {input path: output path}
    build_pipeline(p, outputs=outputs, handler=handler, format_prediction=fn, empty_output="")

Every input line keeps its (file, line number) through RunInference, and each input
file gets one output file with exactly its number of lines, in its order:

- Lines are split on "\\n" only (a "\\r" before it and a leading UTF-8 BOM are
  dropped); a final line without "\\n" still counts. Bytes that are not UTF-8 become
  U+FFFD (counted). A name ending in ".gz" is read, and written, gzipped.
- Lines that normalize to nothing (``pipeline.text.normalize``: empty, blank, only
  "<br />") skip the model and give ``empty_output``.
- Output files are UTF-8, one line per input line, each ending in "\\n"; each is
  written under a temporary name (``.tmp-XXXXXXXX-<name>`` beside it) and renamed
  into place (an existing file is replaced).

Lines are spread over the workers for inference and grouped back by file, so each
output file is put together on one worker (its text must fit in that worker's memory).

Output naming (the same rule as the file-level CLIs): the output of input file X is
``OUTPUT/<basename of X>`` when the glob matches several files, when OUTPUT ends
with "/", or when OUTPUT is an existing local directory; otherwise (one input file)
it is the file OUTPUT itself. Two inputs with the same basename, an output that is
one of the inputs, or several inputs with OUTPUT an existing file are refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from pipeline import cli, export_contract, shards, text
from pipeline.beam_options import new_pipeline, pipeline_options
from pipeline.inference_handler import SavedModelHandler

METRICS_NAMESPACE = "batch_inference"
COUNTERS = ("lines_read", "empty_lines", "undecodable_lines", "files_written", "lines_written")
_COUNTS = "counts"
_UTF8_BOM = b"\xef\xbb\xbf"
_EMPTY = "empty"


class InferenceInputError(ValueError):
    """An --input/--output combination the job cannot run on (a one-line message)."""


def match_inputs(pattern: str) -> list[str]:
    """The files ``pattern`` matches, sorted; InferenceInputError when there are none."""
    if FileSystems.get_scheme(pattern) is None and os.path.isdir(pattern):
        raise InferenceInputError(
            f"--input: {pattern} is a directory; give a file or a glob such as {pattern.rstrip('/')}/*"
        )
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # Beam wraps filesystem errors in BeamIOError
        raise InferenceInputError(f"--input: cannot list {pattern} ({e})") from None
    paths = sorted(m.path for m in matched)
    if not paths:
        raise InferenceInputError(f"--input: no file matches {pattern}")
    return paths


def resolve_outputs(pattern: str, output: str) -> dict[str, str]:
    """{input file: output file} for ``--input=pattern --output=output`` (see the module doc)."""
    inputs = match_inputs(pattern)
    local_dir = FileSystems.get_scheme(output) is None and os.path.isdir(output)
    if len(inputs) == 1 and not output.endswith("/") and not local_dir:
        outputs = {inputs[0]: output}
    else:
        if FileSystems.get_scheme(output) is None and os.path.isfile(output):
            raise InferenceInputError(
                f"--output: {output} is a file, but {len(inputs)} input files need an output "
                "directory"
            )
        directory = output.rstrip("/")
        outputs = {path: FileSystems.join(directory, _basename(path)) for path in inputs}
        names: dict[str, str] = {}
        for path in inputs:
            clash = names.setdefault(_basename(path), path)
            if clash != path:
                raise InferenceInputError(
                    f"--input: {clash} and {path} have the same file name, so their outputs "
                    f"in {directory} would collide"
                )
    for source, target in outputs.items():
        if _same_path(source, target):
            raise InferenceInputError(f"--output: {target} is also an input file")
        _check_local_output(target)
    return outputs


def _check_local_output(target: str) -> None:
    """Refuses a local output that cannot be created, before the job reads anything."""
    if FileSystems.get_scheme(target) is not None:
        return
    existing = os.path.dirname(os.path.abspath(target))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        why = "not a directory" if not os.path.isdir(existing) else "not writable"
        raise InferenceInputError(f"--output: cannot create {target} ({existing} is {why})")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _same_path(a: str, b: str) -> bool:
    if FileSystems.get_scheme(a) is None and FileSystems.get_scheme(b) is None:
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


class ReadNumberedLinesFn(beam.DoFn):
    """input path -> ((path, line number), text) per line, plus (path, line count) tagged counts."""

    def __init__(self):
        self.lines = Metrics.counter(METRICS_NAMESPACE, "lines_read")
        self.undecodable = Metrics.counter(METRICS_NAMESPACE, "undecodable_lines")

    def process(self, path: str):
        count = 0
        with shards.open_decompressed(path) as f:
            for count, raw in enumerate(_read_lines_of(f, path), start=1):
                raw = raw[:-1] if raw.endswith(b"\n") else raw
                raw = raw[:-1] if raw.endswith(b"\r") else raw
                if count == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    self.undecodable.inc()
                yield (path, count - 1), text
        self.lines.inc(count)
        yield beam.pvalue.TaggedOutput(_COUNTS, (path, count))


def _read_lines_of(f, path: str):
    """``f``'s lines; a damaged .gz is the user's InferenceInputError, not a worker crash."""
    while True:
        try:
            raw = f.readline()
        except shards.DECOMPRESSION_ERRORS as e:
            raise InferenceInputError(
                f"--input: cannot read {path} (corrupt compressed data: {e})"
            ) from None
        if not raw:
            return
        yield raw


class SplitEmptyFn(beam.DoFn):
    """Keyed lines -> the ones with text (main) | the blank ones (tagged "empty")."""

    def __init__(self):
        self.empty = Metrics.counter(METRICS_NAMESPACE, "empty_lines")

    def process(self, keyed_line):
        if text.normalize(keyed_line[1]):
            yield keyed_line
        else:
            self.empty.inc()
            yield beam.pvalue.TaggedOutput(_EMPTY, keyed_line)


class WriteOutputFileFn(beam.DoFn):
    """(input path, {"lines": [(number, text)], "count": [n]}) -> the output path, written."""

    def __init__(self, outputs: dict[str, str]):
        self.outputs = outputs
        self.files = Metrics.counter(METRICS_NAMESPACE, "files_written")
        self.lines = Metrics.counter(METRICS_NAMESPACE, "lines_written")

    def process(self, grouped):
        path, parts = grouped
        (count,) = parts[_COUNTS]
        lines = sorted(parts["lines"])
        if [number for number, _ in lines] != list(range(count)):
            raise RuntimeError(f"{path}: {count} lines read but {len(lines)} results to write")
        target = self.outputs[path]
        shards.write_atomically(
            target,
            ((line + "\n").encode("utf-8") for _, line in lines),
            gzip=target.endswith(".gz"),
        )
        self.files.inc()
        self.lines.inc(count)
        yield target


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    outputs: dict[str, str],
    handler: ModelHandler,
    format_prediction: Callable[[Any], str],
    empty_output: str,
) -> beam.PCollection:
    """Adds the job to ``pipeline``; returns the PCollection of written output paths.

    ``format_prediction(inference)`` turns one row of the handler's output into the
    output line (without "\\n"; it must not contain line breaks).
    """
    read = (
        pipeline
        | "InputFiles" >> beam.Create(sorted(outputs))
        | "ReadLines" >> beam.ParDo(ReadNumberedLinesFn()).with_outputs(_COUNTS, main="lines")
    )
    split = (
        read.lines
        # Spreads one big file's lines over the workers that run the model.
        | "SpreadLines" >> beam.Reshuffle()
        | "SplitEmpty" >> beam.ParDo(SplitEmptyFn()).with_outputs(_EMPTY, main="text")
    )
    predicted = (
        split.text
        | "RunInference" >> RunInference(KeyedModelHandler(handler))
        | "FormatPredictions"
        >> beam.MapTuple(lambda key, result: (key, format_prediction(result.inference)))
    )
    blank = split[_EMPTY] | "EmptyOutputs" >> beam.MapTuple(lambda key, _: (key, empty_output))
    by_file = (
        (predicted, blank)
        | "AllLines" >> beam.Flatten()
        | "ByFile" >> beam.MapTuple(lambda key, line: (key[0], (key[1], line)))
    )
    return (
        {"lines": by_file, _COUNTS: read[_COUNTS]}
        | "GroupByFile" >> beam.CoGroupByKey()
        | "WriteFiles" >> beam.ParDo(WriteOutputFileFn(outputs))
    )


def run_job(
    *,
    outputs: dict[str, str],
    handler: ModelHandler,
    format_prediction: Callable[[Any], str],
    empty_output: str,
    options,
) -> dict[str, int]:
    """Runs the job to completion; returns its counters (lines_read, empty_lines, ...)."""
    pipeline = new_pipeline(options)
    build_pipeline(
        pipeline,
        outputs=outputs,
        handler=handler,
        format_prediction=format_prediction,
        empty_output=empty_output,
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
    )
    totals = dict.fromkeys(COUNTERS, 0)
    for counter in counters["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] += value or 0
    return totals


def run_from_args(
    *,
    task: str,
    export_dir: str | None,
    input_pattern: str | None,
    output: str | None,
    min_batch_size: int,
    max_batch_size: int,
    beam_args: list[str],
    format_prediction: Callable[[Any], str],
    empty_output: str,
) -> tuple[dict[str, str], dict[str, int]]:
    """What the two entry points' main() share: checks, then the job; UsageError on bad input.

    Returns ({input: output}, the job's counters).
    """
    for name, value in (("export_dir", export_dir), ("input", input_pattern), ("output", output)):
        if not value:
            raise cli.UsageError(f"--{name} is required")
    if min_batch_size > max_batch_size:
        raise cli.UsageError(
            f"--min_batch_size={min_batch_size} exceeds --max_batch_size={max_batch_size}"
        )
    program = "batch_translate" if task == "translation" else "batch_classify"
    options = pipeline_options(beam_args, program=program)
    try:
        metadata = export_contract.read_export_metadata(export_dir)
    except export_contract.ExportMetadataError as e:
        raise cli.UsageError(f"--export_dir: {e}") from None
    if metadata["task"] != task:
        raise cli.UsageError(
            f"--export_dir: {export_dir} holds a {metadata['task']} model, not a {task} model"
        )
    try:
        outputs = resolve_outputs(input_pattern, output)
    except InferenceInputError as e:
        raise cli.UsageError(str(e)) from None
    try:
        warnings = export_contract.check_provenance(export_dir, metadata)
    except export_contract.ExportMetadataError as e:
        raise cli.UsageError(f"--export_dir: {e}") from None
    for warning in warnings:
        print(f"{program}: warning: {warning}", file=sys.stderr, flush=True)
    signature = export_contract.SIGNATURE_FOR_TASK[task]
    handler = SavedModelHandler(
        export_dir,
        signature=signature,
        output_key=export_contract.OUTPUT_KEYS[signature],
        min_batch_size=min_batch_size,
        max_batch_size=max_batch_size,
    )
    try:
        counters = run_job(
            outputs=outputs,
            handler=handler,
            format_prediction=format_prediction,
            empty_output=empty_output,
            options=options,
        )
    except InferenceInputError as e:  # raised in a worker, re-raised here with the step's name
        raise cli.UsageError(str(e).split(" [while running")[0]) from None
    return outputs, counters


def summary(verb: str, outputs: dict[str, str], counters: dict[str, int]) -> str:
    """The job's closing report: what it read, skipped and wrote."""
    modelled = counters["lines_read"] - counters["empty_lines"]
    empty = cli.plural(counters["empty_lines"], "empty line")
    lines = [
        f"{verb} {cli.plural(modelled, 'line')} ({empty} passed through) "
        f"from {cli.plural(len(outputs), 'file')}"
    ]
    if counters["undecodable_lines"]:
        undecodable = cli.plural(counters["undecodable_lines"], "line")
        lines.append(f"{undecodable} had bytes that are not UTF-8 (read as U+FFFD)")
    if len(outputs) == 1:
        lines.append(f"wrote {next(iter(outputs.values()))}")
    else:
        lines.append(
            f"wrote {counters['files_written']} files to {_parent(next(iter(outputs.values())))}"
        )
    return "\n".join(lines)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]
