"""Beam job: translate text files with an exported SavedModel, one output file per input file.

    python -m pipeline.batch_translate --export_dir=EXPORT --input=GLOB --output=FILE_OR_DIR \\
        [--min_batch_size=1 --max_batch_size=64] \\
        [Beam options, e.g. --runner=DataflowRunner --project=P --region=R --temp_location=gs://...]

EXPORT is a directory written by ``python -m trainer.export`` (on Dataflow a gs://
path the workers can read); --input and --output may be local or gs://.

Output: line i of an output file is the translation of line i of its input file
(UTF-8, "\\n"-terminated, the same number of lines in the same order). Input lines
that normalize to nothing (empty, blank) give empty output lines without running the
model. A translation never contains a line break: a run of them (which only
byte-fallback pieces produce) becomes one space, and the line is stripped
(``one_line``). Output naming, line splitting, decoding and ".gz" handling are those
of pipeline.batch_inference:

- one input file and --output not ending in "/" and not an existing local
  directory: the output is the file --output;
- otherwise the output of input X is --output/<basename of X>.

Flags that are not this job's own pass through to Beam's PipelineOptions.
"""

from __future__ import annotations

import re
import sys

from absl import flags

from pipeline import batch_inference_flags, cli, features

PROGRAM = "batch_translate"

# Everything str.splitlines() splits on, so each translation stays one line for any reader.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")


def one_line(text: str) -> str:
    """``text`` with each run of line breaks replaced by a space, then stripped."""
    return _LINE_BREAKS.sub(" ", text).strip()


def format_translation(inference: bytes) -> str:
    """One row of the translate signature's output -> the output line (without "\\n")."""
    return one_line(inference.decode("utf-8", errors="replace"))


def define_flags() -> None:
    """This job's flags (defined when it runs, so importing the module defines none)."""
    batch_inference_flags.define(
        export_help="A SavedModel directory written by trainer.export.",
        input_help="Text file(s) to translate, one sentence per line: a path or a glob.",
        output_help="Output file (one input file), or directory (several inputs, a trailing /, "
        "or an existing directory) that receives one file per input, named like it.",
    )
    flags.adopt_module_key_flags(batch_inference_flags)  # its flags in this job's --help


def main(argv: list[str]) -> None:
    batch_inference_flags.run_job(
        argv,
        task=features.TRANSLATION,
        verb="translated",
        format_prediction=format_translation,
        empty_output="",
    )


def run() -> None:
    define_flags()
    cli.run_main(PROGRAM, main, known_only=True)


if __name__ == "__main__":
    sys.exit(run())
