"""Batch translation under SIGKILL, a full disk and a read-only output dir:
scripts/chaos_translate.py in its CI form, on the session's tiny translation model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import tiny_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_killed_translation_resumes_to_the_same_outputs(
    ende_data, imdb_data, tmp_path_factory, tmp_path
):
    models = tiny_models.train_models(
        tmp_path_factory.getbasetemp(), ende_data=ende_data, imdb_data=imdb_data
    )
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "chaos_translate.py"),
            "--kills=2",
            "--files=3",
            "--lines=40",
            f"--model_dir={models['translation']}",
            f"--work_dir={tmp_path / 'work'}",
            f"--report_json={report}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=tiny_models.subprocess_env(),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    saved = json.loads(report.read_text())
    assert saved["ok"] and saved["figures"]["translate"]["kills"] >= 1
    checks = {c["what"]: c for c in saved["checks"]}
    assert checks["outputs complete and identical to the uninterrupted run"]["observed"] == "3"
