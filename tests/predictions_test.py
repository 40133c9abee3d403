"""The prediction line formats both the CLIs and the Beam jobs write."""

import json

import numpy as np

from pipeline import predictions


def test_classification_line_format():
    line = predictions.format_classification(np.array([0.25, 0.75], np.float32))
    assert line == '{"label": "positive", "probability": 0.75, "probabilities": [0.25, 0.75]}'
    tie = json.loads(predictions.format_classification(np.array([0.5, 0.5], np.float32)))
    assert tie["label"] == "negative"  # the first most probable class
    rounded = json.loads(predictions.format_classification(np.array([0.1234567, 0.8765433])))
    assert rounded["probabilities"] == [0.123457, 0.876543]
    three = json.loads(predictions.format_classification([0.2, 0.5, 0.3]))
    assert three["label"] == "1" and three["probability"] == 0.5
    assert json.loads(predictions.EMPTY_CLASSIFICATION) == {}
