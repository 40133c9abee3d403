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
empty output line without reaching the model. Translation output never depends on
which batch a line landed in, with one exception: with beam search and the default
length limit, a hypothesis that runs past its source's limit without EOS (a
degenerate model) may differ. Classification writes one JSON object per line,
`{"label": "positive", "probability": 0.912345, "probabilities": [0.087655, 0.912345]}`
(probabilities rounded to 6 places; `probability` is the label's).

Inputs are streamed, never read whole. Small files are pooled into groups of about
`group_lines` lines; a longer file is cut into chunks of `group_lines` lines, and each
chunk's output is saved (atomically, beside the output: `infer_files.SavedChunks`) as
soon as it is done; the output is assembled from them at the end. A rerun skips inputs
whose output exists with the input's line count, resumes a long input after its last
saved chunk (when the model and decoding settings are the same), and redoes the rest;
`overwrite=True` redoes all. Loading the model dir lives in trainer/model_dir.py;
naming, reading and the atomic writes in trainer/infer_files.py.

With several devices (GPUs, or logical CPUs) each device holds its own copy of the
model and its own thread takes the next batch, so no device waits for another.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import queue
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline import cli, features, predictions, text
from trainer import decode
from trainer.infer_files import (
    READ_ERRORS,
    FileJob,
    InferenceError,
    SavedChunks,
    count_lines,
    iter_line_chunks,
    plan_jobs,
    read_lines,
    reason,
    write_atomically,
    write_lines_atomically,
)
from trainer.model_dir import LoadedModel, Replica, load_model_dir

__all__ = [
    "FileJob",
    "InferenceError",
    "LoadedModel",
    "Summary",
    "classify_files",
    "load_model_dir",
    "plan_batches",
    "plan_jobs",
    "translate_files",
    "translate_lines",
]

DEFAULT_GROUP_LINES = 100_000

# Batches of any size and width share one traced graph: tracing a decoder takes seconds.
_IDS_SPEC = tf.TensorSpec([None, None], tf.int32)

# Characters that end a line for str.splitlines() and common readers; never inside an output line.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


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
    resumed_lines: int = 0  # lines of long inputs whose saved chunks were reused
    seconds: float = 0.0

    def describe(self) -> str:
        seconds = max(self.seconds, 1e-9)
        skipped = f" ({self.skipped} skipped: output complete)" if self.skipped else ""
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


# ----------------------------------------------------------------------------- batches


def plan_batches(
    lengths: Sequence[int],
    *,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    beam_size: int = 1,
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of similar length, longest first.

    A batch holds at most ``batch_size`` sequences and, padded to its longest one and
    repeated ``beam_size`` times, at most ``batch_tokens`` tokens; a single sequence
    over the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Longest first, so the batch's first sequence sets its padded width.
        width = lengths[current[0]] if current else lengths[i]
        size = len(current) + 1
        too_many = batch_size is not None and size > batch_size
        too_long = batch_tokens is not None and size * width * beam_size > batch_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Rows of ids -> `[len(rows), longest]` int32, PAD after each row."""
    batch = np.full((len(rows), max(len(r) for r in rows)), features.PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch


def run_on_replicas(
    replicas: Sequence[Replica], work: Callable[[int, Any], Any], items: Sequence[Any]
) -> Iterator[tuple[int, Any]]:
    """Yields ``(index, work(replica_index, item))`` for every item, in completion order.

    One replica: in this thread, in order. Several: one thread per replica, each
    taking the next item when it is free (TF releases the GIL while a graph runs).
    """
    if len(replicas) == 1:
        for index, item in enumerate(items):
            with tf.device(replicas[0].device):
                result = work(0, item)
            yield index, result
        return
    free: queue.Queue[int] = queue.Queue()
    for r in range(len(replicas)):
        free.put(r)

    def on_a_free_replica(item):
        r = free.get()
        try:
            with tf.device(replicas[r].device):
                return work(r, item)
        finally:
            free.put(r)

    pool = concurrent.futures.ThreadPoolExecutor(len(replicas), thread_name_prefix="replica")
    try:
        futures = {pool.submit(on_a_free_replica, item): i for i, item in enumerate(items)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- tasks


class _Task:
    """What runs on the replicas: one tf.function per replica, all with the `_IDS_SPEC` input."""

    task: str
    empty_output = predictions.EMPTY_TRANSLATION
    functions: list
    settings: dict = {}  # what the outputs depend on besides the model (saved chunks' manifest)

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    def trace(self) -> None:
        """Traces every replica's function, one at a time, on its device, before threads call them."""
        for replica, function in zip(self.loaded.replicas, self.functions):
            with tf.device(replica.device):
                function.get_concrete_function()

    def run(self, replica: int, batch: np.ndarray) -> np.ndarray:
        return self.functions[replica](tf.constant(batch)).numpy()


class _Translation(_Task):
    """Source ids -> translated text, with the project's greedy or beam decoder."""

    task = features.TRANSLATION

    def __init__(
        self, loaded: LoadedModel, *, beam_size, alpha, batch_tokens, max_decode_length, cache
    ):
        if not cache and beam_size != 1:
            raise ValueError("the decoder without a key/value cache is greedy only (beam_size=1)")
        if max_decode_length is not None and not 1 <= max_decode_length <= loaded.max_length:
            raise InferenceError(
                f"--max_decode_length={max_decode_length} must be in [1, {loaded.max_length}] "
                "(the model's max_length)"
            )
        super().__init__(loaded)
        self.beam_size = beam_size
        self.batch_tokens = batch_tokens
        self.max_decode_length = max_decode_length
        self.settings = {
            "beam_size": beam_size,
            "alpha": alpha,
            "max_decode_length": max_decode_length,
        }

        def make(model):
            if cache:
                translate = decode.make_translate_fn(
                    model, beam_size=beam_size, alpha=alpha, max_decode_length=max_decode_length
                )
            else:

                def translate(ids):
                    return decode.greedy_decode_uncached(
                        model, ids, max_decode_length=max_decode_length
                    )

            return tf.function(translate, input_signature=[_IDS_SPEC])

        self.functions = [
            _cached(
                loaded,
                ("translate", i, beam_size, alpha, max_decode_length, cache),
                lambda model=r.model: make(model),
            )
            for i, r in enumerate(loaded.replicas)
        ]

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        return plan_batches(lengths, batch_tokens=self.batch_tokens, beam_size=self.beam_size)

    def finish(self, source: Sequence[int], output: np.ndarray) -> tuple[str, int]:
        """(output line, target tokens) for one row of ``run``'s result."""
        if self.max_decode_length is None:
            # The default limit follows the batch's widest source; the row's own limit
            # gives what decoding the line alone gives (exactly so for greedy).
            own_limit = decode.default_max_decode_length(
                len(source), model_max_length=self.loaded.max_length
            )
            output = output[:own_limit]
        tokens = int(np.count_nonzero(output != features.PAD_ID))
        return _LINE_BREAKS.sub(" ", self.loaded.tokenizer.decode(output)).strip(), tokens


class _Classification(_Task):
    """Source ids -> one JSON line with the label and the class probabilities."""

    task = features.CLASSIFICATION
    empty_output = predictions.EMPTY_CLASSIFICATION

    def __init__(self, loaded: LoadedModel, *, batch_size: int):
        super().__init__(loaded)
        self.batch_size = batch_size
        self.functions = [
            _cached(loaded, ("classify", i), lambda model=r.model: _make_classify_fn(model))
            for i, r in enumerate(loaded.replicas)
        ]

    def plan(self, lengths: Sequence[int]) -> list[list[int]]:
        return plan_batches(lengths, batch_size=self.batch_size)

    def finish(self, source: Sequence[int], probabilities: np.ndarray) -> tuple[str, int]:
        return predictions.format_classification(probabilities), 0


def _make_classify_fn(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """A tf.function: ids `[b, l]` -> class probabilities `[b, num_classes]` float32."""
    return tf.function(
        lambda ids: tf.nn.softmax(model(ids, training=False), axis=-1),
        input_signature=[_IDS_SPEC],
    )


def _cached(loaded: LoadedModel, key: tuple, make: Callable[[], Any]) -> Any:
    if key not in loaded.functions:
        loaded.functions[key] = make()
    return loaded.functions[key]


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
    task = _Translation(
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
    task = _Translation(
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
    return process_files(loaded, _Classification(loaded, batch_size=batch_size), jobs, **options)


def process_files(
    loaded: LoadedModel,
    task: _Task,
    jobs: Sequence[FileJob],
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    group_lines: int = DEFAULT_GROUP_LINES,
    log: Callable[[str], None] | None = None,
    before_rename: Callable[[str], None] | None = None,
) -> Summary:
    """Runs ``task`` over the jobs whose output is not complete (all with ``overwrite``).

    Consecutive files are pooled into groups of about ``group_lines`` lines; each group
    is batched as one, and its files are written when the group is done. A file of more
    than ``group_lines`` lines runs alone, in chunks of ``group_lines`` lines saved as
    they finish (see the module docstring). ``progress``: a bar on stderr, in lines
    (None: when stderr is a terminal). ``log`` gets the skip / resume / redo / wrote lines
    (default: stderr). ``before_rename`` is passed to ``write_atomically``.
    """
    if group_lines < 1:
        raise ValueError(f"group_lines={group_lines} must be positive")
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    started = time.monotonic()
    summary = Summary(task=task.task, files=len(jobs), truncated_to=loaded.max_length - 1)
    # A first pass counts every input's lines (streamed), to find finished outputs and to
    # size the progress bar; inputs are read again when their group runs.
    pending: list[tuple[FileJob, int]] = []
    for job in jobs:
        try:
            lines = count_lines(job.input)
        except READ_ERRORS as e:
            raise InferenceError(f"--input: cannot read {job.input} ({reason(e)})") from None
        saved = SavedChunks(job.output)
        if overwrite:
            saved.remove()
        elif _output_complete(job, lines, log):
            saved.remove()  # left behind if a run stopped right after writing the output
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
    try:
        for group in _groups(pending, group_lines):
            if len(group) == 1 and group[0][1] > group_lines:
                job, lines = group[0]
                _process_in_chunks(
                    loaded, task, job, lines, group_lines, summary, bar, log, before_rename
                )
            else:
                _process_group(loaded, task, group, summary, bar, log, before_rename)
    finally:
        bar.close()
    summary.seconds = time.monotonic() - started
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


def _output_complete(job: FileJob, input_lines: int, log) -> bool:
    """Whether ``job.output`` exists with one line per input line (only a rename makes it)."""
    if not tf.io.gfile.exists(job.output):
        return False
    try:
        output_lines = count_lines(job.output)
    except READ_ERRORS as e:
        log(f"redoing {job.input}: cannot read {job.output} ({reason(e)})")
        return False
    if output_lines == input_lines:
        log(f"skipping {job.input}: output complete ({job.output}, {input_lines} lines)")
        return True
    log(f"redoing {job.input}: {job.output} has {output_lines} lines, the input {input_lines}")
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


def _process_group(loaded, task, group, summary, bar, log, before_rename) -> None:
    texts: list[str] = []
    spans: list[tuple[FileJob, int, int]] = []
    for job, _ in group:
        lines, undecodable = read_lines(job.input)
        summary.undecodable += undecodable
        spans.append((job, len(texts), len(lines)))
        texts.extend(lines)
    outputs = _run_lines(loaded, task, texts, summary, bar)
    for job, start, count in spans:
        with _writing(job.output):
            write_lines_atomically(
                job.output, outputs[start : start + count], before_rename=before_rename
            )
        log(f"wrote {job.output} ({count} lines)")


def _process_in_chunks(loaded, task, job, lines, chunk_lines, summary, bar, log, before_rename):
    """One long input, chunk by chunk: saved chunks of an earlier run are reused."""
    saved = SavedChunks(job.output)
    chunks = -(-lines // chunk_lines)
    manifest = {
        "input": job.input,
        "input_lines": lines,
        "chunk_lines": chunk_lines,
        "task": task.task,
        "checkpoint": loaded.checkpoint,
        "settings": task.settings,
    }
    with _writing(saved.dir):
        if saved.start(manifest):
            log(f"resuming {job.input}: found saved chunks in {saved.dir}")
    reused = 0
    for index, (texts, undecodable) in enumerate(iter_line_chunks(job.input, chunk_lines)):
        if saved.is_saved(index, len(texts)):
            reused += 1
            summary.resumed_lines += len(texts)
            if bar is not None:
                bar.update(len(texts))
            continue
        summary.undecodable += undecodable
        outputs = _run_lines(loaded, task, texts, summary, bar)
        with _writing(saved.part(index)):
            write_lines_atomically(saved.part(index), outputs)
    if reused:
        log(f"reused {reused} of {chunks} saved chunks of {job.input}")
    with _writing(job.output):
        write_atomically(job.output, saved.joined(chunks), before_rename=before_rename)
    saved.remove()
    log(f"wrote {job.output} ({lines} lines, {chunks} chunks)")


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """Turns a failed write under it into the one-line ``--output`` error naming ``path``."""
    try:
        yield
    except (tf.errors.OpError, OSError) as e:
        _raise_write_error(path, e)


def _raise_write_error(path: str, error: BaseException):
    status = cli.STORAGE_ERROR_STATUS if cli.storage_error(error) else 2
    raise InferenceError(f"--output: cannot write {path} ({reason(error)})", status) from None


def _run_lines(loaded, task, lines: Sequence[str], summary: Summary, bar) -> list[str]:
    """Raw lines -> output lines in the same order; lines that normalize to "" give ""."""
    texts = [text.normalize(line, lowercase=loaded.lowercase) for line in lines]
    summary.lines += len(texts)
    non_empty = [i for i, t in enumerate(texts) if t]
    sources = loaded.tokenizer.encode_batch([texts[i] for i in non_empty])
    limit = loaded.max_length - 1
    for k, ids in enumerate(sources):
        if len(ids) - 1 > limit:
            sources[k] = ids[:limit] + [features.EOS_ID]
            summary.truncated += 1
    summary.sentences += len(sources)
    summary.source_tokens += sum(len(ids) for ids in sources)

    outputs = [task.empty_output] * len(texts)
    batches = task.plan([len(ids) for ids in sources])
    if batches:
        task.trace()

    def run_batch(replica: int, batch: list[int]) -> np.ndarray:
        return task.run(replica, pad_batch([sources[k] for k in batch]))

    for index, result in run_on_replicas(loaded.replicas, run_batch, batches):
        for k, row in zip(batches[index], result):
            outputs[non_empty[k]], target_tokens = task.finish(sources[k], row)
            summary.target_tokens += target_tokens
        if bar is not None:
            bar.update(len(batches[index]))
    if bar is not None:
        bar.update(len(texts) - len(non_empty))  # empty lines: done without the model
    return outputs
