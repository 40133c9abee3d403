"""What trainer.translate and trainer.classify share: their common flags and `run_files`.

Each command defines its own `--input` help and its batching flags, and hands `run_files`
the call that makes its task (`infer_tasks.Translation` / `Classification`) from the
loaded model; `run_files` checks the flags, loads the model dir and runs the task with
the values below: over files (`infer.process_files`), or with `--output=-` from one file
or standard input to standard output (`infer.process_stream`), the summary then on stderr.
Only those two entry points import this module.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from absl import flags, logging

from pipeline import cli, tensorflow_start

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "A model dir written by trainer.train (local or gs://).")
flags.DEFINE_string(
    "output",
    None,
    "Output file; a directory (OUTPUT/<input basename>) when --input matches several files, "
    "OUTPUT exists as a directory or ends with '/'; '-' for standard output (one input file, "
    "or --input=- for standard input; answered chunk by chunk, nothing saved to resume).",
)
flags.DEFINE_string(
    "checkpoint",
    "best",
    "best (the newest in MODEL_DIR/best, else latest), latest, a checkpoint path or a directory.",
)
flags.DEFINE_bool("overwrite", False, "Redo inputs whose output is already complete.")
flags.DEFINE_integer(
    "group_lines",
    100_000,
    "Small files are pooled into groups of about this many lines; a longer file is run in "
    "chunks of this many lines, each saved when done, so a rerun resumes after the last one.",
)
flags.DEFINE_bool(
    "progress", None, "Progress bar on stderr (files only); default: when stderr is a terminal."
)
flags.DEFINE_integer(
    "virtual_devices",
    0,
    "Without GPUs: split the CPU into N logical devices, one model copy each (testing).",
)

flags.register_validator(
    "group_lines", lambda v: v >= 1, "--group_lines must be a positive integer"
)
flags.register_validator(
    "virtual_devices", lambda v: v >= 0, "--virtual_devices must not be negative"
)


def run_files(argv: list[str], *, task: str, verb: str, make_task: Callable) -> None:
    """One command's main: ``make_task(loaded)`` is the command's task, run over the planned
    files or the stream; the summary is printed as `<verb> <summary>`."""
    cli.check_command_line(argv, "model_dir", "input", "output")
    _check_stream_flags()
    logging.set_verbosity(logging.ERROR)
    tensorflow_start.start()
    from trainer import distribution, infer, infer_files, preemption

    distribution.configure_devices(virtual_devices=FLAGS.virtual_devices)
    stream = FLAGS.output == infer_files.STANDARD_STREAM
    report = sys.stderr if stream else sys.stdout  # standard output holds only the outputs
    watcher = None
    if not stream:  # from the start: a SIGTERM while the model loads stops before any batch
        watcher = preemption.PreemptionWatcher(
            platform=preemption.detect_platform(),
            interrupt_note="saving the lines done, then exiting",
        )
        watcher.install_signal_handlers()
        watcher.start_polling()
    try:
        if stream:
            source = infer_files.stream_input(FLAGS.input)
        else:
            jobs = infer.plan_jobs(FLAGS.input, FLAGS.output)
        loaded = infer.load_model_dir(
            FLAGS.model_dir,
            task=task,
            checkpoint=FLAGS.checkpoint,
            devices=distribution.local_devices(num_gpus=-1, virtual_devices=FLAGS.virtual_devices),
        )
        print(loaded.describe(), file=sys.stderr, flush=True)
        if stream:
            if source == infer_files.STANDARD_STREAM:  # descriptor 0, also when it is closed
                chunks = infer_files.iter_stream_chunks(0, FLAGS.group_lines)
            else:
                chunks = infer_files.iter_line_chunks(source, FLAGS.group_lines)
            with _EndOnSigterm() as guard:
                summary = infer.process_stream(
                    loaded,
                    make_task(loaded),
                    chunks,
                    guard.between_writes(infer.write_standard_output),
                )
        else:
            summary = infer.process_files(
                loaded,
                make_task(loaded),
                jobs,
                overwrite=FLAGS.overwrite,
                group_lines=FLAGS.group_lines,
                progress=FLAGS.progress,
                stop=watcher.stop_asked,
            )
    except infer.InferenceError as e:
        raise cli.UsageError(str(e), e.status) from None
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as `cat` does
        sys.exit(1)  # nothing waits in sys.stdout's buffer: the outputs bypass it
    except _Terminated:
        print(
            f"terminated (SIGTERM): every line answered was written whole; exiting with "
            f"{TERMINATED_STATUS}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(TERMINATED_STATUS)
    finally:
        if watcher is not None:
            watcher.restore_signal_handlers()
    for note in summary.notes():
        print(note, file=report, flush=True)
    print(f"{verb} {summary.describe()}", file=report, flush=True)
    if summary.stopped:
        _exit_stopped(watcher, summary)


def _check_stream_flags() -> None:
    """With ``--output=-`` the file-only flags would do nothing: named, they are an error."""
    if FLAGS.output != "-":  # infer_files.STANDARD_STREAM, whose module imports TensorFlow
        return
    if FLAGS.overwrite:
        raise cli.UsageError(
            "--overwrite: nothing to overwrite with --output=- (standard output is never "
            "skipped as complete)"
        )
    if FLAGS.progress:
        raise cli.UsageError(
            "--progress: the progress bar is for files (their lines are counted first); with "
            "--output=- the summary at the end is on stderr"
        )


TERMINATED_STATUS = 128 + signal.SIGTERM


class _Terminated(Exception):
    pass


class _EndOnSigterm:
    """``--output=-``: SIGTERM ends the command at once (there is nothing to save), but
    never in the middle of writing a chunk's lines, so what the reader got is whole.
    A container's PID 1 ignores SIGTERM without a handler; this is that handler."""

    def __init__(self):
        self.writing = False
        self.terminated = False
        self._previous = None

    def __enter__(self) -> _EndOnSigterm:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        if not self.writing:
            raise _Terminated

    def between_writes(self, write: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
        def guarded(lines: list[str]) -> None:
            self.writing = True
            try:
                write(lines)
            finally:
                self.writing = False
            if self.terminated:
                raise _Terminated

        return guarded


def _exit_stopped(watcher, summary) -> None:
    """After a stop between batches: one line, then the watcher's exit status (130 after
    Ctrl-C, else 42: a preemption, the launcher runs the same command again)."""
    saved = cli.plural(summary.saved_at_stop, "line")
    status = watcher.exit_status()
    why = "interrupted" if watcher.reason == "SIGINT" else f"stopped ({watcher.reason})"
    print(
        f"{why}: the outputs written are whole and {saved} of unfinished ones are saved; "
        f"exiting with {status} (run the same command to resume)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(status)
