"""Tests for trainer/model_config.py: presets, overrides, validation, dict round trip."""

import dataclasses
import json

import pytest

from pipeline import features
from trainer.model_config import MODEL_PRESETS, ModelConfig, model_config_from_preset


def _config(**overrides):
    return model_config_from_preset("tiny", vocab_size=100, task=features.TRANSLATION, **overrides)


def test_preset_with_overrides():
    config = _config(dropout=0.0, norm_first=True)
    assert (config.num_layers, config.vocab_size, config.task) == (2, 100, "translation")
    assert config.dropout == 0.0 and config.norm_first is True
    assert config.head_dim == config.d_model // config.num_heads


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_every_preset_is_valid(name):
    config = model_config_from_preset(name, vocab_size=8000, task=features.CLASSIFICATION)
    assert config.d_model % config.num_heads == 0


def test_paper_presets():
    base = model_config_from_preset("base", vocab_size=37000, task=features.TRANSLATION)
    big = model_config_from_preset("big", vocab_size=37000, task=features.TRANSLATION)
    assert (base.num_layers, base.d_model, base.num_heads, base.d_ff, base.dropout) == (
        6,
        512,
        8,
        2048,
        0.1,
    )
    assert (big.d_model, big.num_heads, big.d_ff, big.dropout) == (1024, 16, 4096, 0.3)


def test_dict_round_trip_through_json():
    config = _config(norm_first=True, share_embeddings=False, relu_dropout=0.2)
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_integer_rates_from_json_become_floats():
    values = _config().to_dict()
    values["dropout"] = 0
    restored = ModelConfig.from_dict(values)
    assert restored.dropout == 0.0 and isinstance(restored.dropout, float)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _config().d_model = 8  # type: ignore[misc]


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*'base'.*'tiny'"):
        model_config_from_preset("huge", vocab_size=100, task=features.TRANSLATION)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['n_layers'\]"):
        _config(n_layers=3)
    with pytest.raises(ValueError, match=r"\['label_smoothing'\]"):
        _config().replace(label_smoothing=0.1)


def test_from_dict_names_missing_and_unknown_fields():
    values = _config().to_dict()
    del values["d_model"]
    with pytest.raises(ValueError, match=r"missing required fields \['d_model'\]"):
        ModelConfig.from_dict(values)
    with pytest.raises(ValueError, match=r"\['colour'\]"):
        ModelConfig.from_dict({**_config().to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(d_model=100, num_heads=8), "d_model=100 is not divisible by num_heads=8"),
        (dict(num_layers=0), "num_layers=0 must be positive"),
        (dict(d_ff=-4), "d_ff=-4 must be positive"),
        (dict(max_length=0), "max_length=0 must be positive"),
        (dict(num_classes=1), "num_classes=1 must be at least 2"),
        (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
        (dict(attention_dropout=-0.1), r"attention_dropout=-0.1 must be in \[0, 1\)"),
        (dict(d_model="512"), "d_model must be an int, got '512'"),
        (dict(num_heads=True), "num_heads must be an int, got True"),
        (dict(norm_first="yes"), "norm_first must be a bool, got 'yes'"),
        (dict(relu_dropout="0.1"), "relu_dropout must be a number, got '0.1'"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_invalid_vocab_size_and_task():
    with pytest.raises(ValueError, match="vocab_size=0 must be positive"):
        model_config_from_preset("tiny", vocab_size=0, task=features.TRANSLATION)
    with pytest.raises(ValueError, match="task='summarization' is unknown"):
        model_config_from_preset("tiny", vocab_size=100, task="summarization")
