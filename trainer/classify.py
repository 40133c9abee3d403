"""Classify the lines of text files (e.g. reviews) with a trained classification model dir.

    python -m trainer.classify --model_dir=DIR --input='reviews/*.txt' --output=out/ \\
        [--batch_size=64 --checkpoint=best --overwrite]

Writes one JSON line per input line, in order, probabilities rounded to 6 places:
`{"label": "positive", "probability": 0.912345, "probabilities": [0.087655, 0.912345]}`
(`probability` is the label's); an empty input line gives an empty output line.
Rerunning skips inputs whose output is complete and resumes a long input after its last
saved chunk (--group_lines). Every local GPU (else the CPU) gets its own copy of the
model. Naming and atomic writes are described in trainer/infer.py.
Exit status 2 means a usage error (one line on stderr).
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from pipeline import cli, features
from trainer import inference_flags

PROGRAM = "classify"
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(inference_flags)  # --model_dir, --output, ... in --help

flags.DEFINE_string(
    "input", None, "Text file or glob (local or gs://), one text per line; may match many."
)
flags.DEFINE_integer("batch_size", 64, "Lines per batch, per device.")
flags.register_validator("batch_size", lambda v: v >= 1, "--batch_size must be a positive integer")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected argument {argv[1]!r}")
    for name in ("model_dir", "input", "output"):
        if not getattr(FLAGS, name):
            raise cli.UsageError(f"--{name} is required")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.ERROR)
    from trainer import distribution, infer  # TensorFlow starts here

    distribution.configure_devices(virtual_devices=FLAGS.virtual_devices)
    try:
        jobs = infer.plan_jobs(FLAGS.input, FLAGS.output)
        loaded = infer.load_model_dir(
            FLAGS.model_dir,
            task=features.CLASSIFICATION,
            checkpoint=FLAGS.checkpoint,
            devices=distribution.local_devices(num_gpus=-1, virtual_devices=FLAGS.virtual_devices),
        )
        print(loaded.describe(), file=sys.stderr, flush=True)
        summary = infer.classify_files(
            loaded,
            jobs,
            batch_size=FLAGS.batch_size,
            overwrite=FLAGS.overwrite,
            group_lines=FLAGS.group_lines,
            progress=FLAGS.progress,
        )
    except infer.InferenceError as e:
        raise cli.UsageError(str(e), e.status) from None
    for note in summary.notes():
        print(note, flush=True)
    print(f"classified {summary.describe()}", flush=True)


def run() -> None:
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    sys.exit(run())
