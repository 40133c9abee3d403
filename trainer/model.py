"""The translation Transformer and the Transformer text classifier.

    model = build_model(config)                      # variables created; count_params() works
    logits = model((inputs, shift_right(targets)))   # [b, t, vocab] float32, teacher forcing

Incremental decoding (what greedy and beam search run inside a tf.while_loop):

    memory, memory_mask = model.encode(inputs)
    cache = model.init_cache(memory, memory_mask, max_decode_len=64)
    ids = tf.fill([batch], BOS_ID)
    for step in range(64):
        logits, cache = model.decode_step(ids, step, cache)   # [b, vocab] float32
        ids = tf.argmax(logits, -1, output_type=tf.int32)

Token ids follow `pipeline.features`: PAD=0 marks padding, targets end with EOS
and decoder inputs start with BOS. Logits are float32 under any precision policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from pipeline import features
from trainer.layers import DecoderBlock, EncoderBlock, TokenEmbedding, sinusoidal_positions
from trainer.model_config import ModelConfig

# Key of the decoder inputs when `Transformer` is called with a dict.
TARGETS_IN = "targets_in"


def shift_right(targets):
    """Teacher-forcing decoder inputs: `[b, t]` -> `[BOS, targets[:, :-1]]`, `[b, t]`.

    The final EOS (or PAD) drops off, so position `i` predicts `targets[:, i]`.
    """
    bos = ops.full_like(targets[:, :1], features.BOS_ID)
    return ops.concatenate([bos, targets[:, :-1]], axis=1)


def padding_mask(ids):
    """`[b, l]` ids -> `[b, l]` bool, True at real tokens (not PAD)."""
    return ops.not_equal(ids, features.PAD_ID)


def causal_mask(length):
    """`[1, 1, length, length]` bool: query `i` may attend to keys `j <= i`."""
    positions = ops.arange(length)
    return (positions[:, None] >= positions[None, :])[None, None]


def _track_for_checkpoints(model: keras.Model, blocks: list[keras.layers.Layer]) -> None:
    """Makes each block an attribute, so tf.train.Checkpoint saves and restores it.

    Keras 3 tracks layers kept in a Python list for its own weight lists, but the
    TensorFlow object graph that tf.train.Checkpoint walks does not see inside the list:
    without this, restoring a model alone silently leaves every block at its random init.
    """
    for block in blocks:
        setattr(model, block.name, block)


def _block_args(config: ModelConfig) -> dict[str, Any]:
    return dict(
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        relu_dropout=config.relu_dropout,
        norm_first=config.norm_first,
    )


class _EncoderModel(keras.Model):
    """Embedding + encoder stack shared by `Transformer` and `Classifier`.

    Subclasses say which dtype the input embedding uses: a float32 matrix when it
    is tied to the output logits, the model's policy otherwise.
    """

    def __init__(self, config: ModelConfig, *, embedding_dtype=None, **kwargs):
        super().__init__(**kwargs)
        self.model_config = config
        self.embedding = TokenEmbedding(
            config.vocab_size,
            config.d_model,
            dtype=embedding_dtype or self.dtype_policy,
            name="embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(config.dropout, dtype=self.dtype_policy)
        self.encoder_blocks = [
            EncoderBlock(**_block_args(config), dtype=self.dtype_policy, name=f"encoder_{i}")
            for i in range(config.num_layers)
        ]
        _track_for_checkpoints(self, self.encoder_blocks)
        self.encoder_norm = self._final_norm("encoder_norm")
        self._positions = sinusoidal_positions(config.max_length, config.d_model)

    def _final_norm(self, name: str) -> keras.layers.LayerNormalization | None:
        """Pre-LN stacks end with a LayerNorm; post-LN blocks already normalize their output."""
        if not self.model_config.norm_first:
            return None
        return keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy, name=name)

    def _build_encoder(self) -> tuple[None, None, int]:
        hidden_shape = (None, None, self.model_config.d_model)
        self.embedding.build()
        for block in self.encoder_blocks:
            block.build(hidden_shape)
        if self.encoder_norm is not None:
            self.encoder_norm.build(hidden_shape)
        return hidden_shape

    def _embed(self, embedding: TokenEmbedding, ids, *, offset=0, training: bool = False):
        """ids `[b, l]` -> `[b, l, d]`: `sqrt(d) * embedding + position`, then dropout.

        `offset` is the position of `ids[:, 0]` (the step when decoding one token).
        """
        d_model = self.model_config.d_model
        x = ops.cast(embedding(ids), self.compute_dtype) * math.sqrt(d_model)
        positions = ops.slice(
            ops.convert_to_tensor(self._positions), (offset, 0), (ops.shape(ids)[1], d_model)
        )
        x = x + ops.cast(positions, self.compute_dtype)
        return self.embedding_dropout(x, training=training)

    def encode(self, inputs, *, training: bool = False):
        """inputs `[b, s]` ids -> `(memory [b, s, d], memory_mask [b, s] bool)`."""
        mask = padding_mask(inputs)
        x = self._embed(self.embedding, inputs, training=training)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=mask, training=training)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, mask

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "config": self.model_config.to_dict(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        config = dict(config)
        model_config = ModelConfig.from_dict(config.pop("config"))
        if "dtype" in config:
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(model_config, **config)


class Transformer(_EncoderModel):
    """Encoder-decoder Transformer for translation (Vaswani et al. 2017).

    With `share_embeddings`, one float32 matrix embeds source and target tokens
    and, transposed, projects the decoder output to logits (joint vocabulary).
    """

    def __init__(self, config: ModelConfig, **kwargs):
        if config.task != features.TRANSLATION:
            raise ValueError(
                f"Transformer needs task={features.TRANSLATION!r}, got {config.task!r}"
            )
        shared = config.share_embeddings
        super().__init__(config, embedding_dtype="float32" if shared else None, **kwargs)
        self.target_embedding = None
        self.output_projection = None
        if not shared:
            self.target_embedding = TokenEmbedding(
                config.vocab_size, config.d_model, dtype=self.dtype_policy, name="target_embedding"
            )
            self.output_projection = keras.layers.Dense(
                config.vocab_size, use_bias=False, dtype="float32", name="output_projection"
            )
        self.decoder_blocks = [
            DecoderBlock(**_block_args(config), dtype=self.dtype_policy, name=f"decoder_{i}")
            for i in range(config.num_layers)
        ]
        _track_for_checkpoints(self, self.decoder_blocks)
        self.decoder_norm = self._final_norm("decoder_norm")

    def build(self, inputs_shape=None):
        hidden_shape = self._build_encoder()
        if self.target_embedding is not None:
            self.target_embedding.build()
            self.output_projection.build(hidden_shape)
        for block in self.decoder_blocks:
            block.build(hidden_shape, hidden_shape)
        if self.decoder_norm is not None:
            self.decoder_norm.build(hidden_shape)

    def call(self, inputs, training: bool = False, logits_mask=None):
        """Teacher-forced logits `[b, t, vocab]` float32.

        `inputs`: `(source [b, s], targets_in [b, t])` or a dict with keys
        `features.INPUTS` and `TARGETS_IN`; `targets_in = shift_right(targets)`.
        With `logits_mask` (`[b, t]` bool, e.g. `targets != PAD`), only those
        positions are projected: logits `[n, vocab]` in row-major order, the
        rows `tf.boolean_mask(logits, logits_mask)` would select.
        """
        if isinstance(inputs, Mapping):
            source, targets_in = inputs[features.INPUTS], inputs[TARGETS_IN]
        else:
            source, targets_in = inputs
        memory, memory_mask = self.encode(source, training=training)
        return self.decode(
            targets_in, memory, memory_mask, training=training, logits_mask=logits_mask
        )

    def decode(self, targets_in, memory, memory_mask, *, training: bool = False, logits_mask=None):
        """targets_in `[b, t]`, memory `[b, s, d]`, memory_mask `[b, s]` -> logits `[b, t, vocab]`.

        Position `i` sees `targets_in[:, :i + 1]` only (causal mask) and no PAD.
        `logits_mask` as in `call`: the vocabulary projection, the largest matmul
        of a small model, then skips the positions no loss reads (padding).
        """
        self_attention_mask = ops.logical_and(
            causal_mask(ops.shape(targets_in)[1]), padding_mask(targets_in)[:, None, None, :]
        )
        x = self._embed(self._target_embedding(), targets_in, training=training)
        for block in self.decoder_blocks:
            x, _ = block(
                x,
                memory,
                self_attention_mask=self_attention_mask,
                memory_mask=memory_mask,
                training=training,
            )
        if logits_mask is not None:
            x = tf.boolean_mask(x, logits_mask)  # dynamic shape: not under XLA
        return self._logits(x)

    def init_cache(self, memory, memory_mask, max_decode_len: int) -> dict[str, Any]:
        """The decoding state for `memory [b, s, d]`, for up to `max_decode_len` steps.

        Returns `{"memory_mask": [b, s] bool, "layers": [per decoder block:
        {"self": {"key", "value"}: [b, h, 0, k], empty, one position longer after
        each `decode_step`, "cross": {"key", "value"}: [b, h, s, k] projected once
        from memory}]}`. Batch is axis 0 of every tensor, so
        `tf.nest.map_structure(lambda t: tf.gather(t, beam_indices), cache)`
        reorders it for beam search. `max_decode_len` is checked against the
        model's positions here, once, rather than at every step.
        """
        if isinstance(max_decode_len, int) and max_decode_len > self.model_config.max_length:
            raise ValueError(
                f"max_decode_len={max_decode_len} exceeds the model's "
                f"max_length={self.model_config.max_length}"
            )
        cache_shape = (
            ops.shape(memory)[0],
            self.model_config.num_heads,
            0,
            self.model_config.head_dim,
        )
        layers = []
        for block in self.decoder_blocks:
            empty = ops.zeros(cache_shape, dtype=self.compute_dtype)
            layers.append(
                {"self": {"key": empty, "value": empty}, "cross": block.project_memory(memory)}
            )
        return {"memory_mask": memory_mask, "layers": layers}

    def decode_step(self, token_ids, step, cache: dict[str, Any]):
        """One decoding step: `token_ids [b]` at position `step` -> `(logits [b, vocab], cache)`.

        `step` is a scalar int (tensor), 0 for the BOS token, and equals the
        number of positions already in the self-attention caches; the logits
        predict the token at `step + 1`. The returned cache has the same
        structure, with one more position in every self-attention key/value.
        """
        x = self._embed(self._target_embedding(), token_ids[:, None], offset=step)
        new_layers = []
        for block, layer_cache in zip(self.decoder_blocks, cache["layers"]):
            x, self_cache = block(
                x,
                memory_mask=cache["memory_mask"],
                self_attention_cache=layer_cache["self"],
                cross_attention_cache=layer_cache["cross"],
            )
            new_layers.append({"self": self_cache, "cross": layer_cache["cross"]})
        logits = self._logits(x)[:, 0, :]
        return logits, {"memory_mask": cache["memory_mask"], "layers": new_layers}

    def _target_embedding(self) -> TokenEmbedding:
        return self.embedding if self.target_embedding is None else self.target_embedding

    def _logits(self, x):
        """Decoder output `[..., d]` -> logits `[..., vocab]` float32."""
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.output_projection is not None:
            return self.output_projection(x)
        return self.embedding(x, reverse=True)


class Classifier(_EncoderModel):
    """Transformer encoder, mean over real tokens, dropout, `Dense(num_classes)`.

    `call(inputs [b, l] ids or {features.INPUTS: ids})` -> logits `[b, num_classes]` float32.
    """

    def __init__(self, config: ModelConfig, **kwargs):
        if config.task != features.CLASSIFICATION:
            raise ValueError(
                f"Classifier needs task={features.CLASSIFICATION!r}, got {config.task!r}"
            )
        super().__init__(config, **kwargs)
        # The pooled vector and the head stay float32 so the logits are float32.
        self.head_dropout = keras.layers.Dropout(config.dropout, dtype="float32")
        self.head = keras.layers.Dense(config.num_classes, dtype="float32", name="head")

    def build(self, inputs_shape=None):
        self._build_encoder()
        self.head.build((None, self.model_config.d_model))

    def call(self, inputs, training: bool = False):
        if isinstance(inputs, Mapping):
            inputs = inputs[features.INPUTS]
        hidden, mask = self.encode(inputs, training=training)
        weights = ops.cast(mask, "float32")[:, :, None]
        # max(1) keeps an all-PAD row finite (zeros) instead of 0/0.
        pooled = ops.sum(ops.cast(hidden, "float32") * weights, axis=1) / ops.maximum(
            ops.sum(weights, axis=1), 1.0
        )
        return self.head(self.head_dropout(pooled, training=training))


def build_model(config: ModelConfig) -> Transformer | Classifier:
    """The model for `config.task`, with its variables created (`count_params()` works).

    For distributed training call it inside `strategy.scope()`. The global dtype
    policy in effect here (e.g. `mixed_bfloat16`) is the model's policy.
    """
    model_class = Transformer if config.task == features.TRANSLATION else Classifier
    model = model_class(config)
    model.build()
    return model


def build_inference_model(config: ModelConfig) -> Transformer | Classifier:
    """``build_model`` in float32, whatever precision trained the weights (they are float32
    either way); the global dtype policy is left as it was."""
    saved_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        return build_model(config)
    finally:
        keras.mixed_precision.set_dtype_policy(saved_policy)
