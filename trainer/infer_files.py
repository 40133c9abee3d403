"""The files side of batch inference: which inputs, which outputs, and how lines are read and written.

Output naming, shared with the Beam jobs (pipeline/batch_translate.py and
pipeline/batch_classify.py): for input X the output is `OUTPUT/<basename of X>` when
the input glob matches several files, or OUTPUT is an existing directory or ends with
"/"; otherwise OUTPUT is the one output file. Two inputs with the same basename would
share an output and are refused.

Lines are split on "\\n" (a trailing "\\r" and a leading UTF-8 BOM are dropped); a last
line without "\\n" still counts. Bytes that are not UTF-8 become U+FFFD and are
counted. A name ending in ".gz" is read and written gzipped. Files are streamed in
blocks, never read whole. Outputs are written under a temporary name
(`.tmp-XXXXXXXX-<name>` beside the output) and renamed into place, so a file under its
final name is always complete; the next run over the same outputs removes a killed run's
temporaries, from the one listing of each output directory it starts with
(`OutputListing`). The chunks of a long input, and the lines done of an unfinished
chunk or group when a run is stopped, wait in `.parts-<name>/` (`SavedChunks`). Local
paths and gs:// (tf.io.gfile).

"-" is the standard streams: `--input=-` reads standard input (with `--output=-`), and
`--output=-` writes to standard output what one input file or standard input gives
(`stream_input`, `iter_stream_chunks`); nothing is saved to resume from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import re
import select
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator

import tensorflow as tf

TMP_PREFIX = ".tmp-"
PARTS_PREFIX = ".parts-"
PARTIAL_PREFIX = "partial-"  # partial-00003.json: chunk 3's lines done before a stop
MANIFEST_FILE = "manifest.json"
STANDARD_STREAM = "-"  # --input=- / --output=-


class InferenceError(ValueError):
    """A user error (bad model dir, input or output); the message is one line naming the flag.

    ``status`` is the exit status the command ends with: 2, or 1 when the output's
    file system is full or read-only (as every command ends then).
    """

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class FileJob:
    input: str
    output: str


def plan_jobs(input_pattern: str, output: str) -> list[FileJob]:
    """The files matching ``input_pattern``, sorted, each paired with its output path."""
    if not input_pattern:
        raise InferenceError("--input is required")
    if not output:
        raise InferenceError("--output is required")
    if input_pattern == STANDARD_STREAM:
        raise InferenceError(
            "--input=- (standard input) writes to standard output only: give --output=-"
        )
    inputs = _matching_files(input_pattern)
    if len(inputs) == 1 and not output.endswith("/") and not tf.io.gfile.isdir(output):
        jobs = [FileJob(inputs[0], output)]
    else:
        if tf.io.gfile.exists(output) and not tf.io.gfile.isdir(output):
            raise InferenceError(
                f"--output: {output} is a file, but {len(inputs)} input files need an output "
                "directory"
            )
        directory = output.rstrip("/")
        by_name: dict[str, str] = {}
        for path in inputs:
            name = os.path.basename(path)
            if name in by_name:
                raise InferenceError(
                    f"--input: {by_name[name]} and {path} have the same name; both outputs "
                    f"would be {directory}/{name}"
                )
            by_name[name] = path
        jobs = [FileJob(path, f"{directory}/{name}") for name, path in by_name.items()]
    input_keys = {_path_key(p) for p in inputs}
    for job in jobs:
        if _path_key(job.output) in input_keys:
            raise InferenceError(f"--output: writing {job.output} would overwrite an input file")
    return jobs


def stream_input(input_pattern: str) -> str:
    """What ``--output=-`` reads: ``STANDARD_STREAM``, or the one file ``input_pattern`` matches."""
    if not input_pattern:
        raise InferenceError("--input is required")
    if input_pattern == STANDARD_STREAM:
        return STANDARD_STREAM
    inputs = _matching_files(input_pattern)
    if len(inputs) > 1:
        raise InferenceError(
            f"--output=-: --input matches {len(inputs)} files and standard output takes one; "
            "give --output a directory"
        )
    return inputs[0]


def _matching_files(input_pattern: str) -> list[str]:
    """The files (not directories) ``input_pattern`` matches, sorted; at least one."""
    try:
        matches = sorted(tf.io.gfile.glob(input_pattern))
    except tf.errors.OpError as e:
        raise InferenceError(f"--input: cannot list {input_pattern} ({reason(e)})") from None
    inputs = [m for m in matches if not tf.io.gfile.isdir(m)]
    if not inputs:
        if matches:
            raise InferenceError(
                f"--input: {input_pattern} matches only directories; use a glob such as "
                f"{matches[0].rstrip('/')}/*"
            )
        raise InferenceError(f"--input: no files match {input_pattern}")
    return inputs


def _path_key(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)


_BLOCK = 1 << 20
# What reading a local, gs:// or gzipped file can raise (BadGzipFile is an OSError).
READ_ERRORS = (tf.errors.OpError, OSError, EOFError, zlib.error)


def _blocks(path: str) -> Iterator[bytes]:
    """The (decompressed) bytes of ``path``, a block at a time."""
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(tf.io.gfile.GFile(path, "rb"))
        if path.endswith(".gz"):
            f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
        while block := f.read(_BLOCK):
            yield block


def iter_line_chunks(path: str, chunk_lines: int | None = None) -> Iterator[tuple[list[str], int]]:
    """The lines of ``path``, ``chunk_lines`` at a time (all in one chunk for None).

    Each chunk comes with how many of its lines had bytes that are not UTF-8. The file
    is streamed: memory holds one chunk and one block, whatever the file's size.
    """
    return _line_chunks(_blocks(path), path, chunk_lines)


def iter_stream_chunks(fd: int, chunk_lines: int) -> Iterator[tuple[list[str], int]]:
    """The lines read from file descriptor ``fd`` (standard input), as ``iter_line_chunks``.

    A chunk ends at ``chunk_lines`` lines, and also whenever no more input is waiting,
    so a line typed or piped in one at a time is answered before the next one comes.
    """

    def idle() -> bool:
        return not select.select([fd], [], [], 0)[0]

    blocks = iter(lambda: os.read(fd, _BLOCK), b"")
    return _line_chunks(blocks, "standard input", chunk_lines, idle=idle)


def _line_chunks(
    blocks: Iterator[bytes],
    name: str,
    chunk_lines: int | None,
    *,
    idle: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[list[str], int]]:
    """Splits ``blocks`` into decoded lines, yielded in chunks (see ``iter_line_chunks``);
    a chunk also ends before the next block is read whenever ``idle()`` says none is waiting."""
    chunk: list[str] = []
    undecodable = 0
    pending: list[bytes] = []  # the current line's bytes so far
    first = True

    def add(raw: bytes) -> None:
        nonlocal undecodable, first
        line, bad = decode_line(raw, first=first)
        first = False
        chunk.append(line)
        undecodable += bad

    try:
        while True:
            if chunk and idle():
                yield chunk, undecodable
                chunk, undecodable = [], 0
            block = next(blocks, None)
            if block is None:
                break
            *complete, rest = block.split(b"\n")
            for piece in complete:
                add(b"".join([*pending, piece]))
                pending = []
                if chunk_lines and len(chunk) == chunk_lines:
                    yield chunk, undecodable
                    chunk, undecodable = [], 0
            if rest:
                pending.append(rest)
    except READ_ERRORS as e:
        raise InferenceError(f"--input: cannot read {name} ({reason(e)})") from None
    if pending:
        add(b"".join(pending))
    if chunk:
        yield chunk, undecodable


def decode_line(raw: bytes, *, first: bool) -> tuple[str, bool]:
    """One line's bytes, without its "\\n" -> (text, whether it had bytes that are not UTF-8).

    A trailing "\\r" goes, and on the ``first`` line of a stream a UTF-8 BOM.
    """
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    if first and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def read_lines(path: str) -> tuple[list[str], int]:
    """The lines of ``path`` and how many of them had bytes that are not UTF-8."""
    return next(iter_line_chunks(path), ([], 0))


def count_lines(path: str) -> int:
    """Lines in ``path`` as ``read_lines`` counts them (streamed; raises what reading raises)."""
    count, last = 0, b"\n"
    for block in _blocks(path):
        count += block.count(b"\n")
        last = block[-1:]
    return count + (last != b"\n")


def write_lines_atomically(
    path: str, lines: Iterable[str], *, before_rename: Callable[[str], None] | None = None
) -> None:
    """Writes ``lines``, each ended by "\\n", to ``path`` as ``write_atomically`` does."""
    write_atomically(path, _encoded(lines), before_rename=before_rename)


def _encoded(lines: Iterable[str]) -> Iterator[bytes]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == 4096:
            yield "".join(f"{line}\n" for line in batch).encode("utf-8")
            batch = []
    yield "".join(f"{line}\n" for line in batch).encode("utf-8")


def write_atomically(
    path: str, blocks: Iterable[bytes], *, before_rename: Callable[[str], None] | None = None
) -> None:
    """Streams ``blocks`` to a temporary name beside ``path`` (gzipped for .gz), then renames it.

    ``before_rename(path)`` runs in between (tests use it to simulate a crash there).
    The temporaries a killed run left are `OutputListing.remove_stale_temporaries`'s.
    """
    directory, name = os.path.split(path)
    directory = directory or "."
    tf.io.gfile.makedirs(directory)
    tmp = f"{directory}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
    try:
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(tf.io.gfile.GFile(tmp, "wb"))
            if path.endswith(".gz"):  # no name and no time in the header: same bytes every run
                f = stack.enter_context(gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0))
            for block in blocks:
                f.write(block)
        if before_rename is not None:
            before_rename(path)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


class SavedChunks:
    """The finished chunks of one input, kept until its output is whole.

    They live beside the output, in ``<dir>/.parts-<name>/``: ``part-00000`` ... (one
    output line per input line of that chunk, each written atomically) and
    ``manifest.json``, which says what they were made from (input, line count, chunk
    size, model and decoding settings). A run stopped between batches (SIGTERM, a spot
    notice, Ctrl-C) saves there the output lines its unfinished chunk already has,
    ``partial-00000.json`` ...; the lines of a group of pooled files are one partial chunk
    0 under the group's first output. A later run with the same manifest reuses the
    chunks it finds complete and the lines of partial ones; any other manifest discards
    them all.
    """

    def __init__(self, output: str):
        directory, name = os.path.split(output)
        self.dir = f"{directory or '.'}/{PARTS_PREFIX}{name}"

    def exists(self) -> bool:
        return tf.io.gfile.exists(self.dir)

    def start(self, manifest: dict) -> int:
        """Keeps the saved chunks made under ``manifest`` (discards others); -> how many kept."""
        path = f"{self.dir}/{MANIFEST_FILE}"
        kept = 0
        if self.exists():
            try:
                with tf.io.gfile.GFile(path) as f:
                    same = json.load(f) == manifest
            except (*READ_ERRORS, ValueError):
                same = False
            if same:
                kept = sum(1 for n in tf.io.gfile.listdir(self.dir) if n.startswith("part-"))
            else:
                self.remove()
        if not kept:
            write_atomically(path, [json.dumps(manifest, sort_keys=True).encode("utf-8")])
        return kept

    def part(self, index: int) -> str:
        return f"{self.dir}/part-{index:05d}"

    def is_saved(self, index: int, lines: int) -> bool:
        """Whether chunk ``index`` is saved with ``lines`` lines (only a rename makes it)."""
        try:
            return count_lines(self.part(index)) == lines
        except READ_ERRORS:
            return False

    def save_partial(self, index: int, lines: int, finished: dict[int, str]) -> None:
        """Saves the ``finished`` output lines (line index -> line) of chunk ``index``, of
        ``lines`` lines, that a stopped run had done; the chunk's part is not saved yet."""
        record = {"lines": lines, "outputs": sorted(finished.items())}
        write_atomically(self._partial(index), [json.dumps(record).encode("utf-8")])

    def load_partial(self, index: int, lines: int) -> dict[int, str]:
        """What ``save_partial`` saved for chunk ``index`` of ``lines`` lines; {} if nothing
        usable (none saved, another line count, unreadable)."""
        try:
            with tf.io.gfile.GFile(self._partial(index)) as f:
                record = json.load(f)
            if record["lines"] != lines:
                return {}
            finished = {int(i): line for i, line in record["outputs"]}
        except (*READ_ERRORS, ValueError, KeyError, TypeError):
            return {}
        if all(0 <= i < lines and isinstance(line, str) for i, line in finished.items()):
            return finished
        return {}

    def _partial(self, index: int) -> str:
        return f"{self.dir}/{PARTIAL_PREFIX}{index:05d}.json"

    def joined(self, count: int) -> Iterator[bytes]:
        """The bytes of chunks 0 .. count - 1, in order."""
        for index in range(count):
            yield from _blocks(self.part(index))

    def remove(self) -> None:
        if self.exists():
            tf.io.gfile.rmtree(self.dir)


class OutputListing:
    """What the output directories held when a run began, from one listing each.

    A run over many small files asks it instead of the file system per file: listing
    the directory at each write made writing N outputs cost N listings of up to N names
    (on gs://, paginated requests), quadratic in N.
    """

    _STALE = re.compile(re.escape(TMP_PREFIX) + "[0-9a-f]{8}-(.+)")

    def __init__(self, outputs: Iterable[str]):
        self._names: dict[str, set[str]] = {}
        for output in outputs:
            directory = _directory(output)
            if directory in self._names:
                continue
            try:
                names = tf.io.gfile.listdir(directory)
            except tf.errors.NotFoundError:
                names = []
            except (tf.errors.OpError, OSError) as e:
                raise InferenceError(
                    f"--output: cannot list the directory {directory} ({reason(e)})"
                ) from None
            self._names[directory] = {name.rstrip("/") for name in names}

    def has(self, path: str) -> bool:
        """Whether ``path`` (a name in one of the listed directories) was there."""
        return os.path.basename(path) in self._names.get(_directory(path), ())

    def remove_saved(self, output: str) -> None:
        """Removes the saved chunks of ``output`` (``SavedChunks``) if they were there."""
        saved = SavedChunks(output)
        if self.has(saved.dir):
            tf.io.gfile.rmtree(saved.dir)
            self._names[_directory(saved.dir)].discard(os.path.basename(saved.dir))

    def remove_stale_temporaries(self, outputs: Iterable[str]) -> None:
        """Removes what a killed run left under a temporary name of one of ``outputs``
        (only theirs: another run may be writing other outputs into the directory)."""
        wanted: dict[str, set[str]] = {}
        for output in outputs:
            wanted.setdefault(_directory(output), set()).add(os.path.basename(output))
        for directory, outputs_there in wanted.items():
            for name in sorted(self._names.get(directory, ())):
                stale = self._STALE.fullmatch(name)
                if stale and stale.group(1) in outputs_there:
                    tf.io.gfile.remove(f"{directory}/{name}")
                    self._names[directory].discard(name)


def _directory(path: str) -> str:
    return os.path.dirname(path) or "."


def reason(error: BaseException) -> str:
    """The first line of an exception's message (TF errors keep theirs in ``.message``)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message.splitlines()[0]
