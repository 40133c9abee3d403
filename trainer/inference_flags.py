"""What trainer.translate and trainer.classify share: their common flags and `run_files`.

Each command defines its own `--input` help and its batching flags, and hands `run_files`
the call that runs its files; `run_files` checks the flags, loads the model dir and passes
the values below to `trainer.infer` (`load_model_dir`, `translate_files` / `classify_files`).
Only those two entry points import this module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import flags, logging

from pipeline import cli

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "A model dir written by trainer.train (local or gs://).")
flags.DEFINE_string(
    "output",
    None,
    "Output file; a directory (OUTPUT/<input basename>) when --input matches several files, "
    "OUTPUT exists as a directory or ends with '/'.",
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
flags.DEFINE_bool("progress", None, "Progress bar on stderr; default: when stderr is a terminal.")
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


def run_files(argv: list[str], *, task: str, verb: str, infer_files: Callable) -> None:
    """One command's main: `infer_files(loaded, jobs, overwrite=, group_lines=, progress=)`
    runs the planned jobs and returns the summary printed as `<verb> <summary>`."""
    cli.check_command_line(argv, "model_dir", "input", "output")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.ERROR)
    from trainer import distribution, infer  # TensorFlow starts here

    distribution.configure_devices(virtual_devices=FLAGS.virtual_devices)
    try:
        jobs = infer.plan_jobs(FLAGS.input, FLAGS.output)
        loaded = infer.load_model_dir(
            FLAGS.model_dir,
            task=task,
            checkpoint=FLAGS.checkpoint,
            devices=distribution.local_devices(num_gpus=-1, virtual_devices=FLAGS.virtual_devices),
        )
        print(loaded.describe(), file=sys.stderr, flush=True)
        summary = infer_files(
            loaded,
            jobs,
            overwrite=FLAGS.overwrite,
            group_lines=FLAGS.group_lines,
            progress=FLAGS.progress,
        )
    except infer.InferenceError as e:
        raise cli.UsageError(str(e), e.status) from None
    for note in summary.notes():
        print(note, flush=True)
    print(f"{verb} {summary.describe()}", flush=True)
