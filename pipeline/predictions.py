"""The prediction output formats, shared by the CLIs (trainer.classify) and the Beam jobs.

No TensorFlow or Beam import: both sides import it, so their files are byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from pipeline import features

DECIMALS = 6
EMPTY_CLASSIFICATION = "{}"  # an empty input line: still one valid JSON object per line
EMPTY_TRANSLATION = ""


def class_names(num_classes: int) -> tuple[str, ...]:
    names = features.CLASS_NAMES
    return names if num_classes == len(names) else tuple(str(i) for i in range(num_classes))


def format_classification(probabilities: Sequence[float]) -> str:
    """`{"label", "probability", "probabilities"}`: json.dumps defaults, keys in this order,
    probabilities rounded to 6 places, the label the first most probable class."""
    values = [round(float(p), DECIMALS) for p in probabilities]
    best = max(range(len(values)), key=lambda i: (float(probabilities[i]), -i))
    names = class_names(len(values))
    return json.dumps({"label": names[best], "probability": values[best], "probabilities": values})
