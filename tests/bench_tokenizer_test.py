"""scripts/bench_tokenizer.py on a small corpus: every thread count repeats its own model."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.testdata import write_multi30k_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_tokenizer.py")
ROW = re.compile(r"^\| (\d+) \| ([\d., ]+) \| ([\d.]+)x \| ([0-9a-f, ]+) \|$", re.M)


def test_each_thread_count_repeats_its_model_and_the_section_is_written(tmp_path):
    write_multi30k_like(tmp_path / "data", 300)
    report = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [sys.executable, SCRIPT, f"--data={tmp_path / 'data'}", "--threads=1,3", "--repeats=2"]
        + ["--vocab_size=400", f"--append_to={report}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = report.read_text(encoding="utf-8")
    assert written.startswith("# Benchmarks\n\n## Tokenizer training by thread count\n")
    assert "(600)" in written  # both sides of 300 pairs
    rows = ROW.findall(written)
    assert [threads for threads, *_ in rows] == ["1", "3"]
    for threads, seconds, _, models in rows:
        assert len(seconds.split(", ")) == 2, threads
        assert len(models.split(", ")) == 1, (threads, models)  # one model per count


def test_missing_data_is_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, SCRIPT, f"--data={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        f"bench_tokenizer: error: {tmp_path}/multi30k/train.en.gz not found (the real data is needed)"
    ]
