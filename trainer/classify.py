"""Classify the lines of text files (e.g. reviews) with a trained classification model dir.

    python -m trainer.classify --model_dir=DIR --input='reviews/*.txt' --output=out/ \\
        [--batch_size=64 --checkpoint=best --overwrite]
    python -m trainer.classify --model_dir=DIR --input=reviews.txt --output=-  # to stdout

Writes one JSON line per input line, in order, probabilities rounded to 6 places:
`{"label": "positive", "probability": 0.912345, "probabilities": [0.087655, 0.912345]}`
(`probability` is the label's); an empty input line gives `{}`.
Rerunning skips inputs whose output is complete and resumes a long input after its last
saved chunk (--group_lines). SIGTERM or a spot notice stops it once the batches running
are done, with the lines done saved, exit status 42 (Ctrl-C: 130). Every local GPU (else the CPU) gets its own copy of the
model. Naming and atomic writes are described in trainer/infer.py.
Exit status 2 means a usage error (one line on stderr).
"""

from __future__ import annotations

import sys

from absl import flags

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


def _classification(loaded):
    from trainer import infer_tasks

    return infer_tasks.Classification(loaded, batch_size=FLAGS.batch_size)


def main(argv: list[str]) -> None:
    inference_flags.run_files(
        argv, task=features.CLASSIFICATION, verb="classified", make_task=_classification
    )


def run() -> None:
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    sys.exit(run())
