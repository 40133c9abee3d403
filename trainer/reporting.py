"""What a run tells its user: the status line, metrics.jsonl, TensorBoard and the loss-curve PNG.

Only the chief writes files. metrics.jsonl is rewritten atomically at each evaluation
and, on resume, trimmed to the restored step, as TensorBoard's event files are
(``Summaries.trim``), so a relaunch never leaves a curve with a reset or duplicated steps.
"""

from __future__ import annotations

import dataclasses
import json
import time

import tensorflow as tf

from pipeline import features
from trainer.config import TrainConfig

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
_TRIM_PREFIX = ".trim-"  # an event file being rewritten without the steps after a resume


def write_text_atomically(path: str, text: str | bytes) -> None:
    tmp = f"{path}.tmp-{time.time_ns()}"
    mode = "wb" if isinstance(text, bytes) else "w"
    with tf.io.gfile.GFile(tmp, mode) as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def loss_label(task_is_translation: bool, label_smoothing: float) -> str:
    """What the reported loss is: per target token or per review, smoothed or not."""
    unit = "per target token" if task_is_translation else "per review"
    return f"loss {unit}" + (f", label smoothing {label_smoothing:g}" if label_smoothing else "")


class MetricsLog:
    """metrics.jsonl: one JSON object per evaluation, ordered by step."""

    def __init__(self, model_dir: str, *, enabled: bool, loss_label: str = "loss"):
        self.path = f"{model_dir}/{METRICS_FILE}"
        self.loss_label = loss_label  # the curve's y-axis: what the loss is averaged over
        self.curve_path = f"{model_dir}/{CURVE_FILE}"
        self.enabled = enabled
        self.entries: list[dict] = []

    def load(self, *, up_to_step: int) -> None:
        if tf.io.gfile.exists(self.path):
            with tf.io.gfile.GFile(self.path) as f:
                self.entries = [json.loads(line) for line in f if line.strip()]
            self.entries = [e for e in self.entries if e["step"] <= up_to_step]

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        if self.enabled:
            write_text_atomically(
                self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries)
            )
            self.plot()

    def has_step(self, step: int) -> bool:
        return any(e["step"] == step for e in self.entries)

    def evaluations_since_best(self) -> int:
        """Evaluations after the newest one that set a best value (early stopping's count)."""
        since = 0
        for entry in reversed(self.entries):
            if entry.get("best"):
                break
            since += 1
        return since

    def best(self, metric: str, *, higher_is_better: bool) -> float | None:
        values = [e[metric] for e in self.entries if metric in e]
        if not values:
            return None
        return max(values) if higher_is_better else min(values)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import io

        import matplotlib.pyplot as plt

        steps = [e["step"] for e in self.entries]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].plot(steps, [e.get("train_loss") for e in self.entries], marker="o", label="train")
        axes[0].plot(
            steps, [e.get("val_loss") for e in self.entries], marker="o", label="validation"
        )
        axes[0].set_xlabel("step")
        axes[0].set_ylabel(self.loss_label)
        axes[0].legend()
        quality = "bleu" if any("bleu" in e for e in self.entries) else "val_accuracy"
        axes[1].plot(steps, [e.get(quality) for e in self.entries], marker="o", color="tab:green")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel(quality)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        write_text_atomically(self.curve_path, buffer.getvalue())


class Summaries:
    """TensorBoard writers for train and eval scalars (no-ops off the chief).

    Event files are append-only, so on resume ``trim`` first drops, from the files a run
    before wrote, the events of steps after the restored one: the steps trained again
    would otherwise appear twice. Each writer makes its file at its first write.
    """

    KINDS = ("train", "eval")

    def __init__(self, model_dir: str, *, enabled: bool):
        self.enabled = enabled
        self.dirs = {kind: f"{model_dir}/tensorboard/{kind}" for kind in self.KINDS}
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def trim(self, *, up_to_step: int) -> None:
        """Rewrites (atomically) each earlier event file holding steps after ``up_to_step``
        without them; a torn last record (a killed writer) goes too."""
        if not self.enabled:
            return
        for directory in self.dirs.values():
            for stale in tf.io.gfile.glob(f"{directory}/{_TRIM_PREFIX}*"):
                tf.io.gfile.remove(stale)  # a trim killed before its rename
            for path in tf.io.gfile.glob(f"{directory}/events.out.tfevents.*"):
                _trim_event_file(path, up_to_step)

    def write(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(self.dirs[kind])
        writer = self._writers[kind]
        with writer.as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=step)
        writer.flush()


def tensorboard_steps(directory) -> dict[str, list[int]]:
    """Each scalar tag's steps over the event files in ``directory``, in TensorBoard's
    order of files (for checks: a step twice means a relaunch's repeats were kept)."""
    steps: dict[str, list[int]] = {}
    for path in sorted(tf.io.gfile.glob(f"{directory}/events.out.tfevents.*")):
        for record in _event_records(path)[0]:
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def _event_records(path: str) -> tuple[list[bytes], bool]:
    """The whole records of an event file, and whether a torn one (a killed writer's
    last) followed them."""
    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:
        return records, True
    return records, False


def _trim_event_file(path: str, up_to_step: int) -> None:
    records, torn = _event_records(path)
    kept = [r for r in records if tf.compat.v1.Event.FromString(r).step <= up_to_step]
    if len(kept) == len(records) and not torn:
        return
    directory = path.rsplit("/", 1)[0]
    tmp = f"{directory}/{_TRIM_PREFIX}{time.time_ns()}"  # no "tfevents": TensorBoard skips it
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in kept:
            writer.write(record)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def status_line(
    *, step: int, total: int, loss: float, tokens_per_sec: float, lr: float, eta: float
) -> str:
    return (
        f"step {step}/{total}  loss {loss:.4f}  tokens/s {tokens_per_sec:,.0f}  "
        f"lr {lr:.3g}  eta {format_eta(eta)}"
    )


def _batching_summary(config: TrainConfig) -> str:
    if config.task != features.TRANSLATION:
        return ""
    if config.xla:
        return "batches: length buckets padded to their bounds (--xla); "
    return "batches: pools packed to --batch_tokens; "


def config_summary(config: TrainConfig) -> str:
    m = config.model
    return (
        f"{config.preset} {m.task} model: {m.num_layers} layers, d_model {m.d_model}, {m.num_heads} heads, "
        f"d_ff {m.d_ff}, vocab {m.vocab_size}; {config.precision}, strategy {config.strategy}; "
        + _batching_summary(config)
        + json.dumps(
            {
                k: v
                for k, v in dataclasses.asdict(config).items()
                if k
                in ("train_steps", "batch_tokens", "batch_size", "warmup_steps", "learning_rate")
            }
        )
    )
