"""Training under SIGKILL: scripts/chaos_train.py in its CI form, and the resume fix it found.

The CI form kills a shrunk tiny model twice, once frozen (SIGSTOP) inside a checkpoint
write; SIGTERM and the 2-worker cluster run at full size only (docs/RELIABILITY.md;
tests/train_test.py covers SIGTERM in both layouts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.chaos_testing import run_chaos_script
from tests.tiny_models import MICRO_ARCHITECTURE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
TINY = [
    "--flagfile=" + os.path.join(ROOT, "configs", "tiny.cfg"),
    *MICRO_ARCHITECTURE,
    "--batch_tokens=1024",
    "--eval_bleu_sentences=0",
    "--shuffle_buffer=200",
    "--log_every=5",
    "--noexport",
]


@pytest.mark.slow
def test_sigkill_during_training_and_checkpoint_writes_loses_nothing(ende_data, tmp_path):
    saved, stdout = run_chaos_script(
        "chaos_train",
        "--small",
        "--suites=sigkill",
        "--kills=2",
        "--write_kills=1",
        "--train_steps=20",
        "--checkpoint_every=5",
        "--eval_every=10",
        f"--data_dir={ende_data}",
        tmp_path=tmp_path,
    )
    assert saved["ok"] and saved["figures"]["sigkill"]["kills"] == 2
    assert saved["figures"]["sigkill"]["kills_mid_write"] >= 1
    assert saved["figures"]["sigkill"]["bad_checkpoints"] == {}
    assert "| sigkill | steps in the combined loss curve | 20 | 20 | yes |" in stdout


def _train(model_dir, data_dir, *flags):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.train",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
        ]
        + TINY
        + list(flags),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=ENV,
    )


def _eval_steps(model_dir) -> list[int]:
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def test_a_kill_between_checkpoint_and_evaluation_is_made_good_on_resume(ende_data, tmp_path):
    model_dir = str(tmp_path / "m")
    schedule = ["--checkpoint_every=5", "--eval_every=5"]
    first = _train(model_dir, ende_data, "--train_steps=10", *schedule)
    assert first.returncode == 0, first.stderr[-3000:]
    # What a kill after ckpt-10 and before its evaluation leaves: the entry is missing.
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        entries = f.readlines()
    with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
        f.writelines(entries[:1])
    os.makedirs(os.path.join(model_dir, "ckpt-12_temp"))  # and an interrupted write
    again = _train(model_dir, ende_data, "--train_steps=12", *schedule)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout and "at step 10" in again.stdout
    assert _eval_steps(model_dir) == [5, 10, 12]
    assert not os.path.exists(os.path.join(model_dir, "ckpt-12_temp"))
