"""Every flagfile in configs/ parses and builds a training config carrying each of its values
(a misspelled flag or a value that does not reach the config fails)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from tests.tiny_models import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))

# Parses the flagfile as trainer.train does and prints the TrainConfig it builds, without data.
BUILD = """
import sys, types
from absl import flags
from pipeline import features
from trainer import train
flags.FLAGS(["train", "--flagfile=" + sys.argv[1], "--data_dir=/d", "--model_dir=/m"])
task = features.CLASSIFICATION if flags.FLAGS.preset == "imdb" else features.TRANSLATION
metadata = types.SimpleNamespace(task=task, tokenizer=types.SimpleNamespace(vocab_size=8000))
print(train.config_from_flags(metadata).to_json())
"""


def _flags_in(path: str) -> dict[str, str]:
    """`--name=value` lines of a flagfile (comments and blank lines skipped)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, equals, value = line.removeprefix("--").partition("=")
                if not equals and name.startswith("no"):  # --noxla
                    name, value = name.removeprefix("no"), "false"
                values[name] = value
    return values


def _same(config_value, flag_value: str) -> bool:
    if isinstance(config_value, bool):
        return config_value == (flag_value.lower() in {"", "true", "1"})
    if isinstance(config_value, (int, float)):
        return config_value == pytest.approx(float(flag_value))
    return str(config_value) == flag_value


def test_every_shipped_config_is_found():
    names = {os.path.basename(path) for path in CONFIGS}
    assert {"tiny.cfg", "small.cfg", "base.cfg", "big.cfg", "imdb.cfg", "multi30k.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_a_training_config_with_its_values(path):
    result = subprocess.run(
        [sys.executable, "-c", BUILD, path],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads(result.stdout)
    flags = _flags_in(path)
    assert flags, f"{path} sets no flags"
    for name, value in flags.items():
        # --dropout and --max_length land in the model config; every other flag at the top.
        landed = config[name] if name in config else config["model"][name]
        assert _same(landed, value), f"{path}: --{name}={value} built {name}={landed!r}"
