"""Exports a trained model dir as a string-in/string-out SavedModel (trainer/exporting.py).

    python -m trainer.export --model_dir=DIR --export_dir=DIR \\
        [--checkpoint=best|latest|PATH] [--average_last=K] [--beam_size=4] [--alpha=0.6] [--overwrite]

What the SavedModel holds, how to serve it and what its metadata records: trainer/exporting.py.
Flags are parsed before TensorFlow starts. Exit status 2 means a usage error (one line on
stderr).
"""

from __future__ import annotations

import json
import sys

from absl import flags, logging

from pipeline import cli, tensorflow_start
from pipeline.export_contract import METADATA_PATH

PROGRAM = "export"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when it runs."""
    flags.DEFINE_string(
        "model_dir", None, "A trainer model dir (config.json, spm.model, checkpoints)."
    )
    flags.DEFINE_string(
        "export_dir", None, "Where the SavedModel goes; must be empty or absent unless --overwrite."
    )
    flags.DEFINE_string(
        "checkpoint",
        "best",
        "best (the best by validation metric, else the latest), latest, or a checkpoint path.",
    )
    flags.DEFINE_integer(
        "average_last",
        0,
        "Export the element-wise average of the last K checkpoints in --model_dir; "
        "0 = use --checkpoint.",
    )
    flags.DEFINE_integer("beam_size", 4, "Beam width of the exported translate (1 = greedy).")
    flags.DEFINE_float("alpha", 0.6, "GNMT length penalty exponent of the beam search.")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --export_dir.")
    flags.register_validator(
        "beam_size", lambda v: v >= 1, "--beam_size must be a positive integer"
    )
    flags.register_validator("alpha", lambda v: v >= 0.0, "--alpha must be >= 0")
    flags.register_validator(
        "average_last", lambda v: v >= 0, "--average_last must not be negative"
    )
    flags.register_multi_flags_validator(
        ["checkpoint", "average_last"],
        lambda f: f["average_last"] == 0 or f["checkpoint"] == "best",
        "--checkpoint and --average_last exclude each other",
    )


def main(argv: list[str]) -> None:
    cli.check_command_line(argv, "model_dir", "export_dir")
    logging.set_verbosity(logging.WARNING)  # TF's saver logs every step at INFO
    tensorflow_start.start()
    import tensorflow as tf

    from trainer import exporting

    try:
        path = exporting.export_model(
            model_dir=FLAGS.model_dir,
            export_dir=FLAGS.export_dir,
            checkpoint=FLAGS.checkpoint,
            average_last=FLAGS.average_last,
            beam_size=FLAGS.beam_size,
            alpha=FLAGS.alpha,
            overwrite=FLAGS.overwrite,
        )
    except exporting.ExportError as e:
        raise cli.UsageError(str(e)) from None
    with tf.io.gfile.GFile(f"{path}/{METADATA_PATH}") as f:
        metadata = json.load(f)
    averaged = metadata["averaged_checkpoints"]
    weights = (
        f"the average of {len(averaged)} checkpoints ({', '.join(averaged)})"
        if averaged
        else metadata["checkpoint"]
    )
    print(f"exported the {metadata['task']} model of {weights} to {path}")


def run() -> None:
    define_flags()
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    sys.exit(run())
