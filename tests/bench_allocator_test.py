"""scripts/bench_allocator.py: a short run of the real benchmark on the small prepared dataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.tiny_models import ROOT, run_script

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_allocator  # noqa: E402

ROW = re.compile(r"^\| tiny \| float32 \| ([\d,]+) \| ([\d,]+) \| \*\*([\d.]+)x\*\* \|", re.M)


def bench(*flags: str) -> subprocess.CompletedProcess:
    return run_script("bench_allocator.py", *flags)


def test_the_status_lines_after_the_first_make_the_rate():
    output = (
        "tiny translation model: ...\n"
        "step 2/6  loss 7.1  tokens/s 1,000  lr 0.1  eta 0m09s\n"
        "a line of something else\n"
        "step 4/6  loss 6.9  tokens/s 3,000  lr 0.1  eta 0m03s\n"
        "step 6/6  loss 6.7  tokens/s 5,000  lr 0.1  eta 0m00s\n"
    )
    assert bench_allocator.status_tokens_per_second(output) == 4000
    with pytest.raises(ValueError, match="fewer than 2 status lines"):
        bench_allocator.status_tokens_per_second(output.split("a line")[0])


@pytest.mark.slow
def test_a_short_run_trains_on_each_allocator_and_writes_its_section(ende_data, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## The CPU allocator\n\nstale\n\n## Other\n\nkept as is\n")
    result = bench(
        f"--data_dir={ende_data}",
        "--presets=tiny",
        "--precisions=float32",
        "--steps=4",
        "--log_every=2",
        "--repeats=1",
        f"--append_to={doc}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # One line per process, each naming its side.
    assert re.search(r"^tiny float32 bfc: \{'tokens_per_second'", result.stdout, re.M)
    assert re.search(r"^tiny float32 malloc: \{'tokens_per_second'", result.stdout, re.M)
    text = doc.read_text()
    row = ROW.search(text)
    assert row, text
    malloc, bfc, ratio = (float(g.replace(",", "")) for g in row.groups())
    assert malloc > 0 and bfc > 0
    assert ratio == pytest.approx(bfc / malloc, abs=0.01)
    assert "stale" not in text and "kept as is" in text


def test_data_that_is_not_translation_is_one_line(tmp_path):
    result = bench(f"--data_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.startswith("bench_allocator: error: --data_dir: ")
    assert result.stderr.count("\n") == 1, result.stderr
