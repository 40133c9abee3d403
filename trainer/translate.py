"""Translate text files with a trained model dir: one output line per input line, in order.

    python -m trainer.translate --model_dir=DIR --input='texts/*.en' --output=out/ \\
        [--beam_size=4 --alpha=0.6 --batch_tokens=4096 --checkpoint=best --overwrite]
    echo "A man sleeps." | python -m trainer.translate --model_dir=DIR --input=- --output=-

Rerunning the same command skips inputs whose output is complete, resumes a long input
after its last saved chunk (--group_lines) and redoes the rest. SIGTERM or a spot notice
stops it once the batches running are done, with the lines done saved, exit status 42 (Ctrl-C: 130);
the rerun decodes only the lines left.
Every local GPU (else the CPU) gets its own copy of the model and takes the next batch
when it is free.
Naming, batching and the atomic writes are described in trainer/infer.py. Exit status 2
means a usage error (one line on stderr).
"""

from __future__ import annotations

import sys

from absl import flags

from pipeline import cli, features
from trainer import inference_flags

PROGRAM = "translate"
FLAGS = flags.FLAGS
flags.adopt_module_key_flags(inference_flags)  # --model_dir, --output, ... in --help

flags.DEFINE_string(
    "input", None, "Text file or glob (local or gs://), one sentence per line; may match many."
)
flags.DEFINE_integer("beam_size", 4, "Beam width; 1 = greedy decoding.")
flags.DEFINE_float("alpha", 0.6, "Length penalty exponent of beam search (GNMT).")
flags.DEFINE_integer(
    "batch_tokens", 4096, "Budget per batch: padded source tokens x beam_size, per device."
)
flags.DEFINE_integer(
    "max_decode_length",
    None,
    "Longest output in tokens; default: source length + 50, at most the model's max_length.",
)

flags.register_validator("beam_size", lambda v: v >= 1, "--beam_size must be a positive integer")
flags.register_validator("alpha", lambda v: v >= 0, "--alpha must not be negative")
flags.register_validator(
    "batch_tokens", lambda v: v >= 1, "--batch_tokens must be a positive integer"
)
flags.register_validator(
    "max_decode_length",
    lambda v: v is None or v >= 1,
    "--max_decode_length must be a positive integer",
)


def _translation(loaded):
    from trainer import infer_tasks

    return infer_tasks.Translation(
        loaded,
        beam_size=FLAGS.beam_size,
        alpha=FLAGS.alpha,
        batch_tokens=FLAGS.batch_tokens,
        max_decode_length=FLAGS.max_decode_length,
        cache=True,
    )


def main(argv: list[str]) -> None:
    inference_flags.run_files(
        argv, task=features.TRANSLATION, verb="translated", make_task=_translation
    )


def run() -> None:
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    sys.exit(run())
