"""The preprocessing job under SIGKILL, a full disk and a read-only output dir:
scripts/chaos_preprocess.py in its CI form (two kills, 600 pairs)."""

from __future__ import annotations

import pytest

from tests.chaos_testing import run_chaos_script


@pytest.mark.slow
def test_killed_job_leaves_nothing_complete_and_rerun_is_byte_identical(tmp_path):
    saved, _ = run_chaos_script(
        "chaos_preprocess", "--kills=2", "--examples=600", "--num_shards=2", tmp_path=tmp_path
    )
    assert saved["ok"] and saved["figures"]["preprocess"]["kills"] == 2
    checks = {c["what"]: c for c in saved["checks"]}
    assert checks["files differing in name or bytes from the uninterrupted run"]["observed"] == "[]"
    assert sum("disk full" in what for what in checks) == 2
