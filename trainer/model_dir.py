"""A trained model dir, loaded for inference: config, hash-checked tokenizer, checkpoint, weights.

    loaded = load_model_dir(model_dir, task=features.TRANSLATION, checkpoint="best")
    loaded.replicas[0].model       # the restored Transformer (one copy per device)
    loaded.tokenizer.encode(...)   # the tokenizer it was trained with

The model is rebuilt from ``config.json`` (never from flags) and computes in float32
whatever precision trained it. ``checkpoint`` is "best" (the newest in MODEL_DIR/best,
else the latest), "latest", a checkpoint path or a directory of checkpoints. Every
problem is an ``InferenceError`` whose one-line message names the flag to fix.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from pipeline import features, tokenizer
from pipeline.export_contract import TOKENIZER_INFO_FILE
from trainer import checkpoint_average, distribution
from trainer.config import CONFIG_FILE, TrainConfig
from trainer.infer_files import InferenceError
from trainer.model import build_inference_model

CHECKPOINT_CHOICES = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class Replica:
    """One copy of the model, on one device."""

    device: str
    model: Any  # trainer.model.Transformer | Classifier


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    config: TrainConfig
    tokenizer: tokenizer.Tokenizer
    lowercase: bool  # the normalization the training data had
    checkpoint: str  # the restored checkpoint's path
    checkpoint_choice: str  # how it was chosen, for the log line
    replicas: tuple[Replica, ...]
    # tf.functions built for these replicas, kept so later calls skip tracing them again.
    functions: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def max_length(self) -> int:
        return self.config.model.max_length

    def describe(self) -> str:
        m = self.config.model
        return (
            f"using checkpoint {self.checkpoint} ({self.checkpoint_choice}): {m.task} model, "
            f"{m.num_layers} layers, d_model {m.d_model}, vocab {m.vocab_size}, max_length "
            f"{m.max_length}; on {', '.join(r.device for r in self.replicas)}"
        )


def read_config(model_dir: str) -> TrainConfig:
    path = f"{model_dir}/{CONFIG_FILE}"
    if not tf.io.gfile.exists(path):
        raise InferenceError(
            f"--model_dir: {model_dir} has no {CONFIG_FILE}; it is not a model dir written by "
            "trainer.train"
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            return TrainConfig.from_json(f.read())
        except (ValueError, TypeError, KeyError) as e:
            raise InferenceError(f"--model_dir: {path} is not a valid config ({e})") from None


def load_tokenizer(model_dir: str) -> tuple[tokenizer.Tokenizer, bool]:
    """The model dir's tokenizer and lowercase flag; refuses a tokenizer with another hash."""
    info_path = f"{model_dir}/{TOKENIZER_INFO_FILE}"
    if not tf.io.gfile.exists(info_path):
        raise InferenceError(f"--model_dir: {model_dir} has no {TOKENIZER_INFO_FILE}")
    with tf.io.gfile.GFile(info_path) as f:
        info = json.load(f)
    model_path = f"{model_dir}/{info.get('file', features.TOKENIZER_FILE)}"
    if not tf.io.gfile.exists(model_path):
        raise InferenceError(f"--model_dir: {model_dir} has no tokenizer model {model_path}")
    with tf.io.gfile.GFile(model_path, "rb") as f:
        model_bytes = f.read()
    actual = features.sha256_bytes(model_bytes)
    if actual != info["sha256"]:
        raise InferenceError(
            f"--model_dir: {model_path} (sha256 {actual[:12]}) is not the tokenizer the model was "
            f"trained with ({TOKENIZER_INFO_FILE} says sha256 {info['sha256'][:12]})"
        )
    try:
        return tokenizer.Tokenizer(model_bytes), bool(info.get("lowercase", False))
    except tokenizer.TokenizerError as e:
        raise InferenceError(f"--model_dir: {model_path}: {e}") from None


def resolve_checkpoint(model_dir: str, checkpoint: str = "best") -> tuple[str, str]:
    """(path, how it was chosen) for "best" (else latest), "latest", a path or a directory."""
    if checkpoint not in CHECKPOINT_CHOICES:
        if tf.io.gfile.isdir(checkpoint):
            path = tf.train.latest_checkpoint(checkpoint)
            if path:
                return path, f"latest in {checkpoint}"
        elif tf.io.gfile.exists(f"{checkpoint}.index"):
            return checkpoint, "given"
        raise InferenceError(
            f"--checkpoint: no checkpoint at {checkpoint}; use best, latest, a directory of "
            f"checkpoints or a checkpoint path such as {model_dir}/ckpt-1000"
        )
    if checkpoint == "best":
        path = checkpoint_average.best_checkpoint(model_dir)
        if path:
            return path, "best"
    path = tf.train.latest_checkpoint(model_dir)
    if path:
        return path, "latest" if checkpoint == "latest" else "latest; there is no best checkpoint"
    raise InferenceError(f"--model_dir: {model_dir} has no checkpoint; train the model first")


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _checked_origin(model_dir: str, path: str, choice: str, tokenizer_sha256: str) -> str:
    """``choice``, with a warning when the checkpoint lies outside ``model_dir``.

    Weights only make sense with the tokenizer they were trained with: a checkpoint from
    another model dir whose tokenizer.json has another SHA-256 is refused.
    """
    if _absolute(path).startswith(_absolute(model_dir) + "/"):
        return choice
    directory = path.rsplit("/", 1)[0] if "/" in path else "."
    for candidate in (directory, directory.rsplit("/", 1)[0] if "/" in directory else "."):
        info = f"{candidate}/{TOKENIZER_INFO_FILE}"  # DIR/ckpt-N or DIR/best/ckpt-N
        if not tf.io.gfile.exists(info):
            continue
        with tf.io.gfile.GFile(info) as f:
            sha = json.load(f).get("sha256", "")
        if sha != tokenizer_sha256:
            raise InferenceError(
                f"--checkpoint: {path} comes from {candidate}, trained with another tokenizer "
                f"(sha256 {sha[:12]}) than --model_dir {model_dir} ({tokenizer_sha256[:12]})"
            )
        return f"{choice}; warning: outside --model_dir, from {candidate}, same tokenizer"
    return (
        f"{choice}; warning: outside --model_dir and in no model dir, so its tokenizer is unchecked"
    )


def load_model_dir(
    model_dir: str,
    *,
    task: str,
    checkpoint: str = "best",
    devices: Sequence[str] | None = None,
) -> LoadedModel:
    """Rebuilds the model from ``config.json`` and restores ``checkpoint`` on every device.

    ``devices``: TF device names, one model copy each; by default every local GPU, else
    the CPU. The model computes in float32 whatever precision trained it (its weights
    are float32).
    """
    model_dir = model_dir.rstrip("/") or "/"
    config = read_config(model_dir)
    if config.task != task:
        tool = "trainer.translate" if config.task == features.TRANSLATION else "trainer.classify"
        raise InferenceError(
            f"--model_dir: {model_dir} holds a {config.task} model, not a {task} model; use {tool}"
        )
    tok, lowercase = load_tokenizer(model_dir)
    path, choice = resolve_checkpoint(model_dir, checkpoint)
    choice = _checked_origin(model_dir, path, choice, tok.sha256)
    if devices is None:
        devices = distribution.local_devices(num_gpus=-1, virtual_devices=0)
    replicas = []
    for device in devices:
        with tf.device(device):
            model = build_inference_model(config.model)
            try:
                checkpoint_average.restore_model(model, path)
            except checkpoint_average.CheckpointError as e:
                raise InferenceError(f"--checkpoint: {e}") from None
        replicas.append(Replica(device=device, model=model))
    return LoadedModel(
        config=config,
        tokenizer=tok,
        lowercase=lowercase,
        checkpoint=path,
        checkpoint_choice=choice,
        replicas=tuple(replicas),
    )
