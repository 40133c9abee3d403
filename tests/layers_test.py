"""Tests for trainer/layers.py: position table, attention and its cache, blocks, configs."""

import keras
import numpy as np
import pytest

from trainer import layers

D_MODEL, HEADS, D_FF = 16, 4, 32


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _assert_config_round_trip(layer):
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    return config


def test_sinusoidal_positions_match_the_paper_formula():
    table = layers.sinusoidal_positions(50, 8)
    assert table.shape == (50, 8) and table.dtype == np.float32
    np.testing.assert_allclose(table[0], [0, 1, 0, 1, 0, 1, 0, 1], atol=1e-7)
    # Channels 2i and 2i+1 at position p: sin and cos of p / 10000^(2i/d).
    np.testing.assert_allclose(table[7, 0:2], [np.sin(7.0), np.cos(7.0)], rtol=1e-6)
    angle = 7.0 / 10000 ** (6 / 8)
    np.testing.assert_allclose(table[7, 6:8], [np.sin(angle), np.cos(angle)], rtol=1e-6)


def test_sinusoidal_positions_odd_width():
    table = layers.sinusoidal_positions(3, 5)
    assert table.shape == (3, 5)
    np.testing.assert_allclose(table[1, 4], np.sin(1.0 / 10000 ** (4 / 5)), rtol=1e-6)


def test_token_embedding_lookup_and_reverse_share_one_matrix():
    embedding = layers.TokenEmbedding(10, D_MODEL)
    ids = np.array([[1, 4, 0]])
    vectors = np.asarray(embedding(ids))
    matrix = np.asarray(embedding.embeddings)
    np.testing.assert_allclose(vectors[0], matrix[[1, 4, 0]])
    hidden = _random(2, 3, D_MODEL)
    np.testing.assert_allclose(
        np.asarray(embedding(hidden, reverse=True)), hidden @ matrix.T, rtol=1e-5, atol=1e-5
    )
    assert _assert_config_round_trip(embedding)["vocab_size"] == 10


def test_attention_ignores_masked_keys():
    attention = layers.MultiHeadAttention(HEADS, D_MODEL)
    query, memory = _random(2, 3, D_MODEL), _random(2, 5, D_MODEL, seed=1)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], bool)[:, None, None, :]
    output, cache = attention(query, memory, attention_mask=mask)
    assert output.shape == (2, 3, D_MODEL) and cache is None
    changed = memory.copy()
    changed[0, 3:] = 100.0
    changed[1, 4] = -100.0
    changed_output, _ = attention(query, changed, attention_mask=mask)
    np.testing.assert_allclose(changed_output, output, rtol=1e-5, atol=1e-5)
    unmasked_output, _ = attention(query, changed)
    assert not np.allclose(unmasked_output, output, atol=1e-3)


def test_attention_precomputed_key_value_cache_equals_projection():
    attention = layers.MultiHeadAttention(HEADS, D_MODEL)
    query, memory = _random(2, 3, D_MODEL), _random(2, 5, D_MODEL, seed=1)
    expected, _ = attention(query, memory)
    cache = attention.project_key_value(memory)
    assert cache["key"].shape == (2, HEADS, 5, D_MODEL // HEADS)
    output, returned = attention(query, attention_mask=None, cache=cache)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(returned["value"], cache["value"])


def test_attention_incremental_cache_matches_causal_attention():
    length = 4
    attention = layers.MultiHeadAttention(HEADS, D_MODEL)
    x = _random(2, length, D_MODEL)
    causal = np.tril(np.ones((length, length), bool))[None, None]
    expected, _ = attention(x, x, attention_mask=causal)

    empty = np.zeros((2, HEADS, 0, D_MODEL // HEADS), "float32")
    cache = {"key": empty, "value": empty}
    for step in range(length):
        token = x[:, step : step + 1]
        output, cache = attention(token, token, cache=cache, extend_cache=True)
        np.testing.assert_allclose(output[:, 0], expected[:, step], rtol=1e-5, atol=1e-5)
        # The cache holds exactly the prefix: one position per token seen.
        assert cache["key"].shape == (2, HEADS, step + 1, D_MODEL // HEADS)
    full = attention.project_key_value(x)
    np.testing.assert_allclose(cache["value"], full["value"], rtol=1e-6, atol=1e-6)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by num_heads=4"):
        layers.MultiHeadAttention(4, 10)


def test_feed_forward_shape_and_config():
    feed_forward = layers.FeedForward(D_MODEL, D_FF, dropout=0.25)
    assert feed_forward(_random(2, 3, D_MODEL)).shape == (2, 3, D_MODEL)
    assert feed_forward.hidden.kernel.shape == (D_MODEL, D_FF)
    assert _assert_config_round_trip(feed_forward)["dropout"] == 0.25


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_ignores_padded_positions(norm_first):
    block = layers.EncoderBlock(D_MODEL, HEADS, D_FF, norm_first=norm_first)
    x = _random(2, 5, D_MODEL)
    padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    output = np.asarray(block(x, padding_mask=padding))
    changed = x.copy()
    changed[0, 3:] = _random(2, D_MODEL, seed=3)
    changed_output = np.asarray(block(changed, padding_mask=padding))
    np.testing.assert_allclose(changed_output[0, :3], output[0, :3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(changed_output[1], output[1], rtol=1e-5, atol=1e-5)


def test_post_ln_block_output_is_normalized_and_pre_ln_is_not():
    x = 3.0 * _random(2, 5, D_MODEL) + 1.0
    post = np.asarray(layers.EncoderBlock(D_MODEL, HEADS, D_FF, norm_first=False)(x))
    pre = np.asarray(layers.EncoderBlock(D_MODEL, HEADS, D_FF, norm_first=True)(x))
    # Fresh LayerNorms have gamma=1, beta=0: post-LN rows are standardized.
    np.testing.assert_allclose(post.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(post.std(-1), 1.0, atol=1e-2)
    # Pre-LN keeps the residual stream unnormalized (x plus sub-layer outputs).
    assert np.abs(pre.mean(-1)).max() > 0.2


def test_dropout_is_active_only_when_training():
    block = layers.EncoderBlock(D_MODEL, HEADS, D_FF, dropout=0.5, relu_dropout=0.5)
    x = _random(2, 5, D_MODEL)
    inference = np.asarray(block(x, training=False))
    np.testing.assert_allclose(block(x, training=False), inference)
    assert not np.allclose(block(x, training=True), inference, atol=1e-3)


def test_decoder_block_cached_step_matches_full_call():
    block = layers.DecoderBlock(D_MODEL, HEADS, D_FF, norm_first=True)
    x, memory = _random(1, 3, D_MODEL), _random(1, 4, D_MODEL, seed=1)
    memory_mask = np.array([[1, 1, 1, 0]], bool)
    causal = np.tril(np.ones((3, 3), bool))[None, None]
    expected, no_cache = block(x, memory, self_attention_mask=causal, memory_mask=memory_mask)
    assert no_cache is None

    empty = np.zeros((1, HEADS, 0, D_MODEL // HEADS), "float32")
    self_cache = {"key": empty, "value": empty}
    cross_cache = block.project_memory(memory)
    for step in range(3):
        output, self_cache = block(
            x[:, step : step + 1],
            memory_mask=memory_mask,
            self_attention_cache=self_cache,
            cross_attention_cache=cross_cache,
        )
        np.testing.assert_allclose(output[:, 0], expected[:, step], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_class", [layers.EncoderBlock, layers.DecoderBlock])
def test_block_config_round_trip(block_class):
    block = block_class(
        D_MODEL,
        HEADS,
        D_FF,
        dropout=0.2,
        attention_dropout=0.1,
        relu_dropout=0.3,
        norm_first=True,
        layer_norm_epsilon=1e-5,
        name="block",
    )
    config = _assert_config_round_trip(block)
    assert config["norm_first"] is True
    assert (config["dropout"], config["attention_dropout"], config["relu_dropout"]) == (
        0.2,
        0.1,
        0.3,
    )
    attention_config = _assert_config_round_trip(block.self_attention)
    assert attention_config["dropout"] == 0.1


def test_layers_follow_a_mixed_precision_policy():
    block = layers.EncoderBlock(D_MODEL, HEADS, D_FF, dtype="mixed_bfloat16")
    output = block(_random(2, 3, D_MODEL))
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    assert block.self_attention.query_projection.dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in block.weights} == {"float32"}
