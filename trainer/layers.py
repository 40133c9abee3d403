"""Transformer building blocks as Keras 3 layers: attention with a key/value cache, blocks.

Shape letters used in the docstrings: b batch, l query length, m key/value length,
h heads, k = d_model / h per-head depth, d d_model, v vocabulary.

Masks are boolean and True where attention is allowed; they must broadcast to the
attention logits `[b, h, l, m]`. They become an additive -1e9 on the float32 logits.

Mixed precision: every sublayer is built with `dtype=self.dtype_policy`, so a
`mixed_bfloat16` (or `mixed_float16`) policy set before construction runs the
matmuls in 16 bits with float32 variables. The query-key product runs in the
compute dtype (fast path on accelerators); its result is cast to float32 before
masking and softmax, which is where 16-bit precision would hurt.

Key/value cache for incremental decoding
----------------------------------------
A cache is a dict `{"key": [b, h, n, k], "value": [b, h, n, k]}` in the compute
dtype. Batch is axis 0 of every cache tensor, so beam search can reorder a cache
with `tf.gather(t, beam_indices, axis=0)` on each tensor.

* Self-attention: `n` = the number of tokens decoded so far; it starts empty
  (`n = 0`) and each decoding step appends the new token's key/value
  (`call(..., extend_cache=True)`), so every cached position is valid and no mask
  is needed. Work per step grows with the prefix, not with the length limit;
  inside a `tf.while_loop` the cache's axis 2 needs a `None` shape invariant.
* Cross-attention: `n = source length`, filled once per batch by
  `project_key_value(memory)` and passed unchanged at every step.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

# Added to disallowed float32 logits; exp() of it underflows to exactly 0.
_MASKED_LOGIT = -1e9

Cache = dict[str, Any]  # {"key": [b, h, n, k], "value": [b, h, n, k]}


def sinusoidal_positions(length: int, d_model: int) -> np.ndarray:
    """The paper's fixed position encoding, `[length, d_model]` float32.

    `PE[p, 2i] = sin(p / 10000^(2i / d_model))` and `PE[p, 2i + 1] = cos(...)`
    of the same angle: each pair of channels is a rotation at its own frequency.
    """
    positions = np.arange(length, dtype=np.float64)[:, None]
    inverse_wavelengths = 10000.0 ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)
    angles = positions * inverse_wavelengths  # [length, ceil(d_model / 2)]
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles[:, : d_model // 2])
    return table.astype(np.float32)


class TokenEmbedding(keras.layers.Layer):
    """A `[vocab_size, d_model]` matrix used to embed ids and, transposed, to make logits.

    `call(ids)`: ids `[...]` int -> embeddings `[..., d_model]` (unscaled).
    `call(hidden, reverse=True)`: hidden `[..., d_model]` -> logits `[..., vocab_size]`.

    Construct it with `dtype="float32"` to get float32 logits under mixed
    precision: the layer then reads its matrix in float32 and casts its inputs
    up, while the model casts the embeddings down to its compute dtype.
    """

    def __init__(self, vocab_size: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.d_model = d_model

    def build(self, inputs_shape=None):
        # Unit-variance rows after the model's sqrt(d_model) scaling, and
        # unit-scale logits when the matrix doubles as the output projection.
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.d_model),
            initializer=keras.initializers.RandomNormal(stddev=self.d_model**-0.5),
        )

    def call(self, inputs, reverse: bool = False):
        if reverse:
            return ops.matmul(inputs, ops.transpose(self.embeddings))
        return ops.take(self.embeddings, inputs, axis=0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, d_model=self.d_model)
        return config


class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over `num_heads` heads, with an optional cache.

    `call(query, key_value, *, attention_mask, cache, extend_cache, training)`
    returns `(output [b, l, d_model], new_cache)`. Three modes:

    * `cache=None`: keys and values are projected from `key_value [b, m, d]`
      (`key_value=query` for self-attention); `new_cache` is None.
    * `cache` given and `extend_cache=True` (self-attention decoding): the new
      token's key/value, projected from `key_value [b, 1, d]`, are appended to
      the cache and the query attends over all of it; `new_cache` is the
      longer cache.
    * `cache` given, `extend_cache=False` (cross-attention decoding): attends
      over the precomputed `cache` from `project_key_value`; `key_value` is
      ignored and `new_cache` is `cache`.
    """

    def __init__(self, num_heads: int, d_model: int, *, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.d_model = d_model
        self.dropout = dropout
        self.head_dim = d_model // num_heads

        def projection(name):
            return keras.layers.Dense(d_model, dtype=self.dtype_policy, name=name)

        self.query_projection = projection("query")
        self.key_projection = projection("key")
        self.value_projection = projection("value")
        self.output_projection = projection("output")
        self.probabilities_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)

    def build(self, query_shape, key_value_shape=None):
        key_value_shape = query_shape if key_value_shape is None else key_value_shape
        self.query_projection.build(query_shape)
        self.key_projection.build(key_value_shape)
        self.value_projection.build(key_value_shape)
        self.output_projection.build(tuple(query_shape[:-1]) + (self.d_model,))

    def project_key_value(self, key_value) -> Cache:
        """`[b, m, d]` -> `{"key": [b, h, m, k], "value": [b, h, m, k]}` (compute dtype)."""
        return {
            "key": self._split_heads(self.key_projection(key_value)),
            "value": self._split_heads(self.value_projection(key_value)),
        }

    def call(
        self,
        query,
        key_value=None,
        *,
        attention_mask=None,
        cache: Cache | None = None,
        extend_cache: bool = False,
        training: bool = False,
    ):
        if cache is None:
            keys_values = self.project_key_value(key_value)
            new_cache = None
        elif not extend_cache:
            keys_values = new_cache = cache
        else:
            step = self.project_key_value(key_value)
            keys_values = new_cache = {
                name: ops.concatenate([cache[name], step[name]], axis=2)
                for name in ("key", "value")
            }
        queries = self._split_heads(self.query_projection(query)) * self.head_dim**-0.5
        logits = ops.einsum("bhlk,bhmk->bhlm", queries, keys_values["key"])
        logits = ops.cast(logits, "float32")  # softmax in float32 whatever the policy
        if attention_mask is not None:
            logits = ops.where(attention_mask, logits, _MASKED_LOGIT)
        probabilities = ops.cast(ops.softmax(logits, axis=-1), self.compute_dtype)
        probabilities = self.probabilities_dropout(probabilities, training=training)
        heads = ops.einsum("bhlm,bhmk->bhlk", probabilities, keys_values["value"])
        return self.output_projection(self._merge_heads(heads)), new_cache

    def _split_heads(self, x):
        """`[b, n, d]` -> `[b, h, n, k]`."""
        x = ops.reshape(x, tuple(ops.shape(x)[:2]) + (self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def _merge_heads(self, x):
        """`[b, h, n, k]` -> `[b, n, d]`."""
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, tuple(ops.shape(x)[:2]) + (self.d_model,))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_heads=self.num_heads, d_model=self.d_model, dropout=self.dropout)
        return config


class FeedForward(keras.layers.Layer):
    """Position-wise `Dense(d_ff, relu) -> Dropout -> Dense(d_model)`; `[b, l, d] -> [b, l, d]`."""

    def __init__(self, d_model: int, d_ff: int, *, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.d_ff = d_ff
        self.dropout = dropout
        self.hidden = keras.layers.Dense(
            d_ff, activation="relu", dtype=self.dtype_policy, name="hidden"
        )
        self.hidden_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.projection = keras.layers.Dense(d_model, dtype=self.dtype_policy, name="output")

    def build(self, inputs_shape):
        self.hidden.build(inputs_shape)
        self.projection.build(tuple(inputs_shape[:-1]) + (self.d_ff,))

    def call(self, inputs, training: bool = False):
        hidden = self.hidden_dropout(self.hidden(inputs), training=training)
        return self.projection(hidden)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(d_model=self.d_model, d_ff=self.d_ff, dropout=self.dropout)
        return config


class _TransformerBlock(keras.layers.Layer):
    """Arguments and residual wiring shared by the encoder and decoder blocks.

    Every sub-layer `f` is wrapped either post-LN (`norm_first=False`, the paper):
    `x = LN(x + Dropout(f(x)))`, or pre-LN (`norm_first=True`):
    `x = x + Dropout(f(LN(x)))`, in which case the stack must end with a LayerNorm.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        norm_first: bool = False,
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.relu_dropout = relu_dropout
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon

    def _attention(self, name: str) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.num_heads,
            self.d_model,
            dropout=self.attention_dropout,
            dtype=self.dtype_policy,
            name=name,
        )

    def _feed_forward(self) -> FeedForward:
        return FeedForward(
            self.d_model,
            self.d_ff,
            dropout=self.relu_dropout,
            dtype=self.dtype_policy,
            name="feed_forward",
        )

    def _norm(self, name: str) -> keras.layers.LayerNormalization:
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _residual_dropout(self) -> keras.layers.Dropout:
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _sublayer_input(self, x, norm):
        return norm(x) if self.norm_first else x

    def _sublayer_output(self, x, sublayer_output, norm, dropout, training):
        x = x + dropout(sublayer_output, training=training)
        return x if self.norm_first else norm(x)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            d_model=self.d_model,
            num_heads=self.num_heads,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            relu_dropout=self.relu_dropout,
            norm_first=self.norm_first,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


class EncoderBlock(_TransformerBlock):
    """Self-attention then feed-forward, each with residual + LayerNorm.

    `call(inputs [b, l, d], *, padding_mask [b, l] bool (True = token), training)`
    -> `[b, l, d]`. Outputs at real tokens do not depend on padded positions.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = self._residual_dropout()
        self.feed_forward = self._feed_forward()
        self.feed_forward_norm = self._norm("feed_forward_norm")
        self.feed_forward_dropout = self._residual_dropout()

    def build(self, inputs_shape):
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_norm.build(inputs_shape)
        self.feed_forward.build(inputs_shape)
        self.feed_forward_norm.build(inputs_shape)

    def call(self, inputs, *, padding_mask=None, training: bool = False):
        attention_mask = None if padding_mask is None else padding_mask[:, None, None, :]
        x = inputs
        y = self._sublayer_input(x, self.self_attention_norm)
        y, _ = self.self_attention(y, y, attention_mask=attention_mask, training=training)
        x = self._sublayer_output(
            x, y, self.self_attention_norm, self.self_attention_dropout, training
        )
        y = self.feed_forward(self._sublayer_input(x, self.feed_forward_norm), training=training)
        return self._sublayer_output(
            x, y, self.feed_forward_norm, self.feed_forward_dropout, training
        )


class DecoderBlock(_TransformerBlock):
    """Masked self-attention, cross-attention on the encoder memory, feed-forward.

    `call(inputs [b, l, d], memory [b, m, d] | None, *, self_attention_mask,
    memory_mask, self_attention_cache, cross_attention_cache, training)` ->
    `(outputs [b, l, d], new_self_attention_cache | None)`.

    * `self_attention_mask`: bool, broadcastable to `[b, h, l, l]` (teacher
      forcing: causal AND target padding); None when decoding with a cache,
      which only ever holds the prefix.
    * `memory_mask`: `[b, m]` bool, True at real source tokens.
    * Teacher forcing: leave the caches None.
    * Incremental decoding (l = 1): pass both caches (layout in the module
      docstring); the new token's self-attention key/value is appended to
      `self_attention_cache`. `memory` may be None because
      the cross-attention keys/values come from `cross_attention_cache`, made
      once per batch by `project_memory`.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, **kwargs):
        super().__init__(d_model, num_heads, d_ff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention_dropout = self._residual_dropout()
        self.cross_attention = self._attention("cross_attention")
        self.cross_attention_norm = self._norm("cross_attention_norm")
        self.cross_attention_dropout = self._residual_dropout()
        self.feed_forward = self._feed_forward()
        self.feed_forward_norm = self._norm("feed_forward_norm")
        self.feed_forward_dropout = self._residual_dropout()

    def build(self, inputs_shape, memory_shape=None):
        memory_shape = inputs_shape if memory_shape is None else memory_shape
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_norm.build(inputs_shape)
        self.cross_attention.build(inputs_shape, memory_shape)
        self.cross_attention_norm.build(inputs_shape)
        self.feed_forward.build(inputs_shape)
        self.feed_forward_norm.build(inputs_shape)

    def project_memory(self, memory) -> Cache:
        """The cross-attention cache for `memory [b, m, d]`: `{"key", "value"}: [b, h, m, k]`."""
        return self.cross_attention.project_key_value(memory)

    def call(
        self,
        inputs,
        memory=None,
        *,
        self_attention_mask=None,
        memory_mask=None,
        self_attention_cache: Cache | None = None,
        cross_attention_cache: Cache | None = None,
        training: bool = False,
    ):
        x = inputs
        y = self._sublayer_input(x, self.self_attention_norm)
        y, new_cache = self.self_attention(
            y,
            y,
            attention_mask=self_attention_mask,
            cache=self_attention_cache,
            extend_cache=self_attention_cache is not None,
            training=training,
        )
        x = self._sublayer_output(
            x, y, self.self_attention_norm, self.self_attention_dropout, training
        )

        cross_mask = None if memory_mask is None else memory_mask[:, None, None, :]
        y = self._sublayer_input(x, self.cross_attention_norm)
        y, _ = self.cross_attention(
            y, memory, attention_mask=cross_mask, cache=cross_attention_cache, training=training
        )
        x = self._sublayer_output(
            x, y, self.cross_attention_norm, self.cross_attention_dropout, training
        )

        y = self.feed_forward(self._sublayer_input(x, self.feed_forward_norm), training=training)
        x = self._sublayer_output(x, y, self.feed_forward_norm, self.feed_forward_dropout, training)
        return x, new_cache
