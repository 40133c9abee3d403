"""String-in/string-out SavedModel export of a trained model dir (``export_model``; the
command is trainer/export.py, and trainer.train runs it at the end of training).

The SavedModel holds the whole path from raw text to the answer, so serving needs
nothing from this project (only ``import tensorflow_text`` for its ops):

    import tensorflow as tf, tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
    model = tf.saved_model.load(EXPORT_DIR)
    model.translate(tf.constant(["A dog runs."]))     # -> tf.string [batch]
    model.classify(tf.constant(["Great film."]))      # -> float32 [batch, num_classes]
    model.signatures["translate"](text=...)["translation"]
    model.signatures["classify"](text=...)["probabilities"]

In the graph: UTF-8 repair (invalid bytes become U+FFFD), ``pipeline.text.normalize``
re-implemented in TF ops (``tf_normalize``), SentencePiece, truncation to the
model's ``max_length`` (the first ``max_length - 1`` pieces plus EOS, as the
trainer truncates), then trainer.decode's beam search (greedy for ``beam_size == 1``)
and detokenization, or the classifier's softmax. Text that normalizes to nothing
translates to "". A translation has at most its source's length + 50 tokens (capped
at ``max_length``). The search itself runs up to the batch's longest source + 50, so
with beam search the translation of a sentence that never ends (hits its limit) can
depend on the batch it came in; greedy output never does.

``EXPORT_DIR/assets.extra/metadata.json`` records what was exported: task,
signature and output key, tokenizer SHA-256, lowercase, beam size, alpha, the
checkpoint(s) the weights came from, and for classifiers the class names. The
directory is written under a temporary name and renamed into place, so an
interrupted export never leaves a directory that looks complete; ``--overwrite``
moves the earlier export aside (``EXPORT_DIR.old-*``) and deletes it afterwards.
"""

from __future__ import annotations

import functools
import json
import sys

import keras
import tensorflow as tf
import tensorflow_text as tf_text

from pipeline import features
from pipeline.export_contract import (
    CLASSIFY,
    INPUT_KEY,
    METADATA_PATH,
    OUTPUT_KEYS,
    SAVED_MODEL_FILE,
    SIGNATURE_FOR_TASK,
    TOKENIZER_INFO_FILE,
    TRANSLATE,
)
from trainer import atomic_dirs, checkpoint_average, decode
from trainer.config import CONFIG_FILE, TrainConfig
from trainer.model import build_inference_model


@functools.cache
def _python_whitespace_class() -> str:
    """Python's `\\s` (Unicode whitespace) as an RE2 class; RE2's `\\s` is ASCII only."""
    codes = (c for c in range(sys.maxunicode + 1) if chr(c).isspace())
    return "[" + "".join(f"\\x{{{c:x}}}" for c in codes) + "]"


class ExportError(ValueError):
    """A model dir, checkpoint or export dir that cannot be used (a one-line message)."""


def tf_normalize(text: tf.Tensor, *, lowercase: bool) -> tf.Tensor:
    """``pipeline.text.normalize`` in TF ops: `[batch]` tf.string -> `[batch]` tf.string.

    Agrees with the Python function except for characters newer than the Unicode
    version of TF's ICU or of Python's unicodedata (they normalize per their own table).
    """
    text = tf_text.normalize_utf8(text, "NFKC")
    space = _python_whitespace_class()
    text = tf.strings.regex_replace(text, f"(?i)<br{space}*/?>", " ")
    text = tf.strings.regex_replace(text, f"{space}+", " ")
    text = tf.strings.regex_replace(text, "^ | $", "")
    return tf.strings.lower(text, encoding="utf-8") if lowercase else text


class _TextModule(tf.Module):
    """Raw strings -> normalized -> SentencePiece ids `[batch, s]`, the model's input."""

    def __init__(self, model: keras.Model, *, spm_model: bytes, lowercase: bool):
        super().__init__()
        self.model = model
        self.tokenizer = tf_text.SentencepieceTokenizer(model=spm_model, out_type=tf.int32)
        self._lowercase = lowercase
        self._max_length = model.model_config.max_length

    def _prepare(self, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`[b]` strings -> (ids `[b, s]` int32 EOS-terminated, PAD after; empty `[b]` bool)."""
        text = tf.strings.unicode_transcode(
            text, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
        )
        text = tf_normalize(text, lowercase=self._lowercase)
        pieces = self.tokenizer.tokenize(text)[:, : self._max_length - 1]
        eos = tf.fill([tf.shape(text)[0], 1], features.EOS_ID)
        ids = tf.concat([pieces, eos], axis=1).to_tensor(default_value=features.PAD_ID)
        return ids, tf.equal(text, "")


class _TranslationModule(_TextModule):
    def __init__(self, model, *, spm_model: bytes, lowercase: bool, beam_size: int, alpha: float):
        super().__init__(model, spm_model=spm_model, lowercase=lowercase)
        self._beam_size = beam_size
        self._alpha = alpha

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def translate(self, text):
        ids, empty = self._prepare(text)
        if self._beam_size == 1:
            decoded = decode.greedy_decode(self.model, ids)
        else:
            decoded, _ = decode.beam_search(
                self.model, ids, beam_size=self._beam_size, alpha=self._alpha
            )
        # The decoders' limit comes from the batch's longest source; hold each row to its own.
        limits = decode.default_max_decode_length(
            tf.reduce_sum(tf.cast(tf.not_equal(ids, features.PAD_ID), tf.int32), axis=1),
            model_max_length=self._max_length,
        )
        within = tf.range(tf.shape(decoded)[1])[None, :] < limits[:, None]
        decoded = tf.where(within, decoded, features.PAD_ID)
        translation = tf.strings.unicode_transcode(
            self.tokenizer.detokenize(_strip_decoded(decoded)),
            "UTF-8",
            "UTF-8",
            errors="replace",
            replacement_char=0xFFFD,
        )
        return tf.where(empty, "", translation)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def serve(self, text):
        return {OUTPUT_KEYS[TRANSLATE]: self.translate(text)}


class _ClassificationModule(_TextModule):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def classify(self, text):
        ids, _ = self._prepare(text)
        return tf.nn.softmax(self.model(ids, training=False), axis=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def serve(self, text):
        return {OUTPUT_KEYS[CLASSIFY]: self.classify(text)}


def _strip_decoded(ids: tf.Tensor) -> tf.RaggedTensor:
    """Decoded ids `[b, L]` -> ragged ids before the first EOS, without PAD and BOS."""
    after_eos = tf.cumsum(tf.cast(tf.equal(ids, features.EOS_ID), tf.int32), axis=1) > 0
    keep = tf.logical_not(after_eos)
    keep &= tf.not_equal(ids, features.PAD_ID) & tf.not_equal(ids, features.BOS_ID)
    return tf.ragged.boolean_mask(ids, keep)


def read_model_dir(model_dir: str) -> tuple[TrainConfig, bytes, dict]:
    """(config.json, spm.model bytes, tokenizer.json) of a trainer model dir; ExportError if absent."""
    model_dir = model_dir.rstrip("/")
    paths = {
        name: f"{model_dir}/{name}"
        for name in (CONFIG_FILE, features.TOKENIZER_FILE, TOKENIZER_INFO_FILE)
    }
    for name, path in paths.items():
        if not tf.io.gfile.exists(path):
            raise ExportError(
                f"--model_dir: {model_dir} has no {name}; it is not a trainer model dir"
            )
    with tf.io.gfile.GFile(paths[CONFIG_FILE]) as f:
        try:
            config = TrainConfig.from_json(f.read())
        except (ValueError, TypeError, KeyError) as e:
            raise ExportError(
                f"--model_dir: {paths[CONFIG_FILE]} is not a valid config ({e})"
            ) from None
    with tf.io.gfile.GFile(paths[features.TOKENIZER_FILE], "rb") as f:
        spm_model = f.read()
    with tf.io.gfile.GFile(paths[TOKENIZER_INFO_FILE]) as f:
        tokenizer_info = json.load(f)
    if features.sha256_bytes(spm_model) != tokenizer_info["sha256"]:
        raise ExportError(
            f"--model_dir: {paths[features.TOKENIZER_FILE]} does not match the sha256 in "
            f"{TOKENIZER_INFO_FILE}"
        )
    return config, spm_model, tokenizer_info


def load_weights(
    model: keras.Model, model_dir: str, *, checkpoint: str = "best", average_last: int = 0
) -> list[str]:
    """Fills ``model`` from ``model_dir``'s checkpoints; returns the checkpoint paths used.

    ``average_last > 0`` averages the last K checkpoints (``checkpoint`` is then unused);
    otherwise ``checkpoint`` is "best" (falling back to "latest", with a printed note),
    "latest", or a checkpoint path (a prefix such as DIR/ckpt-500, or a directory).
    """
    model_dir = model_dir.rstrip("/")
    if average_last > 0:
        available = checkpoint_average.model_checkpoints(model_dir)
        if len(available) < average_last:
            raise ExportError(
                f"--average_last={average_last}: {model_dir} holds only {len(available)} "
                "checkpoint(s)"
            )
        paths = available[-average_last:]
        checkpoint_average.average_checkpoints(model, paths)
        return paths
    if checkpoint == "best":
        path = checkpoint_average.best_checkpoint(model_dir)
        if path is None:
            print(f"note: {model_dir} has no best checkpoint; exporting the latest")
            path = _latest(model_dir)
    elif checkpoint == "latest":
        path = _latest(model_dir)
    elif tf.io.gfile.isdir(checkpoint):
        path = tf.train.latest_checkpoint(checkpoint)
        if path is None:
            raise ExportError(f"--checkpoint: {checkpoint} holds no checkpoint")
    else:
        path = checkpoint
    checkpoint_average.restore_model(model, path)
    return [path]


def _latest(model_dir: str) -> str:
    path = tf.train.latest_checkpoint(model_dir)
    if path is None:
        raise ExportError(f"--model_dir: {model_dir} holds no checkpoint (train first)")
    return path


def export_model(
    *,
    model_dir: str,
    export_dir: str,
    checkpoint: str = "best",
    average_last: int = 0,
    beam_size: int = 4,
    alpha: float = 0.6,
    overwrite: bool = False,
) -> str:
    """Exports ``model_dir``'s model as a SavedModel in ``export_dir``; returns ``export_dir``.

    Raises ExportError for a missing model dir or checkpoint, or a non-empty
    ``export_dir`` (without ``overwrite``, or holding something other than an export).
    """
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ExportError(f"--beam_size={beam_size} must be a positive integer")
    if not alpha >= 0.0:
        raise ExportError(f"--alpha={alpha} must be >= 0")
    if average_last < 0:
        raise ExportError(f"--average_last={average_last} must not be negative")
    export_dir = export_dir.rstrip("/")
    _check_export_dir(export_dir, overwrite=overwrite)
    config, spm_model, tokenizer_info = read_model_dir(model_dir)
    model = build_inference_model(config.model)
    try:
        used = load_weights(model, model_dir, checkpoint=checkpoint, average_last=average_last)
    except checkpoint_average.CheckpointError as e:
        raise ExportError(f"--checkpoint: {e}") from None

    lowercase = bool(tokenizer_info.get("lowercase", False))
    signature = SIGNATURE_FOR_TASK[config.task]
    if config.task == features.TRANSLATION:
        module = _TranslationModule(
            model, spm_model=spm_model, lowercase=lowercase, beam_size=beam_size, alpha=alpha
        )
    else:
        module = _ClassificationModule(model, spm_model=spm_model, lowercase=lowercase)
    metadata = {
        "task": config.task,
        "signature": signature,
        "input_key": INPUT_KEY,
        "output_key": OUTPUT_KEYS[signature],
        "tokenizer_sha256": tokenizer_info["sha256"],
        "lowercase": lowercase,
        "max_length": config.model.max_length,
        "checkpoint": used[-1],
        "averaged_checkpoints": used if average_last > 0 else [],
        "model_dir": model_dir,
    }
    if config.task == features.TRANSLATION:
        metadata.update(beam_size=beam_size, alpha=alpha)
    else:
        metadata.update(num_classes=config.model.num_classes, class_names=class_names(config))

    tmp_dir = atomic_dirs.aside_path(export_dir)
    try:
        tf.saved_model.save(module, tmp_dir, signatures={signature: module.serve})
        tf.io.gfile.makedirs(f"{tmp_dir}/assets.extra")
        with tf.io.gfile.GFile(f"{tmp_dir}/{METADATA_PATH}", "w") as f:
            f.write(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        atomic_dirs.replace_directory(tmp_dir, export_dir)
    finally:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
    return export_dir


def class_names(config: TrainConfig) -> list[str]:
    """The data contract's class names, or the indices when the model has another class count."""
    n = config.model.num_classes
    return (
        list(features.CLASS_NAMES) if n == len(features.CLASS_NAMES) else [str(i) for i in range(n)]
    )


def _check_export_dir(export_dir: str, *, overwrite: bool) -> None:
    if not tf.io.gfile.exists(export_dir):
        # Found now, not after minutes of tracing: the export goes beside it, then is renamed.
        parent = export_dir.rsplit("/", 1)[0] if "/" in export_dir else "."
        try:
            tf.io.gfile.makedirs(parent)
        except tf.errors.OpError as e:
            raise ExportError(f"--export_dir: cannot create {export_dir} ({e.message})") from None
        return
    if not tf.io.gfile.isdir(export_dir):
        raise ExportError(f"--export_dir: {export_dir} exists and is not a directory")
    if not tf.io.gfile.listdir(export_dir):
        return
    if not overwrite:
        raise ExportError(
            f"--export_dir: {export_dir} is not empty; pass --overwrite to replace an earlier export"
        )
    if not tf.io.gfile.exists(f"{export_dir}/{SAVED_MODEL_FILE}"):
        raise ExportError(
            f"--export_dir: {export_dir} holds files that are not an export; choose another directory"
        )
