"""The files side of batch inference: which inputs, which outputs, and how lines are read and written.

Output naming, shared with the Beam jobs (pipeline/batch_translate.py and
pipeline/batch_classify.py): for input X the output is `OUTPUT/<basename of X>` when
the input glob matches several files, or OUTPUT is an existing directory or ends with
"/"; otherwise OUTPUT is the one output file. Two inputs with the same basename would
share an output and are refused.

Lines are split on "\\n" (a trailing "\\r" and a leading UTF-8 BOM are dropped); a last
line without "\\n" still counts. Bytes that are not UTF-8 become U+FFFD and are
counted. A name ending in ".gz" is read and written gzipped. Outputs are written
under a temporary name (`.tmp-XXXXXXXX-<name>` beside the output) and renamed into
place, so a file under its final name is always complete. Local paths and gs:// (tf.io.gfile).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import uuid
import zlib
from collections.abc import Callable, Sequence

import tensorflow as tf

TMP_PREFIX = ".tmp-"


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


def _path_key(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def read_lines(path: str) -> tuple[list[str], int]:
    """The lines of ``path`` and how many of them had bytes that are not UTF-8."""
    try:
        data = _read_bytes(path)
    except (tf.errors.OpError, OSError, EOFError, zlib.error) as e:
        raise InferenceError(f"--input: cannot read {path} ({reason(e)})") from None
    if not data:
        return [], 0
    raw = data.split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    raw = [line[:-1] if line.endswith(b"\r") else line for line in raw]
    if raw and raw[0].startswith(b"\xef\xbb\xbf"):
        raw[0] = raw[0][3:]
    lines, undecodable = [], 0
    for line in raw:
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("utf-8", errors="replace"))
            undecodable += 1
    return lines, undecodable


def count_lines(path: str) -> int:
    """Lines in ``path`` as ``read_lines`` counts them."""
    data = _read_bytes(path)
    return data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


def write_lines_atomically(
    path: str, lines: Sequence[str], *, before_rename: Callable[[str], None] | None = None
) -> None:
    """Writes ``lines``, each ended by "\\n", to a temporary name beside ``path``, then renames it.

    ``before_rename(path)`` runs in between (tests use it to simulate a crash there).
    Temporaries of ``path`` left by a killed run are removed first.
    """
    directory, name = os.path.split(path)
    directory = directory or "."
    tf.io.gfile.makedirs(directory)
    _remove_stale_temporaries(directory, name)
    tmp = f"{directory}/{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}"
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        if before_rename is not None:
            before_rename(path)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


def _remove_stale_temporaries(directory: str, name: str) -> None:
    pattern = re.compile(re.escape(TMP_PREFIX) + "[0-9a-f]{8}-" + re.escape(name))
    for entry in tf.io.gfile.listdir(directory):
        if pattern.fullmatch(entry):
            tf.io.gfile.remove(f"{directory}/{entry}")


def reason(error: BaseException) -> str:
    """The first line of an exception's message (TF errors keep theirs in ``.message``)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message.splitlines()[0]
