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

import sys

from absl import flags

from pipeline import batch_inference_flags, cli, features, predictions

PROGRAM = "batch_classify"


def define_flags() -> None:
    """This job's flags (defined when it runs, so importing the module defines none)."""
    batch_inference_flags.define(
        export_help="A classification SavedModel written by trainer.export.",
        input_help="Text file(s) to classify, one text per line: a path or a glob.",
        output_help="Output file (one input file), or directory (several inputs, a trailing /, "
        "or an existing directory) that receives one JSON-lines file per input, named like it.",
    )
    flags.adopt_module_key_flags(batch_inference_flags)  # its flags in this job's --help


def main(argv: list[str]) -> None:
    batch_inference_flags.run_job(
        argv,
        task=features.CLASSIFICATION,
        verb="classified",
        format_prediction=predictions.format_classification,
        empty_output=predictions.EMPTY_CLASSIFICATION,
    )


def run() -> None:
    define_flags()
    cli.run_main(PROGRAM, main, known_only=True)


if __name__ == "__main__":
    sys.exit(run())
