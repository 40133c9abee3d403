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

# Parses the flagfile as trainer.train does, builds its TrainConfig without data, and prints
# [flag, value the file sets, value in the config] for every flag the file sets (absl marks
# those `present`). Run in a subprocess: importing trainer.train here would define its flags
# in the test process, where other entry points define some of the same names.
BUILD = """
import json, sys, types
from absl import flags
from pipeline import features
from trainer import train
FLAGS = flags.FLAGS
FLAGS(["train", "--flagfile=" + sys.argv[1], "--data_dir=/d", "--model_dir=/m"])
task = features.CLASSIFICATION if FLAGS.preset == "imdb" else features.TRANSLATION
metadata = types.SimpleNamespace(task=task, tokenizer=types.SimpleNamespace(vocab_size=8000))
config = json.loads(train.config_from_flags(metadata).to_json())
print(json.dumps([
    [name, FLAGS[name].value,
     config["model"][name] if name in train.MODEL_OVERRIDES else config[name]]
    for name in FLAGS
    if FLAGS[name].present and name not in ("flagfile", "data_dir", "model_dir")
]))
"""


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
    checks = json.loads(result.stdout)
    assert checks, f"{path} sets no flags"
    for name, value, landed in checks:
        assert landed == pytest.approx(value), f"{path}: --{name}={value} built {name}={landed!r}"
