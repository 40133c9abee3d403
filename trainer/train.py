"""Trainer entry point: flags -> TrainConfig -> train_and_evaluate.

    python -m trainer.train --data_dir=DIR --model_dir=DIR --flagfile=configs/tiny.cfg [flags]

Re-running the same command resumes from the newest checkpoint in --model_dir. Exit
status 42 means "preempted after a checkpoint: relaunch to resume"; 2 a usage error.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags, logging

from pipeline import cli, features, tensorflow_start
from trainer import preemption
from trainer.config import (
    NON_NEGATIVE_FIELDS,
    POSITIVE_FIELDS,
    PRECISIONS,
    STRATEGIES,
    TrainConfig,
)
from trainer.model_config import MODEL_PRESETS, model_config_from_preset

PROGRAM = "train"
FLAGS = flags.FLAGS
_D = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

flags.DEFINE_string(
    "data_dir", None, "A finished preprocessing output (with metadata.json), local or gs://."
)
flags.DEFINE_string(
    "model_dir", None, "Where checkpoints, config.json, metrics and exports go; rerun to resume."
)
flags.DEFINE_enum(
    "preset",
    "tiny",
    sorted(MODEL_PRESETS),
    "Model architecture preset; the flags below override fields.",
)
# Model overrides (None = the preset's value).
flags.DEFINE_integer("num_layers", None, "Encoder (and decoder) layers.")
flags.DEFINE_integer("d_model", None, "Model width.")
flags.DEFINE_integer("num_heads", None, "Attention heads; must divide d_model.")
flags.DEFINE_integer("d_ff", None, "Feed-forward inner width.")
flags.DEFINE_float("dropout", None, "Residual and embedding dropout.")
flags.DEFINE_float("attention_dropout", None, "Dropout on attention probabilities.")
flags.DEFINE_float("relu_dropout", None, "Dropout inside the feed-forward network.")
flags.DEFINE_bool("norm_first", None, "Pre-LN instead of the paper's post-LN.")
flags.DEFINE_integer("max_length", None, "Longest sequence in tokens (position table size).")
flags.DEFINE_bool(
    "share_embeddings",
    None,
    "One embedding for source, target and output projection (translation).",
)
# Training.
flags.DEFINE_integer(
    "train_steps", _D["train_steps"], "Total optimizer steps (a resumed run continues up to this)."
)
flags.DEFINE_integer(
    "batch_tokens",
    _D["batch_tokens"],
    "Translation: global token budget per step, split over replicas.",
)
flags.DEFINE_integer("batch_size", _D["batch_size"], "Classification: global examples per step.")
flags.DEFINE_float(
    "learning_rate", _D["learning_rate"], "Scale on the d_model^-0.5 warmup/inverse-sqrt schedule."
)
flags.DEFINE_integer("warmup_steps", _D["warmup_steps"], "Linear warmup steps of the schedule.")
flags.DEFINE_float("label_smoothing", _D["label_smoothing"], "Label smoothing epsilon.")
flags.DEFINE_float("clip_norm", _D["clip_norm"], "Global gradient-norm clipping; 0 disables it.")
flags.DEFINE_integer(
    "grad_accum_steps", _D["grad_accum_steps"], "Batches accumulated into one optimizer step."
)
flags.DEFINE_enum(
    "precision",
    _D["precision"],
    list(PRECISIONS),
    "Compute precision; logits and loss stay float32.",
)
flags.DEFINE_enum(
    "strategy",
    _D["strategy"],
    list(STRATEGIES),
    "auto: multi_worker if TF_CONFIG names a cluster, mirrored on several devices, else one_device.",
)
flags.DEFINE_integer("num_gpus", _D["num_gpus"], "GPUs to use on this machine; -1 = all.")
flags.DEFINE_integer(
    "virtual_devices",
    _D["virtual_devices"],
    "Split the CPU into N logical devices (multi-replica runs without GPUs).",
)
flags.DEFINE_bool(
    "xla",
    _D["xla"],
    "JIT-compile the step with XLA. Translation batches then come from length buckets padded "
    "to their bounds (few shapes to compile) instead of pools packed to --batch_tokens.",
)
flags.DEFINE_integer("checkpoint_every", _D["checkpoint_every"], "Steps between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", _D["keep_checkpoints"], "Checkpoints kept.")
flags.DEFINE_integer(
    "eval_every", _D["eval_every"], "Steps between evaluations on the validation split."
)
flags.DEFINE_integer(
    "eval_bleu_sentences",
    _D["eval_bleu_sentences"],
    "Validation sentences decoded for BLEU at each evaluation; 0 = none.",
)
flags.DEFINE_integer(
    "eval_beam_size", _D["eval_beam_size"], "Beam size for the evaluation BLEU (1 = greedy)."
)
flags.DEFINE_integer("log_every", _D["log_every"], "Steps between status lines.")
flags.DEFINE_integer(
    "early_stopping_patience",
    _D["early_stopping_patience"],
    "Stop after this many evaluations without improvement; 0 = never.",
)
flags.DEFINE_integer(
    "average_checkpoints",
    _D["average_checkpoints"],
    "Export the average of the last K checkpoints; 0 = the best one (else the latest).",
)
flags.DEFINE_bool(
    "export", _D["export"], "Export a SavedModel to MODEL_DIR/export at the end of training."
)
flags.DEFINE_integer("seed", _D["seed"], "Seed of the data order and initialization.")
flags.DEFINE_integer("shuffle_buffer", _D["shuffle_buffer"], "Examples in the shuffle buffer.")
flags.DEFINE_bool(
    "skip_corrupt_shards",
    _D["skip_corrupt_shards"],
    "Check every shard at start (a full read) and train without the corrupt ones, printing "
    "the examples lost; without it a corrupt shard stops the run with a message naming it.",
)

for _name in POSITIVE_FIELDS:
    flags.register_validator(_name, lambda v: v > 0, f"--{_name} must be a positive integer")
for _name in ("num_layers", "d_model", "num_heads", "d_ff", "max_length"):
    flags.register_validator(
        _name, lambda v: v is None or v > 0, f"--{_name} must be a positive integer"
    )
for _name in NON_NEGATIVE_FIELDS:
    flags.register_validator(_name, lambda v: v >= 0, f"--{_name} must not be negative")
flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be positive")
flags.register_validator(
    "num_gpus", lambda v: v == -1 or v > 0, "--num_gpus must be -1 (all) or a positive integer"
)
flags.register_validator(
    "label_smoothing", lambda v: 0 <= v < 1, "--label_smoothing must be in [0, 1)"
)
flags.register_multi_flags_validator(
    ["d_model", "num_heads", "preset"],
    lambda f: (
        (f["d_model"] or MODEL_PRESETS[f["preset"]]["d_model"])
        % (f["num_heads"] or MODEL_PRESETS[f["preset"]]["num_heads"])
        == 0
    ),
    "--d_model must be divisible by --num_heads",
)


def _enough_checkpoints_to_average(f: dict) -> bool:
    """A run to --train_steps keeps one checkpoint per --checkpoint_every (and the last),
    at most --keep_checkpoints: --average_checkpoints must not ask for more."""
    if min(f["train_steps"], f["checkpoint_every"], f["keep_checkpoints"]) <= 0:
        return True  # the single-flag validators name these
    kept = min(-(-f["train_steps"] // f["checkpoint_every"]), f["keep_checkpoints"])
    if f["average_checkpoints"] > kept:
        raise flags.ValidationError(
            f"--average_checkpoints={f['average_checkpoints']}, but --train_steps="
            f"{f['train_steps']} with --checkpoint_every={f['checkpoint_every']} and "
            f"--keep_checkpoints={f['keep_checkpoints']} leaves {kept} checkpoint(s) to average"
        )
    return True


flags.register_multi_flags_validator(
    ["average_checkpoints", "train_steps", "checkpoint_every", "keep_checkpoints"],
    _enough_checkpoints_to_average,
)

MODEL_OVERRIDES = (
    "num_layers",
    "d_model",
    "num_heads",
    "d_ff",
    "dropout",
    "attention_dropout",
    "relu_dropout",
    "norm_first",
    "max_length",
    "share_embeddings",
)


def config_from_flags(metadata: features.Metadata) -> TrainConfig:
    """The one conversion point from flags to the run's config."""
    overrides = {
        name: getattr(FLAGS, name) for name in MODEL_OVERRIDES if getattr(FLAGS, name) is not None
    }
    try:
        model = model_config_from_preset(
            FLAGS.preset, vocab_size=metadata.tokenizer.vocab_size, task=metadata.task, **overrides
        )
        training = {
            name: getattr(FLAGS, name)
            for name in _D
            if name not in ("data_dir", "model_dir", "model", "preset") and name in FLAGS
        }
        return TrainConfig(
            data_dir=FLAGS.data_dir.rstrip("/"),
            model_dir=FLAGS.model_dir.rstrip("/"),
            model=model,
            preset=FLAGS.preset,
            **training,
        )
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


def main(argv: list[str]) -> None:
    cli.check_command_line(argv, "data_dir", "model_dir")
    logging.set_verbosity(logging.WARNING)
    tensorflow_start.start()
    from trainer import distribution, loop, model_dir_setup, reporting

    distribution.configure_devices(virtual_devices=FLAGS.virtual_devices)
    try:
        metadata = features.load_metadata(FLAGS.data_dir.rstrip("/"))
    except features.MetadataError as e:
        raise cli.UsageError(f"--data_dir: {str(e).splitlines()[0]}") from None
    try:
        config = config_from_flags(metadata)
        print(reporting.config_summary(config), flush=True)
        result = loop.train_and_evaluate(config, metadata)
    except (features.MetadataError, model_dir_setup.ModelDirError, ValueError) as e:
        raise cli.UsageError(str(e).splitlines()[0]) from None
    print(f"done at step {result['step']}; best {result['metric']} {result['best']}", flush=True)


def run() -> None:
    cli.run_main(PROGRAM, main)


if __name__ == "__main__":
    sys.exit(run())

assert preemption.RELAUNCH_EXIT_CODE == 42  # documented in the module docstring
