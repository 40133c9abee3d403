"""Every flagfile in configs/ parses and builds a training config (a misspelled flag fails)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests.tiny_models import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))

# Parses the flagfile as trainer.train does and builds its TrainConfig without data.
BUILD = """
import sys, types
from absl import flags
from pipeline import features
from trainer import train
flags.FLAGS(["train", "--flagfile=" + sys.argv[1], "--data_dir=/d", "--model_dir=/m"])
task = features.CLASSIFICATION if flags.FLAGS.preset == "imdb" else features.TRANSLATION
metadata = types.SimpleNamespace(task=task, tokenizer=types.SimpleNamespace(vocab_size=8000))
config = train.config_from_flags(metadata)
print(config.preset, config.model.num_layers, config.precision, config.xla)
"""


def test_every_shipped_config_is_found():
    names = {os.path.basename(path) for path in CONFIGS}
    assert {"tiny.cfg", "small.cfg", "base.cfg", "big.cfg", "imdb.cfg", "multi30k.cfg"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_a_training_config(path):
    result = subprocess.run(
        [sys.executable, "-c", BUILD, path],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    preset, layers, precision, xla = result.stdout.split()
    name = os.path.basename(path).removesuffix(".cfg")
    assert preset == ("small" if name == "multi30k" else name)
    assert int(layers) >= 1 and precision in {"float32", "mixed_float16", "mixed_bfloat16"}
    assert xla in {"True", "False"}
