"""Batch translation under SIGKILL, a full disk and a read-only output dir:
scripts/chaos_translate.py in its CI form, on the session's tiny translation model."""

from __future__ import annotations

import pytest

from tests import tiny_models
from tests.chaos_testing import run_chaos_script


@pytest.mark.slow
def test_killed_translation_resumes_to_the_same_outputs(
    ende_data, imdb_data, tmp_path_factory, tmp_path
):
    models = tiny_models.train_models(
        tmp_path_factory.getbasetemp(), ende_data=ende_data, imdb_data=imdb_data
    )
    saved, _ = run_chaos_script(
        "chaos_translate",
        "--kills=2",
        "--files=3",
        "--lines=40",
        f"--model_dir={models['translation']}",
        tmp_path=tmp_path,
    )
    assert saved["ok"] and saved["figures"]["translate"]["kills"] >= 1
    checks = {c["what"]: c for c in saved["checks"]}
    assert checks["outputs complete and identical to the uninterrupted run"]["observed"] == "3"
