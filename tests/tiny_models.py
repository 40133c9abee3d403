"""Tiny trained model dirs and their exports, for the export and batch inference tests.

The models train for a few steps through the real trainer CLI (in parallel
subprocesses), so they decode garbage, but real garbage: every mechanism from
checkpoint to SavedModel runs. Made once per pytest session (cached under the
session's base temp dir) however many test modules ask.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smallest Transformer the tests train: they check mechanics, not quality.
MICRO_ARCHITECTURE = ["--num_layers=1", "--d_model=32", "--num_heads=2", "--d_ff=64"]
TINY_MODEL = [
    *MICRO_ARCHITECTURE,
    "--log_every=5",
    "--noexport",  # the tests export themselves, with the options they test
]
# Checkpoints at steps 5 and 10, each evaluated, so best/ exists and averaging has two.
SCHEDULE = ["--train_steps=10", "--checkpoint_every=5", "--eval_every=5"]
TRANSLATION_FLAGS = [
    "--flagfile=" + os.path.join(ROOT, "configs", "tiny.cfg"),
    *TINY_MODEL,
    *SCHEDULE,
    "--batch_tokens=1024",
    "--warmup_steps=30",
    "--learning_rate=1.0",
    "--eval_bleu_sentences=0",
    "--shuffle_buffer=200",
    "--max_length=64",
]
CLASSIFICATION_FLAGS = [
    "--flagfile=" + os.path.join(ROOT, "configs", "imdb.cfg"),
    *TINY_MODEL,
    *SCHEDULE,
    "--batch_size=16",
    "--warmup_steps=20",
    "--max_length=128",
]


# TensorFlow's C++ start-up logging (no GPU here), which no flag or variable turns off.
_TF_NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} )")


def own_stderr_lines(stderr: str) -> list[str]:
    """The lines a program wrote to stderr itself, without TensorFlow's native start-up log."""
    return [line for line in stderr.strip().splitlines() if not _TF_NATIVE_LOG.match(line)]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    return env


def run_script(name: str, *flags: str) -> subprocess.CompletedProcess:
    """``python scripts/NAME FLAGS...`` from the project root, its output captured."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", name), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=subprocess_env(),
    )


def train_models(base_dir, *, ende_data: str, imdb_data: str) -> dict[str, str]:
    """{"translation": model dir, "classification": model dir}, trained unless already there."""
    dirs = {
        "translation": str(base_dir / "tiny_models" / "ende"),
        "classification": str(base_dir / "tiny_models" / "imdb"),
    }
    if all(os.path.exists(os.path.join(d, "best", "checkpoint")) for d in dirs.values()):
        return dirs
    runs = {
        task: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainer.train",
                f"--data_dir={data}",
                f"--model_dir={dirs[task]}",
            ]
            + flags,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
        )
        for task, data, flags in (
            ("translation", ende_data, TRANSLATION_FLAGS),
            ("classification", imdb_data, CLASSIFICATION_FLAGS),
        )
    }
    for task, process in runs.items():
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"training the tiny {task} model failed:\n{out[-3000:]}"
    return dirs


def exported(base_dir, model_dir: str, name: str, **export_args) -> str:
    """``trainer.exporting.export_model(model_dir, **export_args)`` into a cached dir ``name``."""
    from trainer import exporting

    export_dir = str(base_dir / "tiny_exports" / name)
    if not os.path.exists(export_dir):
        exporting.export_model(model_dir=model_dir, export_dir=export_dir, **export_args)
    return export_dir
