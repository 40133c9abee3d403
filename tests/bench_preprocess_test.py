"""scripts/bench_preprocess.py on a small corpus: every row of its table, from one real run."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.testdata import write_multi30k_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench_preprocess.py")
SECONDS = r"\| ([\d.]+) \|"


def test_one_run_writes_every_row_and_the_job_counts(tmp_path):
    write_multi30k_like(tmp_path / "data", 300)
    report = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [sys.executable, SCRIPT, f"--data={tmp_path / 'data' / 'multi30k'}", "--repeats=1"]
        + ["--vocab_size=400", f"--append_to={report}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    written = report.read_text(encoding="utf-8")
    assert written.startswith("# Benchmarks\n\n## Preprocessing throughput\n")
    for row in (
        "plain loop (read + encode)",
        "work loop (read, normalize, hash, encode, serialize, write one gzipped shard)",
        "preprocessing job (all steps, vocab 400)",
        "preprocessing job, tokenizer given (`--tokenizer`)",
        "the same on the first 100 pairs only",
    ):
        assert re.search(rf"^\| {re.escape(row)} {SECONDS}", written, re.M), row
    assert "on Multi30k train (300 pairs)" in written
    counts = re.search(r"^Job counts: read (\d+), written (\d+), dropped (\d+)\.$", written, re.M)
    read, kept, dropped = map(int, counts.groups())
    assert read == 300 and kept + dropped == read and dropped > 0  # the corpus has bait
