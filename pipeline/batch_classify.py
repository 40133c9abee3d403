"""Beam job: classify text files (one review per line) with an exported SavedModel.

    python -m pipeline.batch_classify --export_dir=EXPORT --input=GLOB --output=FILE_OR_DIR \\
        [--min_batch_size=1 --max_batch_size=64] [Beam options]

EXPORT is a classification directory written by ``python -m trainer.export``.
Output naming, line splitting and decoding are those of pipeline.batch_inference
(and of batch_translate): one output file per input file, same line count, same order.

Output format, exactly: line i of an output file is one JSON object for line i of its
input, written by ``json.dumps`` with default separators, keys in this order:

    {"label": "positive", "probability": 0.912345, "probabilities": [0.087655, 0.912345]}

- "probabilities": the softmax over the classes, in class-index order, each rounded
  to 6 decimal places (``round(p, 6)``);
- "label": the name of the most probable class (the first on a tie), from
  ``pipeline.features.CLASS_NAMES`` ("negative", "positive"); a model with another
  number of classes gets the class index as a string ("0", "1", ...);
- "probability": the label's entry of "probabilities".

An input line that normalizes to nothing (empty, blank, only "<br />") gives the line
``{}`` (no prediction; the model is not run). Flags that are not this job's own pass through to Beam.
"""

from __future__ import annotations

import logging
import sys

from absl import flags

from pipeline import batch_inference, cli, features, predictions

PROGRAM = "batch_classify"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """This program's flags (defined when it runs, so importing the module defines none)."""
    flags.DEFINE_string(
        "export_dir", None, "A classification SavedModel written by trainer.export."
    )
    flags.DEFINE_string(
        "input",
        None,
        "Text file(s) to classify, one text per line: a path or a glob.",
    )
    flags.DEFINE_string(
        "output",
        None,
        "Output file (one input file), or directory (several inputs, a trailing /, or an "
        "existing directory) that receives one JSON-lines file per input, named like it.",
    )
    flags.DEFINE_integer("min_batch_size", 1, "Smallest batch RunInference sends to the model.")
    flags.DEFINE_integer("max_batch_size", 64, "Largest batch RunInference sends to the model.")
    flags.register_validator(
        "min_batch_size", lambda v: v >= 1, "--min_batch_size must be positive"
    )
    flags.register_validator(
        "max_batch_size", lambda v: v >= 1, "--max_batch_size must be positive"
    )


def main(argv: list[str]) -> None:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    outputs, counters = batch_inference.run_from_args(
        task=features.CLASSIFICATION,
        export_dir=FLAGS.export_dir,
        input_pattern=FLAGS.input,
        output=FLAGS.output,
        min_batch_size=FLAGS.min_batch_size,
        max_batch_size=FLAGS.max_batch_size,
        beam_args=argv[1:],
        format_prediction=predictions.format_classification,
        empty_output=predictions.EMPTY_CLASSIFICATION,
    )
    print(batch_inference.summary("classified", outputs, counters))


def run() -> None:
    define_flags()
    cli.run_main(PROGRAM, main, known_only=True)


if __name__ == "__main__":
    sys.exit(run())
