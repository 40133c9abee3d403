"""Tests for trainer/decode.py: greedy (cached and not), beam search, the tf.function wrapper.

The module fixture trains a tiny Transformer for a few hundred steps to copy
sequences of ids 4..20, so decoding has real, non-trivial choices to make.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import features
from trainer import decode
from trainer.model import build_model, shift_right
from trainer.model_config import model_config_from_preset

MAX_LENGTH = 64
FIRST_TOKEN, LAST_TOKEN = 4, 20  # the copy task's alphabet
TRAIN_WIDTH = 9  # up to 8 tokens + EOS


def _config(**overrides):
    return model_config_from_preset(
        "tiny",
        vocab_size=32,
        task=features.TRANSLATION,
        num_layers=1,
        d_model=32,
        num_heads=2,
        d_ff=64,
        dropout=0.0,
        max_length=MAX_LENGTH,
        **overrides,
    )


def _sources(lengths, rng, *, width=None) -> np.ndarray:
    """EOS-terminated random sources of the given lengths (EOS not counted), PAD after."""
    width = width or max(lengths) + 1
    ids = np.full((len(lengths), width), features.PAD_ID, np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(FIRST_TOKEN, LAST_TOKEN + 1, size=length)
        ids[row, length] = features.EOS_ID
    return ids


def _train_copy_model(steps: int = 300):
    keras.utils.set_random_seed(0)
    model = build_model(_config())
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def train_step(ids):
        with tf.GradientTape() as tape:
            logits = model((ids, shift_right(ids)), training=True)
            losses = keras.losses.sparse_categorical_crossentropy(ids, logits, from_logits=True)
            weights = tf.cast(ids != features.PAD_ID, tf.float32)
            loss = tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    rng = np.random.default_rng(0)
    for _ in range(steps):
        train_step(_sources(rng.integers(2, TRAIN_WIDTH, size=64), rng, width=TRAIN_WIDTH))
    return model


@pytest.fixture(scope="module")
def copy_model():
    return _train_copy_model()


@pytest.fixture(scope="module")
def random_model():
    """Untrained: its beams reorder often, which exposes any mix-up of their caches."""
    keras.utils.set_random_seed(2)
    return build_model(_config())


@pytest.fixture(scope="module")
def never_eos_model():
    """An untrained model whose every step predicts the same distribution, EOS least likely.

    The final LayerNorm outputs the constant `u`, so the logits are `embeddings @ u`;
    EOS's embedding row is `-10 u`, far below every other logit.
    """
    keras.utils.set_random_seed(1)
    model = build_model(_config(norm_first=True))
    d_model = model.model_config.d_model
    direction = np.eye(d_model, dtype=np.float32)[0]
    model.decoder_norm.gamma.assign(np.zeros(d_model, np.float32))
    model.decoder_norm.beta.assign(direction)
    embeddings = np.array(model.embedding.embeddings)
    embeddings[features.EOS_ID] = -10.0 * direction
    model.embedding.embeddings.assign(embeddings)
    return model


@pytest.fixture(scope="module")
def mixed_sources():
    """Different lengths (so different padding), including two longer than any seen in training."""
    return _sources([1, 2, 3, 4, 5, 6, 7, 8, 11, 12], np.random.default_rng(1))


def _lengths(ids) -> np.ndarray:
    return np.sum(np.asarray(ids) != features.PAD_ID, axis=1)


def _gnmt_scores(model, inputs, outputs, alpha):
    log_probs = decode.sequence_log_prob(model, inputs, outputs)
    return np.asarray(log_probs / decode.length_penalty(_lengths(outputs), alpha))


def _assert_pad_only_after_eos(ids):
    for row in np.asarray(ids):
        eos = np.flatnonzero(row == features.EOS_ID)
        end = eos[0] + 1 if eos.size else len(row)
        assert np.all(row[end:] == features.PAD_ID), row
        assert np.all(row[:end] != features.PAD_ID), row


def _until_eos(row) -> list[int]:
    row = list(np.asarray(row))
    return row[: row.index(features.EOS_ID) + 1] if features.EOS_ID in row else row


def test_trained_model_copies_most_sources(copy_model):
    sources = _sources(
        np.random.default_rng(2).integers(2, TRAIN_WIDTH, size=64), np.random.default_rng(3)
    )
    decoded = decode.greedy_decode(copy_model, sources).numpy()
    copied = [_until_eos(out) == _until_eos(src) for out, src in zip(decoded, sources)]
    assert np.mean(copied) > 0.8


# The uncached decoder's first step attends over a one-token prefix, which Keras warns about.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")
def test_cached_greedy_equals_uncached(copy_model, mixed_sources):
    cached = decode.greedy_decode(copy_model, mixed_sources)
    uncached = decode.greedy_decode_uncached(copy_model, mixed_sources)
    assert cached.dtype == tf.int32
    np.testing.assert_array_equal(cached.numpy(), uncached.numpy())


def test_greedy_stops_when_every_sequence_has_ended(copy_model, monkeypatch):
    sources = _sources([2, 5, 3], np.random.default_rng(4))
    calls = {"encode": 0, "decode_step": 0}

    def counted(name):
        method = getattr(copy_model, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(copy_model, name, counted(name))
    decoded = decode.greedy_decode(copy_model, sources, max_decode_length=40).numpy()

    _assert_pad_only_after_eos(decoded)
    ends = [list(row).index(features.EOS_ID) for row in decoded]  # ValueError if one has none
    assert decoded.shape == (3, max(ends) + 1)
    assert calls == {"encode": 1, "decode_step": max(ends) + 1}
    assert max(ends) + 1 < 40


def test_beam_size_one_follows_the_greedy_path(copy_model, mixed_sources):
    """One beam follows the argmax path; it can only stop earlier, where EOS was the runner-up
    and that ending already scores above everything the path goes on to reach."""
    greedy = decode.greedy_decode(copy_model, mixed_sources).numpy()
    greedy_log_probs = decode.sequence_log_prob(copy_model, mixed_sources, greedy).numpy()
    ids, scores = decode.beam_search(copy_model, mixed_sources, beam_size=1, alpha=0.0)
    # alpha = 0: no length penalty, the score is the plain log-probability.
    expected = decode.sequence_log_prob(copy_model, mixed_sources, ids)
    np.testing.assert_allclose(scores.numpy(), expected.numpy(), atol=1e-4)
    for row, path, score, path_log_prob in zip(
        ids.numpy(), greedy, scores.numpy(), greedy_log_probs
    ):
        out, path = _until_eos(row), _until_eos(path)
        if out != path:
            assert out[-1] == features.EOS_ID and out[:-1] == path[: len(out) - 1], (out, path)
            assert score >= path_log_prob - 1e-4, (out, path)


@pytest.mark.parametrize("model_name", ["copy_model", "random_model"])
def test_beam_search_scores_at_least_as_well_as_greedy(request, model_name, mixed_sources):
    model, alpha = request.getfixturevalue(model_name), 0.6
    greedy = decode.greedy_decode(model, mixed_sources, max_decode_length=16)
    ids, scores = decode.beam_search(
        model, mixed_sources, beam_size=4, alpha=alpha, max_decode_length=16
    )
    _assert_pad_only_after_eos(ids)
    assert ids.shape[1] == max(_lengths(ids))
    beam_scores = _gnmt_scores(model, mixed_sources, ids, alpha)
    greedy_scores = _gnmt_scores(model, mixed_sources, greedy, alpha)
    # The search's own scores are the model's GNMT scores of what it returns.
    np.testing.assert_allclose(scores.numpy(), beam_scores, atol=1e-4)
    assert np.all(beam_scores >= greedy_scores - 1e-4)
    if model_name == "random_model":  # unsure, so the search has better options to find
        assert np.any(beam_scores > greedy_scores + 0.1)


def test_beam_search_decodes_each_item_as_if_alone(random_model, mixed_sources):
    ids, scores = decode.beam_search(random_model, mixed_sources, max_decode_length=12)
    for row in (0, 7, 9):
        unpadded = mixed_sources[row : row + 1, : _lengths(mixed_sources[row : row + 1])[0]]
        alone_ids, alone_score = decode.beam_search(random_model, unpadded, max_decode_length=12)
        assert _until_eos(alone_ids.numpy()[0]) == _until_eos(ids.numpy()[row])
        np.testing.assert_allclose(alone_score.numpy()[0], scores.numpy()[row], atol=1e-4)


def test_max_decode_length_is_respected(never_eos_model):
    sources = _sources([3, 5], np.random.default_rng(5))
    greedy = decode.greedy_decode(never_eos_model, sources, max_decode_length=7).numpy()
    ids, scores = decode.beam_search(never_eos_model, sources, max_decode_length=7)
    for decoded in (greedy, ids.numpy()):
        assert decoded.shape == (2, 7)
        assert not np.any(decoded == features.EOS_ID)
        assert not np.any(decoded == features.PAD_ID)
    # With nothing finished, the best alive beam is returned, scored at its full length.
    np.testing.assert_allclose(
        scores.numpy(), _gnmt_scores(never_eos_model, sources, ids, 0.6), atol=1e-4
    )


def test_default_max_decode_length_is_source_width_plus_50_capped():
    assert decode.default_max_decode_length(10, model_max_length=64) == 60
    assert decode.default_max_decode_length(30, model_max_length=64) == 64
    assert decode.default_max_decode_length(3, model_max_length=64, extra=5) == 8
    lengths = decode.default_max_decode_length(tf.constant([3, 14, 30]), model_max_length=64)
    np.testing.assert_array_equal(lengths.numpy(), [53, 64, 64])


def test_decoders_use_the_default_max_decode_length(never_eos_model):
    narrow = _sources([2, 4], np.random.default_rng(6))  # width 5: 55
    wide = _sources([2, 19], np.random.default_rng(7))  # width 20: 70, capped at 64
    assert decode.greedy_decode(never_eos_model, narrow).shape == (2, 55)
    # The second call retraces for any shape, so the default becomes a tensor computed in-graph.
    translate = decode.make_translate_fn(never_eos_model, beam_size=1, alpha=0.6)
    assert translate(tf.constant(narrow)).shape == (2, 55)
    assert translate(tf.constant(wide)).shape == (2, MAX_LENGTH)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_translate_fn_matches_eager_decoding(copy_model, mixed_sources, beam_size):
    translate = decode.make_translate_fn(copy_model, beam_size=beam_size, alpha=0.6)
    other_shape = _sources([4, 2, 6], np.random.default_rng(8), width=11)
    for sources in (mixed_sources, other_shape):
        if beam_size == 1:
            expected = decode.greedy_decode(copy_model, sources)
        else:
            expected, _ = decode.beam_search(copy_model, sources, beam_size=beam_size, alpha=0.6)
        translated = translate(tf.constant(sources))
        assert translated.dtype == tf.int32
        np.testing.assert_array_equal(translated.numpy(), expected.numpy())


def test_invalid_arguments_are_rejected(copy_model):
    sources = _sources([2], np.random.default_rng(9))
    with pytest.raises(ValueError, match=r"max_decode_length=65 must be in \[1, 64\]"):
        decode.greedy_decode(copy_model, sources, max_decode_length=65)
    with pytest.raises(ValueError, match=r"max_decode_length=0 must be in \[1, 64\]"):
        decode.beam_search(copy_model, sources, max_decode_length=0)
    with pytest.raises(ValueError, match="beam_size must be a positive int, got 0"):
        decode.beam_search(copy_model, sources, beam_size=0)
    with pytest.raises(ValueError, match="alpha .* must be >= 0, got -0.5"):
        decode.make_translate_fn(copy_model, beam_size=4, alpha=-0.5)
    with pytest.raises(ValueError, match=r"max_decode_length=100 must be in \[1, 64\]"):
        decode.make_translate_fn(copy_model, beam_size=1, alpha=0.6, max_decode_length=100)
