"""The training run's configuration: one frozen object built from flags in trainer/train.py.

``TrainConfig`` holds everything a run needs, including the ``ModelConfig``; it is
saved as ``config.json`` in the model dir, and inference rebuilds the model from
that file, never from flags.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from trainer.model_config import ModelConfig

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CONFIG_FILE = "config.json"
# TrainConfig fields that must be > 0, and >= 0 (train.py validates the flags by these too).
POSITIVE_FIELDS = (
    "train_steps",
    "batch_tokens",
    "batch_size",
    "warmup_steps",
    "grad_accum_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "eval_every",
    "log_every",
    "eval_beam_size",
)
NON_NEGATIVE_FIELDS = (
    "eval_bleu_sentences",
    "virtual_devices",
    "early_stopping_patience",
    "average_checkpoints",
    "clip_norm",
    "shuffle_buffer",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    model_dir: str
    model: ModelConfig
    preset: str
    train_steps: int = 1000
    batch_tokens: int = 4096  # translation: global target+source budget per step, all replicas
    batch_size: int = 32  # classification: global examples per step
    learning_rate: float = 1.0  # scale on d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup_steps: int = 4000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-9
    label_smoothing: float = 0.1
    clip_norm: float = 0.0  # 0 = no clipping
    grad_accum_steps: int = 1
    precision: str = "float32"
    strategy: str = "auto"
    num_gpus: int = -1  # -1 = all visible
    virtual_devices: int = 0  # >0: split the CPU into that many logical devices
    xla: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 5
    eval_every: int = 500
    eval_bleu_sentences: int = 200
    eval_beam_size: int = 1
    log_every: int = 50
    early_stopping_patience: int = 0  # evaluations without improvement; 0 = off
    average_checkpoints: int = 0  # export the average of the last K checkpoints; 0 = the best
    export: bool = True  # write model_dir/export (a SavedModel) at the end
    seed: int = 0
    shuffle_buffer: int = 10_000
    skip_corrupt_shards: bool = False  # else a corrupt shard stops the run, naming it

    def __post_init__(self):
        for name in POSITIVE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        for name in NON_NEGATIVE_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must not be negative")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"strategy={self.strategy!r} is unknown; expected one of {list(STRATEGIES)}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision={self.precision!r} is unknown; expected one of {list(PRECISIONS)}"
            )

    @property
    def task(self) -> str:
        return self.model.task

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        raw: dict[str, Any] = json.loads(text)
        raw["model"] = ModelConfig.from_dict(raw["model"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**raw)
