"""Batch inference over text files: files in -> bucketed batches -> model -> files out, in order.

    loaded = load_model_dir(model_dir, task=features.TRANSLATION, checkpoint="best")
    jobs = plan_jobs("texts/*.en", "out/")
    summary = translate_files(loaded, jobs, beam_size=4, alpha=0.6, batch_tokens=4096)
    print(summary.describe())

Each input line is normalized with `pipeline.text.normalize` as the training data was,
encoded with EOS and cut to the model's `max_length` (the first `max_length - 1` ids
plus EOS, as the trainer cuts long inputs; counted). The lines of a group of files are
sorted by length into token-budget batches, run through the model, and put back in
input order: output line i belongs to input line i, and an empty input line gives an
empty output line (classification: `{}`) without reaching the model. Translation
output never depends on which batch a line landed in, with one exception: with beam
search and the default length limit, a hypothesis that runs past its source's limit
without EOS (a degenerate model) may differ. Classification writes one JSON object per line,
`{"label": "positive", "probability": 0.912345, "probabilities": [0.087655, 0.912345]}`
(probabilities rounded to 6 places; `probability` is the label's).

Inputs are streamed, never read whole. Small files are pooled into groups of about
`group_lines` lines; a longer file is cut into chunks of `group_lines` lines, and each
chunk's output is saved (atomically, beside the output: `infer_files.SavedChunks`) as
soon as it is done; the output is assembled from them at the end. A rerun skips inputs
whose output exists with the input's line count, resumes a long input after its last
saved chunk (when the model and decoding settings are the same), and redoes the rest;
`overwrite=True` redoes all. A ``stop`` callable, asked after each batch, ends a run
early with the lines the unfinished group or chunk has saved as a partial chunk, which
the rerun takes up. `process_stream` runs standard input (or one file) to
standard output instead, chunk by chunk, with nothing saved. Loading the model dir
lives in trainer/model_dir.py; naming, reading and the atomic writes in
trainer/infer_files.py; batching and the replicas' threads in trainer/infer_batches.py;
what a translation or classification does with a batch in trainer/infer_tasks.py.

With several devices (GPUs, or logical CPUs) each device holds its own copy of the
model and its own thread takes the next batch, so no device waits for another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline import cli, features, text
from trainer.infer_batches import pad_batch, plan_batches, run_on_replicas
from trainer.infer_files import (
    READ_ERRORS,
    FileJob,
    InferenceError,
    OutputListing,
    SavedChunks,
    count_lines,
    iter_line_chunks,
    plan_jobs,
    read_lines,
    reason,
    write_atomically,
    write_lines_atomically,
)
from trainer.infer_tasks import Classification, Task, Translation
from trainer.model_dir import LoadedModel, load_model_dir

__all__ = [
    "FileJob",
    "InferenceError",
    "LoadedModel",
    "Summary",
    "classify_files",
    "load_model_dir",
    "plan_batches",
    "plan_jobs",
    "process_files",
    "process_stream",
    "write_standard_output",
    "translate_files",
    "translate_lines",
]

DEFAULT_GROUP_LINES = 100_000


@dataclasses.dataclass
class Summary:
    """What a run did; `describe()` is the final summary line, `notes()` what needs attention."""

    task: str
    files: int = 0
    skipped: int = 0
    lines: int = 0
    sentences: int = 0  # non-empty lines, the ones the model saw
    source_tokens: int = 0  # EOS included, after truncation
    target_tokens: int = 0  # EOS included (translation)
    truncated: int = 0
    truncated_to: int = 0
    undecodable: int = 0  # lines with bytes that are not UTF-8
    resumed_lines: int = 0  # lines whose output a run before this one had saved
    seconds: float = 0.0
    stopped: bool = False  # a stop was asked for: the outputs left are not all written
    written: int = 0  # output files written
    saved_at_stop: int = 0  # output lines of unfinished chunks saved when it stopped

    def describe(self) -> str:
        seconds = max(self.seconds, 1e-9)
        notes = [f"{self.written} written before the stop"] if self.stopped else []
        notes += [f"{self.skipped} skipped: output complete"] if self.skipped else []
        skipped = f" ({'; '.join(notes)})" if notes else ""
        if self.task == features.TRANSLATION:
            tokens = f"{self.source_tokens:,} source tokens, {self.target_tokens:,} target tokens"
            rate = f"{self.target_tokens / seconds:,.0f} target tokens/s"
        else:
            tokens = f"{self.source_tokens:,} tokens"
            rate = f"{self.source_tokens / seconds:,.0f} tokens/s"
        files = f"{cli.plural(self.files - self.skipped, 'file')}{skipped}, " if self.files else ""
        resumed = (
            f" (and {self.resumed_lines:,} lines reused from saved chunks)"
            if self.resumed_lines
            else ""
        )
        return (
            f"{files}{cli.plural(self.lines, 'line')}{resumed}, "
            f"{cli.plural(self.sentences, 'sentence')}, {tokens} in {self.seconds:.1f} s: "
            f"{self.sentences / seconds:,.1f} sentences/s, {rate}"
        )

    def notes(self) -> list[str]:
        notes = []
        if self.truncated:
            truncated = cli.plural(self.truncated, "line")
            notes.append(f"{truncated} truncated to {self.truncated_to} tokens")
        if self.undecodable:
            undecodable = cli.plural(self.undecodable, "line")
            notes.append(f"{undecodable} had bytes that are not UTF-8 (now U+FFFD)")
        return notes


class Stopped(Exception):
    """A stop was asked for between batches; ``finished`` maps the index of each line whose
    output is done (empty lines aside) to that output."""

    def __init__(self, finished: dict[int, str] | None = None):
        super().__init__("stopped between batches")
        self.finished = finished or {}


# ----------------------------------------------------------------------------- files


def translate_files(
    loaded: LoadedModel,
    jobs: Sequence[FileJob],
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    batch_tokens: int = 4096,
    max_decode_length: int | None = None,
    **options,
) -> Summary:
    """Translates every job's input into its output (greedy for ``beam_size == 1``).

    ``batch_tokens`` bounds padded source tokens x ``beam_size`` per batch and device;
    ``max_decode_length`` defaults to each source's length + 50, capped at the model's
    ``max_length``. ``options`` are those of ``process_files``.
    """
    task = Translation(
        loaded,
        beam_size=beam_size,
        alpha=alpha,
        batch_tokens=batch_tokens,
        max_decode_length=max_decode_length,
        cache=True,
    )
    return process_files(loaded, task, jobs, **options)


def translate_lines(
    loaded: LoadedModel,
    lines: Sequence[str],
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    batch_tokens: int = 4096,
    max_decode_length: int | None = None,
    cache: bool = True,
) -> tuple[list[str], Summary]:
    """Translates ``lines`` in memory exactly as ``translate_files`` would: (outputs, summary).

    ``cache=False`` (greedy only) re-runs the decoder over the whole prefix at every
    step: the baseline scripts/bench_translate.py measures the cache against.
    """
    task = Translation(
        loaded,
        beam_size=beam_size,
        alpha=alpha,
        batch_tokens=batch_tokens,
        max_decode_length=max_decode_length,
        cache=cache,
    )
    summary = Summary(task=task.task, truncated_to=loaded.max_length - 1)
    started = time.monotonic()
    outputs = _run_lines(loaded, task, lines, summary, bar=None)
    summary.seconds = time.monotonic() - started
    return outputs, summary


def classify_files(
    loaded: LoadedModel, jobs: Sequence[FileJob], *, batch_size: int = 64, **options
) -> Summary:
    """Classifies every line of every job's input into a JSON line; ``options`` as below."""
    return process_files(loaded, Classification(loaded, batch_size=batch_size), jobs, **options)


def process_files(
    loaded: LoadedModel,
    task: Task,
    jobs: Sequence[FileJob],
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    group_lines: int = DEFAULT_GROUP_LINES,
    log: Callable[[str], None] | None = None,
    before_rename: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Summary:
    """Runs ``task`` over the jobs whose output is not complete (all with ``overwrite``).

    Consecutive files are pooled into groups of about ``group_lines`` lines; each group
    is batched as one, and its files are written when the group is done. A file of more
    than ``group_lines`` lines runs alone, in chunks of ``group_lines`` lines saved as
    they finish (see the module docstring). ``progress``: a bar on stderr, in lines
    (None: when stderr is a terminal). ``log`` gets the skip / resume / redo / wrote lines
    (default: stderr). ``before_rename`` is passed to ``write_atomically``.

    ``stop()`` is asked after each batch: once it says True, the output lines the
    unfinished group or chunk already has are saved (``SavedChunks.save_partial``) and
    the summary comes back with ``stopped``; a rerun picks them up.
    """
    if group_lines < 1:
        raise ValueError(f"group_lines={group_lines} must be positive")
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    started = time.monotonic()
    summary = Summary(task=task.task, files=len(jobs), truncated_to=loaded.max_length - 1)
    # A first pass counts every input's lines (streamed), to find finished outputs and to
    # size the progress bar; inputs are read again when their group runs.
    listing = OutputListing(job.output for job in jobs)
    listing.remove_stale_temporaries(job.output for job in jobs)
    pending: list[tuple[FileJob, int]] = []
    for job in jobs:
        try:
            lines = count_lines(job.input)
        except READ_ERRORS as e:
            raise InferenceError(f"--input: cannot read {job.input} ({reason(e)})") from None
        if overwrite:
            listing.remove_saved(job.output)
        elif _output_complete(job, lines, listing, log):
            listing.remove_saved(job.output)  # left if a run stopped right after writing it
            summary.skipped += 1
            continue
        pending.append((job, lines))
    _make_output_dirs(job for job, _ in pending)
    bar = tqdm(
        total=sum(n for _, n in pending),
        unit="line",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    run = _Run(loaded, task, group_lines, summary, bar, log, before_rename, stop, listing)
    try:
        for group in _groups(pending, group_lines):
            if stop is not None and stop():
                raise Stopped()
            if len(group) == 1 and group[0][1] > group_lines:
                _process_in_chunks(run, *group[0])
            else:
                _process_group(run, group)
    except Stopped:
        summary.stopped = True
    finally:
        bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def process_stream(
    loaded: LoadedModel,
    task: Task,
    chunks: Iterable[tuple[list[str], int]],
    write: Callable[[list[str]], None],
) -> Summary:
    """Runs ``task`` over ``chunks`` of (lines, undecodable count), handing each chunk's
    output lines to ``write`` as soon as the chunk is done (``--output=-``: standard output).

    Nothing is saved or resumed; the chunks are those of ``infer_files.iter_stream_chunks``
    or ``iter_line_chunks``. The summary's seconds are those spent on the chunks, not those
    spent waiting for them (a person typing).
    """
    summary = Summary(task=task.task, truncated_to=loaded.max_length - 1)
    for lines, undecodable in chunks:  # the wait for input is not counted in the rates
        started = time.monotonic()
        summary.undecodable += undecodable
        write(_run_lines(loaded, task, lines, summary, bar=None))
        summary.seconds += time.monotonic() - started
    return summary


def _make_output_dirs(jobs: Iterable[FileJob]) -> None:
    """Creates the output directories up front: a bad --output fails before any decoding."""
    for directory in sorted({os.path.dirname(job.output) for job in jobs} - {""}):
        try:
            tf.io.gfile.makedirs(directory)
        except (tf.errors.OpError, OSError) as e:
            raise InferenceError(
                f"--output: cannot create the directory {directory} ({reason(e)})"
            ) from None


def _output_complete(job: FileJob, input_lines: int, listing: OutputListing, log) -> bool:
    """Whether ``job.output`` exists with one line per input line (only a rename makes it)."""
    if not listing.has(job.output):
        return False
    try:
        output_lines = count_lines(job.output)
    except READ_ERRORS as e:
        log(f"redoing {job.input}: cannot read {job.output} ({reason(e)})")
        return False
    if output_lines == input_lines:
        log(
            f"skipping {job.input}: output complete ({job.output}, {cli.plural(input_lines, 'line')})"
        )
        return True
    has = cli.plural(output_lines, "line")
    log(f"redoing {job.input}: {job.output} has {has}, the input {input_lines}")
    return False


def _groups(
    pending: list[tuple[FileJob, int]], group_lines: int
) -> Iterator[list[tuple[FileJob, int]]]:
    """Consecutive (job, lines), about ``group_lines`` lines per group; a longer file alone."""
    group: list[tuple[FileJob, int]] = []
    size = 0
    for job, lines in pending:
        if lines > group_lines:
            if group:
                yield group
                group, size = [], 0
            yield [(job, lines)]
            continue
        group.append((job, lines))
        size += lines
        if size >= group_lines:
            yield group
            group, size = [], 0
    if group:
        yield group


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every group and chunk of one ``process_files`` call runs with."""

    loaded: LoadedModel
    task: Task
    chunk_lines: int
    summary: Summary
    bar: tqdm
    log: Callable[[str], None]
    before_rename: Callable[[str], None] | None
    stop: Callable[[], bool] | None
    listing: OutputListing

    def manifest(self, **inputs) -> dict:
        """What saved lines are made from: ``inputs`` (a long input's name and line count,
        or a group's inputs), the chunk size, the model and the decoding settings."""
        return {
            **inputs,
            "chunk_lines": self.chunk_lines,
            "task": self.task.task,
            "checkpoint": self.loaded.checkpoint,
            "settings": self.task.settings,
        }

    def lines(self, texts: Sequence[str], known: dict[int, str]) -> list[str]:
        return _run_lines(
            self.loaded, self.task, texts, self.summary, self.bar, known=known, stop=self.stop
        )


def _process_group(run: _Run, group: list[tuple[FileJob, int]]) -> None:
    """Files pooled into one batching; each written when all are done.

    A stop saves the lines done under the group's first output (``SavedChunks``: one
    manifest naming every input of the group, one partial chunk over their lines in
    order), so that it costs two writes however many files the group pools; the rerun
    forms the same group and takes them up.
    """
    saved = SavedChunks(group[0][0].output)
    manifest = run.manifest(inputs=[[job.input, lines] for job, lines in group])
    total = sum(lines for _, lines in group)
    known: dict[int, str] = {}
    resuming = run.listing.has(saved.dir)
    if resuming:
        with _writing(saved.dir):
            saved.start(manifest)
        known = saved.load_partial(0, total)
        if known:
            run.log(
                f"resuming {cli.plural(len(group), 'file')} from {group[0][0].input} on: "
                f"{cli.plural(len(known), 'line')} saved"
            )
    texts: list[str] = []
    spans: list[tuple[FileJob, int, int]] = []
    for job, _ in group:
        lines, undecodable = read_lines(job.input)
        run.summary.undecodable += undecodable
        spans.append((job, len(texts), len(lines)))
        texts.extend(lines)
    try:
        outputs = run.lines(texts, known)
    except Stopped as stopped:
        if stopped.finished:
            with _writing(saved.dir):
                saved.start(manifest)
                saved.save_partial(0, len(texts), stopped.finished)
            run.summary.saved_at_stop += len(stopped.finished)
        raise
    for job, start, count in spans:
        with _writing(job.output):
            write_lines_atomically(
                job.output, outputs[start : start + count], before_rename=run.before_rename
            )
        run.summary.written += 1
        run.log(f"wrote {job.output} ({cli.plural(count, 'line')})")
    for job, _ in group:  # the first's, and any a run that grouped the files otherwise saved
        run.listing.remove_saved(job.output)


def _process_in_chunks(run: _Run, job: FileJob, lines: int) -> None:
    """One long input, chunk by chunk: saved chunks (and partial chunks) of an earlier run
    are reused; a stop saves the unfinished chunk's lines."""
    saved = SavedChunks(job.output)
    chunks = -(-lines // run.chunk_lines)
    with _writing(saved.dir):
        if saved.start(run.manifest(input=job.input, input_lines=lines)):
            run.log(f"resuming {job.input}: found saved chunks in {saved.dir}")
    reused = 0
    for index, (texts, undecodable) in enumerate(iter_line_chunks(job.input, run.chunk_lines)):
        if saved.is_saved(index, len(texts)):
            reused += 1
            run.summary.resumed_lines += len(texts)
            run.bar.update(len(texts))
            continue
        if run.stop is not None and run.stop():
            raise Stopped()
        run.summary.undecodable += undecodable
        known = saved.load_partial(index, len(texts))
        if known:
            run.log(
                f"resuming {job.input}: {cli.plural(len(known), 'line')} of chunk {index} saved"
            )
        try:
            outputs = run.lines(texts, known)
        except Stopped as stopped:
            if stopped.finished:
                with _writing(saved.dir):
                    saved.save_partial(index, len(texts), stopped.finished)
                run.summary.saved_at_stop += len(stopped.finished)
            raise
        with _writing(saved.part(index)):
            write_lines_atomically(saved.part(index), outputs)
    if reused:
        run.log(f"reused {reused} of {chunks} saved chunks of {job.input}")
    with _writing(job.output):
        write_atomically(job.output, saved.joined(chunks), before_rename=run.before_rename)
    saved.remove()
    run.summary.written += 1
    run.log(f"wrote {job.output} ({cli.plural(lines, 'line')}, {chunks} chunks)")


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """Turns a failed write under it into the one-line ``--output`` error naming ``path``."""
    try:
        yield
    except (tf.errors.OpError, OSError) as e:
        _raise_write_error(path, e)


def _raise_write_error(path: str, error: BaseException, flag: str = "--output"):
    status = cli.STORAGE_ERROR_STATUS if cli.storage_error(error) else 2
    raise InferenceError(f"{flag}: cannot write {path} ({reason(error)})", status) from None


def write_standard_output(lines: list[str]) -> None:
    """``process_stream``'s writer for ``--output=-``: to descriptor 1 itself, unbuffered,
    and also when Python found it closed. BrokenPipeError (the reader went away) is left
    to the caller; any other failure is the one-line ``--output=-`` error."""
    data = memoryview("".join(f"{line}\n" for line in lines).encode("utf-8"))
    try:
        while data:
            data = data[os.write(1, data) :]
    except BrokenPipeError:
        raise
    except OSError as e:
        _raise_write_error("standard output", e, flag="--output=-")


def _run_lines(
    loaded,
    task,
    lines: Sequence[str],
    summary: Summary,
    bar,
    *,
    known: dict[int, str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Raw lines -> output lines in the same order; lines that normalize to "" give "".

    ``known``: outputs a run before this one finished (line index -> output), not run
    again. ``stop()`` is asked after each batch but the last; when it says True, this
    raises ``Stopped`` with every output finished so far (``known`` included).
    """
    known = known or {}
    texts = [text.normalize(line, lowercase=loaded.lowercase) for line in lines]
    summary.resumed_lines += len(known)
    non_empty = [i for i, t in enumerate(texts) if t and i not in known]
    sources = loaded.tokenizer.encode_batch([texts[i] for i in non_empty])
    limit = loaded.max_length - 1
    truncated = set()
    for k, ids in enumerate(sources):
        if len(ids) - 1 > limit:
            sources[k] = ids[:limit] + [features.EOS_ID]
            truncated.add(k)

    outputs = [task.empty_output] * len(texts)
    for i, line in known.items():
        outputs[i] = line
    if bar is not None:
        bar.update(len(known))
    batches = task.plan([len(ids) for ids in sources])
    if batches:
        task.trace()

    def run_batch(replica: int, batch: list[int]) -> np.ndarray:
        return task.run(replica, pad_batch([sources[k] for k in batch]))

    done: list[int] = []  # the batches finished
    results = run_on_replicas(loaded.replicas, run_batch, batches, stop=stop)
    with contextlib.closing(results):
        for index, result in results:
            done.append(index)
            for k, row in zip(batches[index], result):  # counted once done
                outputs[non_empty[k]], target_tokens = task.finish(sources[k], row)
                summary.lines += 1
                summary.sentences += 1
                summary.source_tokens += len(sources[k])
                summary.target_tokens += target_tokens
                summary.truncated += k in truncated
            if bar is not None:
                bar.update(len(batches[index]))
    if len(done) < len(batches):  # stopped (the batches that were running are done)
        finished = {non_empty[k]: outputs[non_empty[k]] for b in done for k in batches[b]}
        raise Stopped({**known, **finished})
    empty = len(texts) - len(non_empty) - len(known)  # done without the model
    summary.lines += empty
    if bar is not None:
        bar.update(empty)
    return outputs
