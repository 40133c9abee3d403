"""Chooses, on the validation split only, the weights and the decoding a model is used with.

    python -m trainer.tune --model_dir=DIR [--average=0,1,3,5] [--beam_sizes=1,4] [--alphas=0.6,1.0]

What is compared and what is written (``MODEL_DIR/tuned/``): trainer/tuning.py. Flags are
parsed before TensorFlow starts. Exit status 2 means a usage error (one line on stderr).
"""

from __future__ import annotations

import json

from absl import flags, logging

from pipeline import cli, tensorflow_start

PROGRAM = "tune"
FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "A model dir written by trainer.train.")
flags.DEFINE_string(
    "data_dir", None, "Preprocessing output whose validation split is used; default: training's."
)
flags.DEFINE_list(
    "average", ["0", "1", "3", "5"], "Weight candidates: 0 = best checkpoint, K = mean of last K."
)
flags.DEFINE_list("beam_sizes", ["1", "4"], "Beam sizes tried on the chosen weights (translation).")
flags.DEFINE_list(
    "alphas", ["0.6", "1.0", "1.3", "1.6"], "Length penalties tried with each beam size > 1."
)
flags.DEFINE_integer("sentences", 0, "Validation sentences decoded for BLEU; 0 = the whole split.")
flags.mark_flag_as_required("model_dir")
flags.register_validator("sentences", lambda v: v >= 0, "--sentences must not be negative")


def _ints(name: str, values: list[str], *, minimum: int) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--{name}: {values} are not all integers") from None
    if not out or min(out) < minimum:
        raise cli.UsageError(f"--{name}: give integers >= {minimum}")
    return out


def main(argv: list[str]) -> None:
    cli.check_command_line(argv)
    averages = _ints("average", FLAGS.average, minimum=0)
    beam_sizes = _ints("beam_sizes", FLAGS.beam_sizes, minimum=1)
    try:
        alphas = [float(a) for a in FLAGS.alphas]
    except ValueError:
        raise cli.UsageError(f"--alphas: {FLAGS.alphas} are not all numbers") from None
    if not alphas or min(alphas) < 0:
        raise cli.UsageError("--alphas: give numbers >= 0")
    logging.set_verbosity(logging.WARNING)
    tensorflow_start.start()
    from trainer import checkpoint_average, tuning
    from trainer.infer_files import InferenceError

    try:
        report = tuning.tune(
            FLAGS.model_dir,
            data_dir=FLAGS.data_dir,
            averages=averages,
            beam_sizes=beam_sizes,
            alphas=alphas,
            sentences=FLAGS.sentences,
        )
    except (InferenceError, checkpoint_average.CheckpointError) as e:
        raise cli.UsageError(str(e)) from None
    chosen = report["chosen"]
    print(f"chosen: {json.dumps(chosen)}")
    print(f"wrote {FLAGS.model_dir.rstrip('/')}/{tuning.TUNED_DIR}/{tuning.TUNED_FILE}")


def run() -> None:
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
