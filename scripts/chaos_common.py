"""What the fault-injection scripts (scripts/chaos_*.py) share.

Processes under test run as real subprocesses of this interpreter, their output in a
log file; faults are real signals, real truncated or flipped bytes, a real read-only
mount or a real full file system (a small tmpfs when this user may mount one, else a
file-size limit, RLIMIT_FSIZE, that makes writes fail with EFBIG). Every script
collects ``Check`` rows and prints them as a markdown table; it exits 1 if any failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # the project's packages, for the scripts' own checks
PYTHON = sys.executable
TINY_CFG = os.path.join(ROOT, "configs", "tiny.cfg")
# The CI form: the tiny preset shrunk further (mechanics, not quality).
SHRUNK_MODEL = ["--num_layers=1", "--d_model=32", "--num_heads=2", "--d_ff=64"]
# Without dropout a resumed run must repeat the interrupted run's losses digit for digit
# (the dropout generators' state is not part of the checkpoint).
NO_DROPOUT = ["--dropout=0", "--attention_dropout=0", "--relu_dropout=0"]
# TensorFlow's native start-up log lines, which no flag turns off.
_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} )")


@dataclasses.dataclass
class Check:
    """One row of a script's summary table."""

    suite: str
    what: str
    expected: str
    observed: str
    ok: bool


class Report:
    """The checks of one script: printed as a table, optionally saved as JSON for tests."""

    def __init__(self, title: str):
        self.title = title
        self.checks: list[Check] = []
        self.figures: dict[str, object] = {}

    def check(self, suite: str, what: str, expected, observed, ok: bool | None = None) -> bool:
        ok = (expected == observed) if ok is None else bool(ok)
        self.checks.append(Check(suite, what, str(expected), str(observed), ok))
        if not ok:
            print(f"FAILED {suite}: {what}: expected {expected}, observed {observed}", flush=True)
        return ok

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def table(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| suite | check | expected | observed | ok |",
            "|---|---|---|---|---|",
        ]
        for c in self.checks:
            cells = [c.suite, c.what, c.expected, c.observed, "yes" if c.ok else "**NO**"]
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
        return "\n".join(lines)

    def finish(self, json_path: str | None) -> int:
        print(self.table(), flush=True)
        if self.figures:
            print("\nfigures: " + json.dumps(self.figures, sort_keys=True), flush=True)
        if json_path:
            with open(json_path, "w", encoding="utf-8") as f:
                json.dump(
                    {
                        "ok": self.ok,
                        "figures": self.figures,
                        "checks": [dataclasses.asdict(c) for c in self.checks],
                    },
                    f,
                    indent=2,
                )
        return 0 if self.ok else 1


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def own_stderr_lines(text: str) -> list[str]:
    """The lines a program wrote itself, without TensorFlow's native start-up log."""
    return [line for line in text.strip().splitlines() if line and not _NATIVE_LOG.match(line)]


def fsize_limit(limit_bytes: int) -> Callable[[], None]:
    """A preexec_fn: files the child writes cannot grow past ``limit_bytes`` (EFBIG).

    SIGXFSZ is ignored so that the write fails with an error the program must report,
    instead of the signal killing it.
    """

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


class Launch:
    """A module run as ``python -m MODULE ARGS`` in its own session, output to a log file."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        log_path: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ):
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed in wait)
        self.process = subprocess.Popen(
            [PYTHON, "-m", module, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env or subprocess_env(),
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, pattern: str | re.Pattern, timeout: float) -> re.Match | None:
        """The first match of ``pattern`` in the output; None if the process ended or time ran out."""
        regex = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.output())
            if match:
                return match
            if not self.running():
                return regex.search(self.output())
            time.sleep(0.05)
        return None

    def signal(self, signum: int) -> None:
        """Signals the whole process group (a job's helper processes die with it)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.process.wait(timeout=30)
        self._log.close()
        return code


def run_module(
    module: str,
    args: Sequence[str],
    *,
    log_path: str,
    timeout: float = 600,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Runs to the end; (exit status, output)."""
    launch = Launch(module, args, log_path=log_path, preexec_fn=preexec_fn)
    code = launch.wait(timeout)
    return code, launch.output()


def wait_for_new_entry(
    directory: str, predicate: Callable[[str], bool], launch: Launch, timeout: float
) -> str | None:
    """Polls ``directory`` every 0.5 ms for an entry, not there at the start, matching ``predicate``."""
    before = set(_listdir(directory))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launch.running():
        for name in _listdir(directory):
            if name not in before and predicate(name):
                return name
        time.sleep(0.0005)
    return None


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def prepare_translation_data(work_dir: str, *, examples: int = 1200, num_shards: int = 2) -> str:
    """A small real en-de dataset: the embedded corpus through the real preprocessing job."""
    data_dir = os.path.join(work_dir, "data")
    if os.path.exists(os.path.join(data_dir, "metadata.json")):
        return data_dir
    raw = os.path.join(work_dir, "raw")
    os.makedirs(raw, exist_ok=True)
    code = subprocess.call(
        [
            PYTHON,
            "-c",
            "import sys; from pipeline import default_corpus; "
            "default_corpus.write_translation_files(sys.argv[1], n=int(sys.argv[2]))",
            raw,
            str(examples),
        ],
        env=subprocess_env(),
        cwd=ROOT,
    )
    if code:
        raise RuntimeError("writing the embedded corpus failed")
    code, out = run_module(
        "pipeline.preprocess",
        [
            "--dataset=ende",
            f"--input={raw}/train",
            f"--output_dir={data_dir}",
            "--vocab_size=500",
            f"--num_shards={num_shards}",
            "--validation_fraction=0.1",
        ],
        log_path=os.path.join(work_dir, "prepare.log"),
    )
    if code:
        raise RuntimeError(f"preprocessing the chaos data failed:\n{out[-2000:]}")
    return data_dir


def file_digests(directory: str) -> dict[str, str]:
    """{relative path: sha256} of every file under ``directory``."""
    digests = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def tfrecord_count(path: str) -> int:
    """Records of a gzipped TFRecord file, every length and data CRC verified.

    Raises ValueError for a torn or changed file.
    """
    import google_crc32c

    def masked(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    with open(path, "rb") as f:
        try:
            data = gzip.decompress(f.read())
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a whole gzip stream ({e})") from None
    offset = count = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"{path}: torn record header at {offset}")
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        body = data[offset + 12 : offset + 12 + length]
        end = offset + 12 + length + 4
        if masked(header) != length_crc or len(body) != length or end > len(data):
            raise ValueError(f"{path}: torn record at {offset}")
        (data_crc,) = struct.unpack("<I", data[end - 4 : end])
        if masked(body) != data_crc:
            raise ValueError(f"{path}: record at {offset} fails its CRC")
        offset, count = end, count + 1
    return count


def listed_checkpoints(model_dir: str) -> list[str]:
    """The checkpoints the ``checkpoint`` state file lists, oldest first (full paths)."""
    path = os.path.join(model_dir, "checkpoint")
    if not os.path.exists(path):
        return []
    paths = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r'all_model_checkpoint_paths: "(.*)"', line.strip())
            if match:
                name = match.group(1)
                paths.append(name if os.path.isabs(name) else os.path.join(model_dir, name))
    return paths


def step_of(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def checkpoint_loads(path: str) -> str | None:
    """None when every tensor of ``path`` reads back (checksums verified) and its step is right."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(path)
        iterations = None
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if name.startswith(("optimizer/_iterations/", "optimizer/iterations/")):
                iterations = int(value)
    except Exception as e:  # every way a checkpoint can fail to read
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    if iterations != step_of(path):
        return f"optimizer step {iterations}, name says {step_of(path)}"
    return None


def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def tmpfs(path: str, *, size_bytes: int, read_only: bool = False) -> Iterator[bool]:
    """Mounts a tmpfs of ``size_bytes`` at ``path``; yields False (and mounts nothing) if not allowed."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size_bytes}" + (",ro" if read_only else "")
    mounted = (
        _can_mount()
        and subprocess.call(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.call(["umount", "-l", path])


@contextlib.contextmanager
def unwritable_dir(path: str) -> Iterator[str | None]:
    """An empty directory nobody can write to: a read-only mount as root, else mode 0555.

    Yields how it was made, or None when this machine offers no way (root without mount).
    """
    if _can_mount():
        with tmpfs(path, size_bytes=1 << 20, read_only=True) as mounted:
            yield "read-only tmpfs mount" if mounted else None
        return
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o555)
    try:
        yield "directory mode 0555"
    finally:
        os.chmod(path, 0o755)


@contextlib.contextmanager
def full_disk(path: str, *, size_bytes: int) -> Iterator[tuple[str, Callable[[], None] | None]]:
    """A directory whose file system fills after ``size_bytes``.

    Yields (means, preexec_fn): a real tmpfs of that size when this user may mount one
    (writes fail with ENOSPC; preexec_fn None), else a plain directory and an
    RLIMIT_FSIZE preexec_fn for the child (writes past the size fail with EFBIG).
    """
    with tmpfs(path, size_bytes=size_bytes) as mounted:
        if mounted:
            yield f"tmpfs of {size_bytes // 1024} KiB (ENOSPC)", None
        else:
            yield (
                f"RLIMIT_FSIZE of {size_bytes // 1024} KiB (EFBIG)",
                fsize_limit(size_bytes),
            )


def one_line_error(output: str, program: str) -> str | None:
    """The program's "PROGRAM: error: ..." line when it is the only line it wrote about the failure.

    None when there is none, or when a Python traceback was printed too.
    """
    lines = own_stderr_lines(output)
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return None
    errors = [line for line in lines if line.startswith(f"{program}: error: ")]
    return errors[-1] if len(errors) == 1 else None


def rng(seed: int) -> random.Random:
    return random.Random(seed)


def check_unwritable_error(
    report, suite: str, what: str, means: str, *, program: str, code: int, output: str
) -> None:
    """Checks a run against an unwritable `what` ended with status 1 or 2 and one line naming why."""
    line = one_line_error(output, program)
    report.check(
        suite,
        f"unwritable {what} ({means}): status, one-line error",
        "1 or 2, one line naming the cause",
        f"{code}, {line!r}",
        code in (1, 2)
        and line is not None
        and any(c in line for c in ("Read-only", "not writable", "ermission denied")),
    )
