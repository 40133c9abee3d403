"""Running a scripts/chaos_*.py suite from a test, as its CI form."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests import tiny_models


def run_chaos_script(name: str, *args: str, tmp_path) -> tuple[dict, str]:
    """Runs scripts/NAME.py ARGS with its work dir and JSON report under ``tmp_path``.

    Fails the calling test unless the suite exits 0; returns (the saved report, stdout).
    """
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(tiny_models.ROOT, "scripts", f"{name}.py"),
            *args,
            f"--work_dir={tmp_path / 'work'}",
            f"--report_json={report}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tiny_models.ROOT,
        env=tiny_models.subprocess_env(),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads(report.read_text()), result.stdout
