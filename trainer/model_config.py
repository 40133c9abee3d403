"""Model hyperparameters: the frozen `ModelConfig` and its named presets.

A config fully determines the architecture, so a model directory's saved
config is enough to rebuild the model for inference. Training concerns (label
smoothing, learning rate, batch size) live elsewhere.

    config = model_config_from_preset("base", vocab_size=37000, task="translation")
    config = model_config_from_preset("tiny", vocab_size=8000, task="translation", dropout=0.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline import features

TASKS = (features.TRANSLATION, features.CLASSIFICATION)

_INT_FIELDS = ("vocab_size", "num_layers", "d_model", "num_heads", "d_ff", "max_length")
_RATE_FIELDS = ("dropout", "attention_dropout", "relu_dropout")
_BOOL_FIELDS = ("norm_first", "share_embeddings")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a translation Transformer or a Transformer classifier.

    Attributes:
      task: `features.TRANSLATION` (encoder-decoder) or `features.CLASSIFICATION`
        (encoder + pooled softmax head).
      vocab_size: size of the (joint, for translation) subword vocabulary; taken
        from the data's metadata.
      num_layers: blocks in the encoder, and again in the decoder.
      d_model: width of every residual stream.
      num_heads: attention heads; `d_model` must be divisible by it.
      d_ff: inner width of the position-wise feed-forward network.
      dropout: on embeddings and on every sub-layer output before the residual add.
      attention_dropout: on the attention probabilities.
      relu_dropout: on the feed-forward hidden activations.
      norm_first: False = post-LN `LN(x + sublayer(x))` as in the paper;
        True = pre-LN `x + sublayer(LN(x))` with a final LayerNorm per stack
        (more stable at depth, less sensitive to warmup).
      max_length: the longest sequence (in tokens) the position table covers.
      num_classes: classifier outputs (classification only).
      share_embeddings: translation only. True: one matrix embeds source and
        target tokens and, transposed, projects to the output logits.
    """

    task: str
    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    dropout: float = 0.1
    attention_dropout: float = 0.0
    relu_dropout: float = 0.0
    norm_first: bool = False
    max_length: int = 256
    num_classes: int = 2
    share_embeddings: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is unknown; expected one of {list(TASKS)}")
        for name in _INT_FIELDS + ("num_classes",):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        for name in _INT_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} must be at least 2")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
            )
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1)")
            # JSON and flags may hand us ints such as 0; keep the field a float.
            object.__setattr__(self, name, float(value))
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with `overrides` applied; ValueError on unknown fields."""
        _check_field_names(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; ValueError on unknown or missing fields."""
        _check_field_names(values)
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        ]
        if missing:
            raise ValueError(f"ModelConfig is missing required fields {missing}")
        return cls(**values)


def _check_field_names(values: dict[str, Any]) -> None:
    known = [f.name for f in dataclasses.fields(ModelConfig)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown}; known fields: {known}")


# Everything but `vocab_size` and `task`, which come from the data.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # CPU demos and smoke tests: learns a small synthetic corpus in minutes.
    "tiny": dict(num_layers=2, d_model=128, num_heads=4, d_ff=512, dropout=0.1),
    # The largest model that still trains usefully on a CPU.
    "small": dict(num_layers=3, d_model=256, num_heads=4, d_ff=1024, dropout=0.1),
    # Vaswani et al. 2017, Table 3.
    "base": dict(num_layers=6, d_model=512, num_heads=8, d_ff=2048, dropout=0.1),
    "big": dict(num_layers=6, d_model=1024, num_heads=16, d_ff=4096, dropout=0.3),
    # IMDB reviews are long and the labelled set small: a narrow, shallow encoder.
    "imdb": dict(num_layers=2, d_model=128, num_heads=4, d_ff=512, dropout=0.1, max_length=512),
}


def model_config_from_preset(
    name: str, *, vocab_size: int, task: str, **overrides: Any
) -> ModelConfig:
    """The preset `name` with the data's `vocab_size` and `task`, plus `overrides`.

    Raises:
      ValueError: unknown preset, unknown override field, or an invalid value.
    """
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(MODEL_PRESETS)}")
    _check_field_names(overrides)
    values = {**MODEL_PRESETS[name], **overrides, "vocab_size": vocab_size, "task": task}
    return ModelConfig(**values)
