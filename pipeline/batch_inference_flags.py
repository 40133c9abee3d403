"""What pipeline.batch_translate and pipeline.batch_classify share: their flags and main body.

Each job passes its own help for --export_dir, --input and --output, and its task's output
format; ``define`` defines the flags when the job runs (importing defines none) and
``run_job``, the job's main body, hands the values to
``pipeline.batch_inference.run_from_args``. Flags that are not a job's own pass through to
Beam. Only those two entry points import this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from absl import flags

from pipeline import batch_inference

FLAGS = flags.FLAGS


def define(*, export_help: str, input_help: str, output_help: str) -> None:
    """The flags of a batch inference job, with the job's own help for the three paths."""
    flags.DEFINE_string("export_dir", None, export_help)
    flags.DEFINE_string("input", None, input_help)
    flags.DEFINE_string("output", None, output_help)
    flags.DEFINE_integer("min_batch_size", 1, "Smallest batch RunInference sends to the model.")
    flags.DEFINE_integer("max_batch_size", 64, "Largest batch RunInference sends to the model.")
    flags.register_validator(
        "min_batch_size", lambda v: v >= 1, "--min_batch_size must be positive"
    )
    flags.register_validator(
        "max_batch_size", lambda v: v >= 1, "--max_batch_size must be positive"
    )


def run_job(
    argv: list[str],
    *,
    task: str,
    verb: str,
    format_prediction: Callable[..., str],
    empty_output: str,
) -> None:
    """A job's main body: run it over the files and print one summary line ("<verb> ...")."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    outputs, counters = batch_inference.run_from_args(
        task=task,
        export_dir=FLAGS.export_dir,
        input_pattern=FLAGS.input,
        output=FLAGS.output,
        min_batch_size=FLAGS.min_batch_size,
        max_batch_size=FLAGS.max_batch_size,
        beam_args=argv[1:],
        format_prediction=format_prediction,
        empty_output=empty_output,
    )
    print(batch_inference.summary(verb, outputs, counters))
