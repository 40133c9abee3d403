"""Where a training step's time goes: TensorFlow op time by op type and by op, for one preset.

    python scripts/profile_train_step.py --data_dir=/tmp/ende --preset=tiny --steps=8

Builds the project's Trainer (one_device strategy) as `scripts/bench_train.py` does (both
use `train_timing`), runs `--steps` steps three times: untimed (tracing), timed, and under
the TensorFlow profiler, where it sums the duration of every op the trace records (on all
threads: with 2 cores the op time can exceed the wall time). Prints the timed pass, the
share of each op type and the costliest ops by name, e.g. to see how much of a small
model's step is the vocabulary projection.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys
import tempfile

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_timing  # noqa: E402

from pipeline import cli  # noqa: E402
from trainer.config import PRECISIONS  # noqa: E402

PROGRAM = "profile_train_step"
FLAGS = flags.FLAGS

flags.DEFINE_string("data_dir", None, "A translation preprocessing output (with metadata.json).")
flags.DEFINE_enum("preset", "tiny", list(train_timing.TRANSLATION_PRESETS), "Model preset.")
flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "Training precision.")
flags.DEFINE_integer("steps", 8, "Training steps per pass (tracing, timed, profiled).")
flags.DEFINE_integer("batch_tokens", 4096, "Token budget per batch, padding included.")
flags.DEFINE_bool("xla", False, "Profile the trainer's --xla step.")
flags.DEFINE_integer("top", 15, "How many op types and ops to list.")
flags.register_validator("steps", lambda v: v >= 1, "--steps must be at least 1")
flags.register_validator("batch_tokens", lambda v: v > 0, "--batch_tokens must be positive")
flags.register_validator("top", lambda v: v >= 1, "--top must be at least 1")


# A TensorFlow op's trace event: "scope/name:Type" or, at the root scope, "Name:Type". Runtime
# events ("ExecutorState::Process", "EagerLocalExecute: __inference_...") do not match.
_OP_EVENT = re.compile(r"^[^\s:]+:[A-Za-z0-9_]+$")


def op_seconds(logdir: str) -> collections.Counter:
    """{op name "scope/name:Type": seconds} summed over the profiler trace under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: collections.Counter = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    if _OP_EVENT.match(name):
                        totals[name] += event.duration_ps / 1e12
    return totals


# Where TensorFlow runs an op with a oneDNN kernel (on Intel CPUs), the trace names the kernel:
# "_MklMatMul", "_MklNativeBatchMatMulV2". Such a kernel counts as the op it implements, so one
# op type is one row on every CPU.
_ONEDNN_KERNEL = re.compile(r"^_Mkl(?:Native)?(?=[A-Z])")


def op_type(name: str) -> str:
    """The TensorFlow op type of a trace event "scope/name:Type", oneDNN kernels included."""
    return _ONEDNN_KERNEL.sub("", name.rsplit(":", 1)[1])


def by_type(ops: collections.Counter) -> collections.Counter:
    types: collections.Counter = collections.Counter()
    for name, seconds in ops.items():
        types[op_type(name)] += seconds
    return types


def report(ops: collections.Counter, *, seconds: float, steps: int, top: int) -> str:
    total = sum(ops.values())
    lines = [
        f"{steps} steps: {seconds:.2f} s without the profiler (from the end of the first step),",
        f"{total:.2f} s of op time on all threads under it",
        "",
    ]
    lines += ["| op type | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.3f} | {v / total:.1%} |" for k, v in by_type(ops).most_common(top)]
    lines += ["", "| op | seconds | share |", "|---|---:|---:|"]
    lines += [f"| `{k}` | {v:.3f} | {v / total:.1%} |" for k, v in ops.most_common(top)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    cli.check_command_line(argv, "data_dir")
    metadata = train_timing.start(FLAGS.data_dir)
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="profile_train_") as work:
        try:
            trainer = train_timing.make_trainer(
                data_dir=FLAGS.data_dir,
                metadata=metadata,
                model_dir=os.path.join(work, "model"),
                preset=FLAGS.preset,
                precision=FLAGS.precision,
                batch_tokens=FLAGS.batch_tokens,
                xla=FLAGS.xla,
            )
        except ValueError as e:  # the trainer's config checks
            raise cli.UsageError(str(e).splitlines()[0]) from None
        dataset, _ = train_timing.fixed_batches(
            data_dir=FLAGS.data_dir,
            metadata=metadata,
            batch_tokens=FLAGS.batch_tokens,
            max_length=trainer.config.model.max_length,
            count=FLAGS.steps,
            pad_to_bucket=FLAGS.xla,
        )
        train_timing.time_trainer(trainer, dataset)  # tracing (and XLA compiles)
        seconds = train_timing.time_trainer(trainer, dataset)
        logdir = os.path.join(work, "trace")
        tf.profiler.experimental.start(logdir)
        train_timing.time_trainer(trainer, dataset)
        tf.profiler.experimental.stop()
        ops = op_seconds(logdir)
    if not ops:
        raise cli.UsageError("the profiler recorded no TensorFlow ops")
    print(
        f"{FLAGS.preset} {FLAGS.precision}{' --xla' if FLAGS.xla else ''}, "
        f"batches of {FLAGS.batch_tokens} tokens from {FLAGS.data_dir}\n"
    )
    print(report(ops, seconds=seconds, steps=FLAGS.steps, top=FLAGS.top), end="")


if __name__ == "__main__":
    cli.run_main(PROGRAM, main)
