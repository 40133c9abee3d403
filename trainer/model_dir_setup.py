"""A model dir before training: what it records about its data and model, and the refusals.

``prepare_model_dir(config, metadata, chief=...)`` refuses to resume with data of another
tokenizer (its SHA-256 is in ``tokenizer.json``) or a model of another architecture
(``config.json``), then the chief writes both, with a copy of the tokenizer, for inference
and for the next resume. Inference and export read the same files.
"""

from __future__ import annotations

import json

import tensorflow as tf

from pipeline import features
from pipeline.export_contract import TOKENIZER_INFO_FILE
from trainer import reporting
from trainer.config import CONFIG_FILE, TrainConfig


class ModelDirError(ValueError):
    """A model dir that cannot be used with this data or config (one clear line)."""


def prepare_model_dir(config: TrainConfig, meta: features.Metadata, *, chief: bool) -> None:
    """Refuses to resume with other data (tokenizer hash) or another architecture; records both."""
    gfile = tf.io.gfile
    info_path = f"{config.model_dir}/{TOKENIZER_INFO_FILE}"
    if gfile.exists(info_path):
        with gfile.GFile(info_path) as f:
            saved = json.load(f)
        if saved["sha256"] != meta.tokenizer.sha256:
            raise ModelDirError(
                f"--data_dir: its tokenizer (sha256 {meta.tokenizer.sha256[:12]}) differs from the one "
                f"{config.model_dir} was trained with ({saved['sha256'][:12]}); use a fresh --model_dir"
            )
    config_path = f"{config.model_dir}/{CONFIG_FILE}"
    if gfile.exists(config_path):
        with gfile.GFile(config_path) as f:
            saved_model = TrainConfig.from_json(f.read()).model
        if saved_model != config.model:
            diff = [
                f"{k} {getattr(saved_model, k)} vs {getattr(config.model, k)}"
                for k in saved_model.to_dict()
                if getattr(saved_model, k) != getattr(config.model, k)
            ]
            raise ModelDirError(
                f"--model_dir: {config.model_dir} holds a model with another architecture ({', '.join(diff)}); "
                "use a fresh --model_dir"
            )
    if chief:
        try:
            gfile.makedirs(config.model_dir)
        except tf.errors.OpError as e:
            raise ModelDirError(
                f"--model_dir: cannot create {config.model_dir} ({e.message})"
            ) from None
        reporting.write_text_atomically(config_path, config.to_json())
        tokenizer_src = f"{config.data_dir}/{meta.tokenizer.file}"
        gfile.copy(tokenizer_src, f"{config.model_dir}/{features.TOKENIZER_FILE}", overwrite=True)
        info = {
            "file": features.TOKENIZER_FILE,
            "sha256": meta.tokenizer.sha256,
            "vocab_size": meta.tokenizer.vocab_size,
            # Inference normalizes text exactly as the training data was (pipeline.text.normalize).
            "lowercase": bool(meta.options.get("lowercase", False)),
        }
        reporting.write_text_atomically(info_path, json.dumps(info, indent=2) + "\n")
