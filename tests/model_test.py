"""Tests for trainer/model.py: masks, causality, the cached decoder, presets, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import features
from trainer import decode
from trainer import model as model_lib
from trainer.model_config import MODEL_PRESETS, ModelConfig, model_config_from_preset

VOCAB = 40
SOURCE = np.array([[5, 6, 7, 8, 3], [9, 10, 3, 0, 0]])
TARGETS = np.array([[11, 12, 13, 3, 0, 0], [14, 15, 16, 17, 18, 3]])


def _tiny_config(task=features.TRANSLATION, **overrides):
    values = dict(d_model=16, num_heads=2, d_ff=32, max_length=32, dropout=0.1)
    values.update(overrides)
    return model_config_from_preset("tiny", vocab_size=VOCAB, task=task, **values)


@pytest.fixture
def mixed_bfloat16():
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _pad(ids, extra):
    return np.pad(ids, ((0, 0), (0, extra)), constant_values=features.PAD_ID)


def test_shift_right_starts_with_bos_and_drops_the_last_token():
    shifted = model_lib.shift_right(TARGETS)
    np.testing.assert_array_equal(shifted, [[2, 11, 12, 13, 3, 0], [2, 14, 15, 16, 17, 18]])


def test_call_accepts_a_tuple_or_a_dict():
    model = model_lib.build_model(_tiny_config())
    targets_in = model_lib.shift_right(TARGETS)
    logits = model((SOURCE, targets_in))
    assert logits.shape == (2, 6, VOCAB) and logits.dtype == tf.float32
    from_dict = model({features.INPUTS: SOURCE, model_lib.TARGETS_IN: targets_in})
    np.testing.assert_allclose(from_dict, logits, rtol=1e-6)


@pytest.mark.parametrize("share_embeddings", [True, False])
def test_logits_mask_projects_only_the_chosen_positions(share_embeddings):
    model = model_lib.build_model(_tiny_config(share_embeddings=share_embeddings))
    inputs = (SOURCE, model_lib.shift_right(TARGETS))
    real = TARGETS != features.PAD_ID
    selected = model(inputs, logits_mask=real)
    assert selected.shape == (int(real.sum()), VOCAB) and selected.dtype == tf.float32
    np.testing.assert_allclose(selected, tf.boolean_mask(model(inputs), real), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_extra_source_padding_changes_nothing(norm_first):
    model = model_lib.build_model(_tiny_config(norm_first=norm_first))
    memory, memory_mask = model.encode(SOURCE)
    padded_memory, padded_mask = model.encode(_pad(SOURCE, 3))
    np.testing.assert_array_equal(padded_mask[:, :5], memory_mask)
    real = np.asarray(memory_mask)
    np.testing.assert_allclose(
        np.asarray(padded_memory)[:, :5][real], np.asarray(memory)[real], rtol=1e-5, atol=1e-5
    )
    targets_in = model_lib.shift_right(TARGETS)
    np.testing.assert_allclose(
        model((_pad(SOURCE, 3), targets_in)), model((SOURCE, targets_in)), rtol=1e-5, atol=1e-5
    )


def test_decoder_is_causal():
    model = model_lib.build_model(_tiny_config())
    targets_in = np.asarray(model_lib.shift_right(TARGETS))
    logits = np.asarray(model((SOURCE, targets_in)))
    changed = targets_in.copy()
    changed[:, 3:] = [[20, 21, 22], [23, 24, 25]]
    changed_logits = np.asarray(model((SOURCE, changed)))
    np.testing.assert_allclose(changed_logits[:, :3], logits[:, :3], rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed_logits[:, 3:], logits[:, 3:], atol=1e-3)


@pytest.mark.parametrize(
    "norm_first, share_embeddings", [(False, True), (True, False)], ids=["post_ln", "pre_ln"]
)
def test_cached_decode_steps_match_full_decode(norm_first, share_embeddings):
    model = model_lib.build_model(
        _tiny_config(norm_first=norm_first, share_embeddings=share_embeddings)
    )
    targets_in = model_lib.shift_right(TARGETS)
    memory, memory_mask = model.encode(SOURCE)
    expected = np.asarray(model.decode(targets_in, memory, memory_mask))

    cache = model.init_cache(memory, memory_mask, max_decode_len=8)
    for step in range(TARGETS.shape[1]):
        logits, cache = model.decode_step(targets_in[:, step], step, cache)
        assert logits.shape == (2, VOCAB) and logits.dtype == tf.float32
        real = TARGETS[:, step] != features.PAD_ID
        np.testing.assert_allclose(
            np.asarray(logits)[real], expected[real, step], rtol=1e-4, atol=1e-4
        )


def test_decode_step_runs_in_a_tf_while_loop():
    model = model_lib.build_model(_tiny_config())
    targets_in = tf.cast(model_lib.shift_right(TARGETS), tf.int32)
    memory, memory_mask = model.encode(SOURCE)
    expected = model.decode(targets_in, memory, memory_mask)
    length = TARGETS.shape[1]

    @tf.function
    def teacher_forced_steps(memory, memory_mask):
        cache = model.init_cache(memory, memory_mask, max_decode_len=length)

        def body(step, cache, outputs):
            logits, cache = model.decode_step(targets_in[:, step], step, cache)
            return step + 1, cache, outputs.write(step, logits)

        outputs = tf.TensorArray(tf.float32, size=length)
        _, _, outputs = tf.while_loop(
            lambda step, *_: step < length,
            body,
            (tf.constant(0), cache, outputs),
            shape_invariants=(
                tf.TensorShape([]),
                decode.cache_shape_invariants(cache),
                tf.TensorShape(None),
            ),
        )
        return tf.transpose(outputs.stack(), (1, 0, 2))

    logits = teacher_forced_steps(memory, memory_mask)
    np.testing.assert_allclose(logits[0, :4], expected[0, :4], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[1], expected[1], rtol=1e-4, atol=1e-4)


def test_cache_reorders_along_the_batch_axis():
    model = model_lib.build_model(_tiny_config())
    memory, memory_mask = model.encode(SOURCE)
    cache = model.init_cache(memory, memory_mask, max_decode_len=4)
    _, cache = model.decode_step(tf.constant([2, 2]), 0, cache)
    logits, _ = model.decode_step(tf.constant([7, 9]), 1, cache)
    swapped = tf.nest.map_structure(lambda t: tf.gather(t, [1, 0]), cache)
    swapped_logits, _ = model.decode_step(tf.constant([9, 7]), 1, swapped)
    np.testing.assert_allclose(swapped_logits, tf.gather(logits, [1, 0]), rtol=1e-5, atol=1e-5)


def test_init_cache_rejects_decode_length_beyond_positions():
    model = model_lib.build_model(_tiny_config())
    memory, memory_mask = model.encode(SOURCE)
    with pytest.raises(ValueError, match="max_decode_len=33 exceeds the model's max_length=32"):
        model.init_cache(memory, memory_mask, max_decode_len=33)


def test_models_reject_the_other_task():
    with pytest.raises(ValueError, match="Transformer needs task='translation'"):
        model_lib.Transformer(_tiny_config(task=features.CLASSIFICATION))
    with pytest.raises(ValueError, match="Classifier needs task='classification'"):
        model_lib.Classifier(_tiny_config())


def test_classifier_pooling_ignores_padding():
    model = model_lib.build_model(_tiny_config(task=features.CLASSIFICATION, num_classes=3))
    logits = model(SOURCE)
    assert logits.shape == (2, 3) and logits.dtype == tf.float32
    np.testing.assert_allclose(model(_pad(SOURCE, 4)), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model({features.INPUTS: SOURCE}), logits, rtol=1e-6)
    assert not np.allclose(model(SOURCE[:, ::-1].copy())[1], logits[1], atol=1e-4)


def test_model_config_round_trips_through_keras_config():
    model = model_lib.build_model(_tiny_config(norm_first=True))
    rebuilt = model_lib.Transformer.from_config(model.get_config())
    assert rebuilt.model_config == model.model_config
    rebuilt.build()
    assert rebuilt.count_params() == model.count_params()


def test_mixed_bfloat16_keeps_logits_float32(mixed_bfloat16):
    model = model_lib.build_model(_tiny_config())
    targets_in = model_lib.shift_right(TARGETS)
    assert model((SOURCE, targets_in)).dtype == tf.float32
    memory, memory_mask = model.encode(SOURCE)
    assert memory.dtype == tf.bfloat16
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    cache = model.init_cache(memory, memory_mask, max_decode_len=4)
    logits, cache = model.decode_step(tf.constant([2, 2]), 0, cache)
    assert logits.dtype == tf.float32
    assert cache["layers"][0]["self"]["key"].dtype == tf.bfloat16
    classifier = model_lib.build_model(_tiny_config(task=features.CLASSIFICATION))
    assert classifier(SOURCE).dtype == tf.float32


def test_an_inference_model_computes_in_float32_under_a_mixed_policy(mixed_bfloat16):
    model = model_lib.build_inference_model(_tiny_config())
    memory, _ = model.encode(SOURCE)
    assert memory.dtype == tf.float32
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"  # left as it was


def _expected_params(config: ModelConfig) -> int:
    """Parameter count from the paper's architecture, independent of the code."""
    d, f, vocab = config.d_model, config.d_ff, config.vocab_size
    attention = 4 * (d * d + d)
    feed_forward = d * f + f + f * d + d
    layer_norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * layer_norm
    final_norm = layer_norm if config.norm_first else 0
    encoder = vocab * d + config.num_layers * encoder_layer + final_norm
    if config.task == features.CLASSIFICATION:
        return encoder + d * config.num_classes + config.num_classes
    decoder_layer = 2 * attention + feed_forward + 3 * layer_norm
    unshared = 0 if config.share_embeddings else 2 * vocab * d
    return encoder + config.num_layers * decoder_layer + final_norm + unshared


@pytest.mark.parametrize(
    "config",
    [
        _tiny_config(),
        _tiny_config(norm_first=True, share_embeddings=False),
        _tiny_config(task=features.CLASSIFICATION, norm_first=True),
    ],
    ids=["post_ln_shared", "pre_ln_unshared", "classifier"],
)
def test_parameter_count_matches_the_architecture(config):
    assert model_lib.build_model(config).count_params() == _expected_params(config)


@pytest.mark.parametrize("preset", ["tiny", "small", "imdb"])
def test_small_presets_build_and_run(preset):
    task = features.CLASSIFICATION if preset == "imdb" else features.TRANSLATION
    config = model_config_from_preset(preset, vocab_size=VOCAB, task=task)
    model = model_lib.build_model(config)
    assert model.count_params() == _expected_params(config)
    inputs = SOURCE if task == features.CLASSIFICATION else (SOURCE, TARGETS)
    assert np.isfinite(np.asarray(model(inputs))).all()


def test_base_preset_has_the_papers_size():
    config = model_config_from_preset("base", vocab_size=37000, task=features.TRANSLATION)
    params = model_lib.build_model(config).count_params()
    assert params == _expected_params(config)
    assert 60e6 < params < 66e6  # "65M" in Vaswani et al. 2017, Table 3


def test_big_preset_has_the_papers_size_without_building_it():
    assert set(MODEL_PRESETS) >= {"tiny", "small", "base", "big", "imdb"}
    config = model_config_from_preset("big", vocab_size=37000, task=features.TRANSLATION)
    assert 200e6 < _expected_params(config) < 225e6  # "213M" in the paper


@pytest.mark.parametrize("task", [features.TRANSLATION, features.CLASSIFICATION])
def test_model_alone_checkpoint_restores_every_weight(task, tmp_path):
    # Keras 3 does not expose layers kept in Python lists to tf.train.Checkpoint on its own.
    config = model_config_from_preset(
        "tiny", vocab_size=64, task=task, num_layers=2, d_model=16, num_heads=2, d_ff=32
    )
    saved, fresh = model_lib.build_model(config), model_lib.build_model(config)
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    randomly_initialized = [w for w in saved.weights if np.std(w.numpy()) > 0]
    assert len(randomly_initialized) > 10
    for a, b in zip(saved.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
