"""The preprocessing job under SIGKILL, a full disk and a read-only output dir:
scripts/chaos_preprocess.py in its CI form (two kills, 600 pairs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_killed_job_leaves_nothing_complete_and_rerun_is_byte_identical(tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "chaos_preprocess.py"),
            "--kills=2",
            "--examples=600",
            "--num_shards=2",
            f"--work_dir={tmp_path / 'work'}",
            f"--report_json={report}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    saved = json.loads(report.read_text())
    assert saved["ok"] and saved["figures"]["preprocess"]["kills"] == 2
    checks = {c["what"]: c for c in saved["checks"]}
    assert checks["files differing in name or bytes from the uninterrupted run"]["observed"] == "[]"
    assert sum("disk full" in what for what in checks) == 2
