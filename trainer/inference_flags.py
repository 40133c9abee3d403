"""The flags trainer.translate and trainer.classify share (defined once, read by those two only).

Each command defines its own `--input` help and its batching flags; both pass the
values below to `trainer.infer` (`load_model_dir`, `translate_files` / `classify_files`).
"""

from __future__ import annotations

from absl import flags

flags.DEFINE_string("model_dir", None, "A model dir written by trainer.train (local or gs://).")
flags.DEFINE_string(
    "output",
    None,
    "Output file; a directory (OUTPUT/<input basename>) when --input matches several files, "
    "OUTPUT exists as a directory or ends with '/'.",
)
flags.DEFINE_string(
    "checkpoint",
    "best",
    "best (the newest in MODEL_DIR/best, else latest), latest, a checkpoint path or a directory.",
)
flags.DEFINE_bool("overwrite", False, "Redo inputs whose output is already complete.")
flags.DEFINE_integer(
    "group_lines",
    100_000,
    "Small files are pooled into groups of about this many lines; a longer file is run in "
    "chunks of this many lines, each saved when done, so a rerun resumes after the last one.",
)
flags.DEFINE_bool("progress", None, "Progress bar on stderr; default: when stderr is a terminal.")
flags.DEFINE_integer(
    "virtual_devices",
    0,
    "Without GPUs: split the CPU into N logical devices, one model copy each (testing).",
)

flags.register_validator(
    "group_lines", lambda v: v >= 1, "--group_lines must be a positive integer"
)
flags.register_validator(
    "virtual_devices", lambda v: v >= 0, "--virtual_devices must not be negative"
)
